"""The GAN's pieces around the step: the objective, the real images' bank, the training state with
its device-side EMA, and checkpoints (augment.core.gan_train runs the step and the loop)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from augment.atomic import write_torch
from augment.config import GanConfig
from augment.core.accel import adam, to_memory_format, use_channels_last
from augment.core.checkpoint import read_checkpoint
from augment.core.networks import Discriminator, GanSpec, Generator, dcgan_init
from augment.core.tensors import resize, to_tensor

log = logging.getLogger("augment")


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
    The reference for EmaUpdate, which makes the same update without leaving the device.
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


class EmaUpdate:
    """AveragedModel(G, multi_avg_fn=ema_with_warmup(decay), use_buffers=True).update_parameters(G),
    the same numbers, with no host round-trip: the counter (its n_averaged) and the decay stay on
    the device and one foreach lerp updates every float tensor (the first update copies, as
    AveragedModel does). The mix generator's image bank (buffers bank, counts) never changes and is skipped."""

    CONSTANT = ("bank", "counts")

    def __init__(self, ema: AveragedModel, model: torch.nn.Module, decay: float):
        self.ema, self.decay = ema, decay
        mine = {**dict(ema.module.named_parameters()), **dict(ema.module.named_buffers())}
        theirs = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        names = [n for n in theirs if n.rsplit(".", 1)[-1] not in self.CONSTANT]
        self.floats = ([mine[n] for n in names if theirs[n].is_floating_point()],
                       [theirs[n] for n in names if theirs[n].is_floating_point()])
        self.ints = ([mine[n] for n in names if not theirs[n].is_floating_point()],
                     [theirs[n] for n in names if not theirs[n].is_floating_point()])

    @torch.no_grad()
    def __call__(self) -> None:
        n = self.ema.n_averaged
        nf = n.double()
        d = torch.clamp((1.0 + nf) / (10.0 + nf), max=self.decay)
        weight = torch.where(n == 0, torch.ones_like(d), 1.0 - d).float()
        torch._foreach_lerp_(self.floats[0], [t.detach() for t in self.floats[1]], weight)
        if self.ints[0]:
            torch._foreach_copy_(self.ints[0], self.ints[1])
        n.add_(1)


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
    ema_update: EmaUpdate | None = None


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
    return TrainState(spec, G, D, ema, opt_g, opt_d, gen, lecam=torch.zeros(2, n_classes, device=device),
                      ema_update=EmaUpdate(ema, G, cfg.ema_decay))


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
