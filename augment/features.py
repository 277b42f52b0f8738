"""Feature extractors: images <-> feature rows (SMOTE works on rows, not on images)."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA


class PixelFeatures:
    """Flattened pixels scaled to [0, 1], optionally PCA-reduced; invertible back to images."""

    def __init__(self, pca_components: int | None = None, seed: int = 0):
        self.pca_components = pca_components
        self.seed = seed
        self.shape: tuple[int, ...] | None = None
        self.pca: PCA | None = None

    def fit(self, images: np.ndarray) -> PixelFeatures:
        if images.ndim != 4:
            raise ValueError(f"expected (N, H, W, C) images, got shape {images.shape}")
        self.shape = images.shape[1:]
        flat = self._flatten(images)
        if self.pca_components is not None:
            n = min(self.pca_components, flat.shape[0], flat.shape[1])
            self.pca = PCA(n_components=n, random_state=self.seed % 2**32).fit(flat)
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        if self.shape is None:
            raise RuntimeError("fit() first")
        if images.shape[1:] != self.shape:
            raise ValueError(f"images of shape {images.shape[1:]}, fitted on {self.shape}")
        flat = self._flatten(images)
        return self.pca.transform(flat) if self.pca is not None else flat

    def inverse_transform(self, rows: np.ndarray) -> np.ndarray:
        """Feature rows -> uint8 (N, H, W, C) images (exact for pixels, a projection for PCA)."""
        flat = self.pca.inverse_transform(rows) if self.pca is not None else rows
        images = np.clip(np.rint(flat * 255.0), 0, 255).astype(np.uint8)
        return images.reshape(len(rows), *self.shape)

    @staticmethod
    def _flatten(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).astype(np.float64) / 255.0


def make_extractor(name: str, pca_components: int | None, seed: int) -> PixelFeatures:
    if name == "pixels":
        return PixelFeatures(pca_components, seed)
    raise ValueError(f"unknown feature extractor {name!r}")  # the config admits only known names
