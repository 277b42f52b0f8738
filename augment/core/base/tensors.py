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
    """(N, C, H, W) float images to `size` (H, W), antialiased bilinear; unchanged if already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)


def to_uint8(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(N, C, S, S) in [-1, 1] -> uint8 (N, H, W, C) resized to `size` (H, W)."""
    x = resize(x, size)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
