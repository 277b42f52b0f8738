"""Stage gan: train the class-conditional DCGAN on the real train split; resumes from gan/checkpoint.pt.

With gan.shards > 1 (a shardable generator: per_class) each block of classes trains (or resumes)
into gan/shards/<i>/ as a part of its own, which the flow may run side by side (`parts`,
`run_part`); `run` then trains any part not finished and merges them exactly (Kind.merge).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from augment import rundir
from augment.config import Config
from augment.core.base.accel import resolve_precision
from augment.atomic import write_json
from augment.core.classify.networks import load_classifier
from augment.core.gan.checkpoint import read_checkpoint, snapshots
from augment.core.gan.ensemble import merge_parts
from augment.core.gan.kinds import kind
from augment.core.gan.sampling import interpolate, load_generator, sample, save_grid
from augment.core.gan.train import Progress, class_shards, train_gan, train_generators
from augment.core.gate.gate import better, score_generator
from augment.safe_text import file_label
from augment.runtime import derive_seed, resolve_device

log = logging.getLogger("augment")


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
    weights = np.array([p["model"]["n_classes"] for p in payloads], dtype=float)  # history: means over all classes
    parts = [shard_dir(run_dir, i) for i in range(n)]  # with gan.checkpoint_selection cas, the snapshots merge too
    merge_parts(gan_dir, parts, kind(cfg.gan.mode).merge, weights, [step for step, _ in snapshots(parts[0])],
                fingerprint=fingerprint, shards=n)


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
    watch = None
    if n > 1:
        for i in range(n):  # finished parts (trained by the flow side by side) are found, not retrained
            part_progress = None if progress is None else (lambda s, total, i=i: progress(i * total + s, n * total))
            run_part(cfg, run_dir, i, fingerprint, part_progress)
        _merge_shards(cfg, run_dir, n, fingerprint)
        steps = cfg.gan.steps
    else:
        x, y, _ = rundir.load_split(run_dir, "train", cfg.gan.sources)
        x_val, y_val, _ = rundir.load_split(run_dir, "val")
        watch = Patience(cfg, run_dir, fingerprint) if cfg.gan.stops_early else None
        steps = train_generators(x, y, k, cfg.gan, seed=derive_seed(cfg.seed, "gan"), device=device, out_dir=run_dir / "gan",
                                 fingerprint=fingerprint, progress=progress, val=(x_val, y_val), on_snapshot=watch)
    G = load_generator(run_dir / "gan" / "checkpoint.pt", device, derive_seed(cfg.seed, "bn"))
    grid = sample(G, 64, cfg.gan.nz, k, derive_seed(cfg.seed, "final-grid"), device)
    for c, label in enumerate(info["classes"]):
        save_grid(run_dir / "gan" / "samples" / f"final_{file_label(label)}.png", grid[:, c], nrow=8)
    walk = interpolate(G, k, cfg.gan.nz, 10, derive_seed(cfg.seed, "interpolation"), device)
    save_grid(run_dir / "gan" / "samples" / "interpolation.png", walk.transpose(0, 1).flatten(0, 1), nrow=10)
    last = pd.read_csv(run_dir / "gan" / "history.csv").iloc[-1]
    overfit = {c: round(float(last[c]), 4) for c in ("d_acc_train", "d_acc_val") if c in last and pd.notna(last[c])}
    stopped = {"stopped_at": steps, "best_step": watch.best["step"], "cas_best": watch.best["cas_accuracy_on_val"]} \
        if n == 1 and watch is not None and watch.best is not None else {}
    return {"steps": steps, "shards": n, "device": str(device), "precision": resolve_precision(cfg.gan.precision, device),
            "train_seconds": round(time.perf_counter() - t0, 2), **overfit, **stopped}


class Patience:
    """gan.patience: each snapshot, as the GAN takes it, sampled, gated by the judge stage's judge and
    scored by CAS on val (augment.core.gate.gate.score_generator, the synthesize stage's own scoring);
    training stops once `patience` snapshots in a row have not beaten the best. The curve goes to
    gan/cas.json (with this stage's fingerprint), where a resumed training and the synthesize stage
    find it: a resumed training continues the same count, the synthesize stage scores nothing again."""

    def __init__(self, cfg: Config, run_dir: Path, fingerprint: str):
        self.cfg, self.run_dir, self.fingerprint = cfg, Path(run_dir), fingerprint
        self.device = resolve_device(cfg.device)
        self.data, self.judge = rundir.gate_data(cfg, self.run_dir), load_classifier(self.run_dir / rundir.GATE_JUDGE, self.device)
        saved = rundir.read_curve(self.run_dir)
        self.curve = saved["curve"] if saved.get("fingerprint") == fingerprint else []
        self.best = None
        for row in self.curve:
            self._track(row)

    def _track(self, row: dict) -> None:
        if self.best is None or better(row, self.best, prefer_later=False):
            self.best = row

    def __call__(self, step: int, path: Path) -> bool:
        done = {(r["step"], r["scale"]) for r in self.curve}
        G = load_generator(path, self.device, derive_seed(self.cfg.seed, "bn"))
        for scale in self.cfg.gan.latent_scales:
            if (step, scale) not in done:
                row, _ = score_generator(self.cfg, self.data, G, self.judge, step, scale, self.device)
                self.curve.append(row)
                self._track(row)
        write_json(self.run_dir / rundir.CAS_CURVE, {"fingerprint": self.fingerprint, "curve": self.curve})
        since = [r["step"] for r in self.curve if r["step"] > self.best["step"]]
        stop = len(set(since)) >= self.cfg.gan.patience
        if stop:
            log.info("gan: stopped at step %d: CAS on val has not beaten %.4f (step %d) for %d snapshots (gan.patience)",
                     step, self.best["cas_accuracy_on_val"] or 0.0, self.best["step"], self.cfg.gan.patience)
        return stop
