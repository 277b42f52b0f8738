"""Stage classical: albumentations copies of the real train images (multiplier, target or balance)."""

from __future__ import annotations

import math
from pathlib import Path

from augment import rundir
from augment.config import Config
from augment.core.transforms.augmentation import validate_transforms
from augment.core.transforms.copies import auto_workers, copies_per_class, plan_copies, run_jobs, transforms_for
from augment.errors import UserError
from augment.runtime import derive_seed


def check(cfg: Config) -> None:
    """A custom transform list is built strictly at config load, before any work."""
    if cfg.classical.transforms is not None:
        try:
            validate_transforms(cfg.classical.transforms)
        except ValueError as exc:
            raise UserError(f"config key 'classical.transforms': {exc}") from None


def fingerprint_extra(cfg: Config) -> str:
    """The content of classical.pipeline_file: editing the file re-runs the stage."""
    path = cfg.classical.pipeline_file
    return Path(path).read_text() if path is not None and Path(path).is_file() else ""


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    """PNGs and manifest rows of the augmented copies; the applied parameters of each in `params`."""
    c = cfg.classical
    plan = []
    if c.enabled:
        info = rundir.ingest_info(run_dir)
        frame = rundir.read_manifest(run_dir)
        train = frame[(frame["split"] == "train") & (frame["source"] == "real")].reset_index(drop=True)
        extra = copies_per_class(train.groupby("label").size().to_dict(), c)
        plan = plan_copies(train[["id", "path", "label"]].to_dict("records"), extra,
                           lambda pid: derive_seed(cfg.seed, "classical", pid))
    if not plan:
        rundir.replace_source(run_dir, "classical", [])
        return {"images": 0}
    transforms = transforms_for(c, info["channels"])
    name = "custom" if c.transforms is not None or c.pipeline_file is not None else c.preset
    n_out = sum(k for _, _, k in plan)
    size = info["size"]
    workers = auto_workers(n_out, size[0] * size[1] * info["channels"], c.workers)
    per_job = math.ceil(len(plan) / (workers * 4))  # a few jobs per worker evens out the load
    jobs = rundir.classical_jobs(run_dir, plan, per_job, transforms=transforms)
    rows = []
    for j, made in enumerate(run_jobs(jobs, workers, progress)):  # each job's copies written as it comes back
        rows += rundir.classical_rows(run_dir, plan[j * per_job : (j + 1) * per_job], made, f"albumentations:{name}")
    rundir.replace_source(run_dir, "classical", rows)
    per_class: dict[str, int] = {}
    for row in rows:
        per_class[row["label"]] = per_class.get(row["label"], 0) + 1
    return {"images": len(rows), "per_class": per_class, "workers": workers, "pipeline": transforms}
