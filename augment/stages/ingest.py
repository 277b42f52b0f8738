"""Stage ingest: read the source, validate every image, split train/val/test, simulate scarcity."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from augment import rundir
from augment.config import Config
from augment.core.sources import input_signature, read_source
from augment.core.splits import simulate_scarcity, split_indices, train_counts, working_size
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


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    """Real PNGs and manifest rows for every kept image (the manifest starts afresh here)."""
    d = cfg.data
    raw = read_source(d)
    where = str(d.path or d.source)
    size, how = working_size(raw.images, raw.origins, d.image_size, where)
    if size[0] != size[1] or any(im.shape[:2] != size for im in raw.images):
        how += f"; images are fitted to it by {'padding' if d.resize == 'pad' else 'center-cropping'} (data.resize)"
    log.info("ingest: %s", how)
    split = split_indices(raw.labels, d.val_fraction, d.test_fraction, derive_seed(cfg.seed, "split"))
    keep = np.ones(len(raw.labels), bool)
    counts = train_counts(d, sorted(set(raw.labels)), where)
    if counts is not None:
        draw = derive_seed(cfg.seed, "scarcity") if d.scarcity_seed is None else derive_seed(d.scarcity_seed, "draw")
        keep = simulate_scarcity(raw.labels, split, counts, draw)
    rows = []
    for i in np.flatnonzero(keep):
        image, label = raw.images[i], raw.labels[i]
        rid = f"real-{i:06d}"
        rel = f"images/real/{label}/{rid}.png"
        rows.append(dict(
            id=rid, path=rel, label=label, split=split[i], source="real", parent_id=None,
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
        "dropped_by_scarcity": int((~keep).sum()),
        "skipped_inputs": len(raw.skipped),
    }
