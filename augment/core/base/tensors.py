"""Images between numpy and torch: uint8 (N, H, W, C) <-> float (N, C, H, W) in [-1, 1], and resizing."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    return scale(torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2))


def scale(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1]."""
    return batch.float().div_(127.5).sub_(1.0)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) float images to `size` (H, W): by an integer factor k, exactly (up: each pixel a
    k x k block; down: each k x k block's mean), so the real images' way to the GAN's size and back is
    the identity; otherwise antialiased bilinear. Unchanged if already that size.

    Bilinear both ways blurred the digits (8 -> 16 -> 8 px took 25% off their contrast, measured:
    per-image pixel spread 0.375 -> 0.281) and the GAN learned, and gave back, the blur."""
    (h, w), (H, W) = x.shape[-2:], tuple(size)
    if (h, w) == (H, W):
        return x
    if H % h == 0 and W % w == 0 and H // h == W // w:
        return F.interpolate(x, size=(H, W), mode="nearest")
    if h % H == 0 and w % W == 0 and h // H == w // W:
        return F.avg_pool2d(x, h // H)
    return F.interpolate(x, size=(H, W), mode="bilinear", antialias=True, align_corners=False)


def to_uint8(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(N, C, S, S) in [-1, 1] -> uint8 (N, H, W, C) resized to `size` (H, W)."""
    x = resize(x, size)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
