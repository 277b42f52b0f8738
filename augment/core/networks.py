"""Class-conditional DCGAN networks (Radford et al. 2016) and the settings that build them.

Both modes share one interface so the trainer never branches on the mode:
    G(z: (B, K, nz))            -> images (B, K, nc, S, S) in [-1, 1], one per class
    D(x: (B, K, nc, S, S))      -> logits (B, K)
`per_class` is K independent DCGANs run as one grouped-convolution network (groups=K:
class k's channels only ever see class k's channels, and batch norm statistics are per
channel, hence per class). `conditional` is one DCGAN with a label embedding in G and a
projection discriminator (Miyato & Koyama 2018) in D. `mix` (augment.core.mix) makes images from
masked mixes of two real images' features and is judged by the conditional mode's discriminator.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


def _n_up(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if 2 ** (n + 2) != image_size or n < 2:
        raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
    return n


def dcgan_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """The paper's init: conv weights N(0, 0.02), batch-norm scale N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02, generator=generator)
            nn.init.zeros_(m.bias)


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
            nn.ConvTranspose2d(g * z_in, g * ch, 4, 1, 0, bias=False, groups=g),
            nn.BatchNorm2d(g * ch),
            nn.ReLU(True),
        ]  # state size. (g*ngf*2^(n_up-1)) x 4 x 4
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(g * ch, g * ch // 2, 4, 2, 1, bias=False, groups=g),
                nn.BatchNorm2d(g * ch // 2),
                nn.ReLU(True),
            ]  # state size. doubles in height and width, halves in channels
            ch //= 2
        # state size. (g*ngf) x S/2 x S/2 -> output (g*nc) x S x S, no batch norm at G's output
        layers += [nn.ConvTranspose2d(g * ch, g * nc, 4, 2, 1, bias=False, groups=g), nn.Tanh()]
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
            nn.Conv2d(g * nc, g * ndf, 4, 2, 1, bias=False, groups=g),
            nn.LeakyReLU(0.2, inplace=True),
        ]  # state size. (g*ndf) x S/2 x S/2
        ch = ndf
        for _ in range(n_down - 1):
            layers += [
                nn.Conv2d(g * ch, g * ch * 2, 4, 2, 1, bias=False, groups=g),
                nn.BatchNorm2d(g * ch * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]  # state size. halves in height and width, doubles in channels
            ch *= 2
        self.features = nn.Sequential(*layers)  # state size. (g*ndf*2^(n_down-1)) x 4 x 4
        self.head = nn.Conv2d(g * ch, g, 4, 1, 0, bias=False, groups=g)  # -> (g) x 1 x 1
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


@dataclass(frozen=True)
class GanSpec:
    """Everything that fixes the networks' shapes; stored in every checkpoint, so a checkpoint
    loads without the run's config."""

    mode: str
    n_classes: int
    nz: int
    ngf: int
    ndf: int
    image_size: int
    channels: int
    parents: int = 0  # mix mode: real images held per class (the largest class's count)

    def __post_init__(self) -> None:
        if self.mode not in ("per_class", "conditional", "mix"):  # an ensemble is several specs (core/ensemble_train.py)
            raise ValueError(f"one network per mode per_class, conditional or mix, not {self.mode!r}")

    def generator(self) -> nn.Module:
        if self.mode == "mix":
            from augment.core.mix import MixGenerator

            return MixGenerator(self.n_classes, self.nz, self.ngf, self.channels, self.image_size, self.parents)
        return Generator(self.n_classes, self.nz, self.ngf, self.channels, self.image_size, self.mode)

    def discriminator(self) -> Discriminator:
        mode = "conditional" if self.mode == "mix" else self.mode  # a projection discriminator judges the mixes
        return Discriminator(self.n_classes, self.ndf, self.channels, self.image_size, mode)

    def to_dict(self) -> dict:
        return asdict(self)

