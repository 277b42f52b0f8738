"""Sampling a trained generator: from a checkpoint alone (any kind, or an ensemble of them), grids and walks.

An ensemble (gan.mode "per_class+mix") samples through EnsembleGenerator. A classifier trained on one
generator's samples learns that generator's habits along with the classes: on MNIST at 10 images per
class the per-class GAN's 8s and the mix generator's 0s are each too narrow, and each alone teaches a
classifier to about 70% on real val. Half the kept samples from each teach it to 82% (benchmarks/README.md,
issue 17): their flaws differ, so the pool covers more of every class. Ensembles of GANs (Wang et al.
2016) and mixtures of generators (MGAN, Hoang et al. 2018) make the same observation for diversity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from augment.atomic import write_bytes
from augment.core.gan.checkpoint import read_checkpoint
from augment.core.gan.kinds import GanSpec, checkpoint_spec, kind
from augment.errors import UserError
from augment.png import encode_png


@torch.no_grad()
def sample(G: torch.nn.Module, n_per_class: int, nz: int, n_classes: int, seed: int, device, batch: int = 256,
           scale: float = 1.0) -> torch.Tensor:
    """n_per_class samples per class, (n, K, C, S, S) in [-1, 1], from an explicit seed; `scale`
    multiplies the noise (the latent scale: below 1 trades variety for typical images)."""
    G.eval()
    return torch.cat([G(z * scale).float() for z in noise(n_per_class, n_classes, nz, seed, device, _whole(G, batch))])


def _whole(G: torch.nn.Module, batch: int) -> int:
    """`batch` rounded down to whole rounds of an ensemble's members, so row b of the whole draw (not only of
    its batch) comes from member b mod M, as member_of_rows says."""
    m = len(G.members) if hasattr(G, "members") else 1
    return max(m, batch - batch % m)


def noise(n_per_class: int, n_classes: int, nz: int, seed: int, device, batch: int = 256):
    """The noise `sample` feeds G, (<= batch, K, nz) at a time, from an explicit seed."""
    gen = torch.Generator(device=device).manual_seed(seed % 2**63)
    for start in range(0, n_per_class, batch):
        yield torch.randn(min(batch, n_per_class - start), n_classes, nz, generator=gen, device=device)


def sample_parents(G: torch.nn.Module, n_per_class: int, nz: int, n_classes: int, seed: int, device,
                   batch: int = 256) -> np.ndarray | None:
    """The real parents (indices within their class) of what `sample` draws with the same arguments,
    (n, K, parents per sample); None for a generator that has no parents (the DCGAN modes)."""
    if not hasattr(G, "parents"):
        return None
    parts = [G.parents(z) for z in noise(n_per_class, n_classes, nz, seed, device, _whole(G, batch))]
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


def save_grid(path: Path, images: torch.Tensor, nrow: int) -> None:
    """Grid of (N, C, S, S) images in [-1, 1] as one PNG (torchvision's make_grid), atomically."""
    from torchvision.utils import make_grid  # here: importing torchvision takes ~1 s, which the benchmark's workers need not pay

    grid = make_grid(images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    write_bytes(path, encode_png(arr if images.shape[1] == 3 else arr[:, :, :1]))


def load_generator(checkpoint: Path, device, seed: int = 0) -> nn.Module:
    """The generator of a checkpoint or snapshot, ready to sample (Kind.sampler); needs no config. An
    ensemble's gives an EnsembleGenerator of its members. `.nz` is the noise size it reads."""
    payload = read_checkpoint(Path(checkpoint))
    model = payload["model"]
    try:
        if "members" in model:
            parts = payload.get("members") or [{"ema": e} for e in payload["ema"]]  # written before kinds: "ema" list
            G = EnsembleGenerator([_sampler(GanSpec(**m), part, device, seed) for m, part in zip(model["members"], parts)])
        else:
            G = _sampler(checkpoint_spec(payload), payload, device, seed)
    except (KeyError, TypeError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "state_dict" not in str(exc):
            raise  # the device's (out of memory, a driver error), not the file's
        raise UserError(f"{checkpoint}: not a checkpoint this tool wrote (no generator state: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to train from scratch") from None
    return G.eval()


def _sampler(spec: GanSpec, part: dict, device, seed: int) -> nn.Module:
    G = kind(spec.mode).sampler(spec, part, device, seed)
    G.nz = spec.nz
    return G


def load_discriminator(checkpoint: Path) -> nn.Module:
    """The trained discriminator of a checkpoint, in eval mode, on the CPU; needs no config."""
    payload = read_checkpoint(Path(checkpoint))
    if "members" in payload["model"]:
        raise ValueError(f"{checkpoint}: an ensemble of generators has no single discriminator")
    spec = checkpoint_spec(payload)
    return kind(spec.mode).discriminator(spec, payload)


# --------------------------------------------------------------------------- ensembles


def member_of_rows(n: int, members: int) -> np.ndarray:
    """Which member draws each of n sample rows (row b: member b mod M)."""
    return np.arange(n) % members


class EnsembleGenerator(nn.Module):
    """Every member's samples as one generator: row b of a batch comes from member b mod M, so a sample
    is always drawn from one member, and the online sampler, grids and recipe use it unchanged."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.nz = getattr(members[0], "nz", None)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m = len(self.members)
        parts = [member(z[i::m]) for i, member in enumerate(self.members)]
        out = parts[0].new_empty(z.shape[0], *parts[0].shape[1:])
        for i, part in enumerate(parts):
            out[i::m] = part
        return out

    def parents(self, z: torch.Tensor) -> torch.Tensor | None:
        """(B, K, P) parent indices of the rows a member with parents draws (P: the most parents of a member),
        -1 for the other rows and places; None without one."""
        if not any(hasattr(member, "parents") for member in self.members):
            return None
        m = len(self.members)
        parts = {i: member.parents(z[i::m]) for i, member in enumerate(self.members) if hasattr(member, "parents")}
        width = max(idx.shape[-1] for idx in parts.values())
        out = torch.full((*z.shape[:2], width), -1, dtype=torch.long, device=z.device)
        for i, idx in parts.items():
            out[i::m, :, : idx.shape[-1]] = idx  # a member with fewer parents: -1 after its own
        return out
