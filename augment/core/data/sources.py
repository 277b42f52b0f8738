"""Input sources (digits, ImageFolder, CSV, IDX): read and validate every image; hash the input's content."""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from augment.config import DataConfig
from augment.core.data.idx import read_idx_files, regular_file
from augment.safe_text import storable as safe_text
from augment.errors import UserError
from augment.registry import SPLITS

log = logging.getLogger("augment")

# The extensions torchvision.datasets.ImageFolder accepts, so `folder` input and `expanded/` agree.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class RawDataset:
    """Images as loaded from a source: uint8 (H, W, C) each, at native size."""

    images: list[np.ndarray]
    labels: list[str]
    origins: list[str]  # where each image came from (file path or digits[i])
    skipped: list[dict] = field(default_factory=list)  # {origin, label, code, reason} per input not used
    given: list[str | None] = field(default_factory=list)  # the split the data gives each image, or None
    given_by: dict[str, str] = field(default_factory=dict)  # split -> where the data gives it (folder, column)

    def __post_init__(self) -> None:
        self.given = self.given or [None] * len(self.images)


class BadInput(UserError):
    """One input file or row that cannot be used; data.on_bad_image: skip records it and goes on."""

    def __init__(self, origin: str, reason: str, label: str | None = None):
        super().__init__(f"{origin}: {reason}")
        self.origin, self.reason, self.label = origin, reason, label


class _Collector:
    """Adds images to a RawDataset; a BadInput either stops the run or, with skip, is recorded."""

    def __init__(self, on_bad_image: str):
        self.data = RawDataset([], [], [])
        self.skip = on_bad_image == "skip"

    def add(self, load: Callable[[], tuple[np.ndarray, str]], origin: str, label_hint: str | None = None,
            split: str | None = None) -> None:
        """load() returns (image, label) or raises BadInput; `split`: the split the data gives it."""
        try:
            image, label = load()
        except BadInput as bad:
            if not self.skip:
                raise
            log.warning("%s (skipped: data.on_bad_image is 'skip')", bad)
            self.data.skipped.append({"origin": bad.origin, "label": label_hint, "code": "bad_image", "reason": bad.reason})
            return
        self.data.images.append(image)
        self.data.labels.append(label)
        self.data.origins.append(origin)
        self.data.given.append(split)


# --------------------------------------------------------------------------- sources


def read_digits(channels: int = 1) -> RawDataset:
    """scikit-learn's bundled 8x8 digits (values 0..16) as uint8 images."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, :, :, None]
    if channels == 3:
        images = np.repeat(images, 3, axis=3)
    return RawDataset(
        images=list(images),
        labels=[str(int(t)) for t in bunch.target],
        origins=[f"digits[{i}]" for i in range(len(images))],
    )


def to_array(pil: Image.Image, channels: int, origin: str, alpha_background: str = "black") -> np.ndarray:
    """Any PIL mode -> uint8 (H, W, channels), by explicit rules:

    palette and bilevel images through their palette; 16-bit greyscale scaled from 0..65535;
    transparency (RGBA, LA, palette with a transparent index) composited onto a black or white
    background; CMYK, YCbCr, LAB, HSV converted by Pillow (no colour profile); 32-bit float
    and 32-bit integer images beyond 16 bits refused.
    """
    mode = pil.mode
    if mode == "F":
        raise BadInput(origin, "32-bit float images (mode F) are not supported; save them as 8- or 16-bit")
    if mode.startswith("I"):  # I, I;16, I;16B, I;16L, I;16N
        arr = np.asarray(pil)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise BadInput(origin, f"{mode} pixel values outside 0..65535 cannot be mapped to 8 bits")
        pil = Image.fromarray(((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif mode == "P":
        pil = pil.convert("RGBA" if "transparency" in pil.info else "RGB")
    elif mode == "PA":
        pil = pil.convert("RGBA")
    if pil.mode in ("RGBA", "LA", "La", "RGBa") or (pil.mode in ("L", "RGB") and "transparency" in pil.info):
        fill = (0, 0, 0, 255) if alpha_background == "black" else (255, 255, 255, 255)
        pil = Image.alpha_composite(Image.new("RGBA", pil.size, fill), pil.convert("RGBA"))
    arr = np.asarray(pil.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[:, :, None] if channels == 1 else arr


def _decode_side(d: DataConfig) -> int | None:
    """The shorter side a decoded image needs at most when data.image_size is a number: twice it,
    so a large photo is decoded small (Pillow's draft and reduce) and the resize to the working
    size still has twice its pixels to work from. None for `native` and `auto`, which choose the
    working size from the images' own sizes (memory stays bounded by data.max_pixels)."""
    return 2 * d.image_size if isinstance(d.image_size, int) else None


def _check_regular(path: Path, origin: str) -> None:
    """A BadInput naming origin (and path, when origin is another name for it: a link, a CSV row)
    unless path is a regular file: a FIFO would block Image.open, a device never end."""
    if not regular_file(path):
        what = "" if origin == safe_text(str(path)) else f" ({safe_text(str(path))})"
        raise BadInput(origin, f"not a regular file{what}: a FIFO, device or socket; only image files are read")


def _open_image(path: Path, d: DataConfig, origin: str | None = None) -> np.ndarray:
    """Decode one image file (a regular file only): size checked against data.max_pixels before
    decoding, EXIF orientation applied, mode converted by `to_array`'s rules. Any failure is a
    BadInput naming `origin` (the file as the dataset names it; default: path)."""
    origin = origin or safe_text(str(path))
    _check_regular(path, origin)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as pil:  # reads the header only
                w, h = pil.size
                if w * h > d.max_pixels:
                    raise BadInput(origin, f"{w}x{h} image has more than data.max_pixels={d.max_pixels} pixels "
                                           "(a decompression bomb, or far larger than this tool needs)")
                keep = _decode_side(d)
                if keep and min(w, h) >= 2 * keep:  # a JPEG decodes at 1/2, 1/4 or 1/8 of its size directly
                    pil.draft(None, (w * keep // min(w, h), h * keep // min(w, h)))
                pil = ImageOps.exif_transpose(pil)  # decodes; a camera's rotation flag is applied
                if keep and (factor := min(pil.size) // keep) >= 2:  # any other format: reduced once decoded
                    pil = pil.reduce(factor)
                return to_array(pil, d.channels, origin, d.alpha_background)
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001  (decoders raise OSError, SyntaxError, ValueError, zlib and struct errors)
        raise BadInput(origin, f"not a readable image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


MAX_LABEL_BYTES = 255  # a class is a folder of expanded/: the longest name a file system allows


def _check_label(label: str, where: str) -> str:
    label = str(label).strip()
    if not label or label in (".", "..") or label.startswith(".") or any(c in label for c in "/\\\0"):
        raise BadInput(where, f"class name {label!r} cannot be used as a folder name")
    if (n := len(label.encode("utf-8", "surrogateescape"))) > MAX_LABEL_BYTES:
        raise BadInput(where, f"class name {label[:40]!r}... is {n} bytes long; a folder name holds at most "
                              f"{MAX_LABEL_BYTES}: shorten it")
    return label


def _inside(path: Path, root: Path, origin: str, what: str) -> Path:
    """path resolved (symlinks followed); a BadInput if it is outside root."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise BadInput(origin, f"{what} {resolved} is outside {root}; files must stay inside the dataset")
    return resolved


def subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_folders(root: Path) -> list[tuple[str | None, Path]]:
    """(split, folder of class folders): root/{train,val,test} when the data gives its split
    (train/ is needed, val/ and test/ are optional), else (None, root)."""
    tops = subfolders(root)
    if tops and {p.name for p in tops} <= set(SPLITS) and "train" in {p.name for p in tops}:
        return [(top.name, top) for top in tops]
    return [(None, root)]


def class_files(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) anywhere under a class folder, hidden ones left out; a class
    folder without images is a one-line error naming it (ingest and `augment init` agree). Special
    files (a FIFO, a device) count as files here: the image reader refuses them by name."""
    files = sorted(f for f in class_dir.rglob("*") if not f.name.startswith(".") and not f.is_dir())
    images = [f for f in files if f.suffix.lower() in IMG_EXTENSIONS]
    if not images:
        raise UserError(f"{safe_text(str(class_dir))}: class folder has no images ({', '.join(IMG_EXTENSIONS)}); "
                        "remove it or add images")
    return images, sorted(set(files) - set(images))


def read_folder(d: DataConfig, path: Path | None = None) -> RawDataset:
    """ImageFolder layout: root/<class>/<image>, or root/{train,val,test}/<class>/<image> when the
    data gives its split (split_folders); every image file is opened and checked."""
    root = Path(path or d.path)
    if not root.is_dir():
        raise UserError(f"{root}: data.path is not a folder")
    out = _Collector(d.on_bad_image)
    for split, top in split_folders(root):
        _read_classes(top, root.resolve(), d, out, split=split)
        if split is not None:
            out.data.given_by[split] = safe_text(str(top))
    return out.data


def _read_classes(root: Path, real_root: Path, d: DataConfig, out: _Collector, split: str | None = None) -> None:
    classes = subfolders(root)
    if not classes:
        raise UserError(f"{root}: no class sub-folders found (expected {root}/<class>/<image>)")
    seen: dict[str, str] = {}
    for class_dir in classes:
        # a folder name that is not UTF-8 still names a class: its odd bytes become U+FFFD
        name = class_dir.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        where = safe_text(str(class_dir))
        label = _check_label(name, where)
        if label in seen:  # caf\xe9 and caf\xe8 both read caf\ufffd: never merged silently
            raise UserError(f"{where}: class folder names the same class {label!r} as {seen[label]} (their names "
                            "differ only in bytes that are not UTF-8); rename one of them")
        seen[label] = where
        if not class_dir.resolve().is_relative_to(real_root):
            raise UserError(f"{where}: class folder is a link to {class_dir.resolve()}, outside the dataset {real_root}")
        images, others = class_files(class_dir)
        for f in others:
            log.warning("%s: skipped, not an image extension (%s)", safe_text(str(f)), ", ".join(IMG_EXTENSIONS))
        for f in images:
            origin = safe_text(str(f))
            out.add(lambda f=f, origin=origin: (_open_image(_inside(f, real_root, origin, "symlink target"), d, origin), label),
                    origin, label, split)


def csv_table(csv_path: Path) -> pd.DataFrame:
    """A data.source csv file's table, every cell a string; a one-line error if it is not a file, not
    a readable CSV, or lacks the path and label columns."""
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: data.path is not a file")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{csv_path}: not a readable CSV ({str(exc).strip()})") from None
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise UserError(f"{csv_path}: missing column(s) {sorted(missing)}; expected columns path,label")
    return table


def read_csv(d: DataConfig, path: Path | None = None) -> RawDataset:
    """A CSV with columns path,label and optionally split (train, val, test, or empty: drawn by
    hash); paths are relative to the CSV's folder and must stay inside it."""
    csv_path = Path(path or d.path)
    table = csv_table(csv_path)
    base = csv_path.parent.resolve()
    out = _Collector(d.on_bad_image)

    def load(where: str, rel: str, label: str) -> tuple[np.ndarray, str]:
        if not rel.strip():
            raise BadInput(where, "empty path")
        if not label.strip():
            raise BadInput(where, "empty label")
        label = _check_label(label, where)
        f = _inside(csv_path.parent / rel, base, where, "path")
        if not f.exists():
            raise BadInput(where, f"image file {f} not found")
        _check_regular(f, where)
        return _open_image(f, d), label

    splits = table["split"].str.strip().str.lower() if "split" in table else pd.Series([""] * len(table))
    for row_no, (rel, label, split) in enumerate(zip(table["path"], table["label"], splits), start=2):
        where = f"{csv_path}:{row_no}"
        if split not in ("", *SPLITS):
            raise UserError(f"{where}: split {split!r} is not train, val or test (or empty: drawn by hash)")
        out.add(lambda where=where, rel=rel, label=label: load(where, rel, label), where, label.strip() or None,
                split or None)
        if split:
            out.data.given_by.setdefault(split, f"{csv_path} (split column)")
    return out.data


def read_idx(path: Path, channels: int = 1) -> RawDataset:
    """MNIST-style IDX files (augment.core.data.idx)."""
    images, labels, images_path = read_idx_files(path, channels)
    return RawDataset(list(images), labels, [f"{images_path}[{i}]" for i in range(len(images))])


def read_source(cfg: DataConfig) -> RawDataset:
    if cfg.source == "digits":
        data = read_digits(cfg.channels)
    elif cfg.source == "folder":
        data = read_folder(cfg)
    elif cfg.source == "csv":
        data = read_csv(cfg)
    elif cfg.source == "idx":
        data = read_idx(cfg.path, cfg.channels)
    else:  # the config model only admits the sources above
        raise AssertionError(cfg.source)
    if cfg.test_path is not None:
        _add_test_set(data, cfg)
    where = cfg.path or cfg.source
    drop_duplicates(data, cfg.on_bad_image)
    if not data.images:
        raise UserError(f"{where}: no images found" + (f" ({len(data.skipped)} skipped)" if data.skipped else ""))
    counts = pd.Series(data.labels).value_counts()
    if len(counts) < 2:
        raise UserError(f"{where}: found one class ({counts.index[0]!r}); at least two are needed")
    small = counts[counts < cfg.min_per_class]
    if len(small):
        label, n = small.index[0], int(small.iloc[0])
        raise UserError(
            f"{where}: class {label!r} has {n} image(s); at least {cfg.min_per_class} are needed "
            "(data.min_per_class) to split off val and test images"
        )
    return data


def _add_test_set(data: RawDataset, cfg: DataConfig) -> None:
    """data.test_path: the test split, read like data.path (a folder of class folders, a CSV, IDX files)."""
    if "test" in data.given_by:
        raise UserError(f"data.test_path: {data.given_by['test']} already gives the test split; remove one of them")
    path = Path(cfg.test_path)
    if not path.exists():
        raise UserError(f"data.test_path {path} does not exist")
    test = {"folder": read_folder, "csv": read_csv}.get(cfg.source, lambda c, p: read_idx(p, c.channels))(cfg, path)
    if any(s not in (None, "test") for s in test.given):
        raise UserError(f"data.test_path {path}: holds a train or val split; it must hold test images only")
    for name in ("images", "labels", "origins", "skipped"):
        getattr(data, name).extend(getattr(test, name))
    data.given.extend(["test"] * len(test.images))
    data.given_by["test"] = f"{path} (data.test_path)"


def drop_duplicates(data: RawDataset, on_bad_image: str) -> None:
    """Exact duplicates (identical decoded pixels) would land in train and test: leakage.

    Copies with the same label are dropped (the first, in reading order, stays) and recorded;
    copies with different labels are an error, or with on_bad_image 'skip' all are dropped. A
    copy the data puts in another split (folders, split column, data.test_path) is always an error.
    """
    first: dict[bytes, int] = {}
    drop: dict[int, tuple[str, str]] = {}  # index -> (reason code, message)
    for i, image in enumerate(data.images):
        key = content_key(image)
        j = first.setdefault(key, i)
        if j == i:
            continue
        if data.given[i] != data.given[j]:
            raise UserError(f"{data.origins[j]} ({data.given[j] or 'no given split'}) and {data.origins[i]} "
                            f"({data.given[i] or 'no given split'}) are the same image; an image can sit in one split "
                            "only: remove one copy")
        if data.labels[i] == data.labels[j]:
            drop[i] = ("duplicate", f"exact duplicate of {data.origins[j]}")
            continue
        conflict = f"the same image as {data.origins[j]} (class {data.labels[j]!r}) but labelled {data.labels[i]!r}"
        if on_bad_image != "skip":
            raise UserError(f"{data.origins[i]}: {conflict}; fix the label or set data.on_bad_image: skip")
        drop[i] = ("label_conflict", conflict)
        drop.setdefault(j, ("label_conflict", f"the same image as {data.origins[i]} under another label"))
    if not drop:
        return
    log.warning("ingest: %d duplicate or conflicting image(s) left out (see the manifest's reason column)", len(drop))
    for i, (code, reason) in sorted(drop.items()):
        data.skipped.append({"origin": data.origins[i], "label": data.labels[i], "code": code, "reason": reason})
    keep = [i for i in range(len(data.images)) if i not in drop]
    data.images, data.labels, data.origins, data.given = (
        [seq[i] for i in keep] for seq in (data.images, data.labels, data.origins, data.given))


# --------------------------------------------------------------------------- content


def content_key(image: np.ndarray) -> bytes:
    """An image's identity (duplicates, its hash split, its id): sha256 of its shape and pixels."""
    return hashlib.sha256(repr(image.shape).encode() + image.tobytes()).digest()
