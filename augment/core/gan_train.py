"""GAN training: the objective, one step in two blocks (D, then G), the loop, checkpoints and shards.

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
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from augment.atomic import atomic_path, write_torch
from augment.config import GanConfig
from augment.core.checkpoint import read_checkpoint
from augment.core.diffaugment import diff_augment
from augment.core.networks import Discriminator, GanSpec, Generator, dcgan_init
from augment.core.accel import adam, autocast, to_memory_format, use_channels_last
from augment.core.sampling import sample, save_grid, standing_stats
from augment.core.tensors import resize, to_tensor
from augment.runtime import check_stop, derive_seed, stop_requested

log = logging.getLogger("augment")
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- objective


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """DCGAN discriminator loss: real -> 1, fake -> 0 (binary cross-entropy on logits)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: maximise log D(G(z)) (the paper's 'real labels' trick)."""
    return F.softplus(-fake_logits).mean()


def lecam_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, anchor_real: torch.Tensor,
               anchor_fake: torch.Tensor) -> torch.Tensor:
    """LeCam regulariser of D (Tseng et al. 2021): mean relu(D(x) - a_fake)^2 + mean relu(a_real - D(G(z)))^2,
    where the anchors are moving averages of D's mean output on real and on fake images (one per
    class here: (K,), broadcast over the batch, so class GANs stay independent)."""
    return F.relu(real_logits - anchor_fake).pow(2).mean() + F.relu(anchor_real - fake_logits).pow(2).mean()


def update_anchors(ema: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor, decay: float,
                   step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Update the (2, K) moving averages of D's mean logits per class in place (real, fake) and return
    the bias-corrected anchors after `step` updates (TF's zero_debias)."""
    means = torch.stack([real_logits.detach().float().mean(0), fake_logits.detach().float().mean(0)])
    ema.mul_(decay).add_(means, alpha=1 - decay)
    anchors = ema / (1 - decay ** step)
    return anchors[0], anchors[1]


def r1_penalty(real_logits: torch.Tensor, real_input: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean over images of |grad_x D(x)|^2 on real images (times gamma / 2 by the caller)."""
    grad, = torch.autograd.grad(real_logits.float().sum(), real_input, create_graph=True)
    return grad.float().pow(2).flatten(2).sum(2).mean()


# --------------------------------------------------------------------------- data


def prepare_real(images: np.ndarray, labels: np.ndarray, n_classes: int, image_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class image bank (K, Nmax, C, S, S) in [-1, 1] and counts (K,), for class-balanced batches."""
    x = resize(to_tensor(images, device), (image_size, image_size))
    counts = torch.tensor([int((labels == c).sum()) for c in range(n_classes)], device=device)
    if (counts == 0).any():
        missing = int(torch.nonzero(counts == 0)[0])
        raise ValueError(f"class index {missing} has no training images")
    bank = torch.zeros(n_classes, int(counts.max()), *x.shape[1:], device=device)
    for c in range(n_classes):
        sel = x[torch.from_numpy(labels == c).to(device)]
        bank[c, : len(sel)] = sel
    return bank, counts


def balanced_indices(counts: torch.Tensor, batch: int, gen: torch.Generator) -> torch.Tensor:
    """(B, K) indices within their classes of `batch` images of every class, drawn with replacement."""
    return (torch.rand(batch, len(counts), generator=gen, device=counts.device) * counts).long()


def balanced_batch(bank: torch.Tensor, counts: torch.Tensor, batch: int, gen: torch.Generator) -> torch.Tensor:
    """`batch` images of every class, drawn with replacement: (B, K, C, S, S)."""
    return bank[torch.arange(bank.shape[0], device=bank.device), balanced_indices(counts, batch, gen)]


# --------------------------------------------------------------------------- state


def ema_with_warmup(decay: float):
    """EMA update for AveragedModel whose decay ramps up as min(decay, (1 + n) / (10 + n)).

    A fixed 0.999 over a 1,000-step run keeps 37% of the *initial* weights in the average
    (0.999^1000): on MNIST the EMA generator drew grey backgrounds the raw generator did not.
    The ramp (as in TensorFlow's ExponentialMovingAverage num_updates) lets early weights fade.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, 1.0 - d)
            else:  # integer buffers (batch norm's num_batches_tracked) are copied, not averaged
                a.copy_(c)

    return update


@dataclass
class TrainState:
    spec: GanSpec
    G: Generator
    D: Discriminator
    ema: AveragedModel
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0
    lecam: torch.Tensor | None = None  # (2, K) moving averages of D's logits on real and fake (gan.lecam)


def gan_spec(cfg: GanConfig, n_classes: int, channels: int, parents: int = 0) -> GanSpec:
    return GanSpec(cfg.mode, n_classes, cfg.nz, cfg.ngf, cfg.ndf, cfg.image_size, channels,
                   parents if cfg.mode == "mix" else 0)


def build_state(cfg: GanConfig, n_classes: int, channels: int, seed: int, device: torch.device,
                bank: tuple[torch.Tensor, torch.Tensor] | None = None) -> TrainState:
    """Fresh networks, EMA, optimisers and noise generator; `bank` (prepare_real's): the images mix mode mixes."""
    spec = gan_spec(cfg, n_classes, channels, bank[0].shape[1] if bank is not None else 0)
    init_gen = torch.Generator().manual_seed(seed % 2**63)
    G, D = spec.generator(), spec.discriminator()
    dcgan_init(G, init_gen)
    dcgan_init(D, init_gen)
    channels_last = use_channels_last(cfg.channels_last, device)
    G, D = (to_memory_format(m.to(device), channels_last) for m in (G, D))
    if spec.mode == "mix" and bank is not None:  # before the EMA copies G: the copy holds the same images
        G.set_bank(*bank)
    ema = AveragedModel(G, multi_avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
    opt_g = adam(G.parameters(), device, lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = adam(D.parameters(), device, lr=cfg.lr, betas=(cfg.beta1, 0.999))
    gen = torch.Generator(device=device).manual_seed(seed % 2**63 + 1)
    return TrainState(spec, G, D, ema, opt_g, opt_d, gen, lecam=torch.zeros(2, n_classes, device=device))


# --------------------------------------------------------------------------- one step


def train_step(state: TrainState, bank: torch.Tensor, counts: torch.Tensor, cfg: GanConfig) -> dict:
    """One DCGAN step on a class-balanced batch, as in the paper's Algorithm 1."""
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
    # (2) Update G network: make D call the fakes real
    with ctx:
        loss_g = g_loss(D(aug(fake)).float())
        if state.spec.mode == "mix":  # the encoder-decoder must also reproduce the real images (ChimeraMix)
            loss_g = loss_g + cfg.mix_reconstruction * (G.reconstruct_bank(idx).float() - real).abs().mean()
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    state.ema.update_parameters(G)
    state.step += 1
    return {
        "loss_d": loss_d.item(),
        "loss_g": loss_g.item(),
        "d_real": torch.sigmoid(real_logits.float()).mean().item(),
        "d_fake": torch.sigmoid(fake_logits.float()).mean().item(),
    }


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


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: TrainState, fingerprint: str) -> None:
    """The full training state and the model settings (`model`), so it resumes and loads alone."""
    payload = {
        "fingerprint": fingerprint,
        "model": state.spec.to_dict(),
        "step": state.step,
        "G": state.G.state_dict(),
        "D": state.D.state_dict(),
        "ema": state.ema.state_dict(),
        "opt_g": state.opt_g.state_dict(),
        "opt_d": state.opt_d.state_dict(),
        "gen": state.gen.get_state(),
        "lecam": state.lecam,
    }
    write_torch(path, payload)


def load_checkpoint(path: Path, state: TrainState, fingerprint: str) -> bool:
    """Restore `state` from `path` if it was written for the same config; False otherwise."""
    if not path.is_file():
        return False
    payload = read_checkpoint(path)
    if payload.get("fingerprint") != fingerprint:
        log.info("gan: checkpoint is from another config, training from scratch")
        return False
    state.G.load_state_dict(payload["G"])
    state.D.load_state_dict(payload["D"])
    state.ema.load_state_dict(payload["ema"])
    state.opt_g.load_state_dict(payload["opt_g"])
    state.opt_d.load_state_dict(payload["opt_d"])
    state.gen.set_state(payload["gen"])
    if payload.get("lecam") is not None:
        state.lecam.copy_(payload["lecam"])
    state.step = int(payload["step"])
    return True


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


def train_gan(
    images: np.ndarray, labels: np.ndarray, n_classes: int, cfg: GanConfig, *, seed: int, device: torch.device,
    out_dir: Path, fingerprint: str = "", progress: Progress | None = None, stop_after: int | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainState:
    """Train (or resume) to cfg.steps; checkpoints, history.csv and grids go to out_dir.

    `val` (held-out real images and labels) adds D's accuracy on them next to its accuracy on
    the training images every cfg.sample_every steps (columns d_acc_train, d_acc_val).
    `stop_after` ends the loop early at that step (after its checkpoint), to test resume.
    """
    out_dir = Path(out_dir)
    bank = prepare_real(images, labels, n_classes, cfg.image_size, device)
    val_bank = _val_bank(val, n_classes, cfg.image_size, device)
    state = build_state(cfg, n_classes, images.shape[3], seed, device, bank)
    history = _resume(out_dir, state, fingerprint)
    if state.step == 0:  # from scratch: snapshots of an earlier training are not this one's
        shutil.rmtree(out_dir / "snapshots", ignore_errors=True)
    resumed_finished = state.step >= cfg.steps
    while state.step < cfg.steps:
        t0 = time.perf_counter()
        stats = train_step(state, *bank, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize()
        history.append({"step": state.step, **stats, "step_seconds": time.perf_counter() - t0})
        done = state.step == cfg.steps
        if state.step % cfg.sample_every == 0 or done:
            history[-1].update(_evaluate(state, bank, val_bank, cfg, seed, out_dir))
        stopping = stop_requested() is not None  # SIGTERM/SIGINT: checkpoint this step, then stop
        if state.step % cfg.checkpoint_every == 0 or done or state.step == stop_after or stopping:
            _save(out_dir, state, fingerprint, history)
        if progress is not None:  # every step: the caller throttles what it shows
            progress(state.step, cfg.steps)
        if state.step == stop_after:
            break
        check_stop()
    if progress is not None and resumed_finished:  # the loop did not run: say the training is complete
        progress(state.step, cfg.steps)
    return state


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
