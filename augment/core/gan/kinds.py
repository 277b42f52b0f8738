"""The generator interface: what one gan.mode implements, how the rest finds it, and the real images it learns from.

A generator is a subclass of Kind in a module of its own, named in augment.registry.GENERATORS. The
training loop (augment.core.gan.train), snapshots, CAS selection, resume, shards and the ensemble call
only the methods below; no code outside a generator's own module tests its name. The DCGAN modes
(augment.core.gan.dcgan) and the mix generator (augment.core.gan.mix) share the adversarial training
of augment.core.gan.adversarial; a generator that trains otherwise implements the methods itself.

The one shape every generator keeps, so the sampler, the gate and the online sampler never branch:
    sampler(z: (B, K, nz)) -> images (B, K, C, S, S) in [-1, 1], row b's image k of class k
and, for a generator made from real images, sampler.parents(z) -> (B, K, 2) indices of each
sample's real parents within their class (manifest rows record them).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from augment.core.base.tensors import resize, to_tensor
from augment.registry import GENERATORS

Bank = tuple[torch.Tensor, torch.Tensor]  # prepare_real's (images (K, Nmax, C, S, S), counts (K,))


@dataclass(frozen=True)
class GanSpec:
    """Everything that fixes a generator's shapes; stored in every checkpoint, so a checkpoint loads
    without the run's config."""

    mode: str
    n_classes: int
    nz: int
    ngf: int
    ndf: int
    image_size: int
    channels: int
    parents: int = 0  # a generator made from real images: images held per class (the largest class's count)

    def __post_init__(self) -> None:
        if self.mode not in GENERATORS:  # an ensemble is several specs (augment.core.gan.ensemble)
            raise ValueError(f"one generator of {', '.join(GENERATORS)} per spec, not {self.mode!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class Kind:
    """One generator. A training state is any object with `spec` (GanSpec) and `step` (int) that
    build() returns and only this kind's methods read."""

    metrics: tuple[str, ...] = ("loss_d", "loss_g", "d_real", "d_fake")  # step()'s tensor, in this order
    sampler_keys: tuple[str, ...] = ("generator",)  # the keys of sampler_state(), in checkpoints and snapshots

    def spec(self, cfg, n_classes: int, channels: int, bank: Bank | None) -> GanSpec:
        """The settings of this generator for gan config `cfg`, trained on `bank` (None: not known yet)."""
        return GanSpec(cfg.mode, n_classes, cfg.nz, cfg.ngf, cfg.ndf, cfg.image_size, channels)

    def build(self, spec: GanSpec, cfg, seed: int, device: torch.device, bank: Bank | None) -> Any:
        """A fresh training state: networks initialised from `seed`, optimisers, its own noise generator."""
        raise NotImplementedError

    def step(self, state, bank: torch.Tensor, counts: torch.Tensor, cfg) -> torch.Tensor:
        """One training step (state.step += 1); its metrics as a tensor on the device, nothing read back."""
        raise NotImplementedError

    def evaluate(self, state, bank: Bank, val_bank: Bank | None, cfg, seed: int) -> dict:
        """Extra history columns every gan.sample_every steps (the adversarial kinds: D's accuracy on
        train and on val images, the overfitting signal)."""
        return {}

    def payload(self, state) -> dict:
        """The whole training state as tensors and plain containers (checkpoint.pt): resume restores it."""
        raise NotImplementedError

    def restore(self, state, payload: dict) -> None:
        """Undo payload(): `state` continues exactly where the saved one stopped."""
        raise NotImplementedError

    def sampler_state(self, state) -> dict:
        """What sampling needs of the training state, under sampler_keys (a snapshot holds only this;
        payload() holds it too, so a checkpoint samples like a snapshot)."""
        raise NotImplementedError

    def sampler(self, spec: GanSpec, sampler_state: dict, device, seed: int) -> nn.Module:
        """The generator to sample, in eval mode on `device`, from sampler_state() alone (no config)."""
        raise NotImplementedError

    def current(self, state, device, seed: int) -> nn.Module:
        """The generator as it would be sampled now (the training's grids): by default the sampler of
        sampler_state(); a kind may hand its live module instead of a copy."""
        return self.sampler(state.spec, self.sampler_state(state), device, seed)

    def discriminator(self, spec: GanSpec, payload: dict) -> nn.Module:
        """The trained discriminator of a checkpoint (smote.features: discriminator), on the CPU."""
        raise ValueError(f"gan.mode {spec.mode} trains no discriminator")

    def merge(self, payloads: list[dict]) -> dict:
        """One checkpoint of the whole class set from its shards' (class blocks, in class order); only
        for a kind whose registry entry is shardable."""
        raise ValueError(f"gan.mode {payloads[0]['model']['mode']} cannot be trained in shards")


_KINDS: dict[str, Kind] = {}  # by import path


def checkpoint_spec(payload: dict) -> GanSpec:
    """The model settings a checkpoint was trained with."""
    return GanSpec(**payload["model"])


def kind(mode: str) -> Kind:
    """The Kind of one generator named in augment.registry.GENERATORS (its module imported on first use)."""
    impl = GENERATORS[mode].impl
    if impl not in _KINDS:
        module, name = impl.split(":")
        _KINDS[impl] = getattr(importlib.import_module(module), name)()
    return _KINDS[impl]


# --------------------------------------------------------------------------- the real images


def prepare_real(images: np.ndarray, labels: np.ndarray, n_classes: int, image_size: int, device) -> Bank:
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
