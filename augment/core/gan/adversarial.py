"""Adversarial training, shared by the DCGAN modes and the mix generator: the objective (with LeCam and
R1), DiffAugment, one step in two blocks (D, then G), the EMA generator kept on the device, D's accuracy
on real images, and sampling with standing statistics. A kind subclasses Adversarial and supplies its
networks (and, if it needs them, the images it holds and an extra generator loss).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from augment.core.base.accel import CapturedStep, adam, autocast, to_memory_format, use_channels_last, use_cuda_graphs
from augment.core.gan.diffaugment import diff_augment
from augment.core.gan.kinds import Bank, GanSpec, Kind, balanced_batch, balanced_indices

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
                   step: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Update the (2, K) moving averages of D's mean logits per class in place (real, fake) and return
    the bias-corrected anchors after `step` updates (TF's zero_debias; `step` may be a tensor on the device)."""
    means = torch.stack([real_logits.detach().float().mean(0), fake_logits.detach().float().mean(0)])
    ema.mul_(decay).add_(means, alpha=1 - decay)
    anchors = ema / (1 - decay ** step)
    return anchors[0], anchors[1]


def r1_penalty(real_logits: torch.Tensor, real_input: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean over images of |grad_x D(x)|^2 on real images (times gamma / 2 by the caller)."""
    grad, = torch.autograd.grad(real_logits.float().sum(), real_input, create_graph=True)
    return grad.float().pow(2).flatten(2).sum(2).mean()


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
    AveragedModel does). Buffers named in `constant` (the mix generator's image bank) never change and are skipped."""

    def __init__(self, ema: AveragedModel, model: torch.nn.Module, decay: float, constant: tuple[str, ...] = ()):
        self.ema, self.decay = ema, decay
        mine = {**dict(ema.module.named_parameters()), **dict(ema.module.named_buffers())}
        theirs = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        names = [n for n in theirs if n.rsplit(".", 1)[-1] not in constant]
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
    G: nn.Module
    D: nn.Module
    ema: AveragedModel
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0
    lecam: torch.Tensor | None = None  # (2, K) moving averages of D's logits on real and fake (gan.lecam)
    ema_update: EmaUpdate | None = None
    captured: CapturedStep | None = None  # gan.cuda_graphs: the step replayed as one CUDA graph


# --------------------------------------------------------------------------- the kind


def dcgan_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """The DCGAN paper's init: conv weights N(0, 0.02), batch-norm scale N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02, generator=generator)
            nn.init.zeros_(m.bias)


class Adversarial(Kind):
    """A generator trained against a discriminator, as in the DCGAN paper's Algorithm 1; sampled from
    its EMA generator with standing statistics. Subclasses supply networks(); prepare() and
    extra_g_loss() are theirs to override."""

    constant_buffers: tuple[str, ...] = ()  # buffers of G the EMA copies once and never averages
    sampler_keys = ("ema",)  # the EMA generator (AveragedModel's state) is what is sampled

    def networks(self, spec: GanSpec) -> tuple[nn.Module, nn.Module]:
        """Fresh (G, D) for `spec`, before initialisation."""
        raise NotImplementedError

    def init(self, module: nn.Module, generator: torch.Generator) -> None:
        """Initialise a fresh network's weights from `generator` (default: the DCGAN paper's)."""
        dcgan_init(module, generator)

    def prepare(self, G: nn.Module, bank: Bank) -> None:
        """Hand G the real images it needs before training (the mix generator's parents); nothing by default."""

    def extra_g_loss(self, state: TrainState, idx: torch.Tensor, real: torch.Tensor, cfg) -> torch.Tensor | None:
        """A term added to G's loss in every step (idx: the batch's indices within their classes)."""
        return None

    def build(self, spec: GanSpec, cfg, seed: int, device: torch.device, bank: Bank | None) -> TrainState:
        init_gen = torch.Generator().manual_seed(seed % 2**63)
        G, D = self.networks(spec)
        self.init(G, init_gen)
        self.init(D, init_gen)
        channels_last = use_channels_last(cfg.channels_last, device)
        G, D = (to_memory_format(m.to(device), channels_last) for m in (G, D))
        if bank is not None:  # before the EMA copies G: the copy holds the same images
            self.prepare(G, bank)
        ema = AveragedModel(G, multi_avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
        graphs = use_cuda_graphs(cfg.cuda_graphs, device)
        opt_g = adam(G.parameters(), device, lr=cfg.lr, betas=(cfg.beta1, 0.999), capturable=graphs)
        opt_d = adam(D.parameters(), device, lr=cfg.lr, betas=(cfg.beta1, 0.999), capturable=graphs)
        gen = torch.Generator(device=device).manual_seed(seed % 2**63 + 1)
        return TrainState(spec, G, D, ema, opt_g, opt_d, gen, lecam=torch.zeros(2, spec.n_classes, device=device),
                          ema_update=EmaUpdate(ema, G, cfg.ema_decay, self.constant_buffers),
                          captured=CapturedStep([gen]) if graphs else None)

    def step(self, state: TrainState, bank: torch.Tensor, counts: torch.Tensor, cfg) -> torch.Tensor:
        """One step on a class-balanced batch; its metrics as a (4,) tensor on the device. With
        gan.cuda_graphs the same update, replayed as one CUDA graph after a few eager steps."""
        if state.captured is not None:
            out = state.captured(lambda: self.update(state, bank, counts, cfg), (bank, counts))
        else:
            out = self.update(state, bank, counts, cfg)
        state.step += 1
        return out

    def update(self, state: TrainState, bank: torch.Tensor, counts: torch.Tensor, cfg) -> torch.Tensor:
        """The step's work on the device alone (no host round-trip, no Python state changed but the
        tensors'), so that it can be captured as a CUDA graph; its metrics as a (4,) tensor."""
        G, D, gen = state.G, state.D, state.gen
        idx = balanced_indices(counts, cfg.batch_size, gen)
        real = bank[torch.arange(bank.shape[0], device=bank.device), idx]  # (B, K, C, S, S)
        z = torch.randn(cfg.batch_size, bank.shape[0], cfg.nz, generator=gen, device=bank.device)
        policy = list(cfg.diffaugment)

        def aug(x: torch.Tensor) -> torch.Tensor:  # DiffAugment per image, the same policy for real and fake
            return diff_augment(x.flatten(0, 1), policy, gen).view_as(x)

        ctx = autocast(bank.device, cfg.precision, cache=state.captured is None)
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
            anchor_real, anchor_fake = update_anchors(state.lecam, real_logits, fake_logits, cfg.lecam_decay,
                                                        state.ema.n_averaged + 1)  # this step's number, on the device
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
            extra = self.extra_g_loss(state, idx, real, cfg)
            if extra is not None:
                loss_g = loss_g + extra
        state.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        D.requires_grad_(True)
        state.opt_g.step()
        state.ema_update()
        return torch.stack([loss_d.detach(), loss_g.detach(), torch.sigmoid(real_logits.detach().float()).mean(),
                            torch.sigmoid(fake_logits.detach().float()).mean()])

    def evaluate(self, state: TrainState, bank: Bank, val_bank: Bank | None, cfg, seed: int) -> dict:
        out = {"d_acc_train": d_real_accuracy(state.D, *bank, cfg.batch_size, seed, precision=cfg.precision)}
        if val_bank is not None:
            out["d_acc_val"] = d_real_accuracy(state.D, *val_bank, cfg.batch_size, seed, precision=cfg.precision)
        return out

    def payload(self, state: TrainState) -> dict:
        return {"G": state.G.state_dict(), "D": state.D.state_dict(), "ema": state.ema.state_dict(),
                "opt_g": state.opt_g.state_dict(), "opt_d": state.opt_d.state_dict(), "gen": state.gen.get_state(),
                "lecam": state.lecam}

    def restore(self, state: TrainState, payload: dict) -> None:
        state.G.load_state_dict(payload["G"])
        state.D.load_state_dict(payload["D"])
        state.ema.load_state_dict(payload["ema"])
        state.opt_g.load_state_dict(payload["opt_g"])
        state.opt_d.load_state_dict(payload["opt_d"])
        state.gen.set_state(payload["gen"])
        if payload.get("lecam") is not None:
            state.lecam.copy_(payload["lecam"])

    def sampler_state(self, state: TrainState) -> dict:
        return {"ema": state.ema.state_dict()}

    def sampler(self, spec: GanSpec, sampler_state: dict, device, seed: int) -> nn.Module:
        ema = AveragedModel(self.networks(spec)[0], use_buffers=True)
        ema.load_state_dict(sampler_state["ema"])
        return standing_stats(ema.module.to(device), spec.n_classes, spec.nz, seed, device)

    def current(self, state: TrainState, device, seed: int) -> nn.Module:
        return standing_stats(state.ema.module, state.spec.n_classes, state.spec.nz, seed, device)  # a copy

    def discriminator(self, spec: GanSpec, payload: dict) -> nn.Module:
        D = self.networks(spec)[1]
        D.load_state_dict(payload["D"])
        return D.eval()


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
