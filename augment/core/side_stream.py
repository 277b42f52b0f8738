"""How a classifier's batches are drawn: real images, plus synthetic ones as a controlled side stream.

Pouring thousands of generated images beside a hundred real ones makes the classifier learn the
generator (../shared/RESEARCH.md: 13 GAN images per real one cost 6 points on MNIST). Here a
fixed share of every batch is synthetic, never more than plain concatenation would give, with
its own loss weight and, optionally, soft labels from a teacher trained on real images.

Every draw comes from one torch.Generator, so a batch sequence is a function of the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SideStream:
    """Synthetic images for one classifier: uint8 (N, H, W, C) images, int labels and how to use them.

    share: the fraction of every batch drawn from these images (capped at N / (N + real), the
    share plain concatenation gives). weight: their loss weight (real images weigh 1).
    soft: optional (N, K) target distributions (a teacher's softened predictions) instead of labels.
    online: optional fresh samples (augment.core.online.OnlineSamples): every drawn row marked in
    `online_rows` (the kept GAN images) is replaced by a new sample of its class, so shares and class
    mix stay those of the pool; `soft_fn` gives fresh images their soft labels (uint8 NCHW -> (n, K)).
    """

    x: np.ndarray
    y: np.ndarray
    share: float = 0.25
    weight: float = 1.0
    soft: np.ndarray | None = None
    online: Callable | None = None
    online_rows: np.ndarray | None = None
    soft_fn: Callable | None = None

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"need matching synthetic x and y, got {len(self.x)} and {len(self.y)}")
        if not 0.0 <= self.share <= 1.0 or self.weight < 0:
            raise ValueError(f"share must lie in [0, 1] and weight be >= 0, got {self.share}, {self.weight}")
        if self.soft is not None and self.soft.shape[0] != len(self.x):
            raise ValueError(f"need one soft label row per synthetic image, got {self.soft.shape[0]} for {len(self.x)}")


def per_batch(batch_size: int, n_real: int, stream: SideStream | None) -> int:
    """Synthetic rows per batch: round(share x batch), capped at the concatenation share; real rows
    fill the rest. With no real images at all the whole batch is synthetic (the CAS diagnostic)."""
    if stream is None or len(stream.x) == 0:
        return 0
    if n_real == 0:
        return batch_size
    cap = len(stream.x) / (len(stream.x) + n_real)
    return min(batch_size - 1, int(round(min(stream.share, cap) * batch_size)))


class Batches:
    """Draws (uint8 images (B, C, H, W), target distributions (B, K), loss weights (B,)) per step.

    balanced=True draws every class equally often within each stream (random over-sampling
    without new images); otherwise every image is equally likely.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, n_classes: int, batch_size: int,
                 stream: SideStream | None, gen: torch.Generator, balanced: bool = False):
        self.k, self.gen = n_classes, gen
        self.real = self._pool(x, y, None, balanced)
        self.synthetic = self._pool(stream.x, stream.y, stream.soft, balanced) if stream is not None and len(stream.x) else None
        self.n_synthetic = per_batch(batch_size, len(x), stream)
        self.n_real = batch_size - self.n_synthetic if len(x) else 0
        self.weight = stream.weight if stream is not None else 1.0
        self.stream = stream
        if stream is not None and stream.online is not None:
            self.synthetic["online"] = torch.from_numpy(np.asarray(stream.online_rows, dtype=bool))

    def _pool(self, x: np.ndarray, y: np.ndarray, soft: np.ndarray | None, balanced: bool) -> dict | None:
        if len(x) == 0:
            return None
        target = torch.from_numpy(np.asarray(y)).long()
        dist = torch.from_numpy(np.asarray(soft, dtype=np.float32)) if soft is not None else \
            torch.nn.functional.one_hot(target, self.k).float()
        counts = torch.bincount(target, minlength=self.k).clamp(min=1).float()
        return {"images": torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2), "dist": dist, "labels": target,
                "draw": (1.0 / counts)[target] if balanced else None}

    def _draw(self, pool: dict, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if pool["draw"] is not None:
            idx = torch.multinomial(pool["draw"], n, replacement=True, generator=self.gen)
        else:
            idx = torch.randint(len(pool["images"]), (n,), generator=self.gen)
        images, dist = pool["images"][idx], pool["dist"][idx]
        fresh = pool["online"][idx] if "online" in pool else None
        if fresh is not None and fresh.any():  # new generator samples in place of the kept ones, same classes
            images[fresh] = self.stream.online(pool["labels"][idx][fresh], self.gen)
            if self.stream.soft_fn is not None:
                dist[fresh] = torch.as_tensor(self.stream.soft_fn(images[fresh]), dtype=torch.float32)
        return images, dist

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parts = []
        if self.n_real:
            parts.append((*self._draw(self.real, self.n_real), torch.ones(self.n_real)))
        if self.n_synthetic:
            parts.append((*self._draw(self.synthetic, self.n_synthetic), torch.full((self.n_synthetic,), float(self.weight))))
        images, dist, weights = (torch.cat(p) for p in zip(*parts))
        return images, dist, weights


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """A teacher's class probabilities -> target distributions at `temperature` (softmax of
    log-probabilities / T; T > 1 spreads them, T = 1 returns them); rows sum to one."""
    z = torch.from_numpy(np.asarray(probs, dtype=np.float32)).clamp(min=1e-12).log() / temperature
    return torch.softmax(z, dim=1).numpy()
