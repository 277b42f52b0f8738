"""Fresh generator samples during classifier training, gated on the fly by the quality gate's rule.

A fixed pool of kept GAN images is seen again and again; drawing new ones every batch (as the
GaFi pipeline and ChimeraMix do) gives the classifier variety the pool cannot. Each candidate
passes the same gate as the pool did (augment.core.gate.gate): the judge's confidence for the intended
class and novelty against the real train images. Every draw comes from the caller's generator.
"""

from __future__ import annotations

import numpy as np
import torch

from augment.core.gate import quality
from augment.core.classify.networks import predict
from augment.core.base.tensors import resize

MAX_ROUNDS = 4  # candidate rounds per batch before the best-scoring candidates fill the gaps


class OnlineSamples:
    """Callable: class indices (n,) and a torch.Generator -> n fresh uint8 images (n, C, H, W).

    G: the trained generator (augment.core.gan.sampling.load_generator); judge: the gate's judge;
    x_real: the real train images (novelty reference); size: the working size (H, W).
    """

    def __init__(self, G: torch.nn.Module, judge: torch.nn.Module, x_real: np.ndarray, n_classes: int, nz: int,
                 size: tuple[int, int], min_confidence: float, min_novelty: float, oversample: float, device="cpu",
                 scale: float = 1.0):
        self.G, self.judge, self.k, self.nz, self.size = G.eval(), judge.eval(), n_classes, nz, tuple(size)
        self.min_confidence, self.min_novelty, self.oversample = min_confidence, min_novelty, oversample
        self.device, self.scale = torch.device(device), scale  # scale: the latent scale the synthesize stage chose
        self.real_feats = predict(judge, x_real)[1]
        self.spacing = quality.spacing(self.real_feats)

    @torch.no_grad()
    def _candidates(self, rows: int, gen: torch.Generator) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
        """rows x K candidates: (uint8 images (rows*K, C, H, W), intended classes, the judge's
        confidence for them, passes the gate)."""
        z = torch.randn(rows, self.k, self.nz, generator=gen).to(self.device)
        x = resize(self.G(z * self.scale).float().flatten(0, 1), self.size)  # row-major: (rows*K, C, H, W)
        images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        intended = np.tile(np.arange(self.k), rows)
        probs, feats = predict(self.judge, images.permute(0, 2, 3, 1).numpy())
        score = probs[np.arange(len(intended)), intended]
        novelty = quality.nearest(feats, self.real_feats)[0] / self.spacing
        return images, intended, score, (score >= self.min_confidence) & (novelty >= self.min_novelty)

    def __call__(self, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        need = np.bincount(labels.numpy(), minlength=self.k)
        picked: dict[int, list[torch.Tensor]] = {c: [] for c in range(self.k)}
        spare: list[tuple[float, int, torch.Tensor]] = []
        rows = max(1, int(np.ceil(self.oversample * need.max())))
        for _ in range(MAX_ROUNDS):
            images, intended, score, passes = self._candidates(rows, gen)
            for c in np.flatnonzero(need > np.array([len(picked[c]) for c in range(self.k)])):
                mine = np.flatnonzero(intended == c)
                passing = mine[passes[mine]]
                order = passing[torch.randperm(len(passing), generator=gen).numpy()]  # at random among passing
                picked[c] += [images[i] for i in order[: need[c] - len(picked[c])]]
                spare += [(float(score[i]), int(c), images[i]) for i in mine[~passes[mine]]]
            if all(len(picked[c]) >= need[c] for c in range(self.k)):
                break
        for c in range(self.k):  # a class the gate keeps refusing: its best-scoring refused candidates
            best = sorted((s for s in spare if s[1] == c), key=lambda s: -s[0])
            picked[c] += [s[2] for s in best[: need[c] - len(picked[c])]]
        queues = {c: iter(picked[c]) for c in range(self.k)}
        return torch.stack([next(queues[int(c)]) for c in labels])
