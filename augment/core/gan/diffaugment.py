"""DiffAugment (Zhao et al. 2020): the same differentiable augmentation for real and fake images.

Policies by name in one registry; randomness from an explicit torch.Generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F



def diff_augment(x: torch.Tensor, policy: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation of (N, C, H, W) images in [-1, 1], the same for real and fake.

    Follows Zhao et al. 2020's reference policy: color (brightness, saturation, contrast),
    translation (1/8 of the size, zero padded), cutout (a 1/2-size square set to zero).
    """
    for name in policy:
        x = POLICIES[name](x, generator)
    return x


def _rand(x: torch.Tensor, generator, *shape) -> torch.Tensor:
    return torch.rand(*shape, generator=generator, device=x.device, dtype=torch.float32).to(x.dtype)


def _color(x, generator):
    n = x.shape[0]
    x = x + (_rand(x, generator, n, 1, 1, 1) - 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_rand(x, generator, n, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, generator, n, 1, 1, 1) + 0.5) + mean


def _translation(x, generator, ratio: float = 0.125):
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=generator, device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=generator, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy[None] + ty + 1, 0, h + 1)
    gx = torch.clamp(gx[None] + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # the zero border is where out-of-range pixels come from
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, gy, gx].permute(0, 3, 1, 2).contiguous()


def _cutout(x, generator, ratio: float = 0.5):
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=generator, device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=generator, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    y0, x0 = oy - ch // 2, ox - cw // 2  # the square may hang over the border, as in the reference
    inside = (gy[None] >= y0) & (gy[None] < y0 + ch) & (gx[None] >= x0) & (gx[None] < x0 + cw)
    # inside the square -> 0 (mid-grey in [-1, 1]), as the reference implementation does
    return x * (~inside)[:, None].to(x.dtype)


POLICIES = {"color": _color, "translation": _translation, "cutout": _cutout}
