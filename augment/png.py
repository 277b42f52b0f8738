"""PNG input/output for the run directory: numpy and Pillow only, so worker processes start fast."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from augment.atomic import write_bytes


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, C) with C in {1, 3} -> PNG bytes."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected uint8 (H, W, 1|3), got {image.dtype} {image.shape}")
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=1)  # 3-4x faster than the default 6, files ~10% larger
    return buf.getvalue()


def save_png(run_dir: Path, rel_path: str, image: np.ndarray) -> str:
    """Write one image atomically under the run directory; returns the file's sha256."""
    return save_encoded(run_dir, rel_path, encode_png(image))


def save_encoded(run_dir: Path, rel_path: str, data: bytes) -> str:
    """Write PNG bytes (encode_png's) atomically under the run directory; returns their sha256."""
    write_bytes(Path(run_dir) / rel_path, data)
    return hashlib.sha256(data).hexdigest()


def to_channels(pil: Image.Image, channels: int) -> np.ndarray:
    """PIL image -> uint8 (H, W, channels)."""
    arr = np.asarray(pil.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[:, :, None] if channels == 1 else arr


def fit_to(pil: Image.Image, size: tuple[int, int], fit: str = "pad") -> Image.Image:
    """`pil` at `size` (H, W), aspect kept: "pad" (letterbox, black borders) or "crop" (center crop)."""
    target = (size[1], size[0])  # PIL sizes are (W, H)
    if pil.size == target:
        return pil
    if fit == "crop":
        return ImageOps.fit(pil, target, Image.Resampling.BILINEAR)
    return ImageOps.pad(pil, target, Image.Resampling.BILINEAR, color=0)


def load_each(run_dir: Path, rel_paths, size: tuple[int, int] | None = None, channels: int = 1,
              fit: str = "pad") -> list[np.ndarray]:
    """Read PNGs from the run directory, each uint8 (H, W, C): fitted to `size` (H, W) if given, else
    at its stored size (a folder's images keep theirs until a stage fits them to the working size)."""
    out = []
    for rel in rel_paths:
        with Image.open(Path(run_dir) / rel) as pil:
            if size is not None:
                pil = fit_to(pil, size, fit)
            out.append(to_channels(pil, channels))
    return out


def load_images(run_dir: Path, rel_paths, size: tuple[int, int] | None = None, channels: int = 1,
                fit: str = "pad") -> np.ndarray:
    """Read PNGs from the run directory into uint8 (N, H, W, C), fitted to `size` (H, W) if given
    (without one, the images must share their size)."""
    out = load_each(run_dir, rel_paths, size, channels, fit)
    if not out:
        h, w = size or (0, 0)
        return np.zeros((0, h, w, channels), np.uint8)
    return np.stack(out)
