"""MNIST-style IDX files (optionally gzipped): the images and labels files of one set."""

from __future__ import annotations

import gzip
import stat
import struct
import zlib
from pathlib import Path

import numpy as np

from augment.errors import UserError


def regular_file(path: Path) -> bool:
    """path (symlinks followed) is a regular file: never a FIFO, device or socket, whose reading
    can block or never end."""
    try:
        return stat.S_ISREG(Path(path).stat().st_mode)
    except OSError:
        return False


# The most bytes one IDX array may declare (2 GiB; MNIST's train images are 47 MB): the header's
# dimensions bound what is read and decompressed, so a gzip bomb or a lying header stops at once.
MAX_IDX_BYTES = 2**31


def _read_idx_array(path: Path, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """One IDX file (optionally gzipped) of unsigned bytes -> array of its declared shape; reads
    no more than the header declares (and at most max_bytes), from a regular file only."""
    if not regular_file(path):
        raise UserError(f"{path}: not a regular file (a FIFO, device or socket); only IDX files are read")
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0":
                raise UserError(f"{path}: not an IDX file (bad magic number)")
            if head[2] != 0x08:
                raise UserError(f"{path}: IDX type 0x{head[2]:02x} is not supported (only unsigned bytes, 0x08)")
            shape = f.read(4 * head[3])
            if len(shape) < 4 * head[3]:
                raise UserError(f"{path}: IDX header is cut short")
            dims = struct.unpack(f">{head[3]}I", shape)
            size = int(np.prod(dims, dtype=np.int64))
            if size > max_bytes:
                raise UserError(f"{path}: IDX header declares {dims} ({size} bytes), more than the {max_bytes} "
                                "bytes this tool reads from one file")
            raw = f.read(size + 1)  # one byte more: a file longer than its header says is refused too
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: not a readable IDX file ({type(exc).__name__}: {exc})") from None
    if len(raw) != size:
        held = f"holds {len(raw)}" if len(raw) < size else "holds more"
        raise UserError(f"{path}: IDX header declares {dims} ({size} bytes), file {held}")
    return np.frombuffer(raw, np.uint8).reshape(dims)


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
