"""The downstream classifier: a small CNN trained from scratch for a fixed budget of steps."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; global pooling makes it size-agnostic (8x8 and up).

    No dropout: it would draw from torch's global RNG and break seeded determinism.
    """

    def __init__(self, in_channels: int, n_classes: int, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, width), *block(width, width),
            nn.MaxPool2d(2),  # state size. width x H/2 x W/2
            *block(width, 2 * width), *block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),  # state size. (2*width) x 1 x 1
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def trivial_augment(batch: torch.Tensor, seed: int) -> torch.Tensor:
    """torchvision's TrivialAugmentWide on uint8 (B, C, H, W), one draw per image, from an explicit seed.

    torchvision draws from torch's global RNG; fork_rng confines that draw to this call.
    """
    from torchvision.transforms import v2

    ta = v2.TrivialAugmentWide()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([ta(image) for image in batch])


def train_classifier(
    x: np.ndarray, y: np.ndarray, n_classes: int, *, steps: int, batch_size: int = 64, lr: float = 1e-3,
    width: int = 32, seed: int = 0, device: torch.device | str = "cpu", augment: str | None = None,
    balanced: bool = False,
) -> SmallCNN:
    """Train SmallCNN on uint8 images for exactly `steps` Adam steps; seed fixes init and data order.

    augment="trivialaugment" applies TrivialAugmentWide on the fly; balanced=True draws every
    class equally often (random over-sampling without new images).
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need matching, non-empty x and y, got {len(x)} and {len(y)}")
    if augment not in (None, "trivialaugment"):
        raise ValueError(f"unknown on-the-fly augmentation {augment!r}")
    gen = torch.Generator().manual_seed(seed % 2**63)
    model = SmallCNN(x.shape[3], n_classes, width)
    with torch.no_grad():  # re-init every weight from the seed: construction drew from the global RNG
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=5**0.5, generator=gen)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    model.to(device).train()
    images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)  # uint8 (N, C, H, W), CPU
    target = torch.from_numpy(y).long()
    weights = (1.0 / torch.bincount(target, minlength=n_classes).clamp(min=1).float())[target] if balanced else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    b = min(batch_size, len(images))
    for _ in range(steps):
        if weights is not None:
            idx = torch.multinomial(weights, b, replacement=True, generator=gen)
        else:
            idx = torch.randint(len(images), (b,), generator=gen)
        batch = images[idx]
        if augment is not None:
            batch = trivial_augment(batch, int(torch.randint(2**62, (1,), generator=gen)))
        inputs = batch.to(device).float().div_(127.5).sub_(1.0)
        loss = F.cross_entropy(model(inputs), target[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: SmallCNN, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, K) for uint8 images."""
    device = next(model.parameters()).device
    model.eval()
    out = [torch.softmax(model(to_tensor(x[i : i + batch_size], device)), dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.head.out_features))
