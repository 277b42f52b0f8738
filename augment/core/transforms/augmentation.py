"""Classical augmentation with albumentations: the only module that imports it.

Presets and custom pipelines in albumentations' own serialisation format, strict validation,
building a pipeline, seeded copies of an image, the batched ops' specs of a pipeline, and the
per-image reference on a torch batch. Which transforms a config asks for, how many copies, and the
worker that makes them: augment.core.transforms.copies. Light on purpose: a spawned worker imports
only numpy, Pillow and albumentations (not pandas, scikit-learn, pydantic or torch). albumentations
itself is imported on first use, after the worker's initializer has run.
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path

import numpy as np

from augment.errors import UserError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import


def _albumentations():
    import albumentations as A

    return A


def _t(name: str, **params) -> dict:
    return {"__class_fullname__": name, **params}


# Presets in albumentations' own serialisation format (A.from_dict), so a user can copy one into
# a custom pipeline (classical.transforms). Geometry (Affine, CropAndPad), photometric changes
# (brightness/contrast, colour jitter on RGB), noise (Gaussian, salt-and-pepper), sharpness and
# blur. No flips unless classical.flips: they change the class of digits and text.
PRESETS: dict[str, list[dict]] = {
    "light": [
        _t("Affine", rotate=[-10, 10], scale=[0.9, 1.1], translate_percent=[-0.1, 0.1], p=1.0),
        _t("RandomBrightnessContrast", brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        _t("ColorJitter", brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02, p=0.3),
        _t("GaussNoise", std_range=[0.01, 0.04], p=0.2),
    ],
    "medium": [
        _t("Affine", rotate=[-15, 15], scale=[0.85, 1.15], translate_percent=[-0.12, 0.12], shear=[-8, 8], p=1.0),
        _t("CropAndPad", percent=[-0.08, 0.08], keep_size=True, sample_independently=True, p=0.3),
        _t("RandomBrightnessContrast", brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        _t("ColorJitter", brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.3),
        _t("GaussNoise", std_range=[0.02, 0.08], p=0.3),
        _t("SaltAndPepper", amount=[0.005, 0.02], p=0.1),
        _t("Sharpen", alpha=[0.1, 0.3], lightness=[0.9, 1.1], p=0.1),
    ],
    "heavy": [
        _t("Affine", rotate=[-25, 25], scale=[0.75, 1.25], translate_percent=[-0.15, 0.15], shear=[-12, 12], p=1.0),
        _t("CropAndPad", percent=[-0.12, 0.12], keep_size=True, sample_independently=True, p=0.5),
        _t("RandomBrightnessContrast", brightness_limit=0.3, contrast_limit=0.3, p=0.7),
        _t("ColorJitter", brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1, p=0.5),
        _t("GaussNoise", std_range=[0.05, 0.15], p=0.5),
        _t("SaltAndPepper", amount=[0.01, 0.04], p=0.2),
        _t("Sharpen", alpha=[0.2, 0.5], lightness=[0.8, 1.2], p=0.2),
        _t("GaussianBlur", blur_limit=[3, 3], p=0.2),
    ],
}
FLIP = _t("HorizontalFlip", p=0.5)


def _check_names(transforms: list, where: str) -> None:
    """Every item (nested composes' items too) names an albumentations transform or compose."""
    if not isinstance(transforms, list) or not transforms:
        raise ValueError(f"{where}expected a non-empty list of transforms in albumentations' A.from_dict format")
    A = _albumentations()
    for i, item in enumerate(transforms):
        at = f"{where}item {i}"
        if not isinstance(item, dict) or not isinstance(item.get("__class_fullname__"), str):
            raise ValueError(f"{at}: expected a mapping with '__class_fullname__' (A.to_dict format)")
        name = item["__class_fullname__"]
        cls = getattr(A, name.rsplit(".", 1)[-1], None)
        if not (inspect.isclass(cls) and issubclass(cls, (A.BasicTransform, A.BaseCompose))):
            raise ValueError(f"{at}: {name!r} is not an albumentations transform")
        if issubclass(cls, A.BaseCompose):  # OneOf, SomeOf, Sequential, ...: their own items in turn
            _check_names(item.get("transforms"), f"{at} ({name}) ")


def validate_transforms(transforms: list) -> None:
    """Build each serialised transform in a Compose(strict=True), albumentations' own strict mode:
    an unknown name, an unknown argument or a bad value is a ValueError naming the item. Nested
    composes (OneOf, SomeOf, Sequential) are transforms like any other."""
    _check_names(transforms, "")
    for i, item in enumerate(transforms):
        try:
            with warnings.catch_warnings():  # strict mode raises what it also warns about: one message, not two
                warnings.filterwarnings("ignore", message=".*are not valid for transform.*")
                build_pipeline([item])
        except Exception as exc:  # noqa: BLE001  (ValueError from strict mode, pydantic ValidationError, TypeError)
            raise ValueError(f"item {i} ({item['__class_fullname__']}): {' '.join(str(exc).split())[:300]}") from None


def read_pipeline_file(path: Path) -> list[dict]:
    """The transform list of a file written by A.save (JSON or YAML), read with yaml.safe_load."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: not a readable albumentations pipeline ({exc})") from None
    transforms = ((data or {}).get("transform") or {}).get("transforms") if isinstance(data, dict) else None
    try:
        validate_transforms(transforms)
    except ValueError as exc:
        raise UserError(f"{path} (classical.pipeline_file): {exc}") from None
    return transforms


def augment_images(images: np.ndarray, parent_seeds: list[int], pipeline, copies: int | list[int]) -> np.ndarray:
    """Augmented versions of each image (`copies` each, or copies[i] for image i); uint8, parent-major.

    Each parent's random stream is seeded from its own seed, so the output does not depend
    on the order (or the process) images are handled in.
    """
    if len(images) != len(parent_seeds):
        raise ValueError("one seed per image is needed")
    counts = [copies] * len(images) if isinstance(copies, int) else list(copies)
    out = np.empty((sum(counts), *images.shape[1:]), dtype=np.uint8)
    n = 0
    for image, seed, k in zip(images, parent_seeds, counts):
        for result in copies_of(pipeline, image, seed, k):
            out[n] = result["image"].reshape(image.shape)
            n += 1
    return out


def with_p(item: dict) -> dict:
    """A transform dict with `p` filled from the class default when missing (no warning spam),
    in nested composes' items too."""
    if isinstance(item.get("transforms"), list):
        item = {**item, "transforms": [with_p(t) for t in item["transforms"]]}
    if "p" in item or item.get("__class_fullname__") is None:
        return item
    cls = getattr(_albumentations(), item["__class_fullname__"].rsplit(".", 1)[-1])
    default = inspect.signature(cls.__init__).parameters.get("p")
    return {**item, "p": default.default if default is not None else 1.0}


def build_pipeline(transforms: list[dict], seed: int | None = None, save_params: bool = False):
    """An albumentations Compose(strict=True) from serialised transform dicts (A.from_dict format)."""
    spec = {"transform": {"__class_fullname__": "Compose", "transforms": [with_p(t) for t in transforms], "p": 1.0,
                          "strict": True}}
    pipeline = _albumentations().from_dict(spec)
    pipeline.save_applied_params = save_params
    if seed is not None:
        pipeline.set_random_seed(seed % 2**32)
    return pipeline


def save_pipeline(transforms: list[dict], path: Path) -> Path:
    """The pipeline as albumentations' own file (A.save, JSON), written atomically: A.load(path) gives it back."""
    from augment.atomic import atomic_path

    with atomic_path(path) as tmp:
        _albumentations().save(build_pipeline(transforms), str(tmp), data_format="json")
    return Path(path)


def _pair(value) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else value
    return float(lo), float(hi)


def _zero(fill) -> bool:
    return all(float(v) == 0.0 for v in (fill if isinstance(fill, (list, tuple)) else [fill]))


def _batched_spec(t) -> dict | None:
    """One albumentations transform (an instance, its arguments normalised by albumentations itself)
    as a plain spec of augment.core.transforms.batch_augment, or None where that has no equivalent."""
    import cv2

    name, p = type(t).__name__, float(t.p)
    interpolation = {cv2.INTER_LINEAR: "bilinear", cv2.INTER_NEAREST: "nearest"}
    geometric_ok = getattr(t, "border_mode", cv2.BORDER_CONSTANT) == cv2.BORDER_CONSTANT and _zero(getattr(t, "fill", 0)) \
        and getattr(t, "interpolation", cv2.INTER_LINEAR) in interpolation
    if name == "Affine" and geometric_ok and not (t.fit_output or t.keep_ratio or t.balanced_scale) and t.translate_px is None:
        move = t.translate_percent or {"x": (0.0, 0.0), "y": (0.0, 0.0)}
        return dict(op="affine", p=p, rotate=_pair(t.rotate), scale_x=_pair(t.scale["x"]), scale_y=_pair(t.scale["y"]),
                    translate_x=_pair(move["x"]), translate_y=_pair(move["y"]), shear_x=_pair(t.shear["x"]),
                    shear_y=_pair(t.shear["y"]), interpolation=interpolation[t.interpolation])
    if name == "CropAndPad" and geometric_ok and t.px is None and t.keep_size and t.sample_independently \
            and isinstance(t.percent, (list, tuple)) and len(t.percent) == 2 and all(isinstance(v, (int, float)) for v in t.percent):
        return dict(op="crop_and_pad", p=p, percent=_pair(t.percent), interpolation=interpolation[t.interpolation])
    if name == "RandomBrightnessContrast" and t.brightness_by_max and not t.ensure_safe_range:
        return dict(op="brightness_contrast", p=p, brightness=_pair(t.brightness_limit), contrast=_pair(t.contrast_limit))
    if name == "ColorJitter":
        return dict(op="color_jitter", p=p, brightness=_pair(t.brightness), contrast=_pair(t.contrast),
                    saturation=_pair(t.saturation), hue=_pair(t.hue))
    if name == "GaussNoise" and t.per_channel and float(t.noise_scale_factor) == 1.0:
        return dict(op="gauss_noise", p=p, std=_pair(t.std_range), mean=_pair(t.mean_range))
    if name == "SaltAndPepper":
        return dict(op="salt_and_pepper", p=p, amount=_pair(t.amount), salt_vs_pepper=_pair(t.salt_vs_pepper))
    if name == "Sharpen" and t.method == "kernel":
        return dict(op="sharpen", p=p, alpha=_pair(t.alpha), lightness=_pair(t.lightness))
    if name == "GaussianBlur":
        return dict(op="gaussian_blur", p=p, sigma=_pair(t.sigma_limit), blur_limit=tuple(int(v) for v in t.blur_limit))
    if name in ("HorizontalFlip", "VerticalFlip"):
        return dict(op="hflip" if name == "HorizontalFlip" else "vflip", p=p)
    return None


def batched_specs(transforms: list[dict]) -> list[dict] | None:
    """The transform list (A.from_dict format) as plain specs for augment.core.transforms.batch_augment's
    batched ops, or None when any transform (a compose, an op or an argument) has none: then the
    pipeline runs in albumentations, image by image. The specs read albumentations' own normalised
    arguments (a scalar limit becomes its range as albumentations makes it)."""
    A = _albumentations()
    specs = []
    for item in transforms:
        t = A.from_dict({"transform": with_p(item)})
        spec = None if isinstance(t, A.BaseCompose) else _batched_spec(t)
        if spec is None:
            return None
        specs.append(spec)
    return specs


def plain_params(params: dict) -> dict:
    """Applied parameters without arrays (transformation matrices) and numpy scalars, for JSON."""
    out = {}
    for k, v in params.items():
        if isinstance(v, np.ndarray) or k in ("shape",):
            continue
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, dict):
            v = plain_params(v)
        elif isinstance(v, (list, tuple)):
            v = [x.item() if isinstance(x, np.generic) else x for x in v]
        out[k] = v
    return out


def copies_of(pipeline, image: np.ndarray, seed: int, copies: int):
    """`copies` augmentation results (dicts) of one image, drawn from the image's own seeded
    stream, so they do not depend on the order or the process images are handled in."""
    pipeline.set_random_seed(seed % 2**32)
    for _ in range(copies):
        yield pipeline(image=image)


def classical_augment(pipeline, batch, seed: int):
    """The pipeline (a Compose) on a uint8 torch batch (B, C, H, W), one seeded draw per image
    (augment_images: the same draws as the classical copies), image by image on the CPU."""
    import torch

    seeds = np.random.default_rng(seed).integers(2**32, size=len(batch)).tolist()
    images = np.ascontiguousarray(batch.permute(0, 2, 3, 1).numpy())
    try:
        out = augment_images(images, seeds, pipeline, 1)
    except ValueError as exc:  # a transform that changes the size cannot be reshaped back
        raise UserError(f"classical.transforms: on the fly (benchmark.classical_on_the_fly) the pipeline must keep "
                        f"the image size {images.shape[1]}x{images.shape[2]} ({exc})") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
