"""MNIST-style IDX files (optionally gzipped): the images and labels files of one set."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from augment.errors import UserError


def _read_idx_array(path: Path) -> np.ndarray:
    """One IDX file (optionally gzipped) of unsigned bytes -> array of its declared shape."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable IDX file ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise UserError(f"{path}: IDX type 0x{raw[2]:02x} is not supported (only unsigned bytes, 0x08)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path}: IDX header declares {dims} ({int(np.prod(dims))} bytes), file holds {data.size}")
    return data.reshape(dims)


def read_idx_files(path: Path, channels: int = 1) -> tuple[np.ndarray, list[str], Path]:
    """(uint8 images (N, H, W, C), labels, the images file) from a folder holding one
    *images-idx3-ubyte[.gz] and one *labels-idx1-ubyte[.gz] file, or from the images file itself
    (its labels file is found by name)."""
    path = Path(path)
    if path.is_dir():
        found = {kind: sorted(path.glob(f"*{kind}-idx{n}-ubyte*")) for kind, n in (("images", 3), ("labels", 1))}
        for kind, files in found.items():
            if len(files) != 1:
                raise UserError(f"{path}: expected one *{kind}-idx file, found {len(files)}")
        images_path, labels_path = found["images"][0], found["labels"][0]
    elif path.is_file():
        images_path = path
        labels_path = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
        if labels_path == path or not labels_path.is_file():
            raise UserError(f"{path}: no labels file beside it (expected {labels_path.name})")
    else:
        raise UserError(f"{path}: data.path does not exist")
    images, labels = _read_idx_array(images_path), _read_idx_array(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{images_path}: {images.shape} images do not match {labels_path.name}'s {labels.shape} labels")
    images = images[:, :, :, None]
    if channels == 3:
        images = np.repeat(images, 3, axis=3)
    return images, [str(int(t)) for t in labels], images_path
