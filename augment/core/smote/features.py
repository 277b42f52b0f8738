"""Feature extractors: images <-> feature rows (SMOTE works on rows, not on images).

Every extractor can be saved once fitted (`save_extractor`) and loaded without refitting
(`load_extractor`), so the benchmark's linear probe works in exactly the SMOTE stage's space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA

from augment.atomic import write_torch
from augment.core.base.tensors import resize, to_tensor


class PixelFeatures:
    """Flattened pixels scaled to [0, 1], optionally PCA-reduced; invertible back to images."""

    invertible = True

    def __init__(self, pca_components: int | None = None, seed: int = 0):
        self.pca_components = pca_components
        self.seed = seed
        self.shape: tuple[int, ...] | None = None
        self.mean: np.ndarray | None = None  # PCA's mean and components (rows), None without PCA
        self.components: np.ndarray | None = None

    def fit(self, images: np.ndarray, labels: np.ndarray | None = None, n_classes: int = 0) -> PixelFeatures:
        if images.ndim != 4:
            raise ValueError(f"expected (N, H, W, C) images, got shape {images.shape}")
        self.shape = images.shape[1:]
        flat = self._flatten(images)
        if self.pca_components is not None:
            n = min(self.pca_components, flat.shape[0], flat.shape[1])
            pca = PCA(n_components=n, random_state=self.seed % 2**32).fit(flat)
            self.mean, self.components = pca.mean_, pca.components_
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        if self.shape is None:
            raise RuntimeError("fit() first")
        if images.shape[1:] != self.shape:
            raise ValueError(f"images of shape {images.shape[1:]}, fitted on {self.shape}")
        flat = self._flatten(images)
        return flat if self.components is None else (flat - self.mean) @ self.components.T  # PCA.transform

    def inverse_transform(self, rows: np.ndarray) -> np.ndarray:
        """Feature rows -> uint8 (N, H, W, C) images (exact for pixels, a projection for PCA)."""
        flat = rows if self.components is None else rows @ self.components + self.mean  # PCA.inverse_transform
        images = np.clip(np.rint(flat * 255.0), 0, 255).astype(np.uint8)
        return images.reshape(len(rows), *self.shape)

    def state(self) -> dict:
        pca = {} if self.components is None else {"mean": torch.from_numpy(self.mean),
                                                   "components": torch.from_numpy(self.components)}
        return {"kind": "pixels", "shape": list(self.shape), "pca_components": self.pca_components, "seed": self.seed, **pca}

    @classmethod
    def from_state(cls, state: dict) -> PixelFeatures:
        out = cls(state["pca_components"], state["seed"])
        out.shape = tuple(state["shape"])
        if "components" in state:
            out.mean, out.components = state["mean"].numpy(), state["components"].numpy()
        return out

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
        self.n_classes = 0

    def fit(self, images: np.ndarray, labels: np.ndarray | None = None, n_classes: int = 0) -> ClassifierFeatures:
        from augment.core.classify.classifier import train_classifier

        self.n_classes = n_classes
        if self.kind == "cnn":
            if labels is None:
                raise ValueError("the cnn extractor is trained: labels are needed")
            self.in_channels = images.shape[3]
            self.model = train_classifier(images, labels, n_classes, **self.trainer, balanced=True, seed=self.seed)
        else:
            self.model = self._backbone()
        return self

    def _backbone(self):
        from augment.core.classify.networks import build_backbone

        gen = torch.Generator().manual_seed(self.seed % 2**63)
        return build_backbone(self.backbone, max(self.n_classes, 2), self.weights, self.input_size, gen,
                              keys=("smote.backbone", "smote.weights")).eval()

    def transform(self, images: np.ndarray) -> np.ndarray:
        from augment.core.classify.networks import predict

        if self.model is None:
            raise RuntimeError("fit() first")
        return predict(self.model, images)[1].astype(np.float64)

    def state(self) -> dict:
        out = {"kind": self.kind, "seed": self.seed, "trainer": self.trainer, "backbone": self.backbone,
               "weights": None if self.weights is None else str(self.weights), "input_size": self.input_size,
               "n_classes": self.n_classes}
        if self.kind == "cnn":  # trained: its weights are the state; a backbone is rebuilt from disk
            out.update(in_channels=self.in_channels, model=self.model.state_dict())
        return out

    @classmethod
    def from_state(cls, state: dict) -> ClassifierFeatures:
        from augment.core.classify.networks import SmallCNN

        out = cls(state["kind"], state["seed"], state["trainer"], state["backbone"], state["weights"], state["input_size"])
        out.n_classes = state["n_classes"]
        if out.kind == "cnn":
            out.in_channels = state["in_channels"]
            shape = {k: out.trainer[k] for k in ("width", "depth", "dropout") if k in out.trainer}
            out.model = SmallCNN(out.in_channels, out.n_classes, **shape)
            out.model.load_state_dict(state["model"])
            out.model.eval()
        else:
            out.model = out._backbone()
        return out


class DiscriminatorFeatures:
    """Features of the trained DCGAN discriminator (its checkpoint), as in the DCGAN paper."""

    invertible = False

    def __init__(self, checkpoint: Path):
        self.checkpoint = Path(checkpoint)
        self.D = None

    def fit(self, images: np.ndarray, labels: np.ndarray | None = None, n_classes: int = 0) -> DiscriminatorFeatures:
        from augment.core.gan.sampling import load_discriminator

        self.D = load_discriminator(self.checkpoint)
        return self

    def transform(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        if self.D is None:
            raise RuntimeError("fit() first")
        size = self.D.image_size
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = resize(to_tensor(images[i : i + batch]), (size, size))
                out.append(self.D.image_features(x).double())
        return torch.cat(out).numpy()

    def state(self) -> dict:
        return {"kind": "discriminator", "checkpoint": str(self.checkpoint)}

    @classmethod
    def from_state(cls, state: dict) -> DiscriminatorFeatures:
        return cls(Path(state["checkpoint"])).fit(np.zeros((0, 1, 1, 1), np.uint8))


def make_extractor(smote_cfg, seed: int, trainer: dict | None = None, gan_checkpoint: Path | None = None):
    """The extractor `smote.features` names (the config admits only known names).

    `gan_checkpoint`: the trained GAN's checkpoint, for the discriminator's features.
    """
    if smote_cfg.features == "pixels":
        return PixelFeatures(smote_cfg.pca_components, seed)
    if smote_cfg.features == "discriminator":
        return DiscriminatorFeatures(gan_checkpoint)
    # the small CNN's recipe (not the benchmark's backbone: kind "pretrained" names its own)
    trainer = {k: v for k, v in (trainer or {}).items() if k in SMALL_CNN_RECIPE}
    return ClassifierFeatures(smote_cfg.features, seed, trainer, smote_cfg.backbone, smote_cfg.weights,
                              smote_cfg.input_size)


SMALL_CNN_RECIPE = ("steps", "epochs", "min_steps", "max_steps", "batch_size", "lr", "weight_decay", "schedule",
                    "label_smoothing", "width", "depth", "dropout", "precision")
_KINDS = {"pixels": PixelFeatures, "cnn": ClassifierFeatures, "pretrained": ClassifierFeatures,
          "discriminator": DiscriminatorFeatures}


def save_extractor(path: Path, extractor) -> None:
    """A fitted extractor's state (tensors and plain values: loads with weights_only=True)."""
    write_torch(path, extractor.state())


def load_extractor(path: Path):
    """The fitted extractor `save_extractor` wrote, ready to transform."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return _KINDS[state["kind"]].from_state(state)
