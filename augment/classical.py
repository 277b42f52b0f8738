"""Classical augmentation with albumentations: the only module that imports it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
import albumentations as A  # noqa: E402

from augment import manifest  # noqa: E402
from augment.config import Config  # noqa: E402
from augment.data import ingest_fingerprint, ingest_info  # noqa: E402
from augment.runtime import combine, derive_seed, run_stage  # noqa: E402

# Presets in albumentations' own serialisation format (A.from_dict), so a user can copy one
# into a custom pipeline. No flips: they change the class of digits and text.
PRESETS: dict[str, list[dict]] = {
    "light": [
        {"__class_fullname__": "Affine", "rotate": [-10, 10], "scale": [0.9, 1.1],
         "translate_percent": [-0.1, 0.1], "p": 1.0},
        {"__class_fullname__": "RandomBrightnessContrast", "brightness_limit": 0.1,
         "contrast_limit": 0.1, "p": 0.5},
    ],
    "medium": [
        {"__class_fullname__": "Affine", "rotate": [-15, 15], "scale": [0.85, 1.15],
         "translate_percent": [-0.12, 0.12], "shear": [-8, 8], "p": 1.0},
        {"__class_fullname__": "RandomBrightnessContrast", "brightness_limit": 0.2,
         "contrast_limit": 0.2, "p": 0.5},
        {"__class_fullname__": "GaussNoise", "std_range": [0.02, 0.08], "p": 0.3},
    ],
    "heavy": [
        {"__class_fullname__": "Affine", "rotate": [-25, 25], "scale": [0.75, 1.25],
         "translate_percent": [-0.15, 0.15], "shear": [-12, 12], "p": 1.0},
        {"__class_fullname__": "RandomBrightnessContrast", "brightness_limit": 0.3,
         "contrast_limit": 0.3, "p": 0.7},
        {"__class_fullname__": "GaussNoise", "std_range": [0.05, 0.15], "p": 0.5},
        {"__class_fullname__": "GaussianBlur", "blur_limit": [3, 3], "p": 0.2},
    ],
}


def build_pipeline(transforms: list[dict], seed: int | None = None) -> A.Compose:
    """An albumentations Compose from serialised transform dicts (A.from_dict format)."""
    spec = {"transform": {"__class_fullname__": "Compose", "transforms": transforms, "p": 1.0}}
    pipeline = A.from_dict(spec)
    if seed is not None:
        pipeline.set_random_seed(seed % 2**32)
    return pipeline


def augment_images(images: np.ndarray, parent_seeds: list[int], pipeline: A.Compose, copies: int) -> np.ndarray:
    """`copies` augmented versions of each image; returns uint8 (N*copies, H, W, C), parent-major.

    Each parent's random stream is seeded from its own seed, so the output does not depend
    on the order (or the process) images are handled in.
    """
    if len(images) != len(parent_seeds):
        raise ValueError("one seed per image is needed")
    out = np.empty((len(images) * copies, *images.shape[1:]), dtype=np.uint8)
    for i, (image, seed) in enumerate(zip(images, parent_seeds)):
        pipeline.set_random_seed(seed % 2**32)
        for c in range(copies):
            aug = pipeline(image=image)["image"]
            out[i * copies + c] = aug.reshape(image.shape)
    return out


def classical_fingerprint(cfg: Config) -> str:
    return combine(ingest_fingerprint(cfg), cfg.section_hash("seed", "classical"))


def classical_stage(cfg: Config, run_dir: Path) -> dict:
    """Augment every real train image `classical.multiplier` times; PNGs + manifest rows."""
    run_dir = Path(run_dir)

    def body() -> dict:
        if not cfg.classical.enabled:
            manifest.replace_source(run_dir, "classical", [])
            return {"images": 0}
        info = ingest_info(run_dir)
        transforms = PRESETS[cfg.classical.preset]
        pipeline = build_pipeline(transforms)
        frame = manifest.read(run_dir)
        train = frame[(frame["split"] == "train") & (frame["source"] == "real")].reset_index(drop=True)
        copies = cfg.classical.multiplier
        rows = []
        for _, parent in train.iterrows():
            # native size: images may differ in size, albumentations handles each as it is
            image = manifest.load_images(run_dir, [parent["path"]], None, info["channels"])[0]
            seed = derive_seed(cfg.seed, "classical", parent["id"])
            augmented = augment_images(image[None], [seed], pipeline, copies)
            for c, aug in enumerate(augmented):
                cid = f"classical-{parent['id']}-{c}"
                rel = f"images/classical/{parent['label']}/{cid}.png"
                rows.append(
                    dict(id=cid, path=rel, label=parent["label"], split="train", source="classical",
                         parent_id=parent["id"], seed=seed % 2**32, generator=f"albumentations:{cfg.classical.preset}",
                         sha256=manifest.save_png(run_dir, rel, aug), height=aug.shape[0], width=aug.shape[1],
                         channels=aug.shape[2], score=None, kept=True, reason=None)
                )
        manifest.replace_source(run_dir, "classical", rows)
        pipeline_json = json.dumps(A.to_dict(pipeline), default=str)
        return {"images": len(rows), "pipeline": json.loads(pipeline_json)}

    return run_stage(run_dir, "classical", classical_fingerprint(cfg), body)
