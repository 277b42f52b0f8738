"""Ensembles of generators (gan.mode "per_class+mix"): each member trained on its own, their samples pooled.

A classifier trained on one generator's samples learns that generator's habits along with the
classes: on MNIST at 10 images per class the per-class GAN's 8s and the mix generator's 0s are
each too narrow, and each alone teaches a classifier to about 70% on real val. Half the kept samples
from each teach it to 82% (benchmarks/README.md, issue 17): their flaws differ, so the pool covers
more of every class. Ensembles of GANs (Wang et al. 2016) and mixtures of generators (MGAN, Hoang
et al. 2018) make the same observation for sample diversity.

Each member trains exactly as its mode would alone (same seed, same data, its own checkpoint and
resume under gan/members/<mode>/), one after the other (augment.core.ensemble_train); the stage then
writes one checkpoint that holds every member's EMA generator. The ensemble keeps the generators' interface,
G(z: (B, K, nz)) -> (B, K, C, S, S): row b of a batch comes from member b mod M, so a sample is
always drawn from one member, and the online sampler, grids and recipe use it unchanged. The
synthesize stage gates each member's samples apart (gate.select: auto picks each member's rule)
and keeps gan.samples_per_class split evenly between them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def member_modes(mode: str) -> list[str]:
    """The generator modes of gan.mode: "per_class+mix" -> ["per_class", "mix"]; one mode -> [mode]."""
    return mode.split("+")


def member_of_rows(n: int, members: int) -> np.ndarray:
    """Which member draws each of n sample rows (row b: member b mod M)."""
    return np.arange(n) % members


class EnsembleGenerator(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        first = members[0]
        self.k, self.nz, self.nc, self.mode = first.k, first.nz, first.nc, "+".join(m.mode for m in members)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m = len(self.members)
        parts = [member(z[i::m]) for i, member in enumerate(self.members)]
        out = parts[0].new_empty(z.shape[0], *parts[0].shape[1:])
        for i, part in enumerate(parts):
            out[i::m] = part
        return out

    def parents(self, z: torch.Tensor) -> torch.Tensor | None:
        """(B, K, 2) parent indices of the rows a mix member draws, -1 for the other rows; None without a mix member."""
        if not any(hasattr(member, "parents") for member in self.members):
            return None
        m = len(self.members)
        out = torch.full((*z.shape[:2], 2), -1, dtype=torch.long, device=z.device)
        for i, member in enumerate(self.members):
            if hasattr(member, "parents"):
                out[i::m] = member.parents(z[i::m])
        return out
