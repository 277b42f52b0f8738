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
    online: optional fresh samples (augment.core.gate.online.OnlineSamples): every drawn row marked in
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


class BatchSampler(torch.utils.data.Sampler):
    """Index lists, one per step, into real rows (0 .. n_real - 1) then synthetic rows (n_real ..):
    per_batch synthetic rows in every batch, the rest real. A torch batch_sampler (DataLoader(...,
    batch_sampler=...)); every draw comes from `gen`, so the sequence is a function of its seed.

    balanced=True draws every class equally often within each stream (random over-sampling
    without new images); otherwise every image is equally likely.
    """

    def __init__(self, y_real: np.ndarray, y_synthetic: np.ndarray, n_classes: int, batch_size: int, share: float,
                 gen: torch.Generator, balanced: bool = False, steps: int | None = None):
        self.gen, self.steps, self.n_real_rows = gen, steps, len(y_real)
        self.n_synthetic = per_batch(batch_size, len(y_real), SideStream(np.empty(len(y_synthetic)), y_synthetic, share)
                                     if len(y_synthetic) else None)
        self.n_real = batch_size - self.n_synthetic if len(y_real) else 0
        self.pools = [(self._weights(y, n_classes, balanced), len(y), offset, n) for y, offset, n in
                      ((y_real, 0, self.n_real), (y_synthetic, len(y_real), self.n_synthetic)) if n]

    @staticmethod
    def _weights(y: np.ndarray, k: int, balanced: bool) -> torch.Tensor | None:
        if not balanced:
            return None
        target = torch.from_numpy(np.asarray(y)).long()
        return (1.0 / torch.bincount(target, minlength=k).clamp(min=1).float())[target]

    def draw(self) -> torch.Tensor:
        """One batch's indices: the real rows first, then the synthetic ones."""
        parts = []
        for weights, size, offset, n in self.pools:
            idx = torch.multinomial(weights, n, replacement=True, generator=self.gen) if weights is not None else \
                torch.randint(size, (n,), generator=self.gen)
            parts.append(idx + offset)
        return torch.cat(parts)

    def __iter__(self):
        for _ in range(self.steps) if self.steps is not None else iter(int, 1):
            yield self.draw().tolist()

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("an endless BatchSampler has no length: give steps")
        return self.steps


class Batches:
    """Draws (uint8 images (B, C, H, W), target distributions (B, K), loss weights (B,)) per step:
    a BatchSampler's indices gathered from the real and synthetic rows (online rows replaced by
    fresh generator samples of their class)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, n_classes: int, batch_size: int,
                 stream: SideStream | None, gen: torch.Generator, balanced: bool = False):
        self.gen, self.stream = gen, stream
        synthetic = stream is not None and len(stream.x) > 0
        ys = stream.y if synthetic else np.empty(0, dtype=np.int64)
        self.sampler = BatchSampler(y, ys, n_classes, batch_size, stream.share if synthetic else 0.0, gen, balanced)
        self.rows = rows(x, y, n_classes, stream)
        self.online = torch.cat([torch.zeros(len(x), dtype=torch.bool), torch.from_numpy(np.asarray(stream.online_rows, bool))]) \
            if synthetic and stream.online is not None else None

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.sampler.draw()
        images, dist, weights, labels = (t[idx] for t in self.rows)
        if self.online is not None:
            refresh(images, dist, labels, self.online[idx], self.stream, self.gen)
        return images, dist, weights


def refresh(images: torch.Tensor, dist: torch.Tensor, labels: torch.Tensor, fresh: torch.Tensor,
            stream: SideStream, gen: torch.Generator) -> None:
    """In place: the rows marked `fresh` get new generator samples of their class (stream.online)
    and, with soft labels, the teacher's targets for them (stream.soft_fn); draws come from `gen`."""
    if not fresh.any():
        return
    images[fresh] = stream.online(labels[fresh], gen)
    if stream.soft_fn is not None:
        dist[fresh] = torch.as_tensor(stream.soft_fn(images[fresh]), dtype=torch.float32)


def rows(x: np.ndarray, y: np.ndarray, n_classes: int, stream: SideStream | None
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 images NCHW, target distributions, loss weights, labels) of the real rows then the
    synthetic ones: what a BatchSampler's indices point into."""
    xs = [x] + ([stream.x] if stream is not None and len(stream.x) else [])
    ys = [np.asarray(y)] + ([np.asarray(stream.y)] if len(xs) > 1 else [])
    labels = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    dist = torch.nn.functional.one_hot(labels, n_classes).float()
    weights = torch.ones(len(labels))
    if len(xs) > 1:
        weights[len(x):] = float(stream.weight)
        if stream.soft is not None:
            dist[len(x):] = torch.from_numpy(np.asarray(stream.soft, dtype=np.float32))
    images = torch.from_numpy(np.ascontiguousarray(np.concatenate([a for a in xs if len(a)]))).permute(0, 3, 1, 2)
    return images, dist, weights, labels


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """A teacher's class probabilities -> target distributions at `temperature` (softmax of
    log-probabilities / T; T > 1 spreads them, T = 1 returns them); rows sum to one."""
    z = torch.from_numpy(np.asarray(probs, dtype=np.float32)).clamp(min=1e-12).log() / temperature
    return torch.softmax(z, dim=1).numpy()
