"""Training any generator (augment.core.gan.kinds): the loop, its checkpoints, history, sample grids,
snapshots and shards, and an ensemble's members stepped together then merged (augment.core.gan.ensemble
merges). The loop only loops: the step, evaluating and the checkpoint's contents are the
generator's (Kind.step, Kind.evaluate, Kind.payload); building, resuming and saving are helpers here.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from augment.atomic import atomic_path, write_torch
from augment.config import GanConfig
from augment.core.gan.checkpoint import read_checkpoint, snapshot_path, snapshots
from augment.core.gan.ensemble import member_dir, merge_members, merge_parts, merge_snapshot
from augment.core.gan.kinds import Bank, kind, prepare_real
from augment.core.gan.sampling import sample, save_grid
from augment.errors import check_stop, stop_requested
from augment.registry import generator_modes
from augment.runtime import derive_seed

log = logging.getLogger("augment")
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- one generator's state


def build_state(cfg: GanConfig, n_classes: int, channels: int, seed: int, device: torch.device,
                bank: Bank | None = None) -> Any:
    """gan.mode's fresh training state (one generator: an ensemble's members are built one by one);
    `bank` (prepare_real's): the real images it learns from, for a generator that holds them."""
    k = kind(cfg.mode)
    return k.build(k.spec(cfg, n_classes, channels, bank), cfg, seed, device, bank)


def train_step(state, bank: torch.Tensor, counts: torch.Tensor, cfg: GanConfig) -> torch.Tensor:
    """One step of the state's generator; its metrics (Kind.metrics) as a tensor on the device (reading
    them is the caller's host round-trip, every sample_every steps)."""
    return kind(state.spec.mode).step(state, bank, counts, cfg)


def save_checkpoint(path: Path, state, fingerprint: str) -> None:
    """The full training state and the model settings (`model`), so it resumes and loads alone."""
    payload = kind(state.spec.mode).payload(state)
    write_torch(path, {"fingerprint": fingerprint, "model": state.spec.to_dict(), "step": state.step, **payload})


def load_checkpoint(path: Path, state, fingerprint: str) -> bool:
    """Restore `state` from `path` if it was written for the same config; False otherwise."""
    if not path.is_file():
        return False
    payload = read_checkpoint(path)
    if payload.get("fingerprint") != fingerprint:
        log.info("gan: checkpoint is from another config, training from scratch")
        return False
    kind(state.spec.mode).restore(state, payload)
    state.step = int(payload["step"])
    return True


def snapshot_payload(state) -> dict:
    """What a snapshot holds: the settings, the step and what sampling needs (Kind.sampler_state)."""
    return {"model": state.spec.to_dict(), "step": state.step, **kind(state.spec.mode).sampler_state(state)}


# --------------------------------------------------------------------------- the loop


def _resume(out_dir: Path, state, fingerprint: str) -> list[dict]:
    """Load the checkpoint if it fits; the history up to its step."""
    if not load_checkpoint(out_dir / "checkpoint.pt", state, fingerprint):
        return []
    log.info("gan: resumed from step %d", state.step)
    path = out_dir / "history.csv"
    if not path.is_file():
        return []
    old = pd.read_csv(path)
    return old[old["step"] <= state.step].to_dict("records")


def _evaluate(state, bank, val_bank, cfg: GanConfig, seed: int, out_dir: Path) -> dict:
    """The generator's own signals (Kind.evaluate) and a sample grid of the generator as sampled."""
    k = kind(state.spec.mode)
    out = k.evaluate(state, bank, val_bank, cfg, derive_seed(seed, "d-acc", state.step))
    grid_seed = derive_seed(seed, "grid")  # one fixed noise for every grid
    n, device = state.spec.n_classes, bank[0].device
    G = k.current(state, device, grid_seed + 1)
    grid = sample(G, 8, cfg.nz, n, grid_seed, device)  # (8, K, C, S, S)
    save_grid(out_dir / "samples" / f"step_{state.step:06d}.png", grid.transpose(0, 1).flatten(0, 1), nrow=8)
    if cfg.checkpoint_selection == "cas":  # the generator at this step, for the synthesize stage to choose from
        write_torch(snapshot_path(out_dir, state.step), snapshot_payload(state))
    return out


class Pending:
    """Steps' metrics kept on the device until read: one host round-trip per read, not four per step.
    step_seconds is the wall time since the last read over its steps (a step's own time needs a sync)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names  # the metrics' names (Kind.metrics)
        self.steps: list[int] = []
        self.metrics: list[torch.Tensor] = []
        self.since = time.perf_counter()

    def add(self, step: int, metrics: torch.Tensor) -> None:
        self.steps.append(step)
        self.metrics.append(metrics)

    def read(self) -> list[dict]:
        if not self.steps:
            return []
        values = torch.stack(self.metrics).cpu().tolist()  # waits for the device
        seconds = (time.perf_counter() - self.since) / len(self.steps)
        rows = [{"step": s, **dict(zip(self.names, v)), "step_seconds": seconds} for s, v in zip(self.steps, values)]
        self.__init__(self.names)
        return rows


def _save(out_dir: Path, state, fingerprint: str, history: list[dict]) -> None:
    save_checkpoint(out_dir / "checkpoint.pt", state, fingerprint)
    with atomic_path(out_dir / "history.csv") as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)


def _val_bank(val, n_classes: int, image_size: int, device):
    if val is None or not len(val[0]):
        return None
    try:
        return prepare_real(val[0], val[1], n_classes, image_size, device)
    except ValueError as exc:  # a class without val images: no overfitting signal
        log.warning("gan: no discriminator-overfitting signal (val split: %s)", exc)
        return None


@dataclass
class Member:
    """One generator in training (start_member): its state, real images, history and directory."""

    cfg: GanConfig
    state: Any  # its generator's training state (Kind.build)
    bank: Bank
    val_bank: Bank | None
    out_dir: Path
    fingerprint: str
    seed: int
    history: list[dict]
    pending: Pending


def start_member(images: np.ndarray, labels: np.ndarray, n_classes: int, cfg: GanConfig, *, seed: int,
                 device: torch.device, out_dir: Path, fingerprint: str = "",
                 val: tuple[np.ndarray, np.ndarray] | None = None) -> Member:
    """A generator's training, fresh or resumed from out_dir/checkpoint.pt (same fingerprint)."""
    out_dir = Path(out_dir)
    bank = prepare_real(images, labels, n_classes, cfg.image_size, device)
    state = build_state(cfg, n_classes, images.shape[3], seed, device, bank)
    history = _resume(out_dir, state, fingerprint)
    if state.step == 0:  # from scratch: snapshots of an earlier training are not this one's
        shutil.rmtree(out_dir / "snapshots", ignore_errors=True)
    return Member(cfg, state, bank, _val_bank(val, n_classes, cfg.image_size, device), out_dir, fingerprint, seed,
                  history, Pending(kind(cfg.mode).metrics))


def _advance(m: Member, stop_after: int | None) -> None:
    """One step of one member, then what falls on that step: reading its metrics (every
    sample_every or checkpoint_every steps: the host round-trip), evaluating, checkpointing."""
    cfg, state = m.cfg, m.state
    m.pending.add(state.step + 1, train_step(state, *m.bank, cfg))
    done = state.step == cfg.steps
    stopping = stop_requested() is not None  # SIGTERM/SIGINT: checkpoint this step, then stop
    evaluating = state.step % cfg.sample_every == 0 or done
    saving = state.step % cfg.checkpoint_every == 0 or done or state.step == stop_after or stopping
    if evaluating or saving:
        m.history += m.pending.read()
    if evaluating:
        m.history[-1].update(_evaluate(state, m.bank, m.val_bank, cfg, m.seed, m.out_dir))
    if saving:
        _save(m.out_dir, state, m.fingerprint, m.history)


def train_members(members: list[Member], progress: Progress | None = None, stop_after: int | None = None,
                  on_snapshot: Callable[[int], bool] | None = None) -> int:
    """Step every member in turn until each reaches its cfg.steps: each trains exactly as alone (its
    own generator, data, checkpoint and history), and their sample_every snapshots fall together.

    on_snapshot(step), called once every member has taken its snapshot of `step` (the EMA generator,
    with gan.checkpoint_selection cas), returns True to stop there (gan.patience): every member then
    checkpoints that step. `stop_after` ends the loop at that step (after its checkpoint), to test
    resume. Returns the step the members reached."""
    steps = members[0].cfg.steps
    every = members[0].cfg.sample_every
    finished = all(m.state.step >= m.cfg.steps for m in members)
    while any(m.state.step < m.cfg.steps for m in members):
        for m in members:
            if m.state.step < m.cfg.steps:
                _advance(m, stop_after)
        step = min(m.state.step for m in members)
        if progress is not None:  # every step: the caller throttles what it shows
            progress(sum(m.state.step for m in members), steps * len(members))
        if on_snapshot is not None and step % every == 0 and all(m.state.step == step for m in members) \
                and step < steps and on_snapshot(step):
            for m in members:  # stopped early: the last step is this one
                m.history += m.pending.read()
                _save(m.out_dir, m.state, m.fingerprint, m.history)
            return step
        if step == stop_after:
            break
        check_stop()
    if progress is not None and finished:  # the loop did not run: say the training is complete
        progress(steps * len(members), steps * len(members))
    return min(m.state.step for m in members)


def train_gan(
    images: np.ndarray, labels: np.ndarray, n_classes: int, cfg: GanConfig, *, seed: int, device: torch.device,
    out_dir: Path, fingerprint: str = "", progress: Progress | None = None, stop_after: int | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None, on_snapshot: Callable[[int], bool] | None = None,
) -> Any:
    """Train (or resume) one generator to cfg.steps; checkpoints, history.csv and grids go to out_dir.

    `val` (held-out real images and labels) goes to the generator's evaluate (adversarial ones: D's
    accuracy on them next to that on the training images, columns d_acc_train, d_acc_val).
    `stop_after` and `on_snapshot`: train_members'.
    """
    member = start_member(images, labels, n_classes, cfg, seed=seed, device=device, out_dir=out_dir,
                          fingerprint=fingerprint, val=val)
    train_members([member], progress, stop_after, on_snapshot)
    return member.state


# --------------------------------------------------------------------------- shards (a shardable generator)


def class_shards(n_classes: int, shards: int) -> list[np.ndarray]:
    """Contiguous blocks of class indices, one per shard (at most one shard per class).

    A shardable generator's classes train apart (per_class: K class GANs as one grouped network), so a
    shard is just a smaller network over its block of classes; shards train anywhere (threads, Dask
    workers, GPUs) and Kind.merge joins them, in class order, into the one K-class generator.
    """
    return list(np.array_split(np.arange(n_classes), min(shards, n_classes)))


def train_generators(images: np.ndarray, labels: np.ndarray, n_classes: int, cfg, *, seed: int, device, out_dir: Path,
                     fingerprint: str = "", progress=None, val=None, on_snapshot=None) -> int:
    """Train (or resume) gan.mode's generator into out_dir, an ensemble's members stepped together
    (each as its generator alone, in out_dir/members/<mode>/), then merge them; the steps trained.

    on_snapshot(step, path): the generator's snapshot of `step` (an ensemble's merged one) is at
    `path`; True stops the training there (train_members)."""
    modes = generator_modes(cfg.mode)
    if len(modes) == 1:
        member = start_member(images, labels, n_classes, cfg, seed=seed, device=device, out_dir=out_dir,
                                        fingerprint=fingerprint, val=val)
        hook = None if on_snapshot is None else (lambda step: on_snapshot(step, snapshot_path(out_dir, step)))
        return train_members([member], progress, on_snapshot=hook)
    members = [start_member(images, labels, n_classes, cfg.model_copy(update={"mode": mode}), seed=seed,
                                      device=device, out_dir=member_dir(out_dir, mode), fingerprint=f"{fingerprint}-{mode}",
                                      val=val) for mode in modes]
    dirs = [member_dir(out_dir, m) for m in modes]
    hook = None if on_snapshot is None else (lambda step: on_snapshot(step, merge_snapshot(out_dir, dirs, merge_members, step)))
    steps = train_members(members, progress, on_snapshot=hook)
    shutil.rmtree(Path(out_dir) / "snapshots", ignore_errors=True)  # an earlier training's are not these members'
    merge_parts(out_dir, dirs, merge_members, np.ones(len(modes)), [step for step, _ in snapshots(dirs[0])], fingerprint=fingerprint)
    return steps
