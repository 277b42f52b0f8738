"""GAN training: the objective, the loop, checkpoints (resumable), history and sample grids."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, update_bn
from torchvision.utils import make_grid

from augment import manifest
from augment.classifier import to_tensor
from augment.config import Config, GanConfig
from augment.data import ingest_fingerprint, ingest_info, load_split
from augment.errors import UserError
from augment.gan import Discriminator, Generator, dcgan_init, diff_augment
from augment.runtime import atomic_path, combine, derive_seed, resolve_device, run_stage, write_bytes

log = logging.getLogger("augment")
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- objective


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """DCGAN discriminator loss: real -> 1, fake -> 0 (binary cross-entropy on logits)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: maximise log D(G(z)) (the paper's 'real labels' trick)."""
    return F.softplus(-fake_logits).mean()


# --------------------------------------------------------------------------- trainer


def prepare_real(images: np.ndarray, labels: np.ndarray, n_classes: int, image_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class image bank (K, Nmax, C, S, S) in [-1, 1] and counts (K,), for class-balanced batches."""
    x = to_tensor(images, device)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    counts = torch.tensor([int((labels == c).sum()) for c in range(n_classes)], device=device)
    if (counts == 0).any():
        missing = int(torch.nonzero(counts == 0)[0])
        raise ValueError(f"class index {missing} has no training images")
    bank = torch.zeros(n_classes, int(counts.max()), *x.shape[1:], device=device)
    for c in range(n_classes):
        sel = x[torch.from_numpy(labels == c).to(device)]
        bank[c, : len(sel)] = sel
    return bank, counts


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
    G: Generator
    D: Discriminator
    ema: AveragedModel
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0


def build_state(cfg: GanConfig, n_classes: int, channels: int, seed: int, device: torch.device) -> TrainState:
    init_gen = torch.Generator().manual_seed(seed % 2**63)
    G = Generator(n_classes, cfg.nz, cfg.ngf, channels, cfg.image_size, cfg.mode)
    D = Discriminator(n_classes, cfg.ndf, channels, cfg.image_size, cfg.mode)
    dcgan_init(G, init_gen)
    dcgan_init(D, init_gen)
    G.to(device)
    D.to(device)
    if device.type == "cuda":
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    ema = AveragedModel(G, multi_avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
    fused = device.type == "cuda"
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999), fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999), fused=fused)
    gen = torch.Generator(device=device).manual_seed(seed % 2**63 + 1)
    return TrainState(G, D, ema, opt_g, opt_d, gen)


def train_step(state: TrainState, bank: torch.Tensor, counts: torch.Tensor, cfg: GanConfig) -> dict:
    """One DCGAN step on a class-balanced batch: (1) update D on real, then fake.detach(); (2) update G."""
    G, D, gen = state.G, state.D, state.gen
    k, b = bank.shape[0], cfg.batch_size
    device = bank.device
    idx = (torch.rand(b, k, generator=gen, device=device) * counts).long()  # (B, K) per-class indices
    real = bank[torch.arange(k, device=device), idx]  # (B, K, C, S, S)
    z = torch.randn(b, k, cfg.nz, generator=gen, device=device)
    policy = list(cfg.diffaugment)

    def aug(x: torch.Tensor) -> torch.Tensor:  # DiffAugment per image, same policy for real and fake
        flat = diff_augment(x.reshape(-1, *x.shape[2:]), policy, gen)
        return flat.view_as(x)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        fake = G(z)
        real_logits = D(aug(real))
        fake_logits = D(aug(fake.detach()))
        loss_d = d_loss(real_logits.float(), fake_logits.float())
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    state.opt_d.step()
    with autocast:
        fake_logits_g = D(aug(fake))
        loss_g = g_loss(fake_logits_g.float())
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
def d_real_accuracy(D: torch.nn.Module, bank: torch.Tensor, counts: torch.Tensor, batch: int, seed: int, batches: int = 4) -> float:
    """Fraction of real images in `bank` that D calls real (logit > 0), without augmentation.

    Measured on the train bank and on held-out real (val) images, the gap between the two is
    the discriminator-overfitting signal (Karras et al. 2020): a D that has memorised the
    training images calls them real and held-out real images fake. Batches are class-balanced
    and all-real, as D sees real images during training; batch norm uses batch statistics on a
    copy of D, so training state is untouched.
    """
    D = copy.deepcopy(D).train()
    device = bank.device
    gen = torch.Generator(device=device).manual_seed(seed % 2**63)
    k = bank.shape[0]
    hits = []
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for _ in range(batches):
            idx = (torch.rand(batch, k, generator=gen, device=device) * counts).long()
            hits.append((D(bank[torch.arange(k, device=device), idx]).float() > 0).float().mean())
    return float(torch.stack(hits).mean())


@torch.no_grad()
def sample(G: torch.nn.Module, n_per_class: int, nz: int, n_classes: int, seed: int, device, batch: int = 256) -> torch.Tensor:
    """n_per_class samples per class, (n, K, C, S, S) in [-1, 1], from an explicit seed."""
    gen = torch.Generator(device=device).manual_seed(seed % 2**63)
    G.eval()
    out = []
    for start in range(0, n_per_class, batch):
        z = torch.randn(min(batch, n_per_class - start), n_classes, nz, generator=gen, device=device)
        out.append(G(z).float())
    return torch.cat(out)


@torch.no_grad()
def interpolate(G: torch.nn.Module, n_classes: int, nz: int, steps: int, seed: int, device) -> torch.Tensor:
    """The DCGAN paper's latent walk: G along the straight line between two noise vectors per
    class, (steps, K, C, S, S). Smooth change means G learned a space, not a list of images."""
    gen = torch.Generator(device=device).manual_seed(seed % 2**63)
    z0, z1 = torch.randn(2, 1, n_classes, nz, generator=gen, device=device)
    t = torch.linspace(0, 1, steps, device=device).view(steps, 1, 1)
    G.eval()
    return G((1 - t) * z0 + t * z1).float()


@torch.no_grad()
def standing_stats(G: torch.nn.Module, n_classes: int, nz: int, seed: int, device, batches: int = 8, batch: int = 64) -> torch.nn.Module:
    """A copy of G with batch-norm statistics re-estimated on fresh noise ("standing statistics").

    Averaging weights (EMA) leaves the averaged running statistics out of step with the
    averaged weights: sampled images wash out to grey. Re-estimating them fixes that.
    """
    G = copy.deepcopy(G)
    gen = torch.Generator(device=device).manual_seed(seed % 2**63)
    update_bn([torch.randn(batch, n_classes, nz, generator=gen, device=device) for _ in range(batches)], G)
    return G.eval()


def to_uint8(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(N, C, S, S) in [-1, 1] -> uint8 (N, H, W, C) resized to the dataset's working size."""
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def save_grid(path: Path, images: torch.Tensor, nrow: int) -> None:
    """Grid of (N, C, S, S) images in [-1, 1] as one PNG (torchvision's make_grid), atomically."""
    grid = make_grid(images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    write_bytes(path, manifest.encode_png(arr if images.shape[1] == 3 else arr[:, :, :1]))


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: TrainState, fingerprint: str) -> None:
    payload = {
        "fingerprint": fingerprint,
        "step": state.step,
        "G": state.G.state_dict(),
        "D": state.D.state_dict(),
        "ema": state.ema.state_dict(),
        "opt_g": state.opt_g.state_dict(),
        "opt_d": state.opt_d.state_dict(),
        "gen": state.gen.get_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: Path) -> dict:
    """torch.load with weights_only=True (tensors and plain containers, never arbitrary pickled
    objects); anything else, or a damaged file, is a one-line error naming the file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (UnpicklingError, RuntimeError, EOFError, zip errors)
        raise UserError(f"{path}: not a checkpoint this tool wrote ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to train from scratch") from None
    if not isinstance(payload, dict) or "ema" not in payload:
        raise UserError(f"{path}: not a checkpoint this tool wrote (no generator state); delete it to train from scratch")
    return payload


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
    state.step = int(payload["step"])
    return True


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
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    bank, counts = prepare_real(images, labels, n_classes, cfg.image_size, device)
    val_bank = None
    if val is not None and len(val[0]):
        try:
            val_bank = prepare_real(val[0], val[1], n_classes, cfg.image_size, device)
        except ValueError as exc:  # a class without val images: no overfitting signal
            log.warning("gan: no discriminator-overfitting signal (val split: %s)", exc)
    state = build_state(cfg, n_classes, images.shape[3], seed, device)
    ckpt = out_dir / "checkpoint.pt"
    history: list[dict] = []
    if load_checkpoint(ckpt, state, fingerprint):
        log.info("gan: resumed from step %d", state.step)
        hist_path = out_dir / "history.csv"
        if hist_path.is_file():
            old = pd.read_csv(hist_path)
            history = old[old["step"] <= state.step].to_dict("records")
    grid_z_seed = derive_seed(seed, "grid")
    bar = tqdm(total=cfg.steps, initial=state.step, desc="gan", unit="step", leave=False, mininterval=1.0)
    while state.step < cfg.steps:
        t0 = time.perf_counter()
        stats = train_step(state, bank, counts, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize()
        history.append({"step": state.step, **stats, "step_seconds": time.perf_counter() - t0})
        bar.update(1)
        done = state.step == cfg.steps
        if state.step % cfg.sample_every == 0 or done:
            eval_seed = derive_seed(seed, "d-acc", state.step)
            history[-1]["d_acc_train"] = d_real_accuracy(state.D, bank, counts, cfg.batch_size, eval_seed)
            if val_bank is not None:
                history[-1]["d_acc_val"] = d_real_accuracy(state.D, *val_bank, cfg.batch_size, eval_seed)
            G_ema = standing_stats(state.ema.module, n_classes, cfg.nz, grid_z_seed + 1, device)
            grid = sample(G_ema, 8, cfg.nz, n_classes, grid_z_seed, device)  # (8, K, C, S, S)
            save_grid(out_dir / "samples" / f"step_{state.step:06d}.png", grid.transpose(0, 1).flatten(0, 1), nrow=8)
        if state.step % cfg.checkpoint_every == 0 or done or state.step == stop_after:
            save_checkpoint(ckpt, state, fingerprint)
            with atomic_path(out_dir / "history.csv") as tmp:
                pd.DataFrame(history).to_csv(tmp, index=False)
            if progress is not None:
                progress(state.step, cfg.steps)
        if state.step == stop_after:
            break
    bar.close()
    return state


def load_generator(out_dir: Path, cfg: GanConfig, n_classes: int, channels: int, device, seed: int = 0) -> Generator:
    """The EMA generator from the final checkpoint, with standing statistics, ready to sample."""
    payload = read_checkpoint(Path(out_dir) / "checkpoint.pt")
    G = Generator(n_classes, cfg.nz, cfg.ngf, channels, cfg.image_size, cfg.mode)
    ema = AveragedModel(G, use_buffers=True)
    ema.load_state_dict(payload["ema"])
    return standing_stats(ema.module.to(device), n_classes, cfg.nz, seed, device)


def gan_fingerprint(cfg: Config) -> str:
    return combine(ingest_fingerprint(cfg), cfg.section_hash("seed", "gan"))


# --------------------------------------------------------------------------- shards (per_class mode)


def class_shards(n_classes: int, shards: int) -> list[np.ndarray]:
    """Contiguous blocks of class indices, one per shard (at most one shard per class).

    In per_class mode the K class GANs are independent, so a shard is just a smaller grouped
    network over its block of classes; shards train anywhere (threads, Dask workers, GPUs) and
    their weights concatenate, in class order, into the one K-class network.
    """
    return list(np.array_split(np.arange(n_classes), min(shards, n_classes)))


def shard_dir(run_dir: Path, shard: int) -> Path:
    return Path(run_dir) / "gan" / "shards" / f"{shard:02d}"


def train_shard(cfg: Config, run_dir: Path, shard: int, progress: Progress | None = None) -> dict:
    """Train (or resume, or find finished) one shard's classes into gan/shards/<shard>/."""
    run_dir = Path(run_dir)
    info = ingest_info(run_dir)
    classes = class_shards(len(info["classes"]), cfg.gan.shards)[shard]
    (x, y, _), (x_val, y_val, _) = load_split(run_dir, "train"), load_split(run_dir, "val")
    keep, keep_val = np.isin(y, classes), np.isin(y_val, classes)
    state = train_gan(
        x[keep], y[keep] - classes[0], len(classes), cfg.gan, seed=derive_seed(cfg.seed, "gan", "shard", shard),
        device=resolve_device(cfg.device), out_dir=shard_dir(run_dir, shard),
        fingerprint=combine(gan_fingerprint(cfg), f"shard-{shard}"), progress=progress,
        val=(x_val[keep_val], y_val[keep_val] - classes[0]),
    )
    return {"shard": shard, "classes": [info["classes"][c] for c in classes], "steps": state.step}


def concat_grouped(states: list[dict]) -> dict:
    """One K-class grouped network's state from its shards' states (in class order).

    Every per-group tensor of a grouped (de)convolution, batch norm or head keeps its groups
    contiguous along dim 0, so concatenation along dim 0 is exact; scalars (batch norm's
    num_batches_tracked, the EMA's n_averaged) are equal across shards and taken from the first.
    """
    return {k: torch.cat([s[k] for s in states]) if states[0][k].dim() else states[0][k] for k in states[0]}


def merge_shards(cfg: Config, run_dir: Path, n_classes: int, fingerprint: str) -> None:
    """gan/checkpoint.pt and gan/history.csv of the whole K-class GAN from its finished shards."""
    gan_dir = Path(run_dir) / "gan"
    shards = class_shards(n_classes, cfg.gan.shards)
    payloads = [read_checkpoint(shard_dir(run_dir, i) / "checkpoint.pt") for i in range(len(shards))]
    for i, p in enumerate(payloads):
        if p.get("step") != cfg.gan.steps:
            raise RuntimeError(f"gan shard {i} stopped at step {p.get('step')} of {cfg.gan.steps}")
    merged = {"fingerprint": fingerprint, "step": cfg.gan.steps, "shards": len(shards)}
    for part in ("G", "D", "ema"):
        merged[part] = concat_grouped([p[part] for p in payloads])
    with atomic_path(gan_dir / "checkpoint.pt") as tmp:
        torch.save(merged, tmp)
    # History: per-step means over all classes (each shard weighted by its class count);
    # step_seconds is the slowest shard's, the wall time when shards run side by side.
    weights = np.array([len(s) for s in shards], dtype=float)
    frames = [pd.read_csv(shard_dir(run_dir, i) / "history.csv").set_index("step") for i in range(len(shards))]
    mean = sum(f.drop(columns="step_seconds") * w for f, w in zip(frames, weights)) / weights.sum()
    mean["step_seconds"] = pd.concat([f["step_seconds"] for f in frames], axis=1).max(axis=1)
    with atomic_path(gan_dir / "history.csv") as tmp:
        mean.reset_index().to_csv(tmp, index=False)


def gan_stage(cfg: Config, run_dir: Path, progress: Progress | None = None) -> dict:
    """Train the class-conditional DCGAN on the real train split; resumes from gan/checkpoint.pt.

    With gan.shards > 1 each shard of classes trains (or resumes) into gan/shards/<i>/ and the
    shards are merged; the flow trains the shards side by side beforehand (flows.augment_flow),
    so here they are found finished.
    """
    run_dir = Path(run_dir)
    fp = gan_fingerprint(cfg)

    def body() -> dict:
        if not cfg.gan.enabled:
            return {"steps": 0}
        info = ingest_info(run_dir)
        k = len(info["classes"])
        device = resolve_device(cfg.device)
        t0 = time.perf_counter()
        n_shards = len(class_shards(k, cfg.gan.shards))
        if n_shards > 1:
            for i in range(n_shards):
                shard_progress = None if progress is None else (lambda s, n, i=i: progress(i * n + s, n_shards * n))
                train_shard(cfg, run_dir, i, shard_progress)
            merge_shards(cfg, run_dir, k, fp)
            steps = cfg.gan.steps
        else:
            x, y, _ = load_split(run_dir, "train")
            x_val, y_val, _ = load_split(run_dir, "val")
            steps = train_gan(x, y, k, cfg.gan, seed=derive_seed(cfg.seed, "gan"), device=device,
                              out_dir=run_dir / "gan", fingerprint=fp, progress=progress, val=(x_val, y_val)).step
        G = load_generator(run_dir / "gan", cfg.gan, k, info["channels"], device, derive_seed(cfg.seed, "bn"))
        grid = sample(G, 64, cfg.gan.nz, k, derive_seed(cfg.seed, "final-grid"), device)
        for c, label in enumerate(info["classes"]):
            save_grid(run_dir / "gan" / "samples" / f"final_{label}.png", grid[:, c], nrow=8)
        walk = interpolate(G, k, cfg.gan.nz, 10, derive_seed(cfg.seed, "interpolation"), device)
        save_grid(run_dir / "gan" / "samples" / "interpolation.png", walk.transpose(0, 1).flatten(0, 1), nrow=10)
        last = pd.read_csv(run_dir / "gan" / "history.csv").iloc[-1]
        overfit = {c: round(float(last[c]), 4) for c in ("d_acc_train", "d_acc_val") if c in last and pd.notna(last[c])}
        return {"steps": steps, "shards": n_shards, "device": str(device),
                "train_seconds": round(time.perf_counter() - t0, 2), **overfit}

    return run_stage(run_dir, "gan", fp, body)
