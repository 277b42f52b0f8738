"""Feature extractors: images <-> feature rows (SMOTE works on rows, not on images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA


class PixelFeatures:
    """Flattened pixels scaled to [0, 1], optionally PCA-reduced; invertible back to images."""

    invertible = True

    def __init__(self, pca_components: int | None = None, seed: int = 0):
        self.pca_components = pca_components
        self.seed = seed
        self.shape: tuple[int, ...] | None = None
        self.pca: PCA | None = None

    def fit(self, images: np.ndarray, labels: np.ndarray | None = None, n_classes: int = 0) -> PixelFeatures:
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


class ClassifierFeatures:
    """The penultimate layer of a classifier as features (not invertible: SMOTE rows stay rows).

    kind "cnn": the benchmark's small CNN trained (class-balanced) on the real train split;
    kind "pretrained": a torchvision backbone with weights already on disk, used as it is.
    """

    invertible = False

    def __init__(self, kind: str, seed: int, trainer: dict, backbone: str = "resnet18",
                 weights: str | Path | None = None, input_size: int = 64):
        self.kind, self.seed, self.trainer = kind, seed, trainer
        self.backbone, self.weights, self.input_size = backbone, weights, input_size
        self.model = None

    def fit(self, images: np.ndarray, labels: np.ndarray | None = None, n_classes: int = 0) -> ClassifierFeatures:
        import torch

        from augment.classifier import build_backbone, train_classifier

        if self.kind == "cnn":
            if labels is None:
                raise ValueError("the cnn extractor is trained: labels are needed")
            self.model = train_classifier(images, labels, n_classes, **self.trainer, balanced=True, seed=self.seed)
        else:
            gen = torch.Generator().manual_seed(self.seed % 2**63)
            self.model = build_backbone(self.backbone, max(n_classes, 2), self.weights, self.input_size, gen,
                                        keys=("smote.backbone", "smote.weights")).eval()
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        from augment.classifier import predict

        if self.model is None:
            raise RuntimeError("fit() first")
        return predict(self.model, images)[1].astype(np.float64)


class DiscriminatorFeatures:
    """Features of the trained DCGAN discriminator (gan/checkpoint.pt), as in the DCGAN paper."""

    invertible = False

    def __init__(self, gan_dir: Path, gan_cfg, n_classes: int):
        self.gan_dir, self.gan_cfg, self.n_classes = Path(gan_dir), gan_cfg, n_classes
        self.D = None

    def fit(self, images: np.ndarray, labels: np.ndarray | None = None, n_classes: int = 0) -> DiscriminatorFeatures:
        from augment.gan import Discriminator
        from augment.gan_training import read_checkpoint

        payload = read_checkpoint(self.gan_dir / "checkpoint.pt")
        c = self.gan_cfg
        self.D = Discriminator(self.n_classes, c.ndf, images.shape[3], c.image_size, c.mode)
        self.D.load_state_dict(payload["D"])
        self.D.eval()
        return self

    def transform(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from augment.classifier import to_tensor

        if self.D is None:
            raise RuntimeError("fit() first")
        out = []
        size = self.gan_cfg.image_size
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = to_tensor(images[i : i + batch])
                if x.shape[-1] != size or x.shape[-2] != size:
                    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                out.append(self.D.image_features(x).double())
        return torch.cat(out).numpy()


def make_extractor(smote_cfg, seed: int, trainer: dict | None = None, gan: tuple | None = None):
    """The extractor `smote.features` names (the config admits only known names).

    `gan`: (gan directory, GanConfig, number of classes), for the discriminator's features.
    """
    if smote_cfg.features == "pixels":
        return PixelFeatures(smote_cfg.pca_components, seed)
    if smote_cfg.features == "discriminator":
        return DiscriminatorFeatures(*gan)
    trainer = {k: v for k, v in (trainer or {}).items() if k in ("steps", "batch_size", "lr", "width")}
    return ClassifierFeatures(smote_cfg.features, seed, trainer, smote_cfg.backbone, smote_cfg.weights,
                              smote_cfg.input_size)
