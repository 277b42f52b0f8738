"""Stage ingest: read the source, validate every image, split train/val/test, simulate scarcity."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from augment import rundir
from augment.config import Config
from augment.core.data.signature import input_signature
from augment.core.data.sources import content_key, read_source
from augment.core.data.splits import check_given, hash_split, simulate_scarcity, split_indices, train_counts, working_size
from augment.errors import UserError
from augment.runtime import derive_seed

log = logging.getLogger("augment")


def check(cfg: Config) -> None:
    """The input must exist before any work starts."""
    if cfg.data.path is not None and not Path(cfg.data.path).exists():
        raise UserError(f"data.path {cfg.data.path} does not exist")


def fingerprint_extra(cfg: Config) -> str:
    """The input's content: a re-synced copy of the same images is unchanged, an edited one is not."""
    return input_signature(cfg.data)


def _split(cfg: Config, raw) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """(split, how it was decided, content key) per image: the data's own split where it gives one,
    else data.split (hash: by each image's content; seeded: exact stratified fractions)."""
    d = cfg.data
    check_given(raw.labels, raw.given, raw.given_by)
    keys = [content_key(image) for image in raw.images]
    seed = derive_seed(cfg.seed, "split")
    if d.split == "seeded":
        if raw.given_by:
            raise UserError(f"data.split: seeded cannot be combined with the split {sorted(raw.given_by.values())[0]} "
                            "gives; use data.split: hash")
        return split_indices(raw.labels, d.val_fraction, d.test_fraction, seed), np.full(len(keys), "seeded"), keys
    split, how = hash_split(keys, raw.labels, raw.given, d.val_fraction, d.test_fraction, seed)
    return split, how, keys


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    """Real PNGs and manifest rows for every kept image (the manifest starts afresh here)."""
    d = cfg.data
    raw = read_source(d)
    where = str(d.path or d.source)
    size, how = working_size(raw.images, raw.origins, d.image_size, where)
    if size[0] != size[1] or any(im.shape[:2] != size for im in raw.images):
        how += f"; images are fitted to it by {'padding' if d.resize == 'pad' else 'center-cropping'} (data.resize)"
    log.info("ingest: %s", how)
    split, origin, keys = _split(cfg, raw)
    keep = np.ones(len(raw.labels), bool)
    counts = train_counts(d, sorted(set(raw.labels)), where)
    if counts is not None:
        draw = derive_seed(cfg.seed, "scarcity") if d.scarcity_seed is None else derive_seed(d.scarcity_seed, "draw")
        keep = simulate_scarcity(raw.labels, split, counts, draw)
    rows = []
    for i in np.flatnonzero(keep):
        image, label = raw.images[i], raw.labels[i]
        rid = f"real-{keys[i].hex()[:16]}"  # from the content: the same image has the same id in every run
        rel = f"images/real/{label}/{rid}.png"
        rows.append(dict(
            id=rid, path=rel, label=label, split=split[i], split_origin=origin[i], source="real", parent_id=None,
            seed=None, generator=raw.origins[i], sha256=rundir.save_png(run_dir, rel, image),
            height=image.shape[0], width=image.shape[1], channels=image.shape[2], kept=True,
        ))
    for n, skip in enumerate(raw.skipped):  # inputs left out: in the manifest, in no split
        rows.append(dict(id=f"skipped-{n:06d}", path=None, label=skip["label"], split="excluded", source="real",
                         generator=skip["origin"], kept=False, reason_code=skip["code"], reason=skip["reason"]))
    frame = rundir.normalise(rows)
    rundir.write_manifest(run_dir, frame)
    per_split = frame[frame["kept"]].groupby(["split", "label"]).size().unstack(fill_value=0)
    return {
        "size": list(size),
        "size_note": how,
        "fit": d.resize,
        "channels": d.channels,
        "classes": sorted(set(raw.labels)),
        "counts": {s: {str(k): int(v) for k, v in row.items()} for s, row in per_split.iterrows()},
        "split": {"method": d.split, "given_by": raw.given_by,
                  "origins": {str(k): int(v) for k, v in frame.loc[frame["kept"], "split_origin"].value_counts().items()}},
        "dropped_by_scarcity": int((~keep).sum()),
        "skipped_inputs": len(raw.skipped),
    }
