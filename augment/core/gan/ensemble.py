"""One generator from parts trained apart: an ensemble's members, a per-class GAN's shards, merged.

Each member of an ensemble trains exactly as its generator alone (same seed, same data) in
gan/members/<mode>/, with its own checkpoint and resume; the members take their steps in turn in one
loop (augment.core.gan.train.train_generators), so their snapshots fall together and can be judged
as one ensemble while training.
The merged checkpoint (and the snapshots of gan.checkpoint_selection cas) hold what every member's
sampling needs (Kind.sampler_keys), which augment.core.gan.sampling.load_generator turns into an
EnsembleGenerator. The synthesize stage gates each member's samples apart (gate.select: auto picks
each member's rule) and keeps gan.samples_per_class split evenly between them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from augment.atomic import atomic_path, write_torch
from augment.core.gan.checkpoint import read_checkpoint, snapshot_path
from augment.core.gan.kinds import kind

MEMBERS = "members"  # gan/members/<mode>/: each member's training directory


def member_dir(out_dir: Path, mode: str) -> Path:
    return Path(out_dir) / MEMBERS / mode


def merge_parts(out_dir: Path, parts: list[Path], combine, weights: np.ndarray, steps: list[int], **extra) -> None:
    """One generator in out_dir from parts trained apart (an ensemble's members, a per-class GAN's shards):
    checkpoint.pt = combine(the parts' checkpoints) plus `extra`, the snapshot of each of `steps` the same
    way, and history.csv their weighted means (merge_histories)."""
    write_torch(Path(out_dir) / "checkpoint.pt",
                {**extra, **combine([read_checkpoint(Path(p) / "checkpoint.pt") for p in parts])})
    for step in steps:
        merge_snapshot(out_dir, parts, combine, step)
    merge_histories([Path(p) / "history.csv" for p in parts], weights, Path(out_dir) / "history.csv")


def merge_snapshot(out_dir: Path, parts: list[Path], combine, step: int) -> Path:
    """out_dir/snapshots/step_<step>.pt: the parts' snapshots of that step, combined as one."""
    path = snapshot_path(out_dir, step)
    write_torch(path, combine([read_checkpoint(snapshot_path(p, step)) for p in parts]))
    return path


def merge_members(payloads: list[dict]) -> dict:
    """The generator part of an ensemble's checkpoint or snapshot: every member's settings and EMA state."""
    return {"step": payloads[0]["step"], "model": {"members": [p["model"] for p in payloads]},
            "members": [{key: p[key] for key in kind(p["model"]["mode"]).sampler_keys} for p in payloads]}


def merge_histories(paths: list[Path], weights: np.ndarray, out: Path) -> None:
    """One history.csv of parts trained side by side or in turn: per-step weighted means of every
    column (over the parts that have it); step_seconds is the slowest part's (the wall time when the parts run side by side)."""
    frames = [pd.read_csv(p).set_index("step") for p in paths]
    columns = dict.fromkeys(c for f in frames for c in f.columns if c != "step_seconds")
    mean = pd.DataFrame(index=frames[0].index)
    for c in columns:  # a column over the parts that record it (generators' metrics differ: Kind.metrics)
        have = [(f[c], w) for f, w in zip(frames, weights) if c in f]
        mean[c] = sum(col * w for col, w in have) / sum(w for _, w in have)
    mean["step_seconds"] = pd.concat([f["step_seconds"] for f in frames], axis=1).max(axis=1)
    with atomic_path(out) as tmp:
        mean.reset_index().to_csv(tmp, index=False)
