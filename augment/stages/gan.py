"""Stage gan: train the class-conditional DCGAN on the real train split; resumes from gan/checkpoint.pt.

With gan.shards > 1 (per_class mode) each block of classes trains (or resumes) into
gan/shards/<i>/ as a part of its own, which the flow may run side by side (`parts`,
`run_part`); `run` then trains any part not finished and merges them exactly.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from augment import rundir
from augment.atomic import write_torch
from augment.config import Config
from augment.core.accel import resolve_precision
from augment.core.checkpoint import read_checkpoint
from augment.core.ensemble_train import merge_histories, train_generators
from augment.core.gan_train import Progress, class_shards, concat_grouped, merge_checkpoints, snapshot_path, snapshots, train_gan
from augment.core.sampling import interpolate, load_generator, sample, save_grid
from augment.runtime import derive_seed, resolve_device


def shard_dir(run_dir: Path, shard: int) -> Path:
    return Path(run_dir) / "gan" / "shards" / f"{shard:02d}"


def parts(cfg: Config, run_dir: Path) -> int:
    """How many independent parts the stage's training splits into (1: no fan-out)."""
    if not cfg.gan.enabled or cfg.gan.shards == 1:
        return 1
    return len(class_shards(len(rundir.ingest_info(run_dir)["classes"]), cfg.gan.shards))


def run_part(cfg: Config, run_dir: Path, shard: int, fingerprint: str, progress: Progress | None = None) -> dict:
    """Train (or resume, or find finished) one shard's classes into gan/shards/<shard>/."""
    info = rundir.ingest_info(run_dir)
    classes = class_shards(len(info["classes"]), cfg.gan.shards)[shard]
    (x, y, _), (x_val, y_val, _) = rundir.load_split(run_dir, "train", cfg.gan.sources), rundir.load_split(run_dir, "val")
    keep, keep_val = np.isin(y, classes), np.isin(y_val, classes)
    state = train_gan(
        x[keep], y[keep] - classes[0], len(classes), cfg.gan, seed=derive_seed(cfg.seed, "gan", "shard", shard),
        device=resolve_device(cfg.device), out_dir=shard_dir(run_dir, shard),
        fingerprint=f"{fingerprint}-shard-{shard}", progress=progress,
        val=(x_val[keep_val], y_val[keep_val] - classes[0]),
    )
    return {"shard": shard, "classes": [info["classes"][c] for c in classes], "steps": state.step}


def _merge_shards(cfg: Config, run_dir: Path, n: int, fingerprint: str) -> None:
    """gan/checkpoint.pt and gan/history.csv of the whole K-class GAN from its finished shards."""
    gan_dir = Path(run_dir) / "gan"
    payloads = [read_checkpoint(shard_dir(run_dir, i) / "checkpoint.pt") for i in range(n)]
    for i, p in enumerate(payloads):
        if p.get("step") != cfg.gan.steps:
            raise RuntimeError(f"gan shard {i} stopped at step {p.get('step')} of {cfg.gan.steps}")
    write_torch(gan_dir / "checkpoint.pt", merge_checkpoints(payloads, fingerprint))
    for step, _ in snapshots(shard_dir(run_dir, 0)):  # gan.checkpoint_selection: cas, the snapshots merge the same way
        parts = [read_checkpoint(snapshot_path(shard_dir(run_dir, i), step)) for i in range(n)]
        model = dict(parts[0]["model"], n_classes=sum(p["model"]["n_classes"] for p in parts))
        write_torch(snapshot_path(gan_dir, step), {"model": model, "step": step,
                                                   "ema": concat_grouped([p["ema"] for p in parts])})
    # History: per-step means over all classes (each shard weighted by its class count)
    weights = np.array([p["model"]["n_classes"] for p in payloads], dtype=float)
    merge_histories([shard_dir(run_dir, i) / "history.csv" for i in range(n)], weights, gan_dir / "history.csv")


def run(cfg: Config, run_dir: Path, progress: Progress | None = None, fingerprint: str = "") -> dict:
    """Train (or resume, or merge the parts of) the GAN; final sample grids and the latent walk."""
    run_dir = Path(run_dir)
    if not cfg.gan.enabled:
        return {"steps": 0}
    info = rundir.ingest_info(run_dir)
    k = len(info["classes"])
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    n = parts(cfg, run_dir)
    if n > 1:
        for i in range(n):  # finished parts (trained by the flow side by side) are found, not retrained
            part_progress = None if progress is None else (lambda s, total, i=i: progress(i * total + s, n * total))
            run_part(cfg, run_dir, i, fingerprint, part_progress)
        _merge_shards(cfg, run_dir, n, fingerprint)
        steps = cfg.gan.steps
    else:
        x, y, _ = rundir.load_split(run_dir, "train", cfg.gan.sources)
        x_val, y_val, _ = rundir.load_split(run_dir, "val")
        steps = train_generators(x, y, k, cfg.gan, seed=derive_seed(cfg.seed, "gan"), device=device, out_dir=run_dir / "gan",
                                 fingerprint=fingerprint, progress=progress, val=(x_val, y_val))
    G = load_generator(run_dir / "gan" / "checkpoint.pt", device, derive_seed(cfg.seed, "bn"))
    grid = sample(G, 64, cfg.gan.nz, k, derive_seed(cfg.seed, "final-grid"), device)
    for c, label in enumerate(info["classes"]):
        save_grid(run_dir / "gan" / "samples" / f"final_{label}.png", grid[:, c], nrow=8)
    walk = interpolate(G, k, cfg.gan.nz, 10, derive_seed(cfg.seed, "interpolation"), device)
    save_grid(run_dir / "gan" / "samples" / "interpolation.png", walk.transpose(0, 1).flatten(0, 1), nrow=10)
    last = pd.read_csv(run_dir / "gan" / "history.csv").iloc[-1]
    overfit = {c: round(float(last[c]), 4) for c in ("d_acc_train", "d_acc_val") if c in last and pd.notna(last[c])}
    return {"steps": steps, "shards": n, "device": str(device), "precision": resolve_precision(cfg.gan.precision, device),
            "train_seconds": round(time.perf_counter() - t0, 2), **overfit}
