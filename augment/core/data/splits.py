"""Splits and scarcity: which image goes to train, val or test, and how many train images a class keeps."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
from sklearn.model_selection import train_test_split

from augment.config import DataConfig
from augment.errors import UserError
from augment.registry import SPLITS

log = logging.getLogger("augment")


def split_indices(labels: list[str], val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Stratified, seeded split; returns an array of 'train' | 'val' | 'test' per image."""
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    n_test, n_val = round(test_fraction * len(idx)), round(val_fraction * len(idx))  # counts, not shares
    n_classes = len(set(labels.tolist()))
    for key, n in (("data.test_fraction", n_test), ("data.val_fraction", n_val)):
        if n < n_classes:  # a stratified split needs one image per class on each side
            raise UserError(f"config key '{key}': {n} of {len(idx)} images for {n_classes} classes; at least one "
                            f"image per class is needed in each split: raise it or add images")
    rest, test = train_test_split(idx, test_size=n_test, stratify=labels, random_state=seed % 2**32)
    train, val = train_test_split(rest, test_size=n_val, stratify=labels[rest], random_state=(seed + 1) % 2**32)
    split = np.empty(len(labels), dtype=object)
    split[train], split[val], split[test] = "train", "val", "test"
    return split


def _unit(key: bytes, seed: int) -> float:
    """A number in [0, 1) from the image's content alone (and the seed): its place in the split bands."""
    return int.from_bytes(hashlib.sha256(seed.to_bytes(8, "little") + key).digest()[:8], "little") / 2**64


def check_given(labels: list[str], given: list[str | None], origins: dict[str, str]) -> None:
    """A split the user gave (folder layout, CSV column, data.test_path) must hold every class."""
    labels_arr, given_arr = np.asarray(labels), np.asarray(given, dtype=object)
    classes = sorted(set(labels))
    for s in SPLITS:
        if not (given_arr == s).any():
            continue
        have = set(labels_arr[given_arr == s].tolist())
        missing = [c for c in classes if c not in have]
        if missing:
            raise UserError(f"{origins[s]}: class {missing[0]!r} has no image in the {s} split"
                            + (f" (nor {len(missing) - 1} more classes)" if len(missing) > 1 else "")
                            + "; every split the data gives needs every class")


def hash_split(keys: list[bytes], labels: list[str], given: list[str | None], val_fraction: float,
               test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(split, how) per image: a given split stays; any other image goes by a stable hash of its content.

    Each image's hash puts it in a band: [0, test) test, [test, test + val) val, the rest train.
    A split the user gave is not drawn here (its band is empty); with no val given, val is drawn
    from the given train images too. Adding or removing images never
    moves another image, since an image's band depends on its own content only; the one exception
    is a class that would have no image in a drawn split: its train image nearest the band moves
    there ("hash_fill"), so every class stays in every split.
    """
    labels_arr = np.asarray(labels)
    split = np.asarray(given, dtype=object).copy()
    how = np.where(split == None, "hash", "given").astype(object)  # noqa: E711 (elementwise)
    test = 0.0 if (split == "test").any() else test_fraction
    val = 0.0 if (split == "val").any() else val_fraction
    u = np.array([_unit(k, seed) for k in keys])
    free = how == "hash"
    split[free & (u < test)] = "test"
    # val is drawn from the rest: the undivided images, and the given train images when no val is given
    pool = (free & (u >= test)) | ((split == "train") & (val > 0))
    v = np.where(free, (u - test) / (1 - test), u)  # the place in the rest, uniform in [0, 1)
    split[pool] = np.where(v[pool] < val / (1 - test), "val", "train")
    how[pool & (split == "val")] = "hash"
    for label in sorted(set(labels)):  # a class with every image drawn into val or test: its nearest to train moves back
        mine = labels_arr == label
        if not (split[mine] == "train").any():
            drawn_ = [s for s in ("test", "val") if ((split[mine] == s) & free[mine]).sum() > 1]
            if not drawn_:
                raise UserError(f"class {label!r} has no train image: every image of it is in val or test; add images")
            spare = np.flatnonzero(mine & free & (split == max(drawn_, key=lambda s: (split[mine] == s).sum())))
            pick = spare[np.argmax(v[spare])]
            split[pick], how[pick] = "train", "hash_fill"
    for s, drawn, spare_of in (("test", test, free), ("val", val, pool)):
        if not drawn:
            continue
        for label in sorted(set(labels)):
            mine = labels_arr == label
            if (split[mine] == s).any():
                continue
            spare = np.flatnonzero(mine & spare_of & (split == "train"))
            if len(spare) < 2:
                raise UserError(f"class {label!r}: too few images to give the {s} split one; add images "
                                "(or give the split: train/ val/ test/ folders, a split column, data.test_path)")
            pick = spare[np.argmin(v[spare] if s == "val" else u[spare])]
            split[pick], how[pick] = s, "hash_fill"
    return split, how


def scarce_counts(classes: list[str], per_class: int, imbalance_ratio: float) -> dict[str, int]:
    """Train images kept per class: per_class for the first class, down to per_class/ratio for the last."""
    k = len(classes)
    out = {}
    for rank, label in enumerate(classes):
        frac = rank / (k - 1) if k > 1 else 0.0
        out[label] = max(1, int(round(per_class / imbalance_ratio**frac)))
    return out


def simulate_scarcity(labels, split: np.ndarray, counts: dict[str, int], seed: int) -> np.ndarray:
    """Keep a seeded subset of counts[class] train images per class; returns a boolean keep-mask."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = split != "train"
    short = []
    for label, n in counts.items():
        train_idx = np.flatnonzero((labels == label) & (split == "train"))
        if len(train_idx) < n:
            short.append(f"{label!r} ({len(train_idx)} < {n})")
        keep[rng.permutation(train_idx)[:n]] = True
    if short:
        log.warning("data.per_class: fewer train images than asked for in class(es) %s", ", ".join(short))
    return keep


AUTO_MAX_SIZE = 64  # data.image_size auto never picks more: small CNNs and GANs on a CPU


def auto_side(shorter_sides) -> int:
    """data.image_size auto over images of several sizes: the median shorter side, at most AUTO_MAX_SIZE
    (ingest over the decoded images; the plan over the folder's headers, before ingest has run)."""
    return int(min(AUTO_MAX_SIZE, np.median(shorter_sides)))


def working_size(images: list[np.ndarray], origins: list[str], image_size: int | str, where: str
                 ) -> tuple[tuple[int, int], str]:
    """The (H, W) every stage trains at, and a sentence saying how it was chosen.

    An int: that square. "native": the images' shared size (different sizes are an error naming
    an example file of each). "auto": the shared size when there is one, else a square of the
    median shorter side, at most AUTO_MAX_SIZE pixels.
    """
    if isinstance(image_size, int):
        return (image_size, image_size), f"data.image_size {image_size}: every image at {image_size}x{image_size}"
    examples: dict[tuple[int, int], str] = {}
    for im, origin in zip(images, origins):
        examples.setdefault(im.shape[:2], origin)
    if len(examples) == 1:
        (h, w), = examples
        return (h, w), f"every image is {h}x{w}: the working size"
    if image_size == "native":
        listed = ", ".join(f"{h}x{w} (e.g. {origin})" for (h, w), origin in sorted(examples.items())[:4])
        more = f" and {len(examples) - 4} more sizes" if len(examples) > 4 else ""
        raise UserError(f"{where}: data.image_size is native but the images differ in size: {listed}{more}; "
                        "set data.image_size to auto or a number")
    side = auto_side([min(im.shape[:2]) for im in images])
    lo, hi = min(examples), max(examples)
    return (side, side), (f"data.image_size auto: {len(examples)} image sizes ({lo[0]}x{lo[1]} to {hi[0]}x{hi[1]}); "
                          f"working size {side}x{side} (the median shorter side, at most {AUTO_MAX_SIZE})")


def train_counts(d: DataConfig, classes: list[str], where: str) -> dict[str, int] | None:
    """Train images to keep per class (scarcity simulation), or None to keep all."""
    if d.class_counts is not None:
        unknown = sorted(set(d.class_counts) - set(classes))
        if unknown:
            raise UserError(f"data.class_counts names class(es) {unknown} not found in {where}")
        missing = sorted(set(classes) - set(d.class_counts))
        if missing:
            raise UserError(f"data.class_counts has no count for class(es) {missing}")
        return {c: d.class_counts[c] for c in classes}
    if d.per_class is not None:
        return scarce_counts(classes, d.per_class, d.imbalance_ratio)
    return None
