"""GAN training: one step in two blocks (D, then G), the loop, snapshots and shards (state: augment.core.gan_state).

The loop only loops: building the state, resuming, evaluating and saving are helpers it calls.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from augment.atomic import atomic_path, write_torch
from augment.config import GanConfig
from augment.core.accel import autocast
from augment.core.diffaugment import diff_augment
from augment.core.gan_state import (  # noqa: F401  (the state's names, where the trainer's callers find them)
    TrainState, balanced_batch, balanced_indices, build_state, d_loss, ema_with_warmup, g_loss, lecam_loss,
    load_checkpoint, prepare_real, r1_penalty, save_checkpoint, update_anchors)
from augment.core.sampling import sample, save_grid, standing_stats
from augment.runtime import check_stop, derive_seed, stop_requested

log = logging.getLogger("augment")
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- one step


METRICS = ("loss_d", "loss_g", "d_real", "d_fake")  # train_step's metrics, in its tensor's order


def train_step(state: TrainState, bank: torch.Tensor, counts: torch.Tensor, cfg: GanConfig) -> torch.Tensor:
    """One DCGAN step on a class-balanced batch, as in the paper's Algorithm 1; its METRICS as a
    (4,) tensor on the device (reading them is the caller's host round-trip, every sample_every steps)."""
    G, D, gen = state.G, state.D, state.gen
    idx = balanced_indices(counts, cfg.batch_size, gen)
    real = bank[torch.arange(bank.shape[0], device=bank.device), idx]  # (B, K, C, S, S)
    z = torch.randn(cfg.batch_size, bank.shape[0], cfg.nz, generator=gen, device=bank.device)
    policy = list(cfg.diffaugment)

    def aug(x: torch.Tensor) -> torch.Tensor:  # DiffAugment per image, the same policy for real and fake
        return diff_augment(x.flatten(0, 1), policy, gen).view_as(x)

    ctx = autocast(bank.device, cfg.precision)
    # (1) Update D network: real -> 1, then fake.detach() -> 0
    with ctx:
        fake = G(z)
        real_in = aug(real)
        if cfg.r1 > 0:
            real_in = real_in.detach().requires_grad_(True)
        real_logits = D(real_in)
        fake_logits = D(aug(fake.detach()))
        loss_d = d_loss(real_logits.float(), fake_logits.float())
    if cfg.lecam > 0:  # anchors from this step's logits too, as the reference updates before regularising
        anchor_real, anchor_fake = update_anchors(state.lecam, real_logits, fake_logits, cfg.lecam_decay, state.step + 1)
        loss_d = loss_d + cfg.lecam * lecam_loss(real_logits.float(), fake_logits.float(), anchor_real, anchor_fake)
    if cfg.r1 > 0:
        loss_d = loss_d + cfg.r1 / 2 * r1_penalty(real_logits, real_in)
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    state.opt_d.step()
    # (2) Update G network: make D call the fakes real (D's weights need no gradient here: it is
    # cleared before D's next update, so freezing them changes nothing and skips their backward)
    D.requires_grad_(False)
    with ctx:
        loss_g = g_loss(D(aug(fake)).float())
        if state.spec.mode == "mix":  # the encoder-decoder must also reproduce the real images (ChimeraMix)
            loss_g = loss_g + cfg.mix_reconstruction * (G.reconstruct_bank(idx).float() - real).abs().mean()
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    D.requires_grad_(True)
    state.opt_g.step()
    state.ema_update()
    state.step += 1
    return torch.stack([loss_d.detach(), loss_g.detach(), torch.sigmoid(real_logits.detach().float()).mean(),
                        torch.sigmoid(fake_logits.detach().float()).mean()])


@torch.no_grad()
def d_real_accuracy(D: torch.nn.Module, bank: torch.Tensor, counts: torch.Tensor, batch: int, seed: int, batches: int = 4,
                    precision: str = "auto") -> float:
    """Fraction of real images in `bank` that D calls real (logit > 0), without augmentation.

    Measured on the train bank and on held-out real (val) images, the gap between the two is
    the discriminator-overfitting signal (Karras et al. 2020): a D that has memorised the
    training images calls them real and held-out real images fake. Batches are class-balanced
    and all-real, as D sees real images during training; batch norm uses batch statistics on a
    copy of D, so training state is untouched.
    """
    D = copy.deepcopy(D).train()
    gen = torch.Generator(device=bank.device).manual_seed(seed % 2**63)
    hits = []
    with autocast(bank.device, precision):
        for _ in range(batches):
            hits.append((D(balanced_batch(bank, counts, batch, gen)).float() > 0).float().mean())
    return float(torch.stack(hits).mean())


# --------------------------------------------------------------------------- the loop


def _resume(out_dir: Path, state: TrainState, fingerprint: str) -> list[dict]:
    """Load the checkpoint if it fits; the history up to its step."""
    if not load_checkpoint(out_dir / "checkpoint.pt", state, fingerprint):
        return []
    log.info("gan: resumed from step %d", state.step)
    path = out_dir / "history.csv"
    if not path.is_file():
        return []
    old = pd.read_csv(path)
    return old[old["step"] <= state.step].to_dict("records")


def _evaluate(state: TrainState, bank, val_bank, cfg: GanConfig, seed: int, out_dir: Path) -> dict:
    """D's accuracy on train vs held-out real images, and a sample grid of the EMA generator."""
    eval_seed = derive_seed(seed, "d-acc", state.step)
    out = {"d_acc_train": d_real_accuracy(state.D, *bank, cfg.batch_size, eval_seed, precision=cfg.precision)}
    if val_bank is not None:
        out["d_acc_val"] = d_real_accuracy(state.D, *val_bank, cfg.batch_size, eval_seed, precision=cfg.precision)
    grid_seed = derive_seed(seed, "grid")  # one fixed noise for every grid
    k, device = state.spec.n_classes, bank[0].device
    G_ema = standing_stats(state.ema.module, k, cfg.nz, grid_seed + 1, device)
    grid = sample(G_ema, 8, cfg.nz, k, grid_seed, device)  # (8, K, C, S, S)
    save_grid(out_dir / "samples" / f"step_{state.step:06d}.png", grid.transpose(0, 1).flatten(0, 1), nrow=8)
    if cfg.checkpoint_selection == "cas":  # the EMA generator at this step, for the synthesize stage to choose from
        write_torch(snapshot_path(out_dir, state.step), {"model": state.spec.to_dict(), "step": state.step,
                                                         "ema": state.ema.state_dict()})
    return out


class Pending:
    """Steps' metrics kept on the device until read: one host round-trip per read, not four per step.
    step_seconds is the wall time since the last read over its steps (a step's own time needs a sync)."""

    def __init__(self):
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
        rows = [{"step": s, **dict(zip(METRICS, v)), "step_seconds": seconds} for s, v in zip(self.steps, values)]
        self.__init__()
        return rows


def snapshot_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / "snapshots" / f"step_{step:06d}.pt"


def snapshots(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the EMA generator snapshots in out_dir, by step."""
    return sorted((int(p.stem.split("_")[1]), p) for p in (Path(out_dir) / "snapshots").glob("step_*.pt"))


def _save(out_dir: Path, state: TrainState, fingerprint: str, history: list[dict]) -> None:
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
    state: TrainState
    bank: tuple[torch.Tensor, torch.Tensor]
    val_bank: tuple[torch.Tensor, torch.Tensor] | None
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
                  history, Pending())


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
) -> TrainState:
    """Train (or resume) one generator to cfg.steps; checkpoints, history.csv and grids go to out_dir.

    `val` (held-out real images and labels) adds D's accuracy on them next to its accuracy on
    the training images every cfg.sample_every steps (columns d_acc_train, d_acc_val).
    `stop_after` and `on_snapshot`: train_members'.
    """
    member = start_member(images, labels, n_classes, cfg, seed=seed, device=device, out_dir=out_dir,
                          fingerprint=fingerprint, val=val)
    train_members([member], progress, stop_after, on_snapshot)
    return member.state


# --------------------------------------------------------------------------- shards (per_class mode)


def class_shards(n_classes: int, shards: int) -> list[np.ndarray]:
    """Contiguous blocks of class indices, one per shard (at most one shard per class).

    In per_class mode the K class GANs are independent, so a shard is just a smaller grouped
    network over its block of classes; shards train anywhere (threads, Dask workers, GPUs) and
    their weights concatenate, in class order, into the one K-class network.
    """
    return list(np.array_split(np.arange(n_classes), min(shards, n_classes)))


def concat_grouped(states: list[dict]) -> dict:
    """One K-class grouped network's state from its shards' states (in class order).

    Every per-group tensor of a grouped (de)convolution, batch norm or head keeps its groups
    contiguous along dim 0, so concatenation along dim 0 is exact; scalars (batch norm's
    num_batches_tracked, the EMA's n_averaged) are equal across shards and taken from the first.
    """
    return {k: torch.cat([s[k] for s in states]) if states[0][k].dim() else states[0][k] for k in states[0]}


def merge_checkpoints(payloads: list[dict], fingerprint: str) -> dict:
    """The K-class checkpoint of finished shards' checkpoints (G, D, EMA and model settings)."""
    spec = dict(payloads[0]["model"], n_classes=sum(p["model"]["n_classes"] for p in payloads))
    merged = {"fingerprint": fingerprint, "model": spec, "step": payloads[0]["step"], "shards": len(payloads)}
    for part in ("G", "D", "ema"):
        merged[part] = concat_grouped([p[part] for p in payloads])
    return merged
