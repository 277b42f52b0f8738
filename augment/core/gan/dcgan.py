"""The DCGAN generators (Radford et al. 2016), gan.mode per_class and conditional: networks and kinds.

Both modes share one interface so the trainer never branches on the mode:
    G(z: (B, K, nz))            -> images (B, K, nc, S, S) in [-1, 1], one per class
    D(x: (B, K, nc, S, S))      -> logits (B, K)
`per_class` is K independent DCGANs run as one grouped-convolution network (groups=K:
class k's channels only ever see class k's channels, and batch norm statistics are per
channel, hence per class). `conditional` is one DCGAN with a label embedding in G and a
projection discriminator (Miyato & Koyama 2018) in D. `mix` (augment.core.gan.mix) makes images from
masked mixes of two real images' features and is judged by the conditional mode's discriminator.
All three train adversarially (augment.core.gan.adversarial).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from augment.core.gan.adversarial import Adversarial
from augment.core.gan.layers import Conv2d, ConvTranspose2d
from augment.core.gan.kinds import GanSpec


def _n_up(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if 2 ** (n + 2) != image_size or n < 1:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return n


class Generator(nn.Module):
    def __init__(self, n_classes: int, nz: int, ngf: int, nc: int, image_size: int, mode: str):
        super().__init__()
        self.k, self.nz, self.nc, self.mode = n_classes, nz, nc, mode
        g = n_classes if mode == "per_class" else 1  # conv groups
        n_up = _n_up(image_size)
        if mode == "conditional":
            self.embed = nn.Embedding(n_classes, nz)
        ch = ngf * 2 ** (n_up - 1)
        z_in = nz * (2 if mode == "conditional" else 1)
        # input: (B', g*z_in, 1, 1)
        layers: list[nn.Module] = [
            ConvTranspose2d(g * z_in, g * ch, 4, 1, 0, bias=False, groups=g),
            nn.BatchNorm2d(g * ch),
            nn.ReLU(True),
        ]  # state size. (g*ngf*2^(n_up-1)) x 4 x 4
        for _ in range(n_up - 1):
            layers += [
                ConvTranspose2d(g * ch, g * ch // 2, 4, 2, 1, bias=False, groups=g),
                nn.BatchNorm2d(g * ch // 2),
                nn.ReLU(True),
            ]  # state size. doubles in height and width, halves in channels
            ch //= 2
        # state size. (g*ngf) x S/2 x S/2 -> output (g*nc) x S x S, no batch norm at G's output
        layers += [ConvTranspose2d(g * ch, g * nc, 4, 2, 1, bias=False, groups=g), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, k, nz = z.shape
        if self.mode == "per_class":
            out = self.net(z.reshape(b, k * nz, 1, 1))  # (B, K*nc, S, S)
            return out.view(b, k, self.nc, *out.shape[-2:])
        labels = torch.arange(k, device=z.device).repeat(b)
        h = torch.cat([z.reshape(b * k, nz), self.embed(labels)], dim=1)
        out = self.net(h[:, :, None, None])  # (B*K, nc, S, S)
        return out.view(b, k, self.nc, *out.shape[-2:])


class Discriminator(nn.Module):
    def __init__(self, n_classes: int, ndf: int, nc: int, image_size: int, mode: str):
        super().__init__()
        self.k, self.mode, self.image_size = n_classes, mode, image_size
        g = n_classes if mode == "per_class" else 1
        n_down = _n_up(image_size)
        # input: (B', g*nc, S, S); no batch norm at D's input
        layers: list[nn.Module] = [
            Conv2d(g * nc, g * ndf, 4, 2, 1, bias=False, groups=g),
            nn.LeakyReLU(0.2, inplace=True),
        ]  # state size. (g*ndf) x S/2 x S/2
        ch = ndf
        for _ in range(n_down - 1):
            layers += [
                Conv2d(g * ch, g * ch * 2, 4, 2, 1, bias=False, groups=g),
                nn.BatchNorm2d(g * ch * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]  # state size. halves in height and width, doubles in channels
            ch *= 2
        self.features = nn.Sequential(*layers)  # state size. (g*ndf*2^(n_down-1)) x 4 x 4
        self.head = Conv2d(g * ch, g, 4, 1, 0, bias=False, groups=g)  # -> (g) x 1 x 1
        if mode == "conditional":
            self.embed = nn.Embedding(n_classes, ch)  # projection: <embed(y), pooled features>

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """Label-free features of images (N, nc, S, S): D's last feature map, averaged over space.

        per_class: every class's discriminator sees the image, (N, K*ch); conditional: (N, ch).
        The DCGAN paper's use of a trained discriminator as a feature extractor.
        """
        if self.mode == "per_class":
            x = x.repeat(1, self.k, 1, 1)  # group k of the grouped convolutions gets a copy
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[:2]
        if self.mode == "per_class":
            return self.head(self.features(x.reshape(b, -1, *x.shape[-2:]))).view(b, k)
        h = self.features(x.reshape(b * k, *x.shape[2:]))  # (B*K, C, 4, 4)
        labels = torch.arange(k, device=x.device).repeat(b)
        proj = (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return (self.head(h).flatten() + proj).view(b, k)


def merge_grouped(states: list[dict]) -> dict:
    """One K-class grouped network's state from its shards' states (in class order).

    Every per-group tensor of a grouped (de)convolution, batch norm or head keeps its groups
    contiguous along dim 0, so concatenation along dim 0 is exact; scalars (batch norm's
    num_batches_tracked, the EMA's n_averaged) are equal across shards and taken from the first.
    """
    return {k: torch.cat([s[k] for s in states]) if states[0][k].dim() else states[0][k] for k in states[0]}


class PerClass(Adversarial):
    """gan.mode per_class: K independent DCGANs as one grouped network; shards concatenate exactly."""

    def networks(self, spec: GanSpec) -> tuple[nn.Module, nn.Module]:
        return (Generator(spec.n_classes, spec.nz, spec.ngf, spec.channels, spec.image_size, "per_class"),
                Discriminator(spec.n_classes, spec.ndf, spec.channels, spec.image_size, "per_class"))

    def merge(self, payloads: list[dict]) -> dict:
        """The K-class checkpoint of finished shards' checkpoints or snapshots (G, D, EMA, model settings)."""
        merged = {"model": dict(payloads[0]["model"], n_classes=sum(p["model"]["n_classes"] for p in payloads)),
                  "step": payloads[0]["step"]}
        for part in ("G", "D", "ema"):
            if part in payloads[0]:
                merged[part] = merge_grouped([p[part] for p in payloads])
        return merged


class Conditional(Adversarial):
    """gan.mode conditional: one DCGAN with a label embedding in G and a projection discriminator."""

    def networks(self, spec: GanSpec) -> tuple[nn.Module, nn.Module]:
        return (Generator(spec.n_classes, spec.nz, spec.ngf, spec.channels, spec.image_size, "conditional"),
                Discriminator(spec.n_classes, spec.ndf, spec.channels, spec.image_size, "conditional"))
