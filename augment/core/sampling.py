"""Sampling a trained generator: from a checkpoint alone, with standing statistics, grids and walks."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, update_bn
from torchvision.utils import make_grid

from augment.atomic import write_bytes
from augment.core.checkpoint import checkpoint_spec, read_checkpoint
from augment.core.networks import Discriminator, GanSpec, Generator
from augment.png import encode_png


@torch.no_grad()
def sample(G: torch.nn.Module, n_per_class: int, nz: int, n_classes: int, seed: int, device, batch: int = 256,
           scale: float = 1.0) -> torch.Tensor:
    """n_per_class samples per class, (n, K, C, S, S) in [-1, 1], from an explicit seed; `scale`
    multiplies the noise (the latent scale: below 1 trades variety for typical images)."""
    G.eval()
    return torch.cat([G(z * scale).float() for z in noise(n_per_class, n_classes, nz, seed, device, batch)])


def noise(n_per_class: int, n_classes: int, nz: int, seed: int, device, batch: int = 256):
    """The noise `sample` feeds G, (<= batch, K, nz) at a time, from an explicit seed."""
    gen = torch.Generator(device=device).manual_seed(seed % 2**63)
    for start in range(0, n_per_class, batch):
        yield torch.randn(min(batch, n_per_class - start), n_classes, nz, generator=gen, device=device)


def sample_parents(G: torch.nn.Module, n_per_class: int, nz: int, n_classes: int, seed: int, device,
                   batch: int = 256) -> np.ndarray | None:
    """The real parents (indices within their class) of what `sample` draws with the same arguments,
    (n, K, 2); None for a generator that has no parents (every mode but mix)."""
    if not hasattr(G, "parents"):
        return None
    parts = [G.parents(z) for z in noise(n_per_class, n_classes, nz, seed, device, batch)]
    return None if parts[0] is None else torch.cat(parts).cpu().numpy()  # an ensemble's rows without parents: -1


@torch.no_grad()
def interpolate(G: torch.nn.Module, n_classes: int, nz: int, steps: int, seed: int, device) -> torch.Tensor:
    """The DCGAN paper's latent walk: G along the straight line between two noise vectors per
    class, (steps, K, C, S, S). Smooth change means G learned a space, not a list of images."""
    gen = torch.Generator(device=device).manual_seed(seed % 2**63)
    z0, z1 = torch.randn(2, 1, n_classes, nz, generator=gen, device=device)
    t = torch.linspace(0, 1, steps, device=device).view(steps, 1, 1)
    G = G.members[0] if hasattr(G, "members") else G  # an ensemble: its first member's walk (rows alternate members)
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


def save_grid(path: Path, images: torch.Tensor, nrow: int) -> None:
    """Grid of (N, C, S, S) images in [-1, 1] as one PNG (torchvision's make_grid), atomically."""
    grid = make_grid(images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    write_bytes(path, encode_png(arr if images.shape[1] == 3 else arr[:, :, :1]))


def load_generator(checkpoint: Path, device, seed: int = 0) -> Generator:
    """The EMA generator of a checkpoint, with standing statistics, ready to sample; needs no config.
    An ensemble's checkpoint (gan.mode per_class+mix) gives an EnsembleGenerator of its members."""
    payload = read_checkpoint(Path(checkpoint))
    if "members" in payload["model"]:
        from augment.core.ensemble import EnsembleGenerator

        return EnsembleGenerator([_ema_generator(GanSpec(**model), ema, device, seed)
                                  for model, ema in zip(payload["model"]["members"], payload["ema"])]).eval()
    return _ema_generator(checkpoint_spec(payload), payload["ema"], device, seed)


def _ema_generator(spec: GanSpec, state: dict, device, seed: int) -> torch.nn.Module:
    ema = AveragedModel(spec.generator(), use_buffers=True)
    ema.load_state_dict(state)
    return standing_stats(ema.module.to(device), spec.n_classes, spec.nz, seed, device)


def load_discriminator(checkpoint: Path) -> Discriminator:
    """The trained discriminator of a checkpoint, in eval mode, on the CPU; needs no config."""
    payload = read_checkpoint(Path(checkpoint))
    if "members" in payload["model"]:
        raise ValueError(f"{checkpoint}: an ensemble of generators has no single discriminator")
    D = checkpoint_spec(payload).discriminator()
    D.load_state_dict(payload["D"])
    return D.eval()
