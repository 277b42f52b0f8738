"""The downstream classifier: a small CNN trained from scratch for a fixed budget of steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augment.core.accel import adam, autocast
from augment.core.tensors import scale, to_tensor
from augment.errors import UserError
from augment.runtime import check_stop


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Backbone(nn.Module):
    """A torchvision classifier fine-tuned from weights on disk; grey images are repeated to RGB,
    resized to `input_size` and normalised as the ImageNet-trained weights expect."""

    def __init__(self, net: nn.Module, input_size: int):
        super().__init__()
        self.net, self.input_size = net, input_size
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x + 1.0) / 2.0  # [-1, 1] -> [0, 1]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)


def pretrained_weights_path(name: str, weights: str | Path | None, keys: tuple[str, str] = ("benchmark.classifier", "benchmark.weights")) -> Path:
    """Where the backbone's weights are on disk: the configured file, else torch's hub cache. Never downloads.

    `keys`: the config keys naming the model and the weights file, for the error message.
    """
    import torchvision

    model_key, weights_key = keys
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"config key '{weights_key}': {path} not found")
        return path
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not path.is_file():
        raise UserError(
            f"config key '{model_key}': no {name} weights on disk (looked for {path}); nothing is "
            f"downloaded at run time: put the file there or set {weights_key} to its path"
        )
    return path


def build_backbone(name: str, n_classes: int, weights: str | Path | None, input_size: int, gen: torch.Generator,
                   keys: tuple[str, str] = ("benchmark.classifier", "benchmark.weights")) -> Backbone:
    """torchvision model `name` with weights from disk and a new, seeded linear head for n_classes."""
    import torchvision

    net = torchvision.models.get_model(name, weights=None)
    path = pretrained_weights_path(name, weights, keys)
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001  (wrong architecture, not a checkpoint, or an unsafe pickle)
        raise UserError(f"{path}: not {name} weights ({str(exc).splitlines()[0]})") from None
    parent_name, _, attr = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1].rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    old = getattr(parent, attr)
    head = nn.Linear(old.in_features, n_classes)
    nn.init.normal_(head.weight, 0.0, 0.01, generator=gen)
    nn.init.zeros_(head.bias)
    setattr(parent, attr, head)
    return Backbone(net, input_size)


def _small_cnn(in_channels: int, n_classes: int, width: int, gen: torch.Generator) -> SmallCNN:
    model = SmallCNN(in_channels, n_classes, width)
    with torch.no_grad():  # re-init every weight from the seed: construction drew from the global RNG
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=5**0.5, generator=gen)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model


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
    balanced: bool = False, model: str = "cnn", weights: str | Path | None = None, input_size: int = 64,
    precision: str = "fp32", progress=None,
) -> nn.Module:
    """Train SmallCNN on uint8 images for exactly `steps` Adam steps; seed fixes init and data order.

    augment="trivialaugment" applies TrivialAugmentWide on the fly; balanced=True draws every
    class equally often (random over-sampling without new images). model="cnn" trains SmallCNN
    from scratch; any other torchvision model name is fine-tuned from weights on disk. precision
    ("auto", "fp32", "bf16") is the forward pass's autocast (augment.core.accel); the loss is fp32.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need matching, non-empty x and y, got {len(x)} and {len(y)}")
    if augment not in (None, "trivialaugment"):
        raise ValueError(f"unknown on-the-fly augmentation {augment!r}")
    gen = torch.Generator().manual_seed(seed % 2**63)
    if model == "cnn":
        net = _small_cnn(x.shape[3], n_classes, width, gen)
    else:
        net = build_backbone(model, n_classes, weights, input_size, gen)
    net.to(device).train()
    images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)  # uint8 (N, C, H, W), CPU
    target = torch.from_numpy(y).long()
    draw_weights = (1.0 / torch.bincount(target, minlength=n_classes).clamp(min=1).float())[target] if balanced else None
    opt = adam(net.parameters(), device, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    b = min(batch_size, len(images))
    for step in range(steps):
        check_stop()  # SIGTERM/SIGINT: abandon this model within one step
        if progress is not None:
            progress(step, steps)
        if draw_weights is not None:
            idx = torch.multinomial(draw_weights, b, replacement=True, generator=gen)
        else:
            idx = torch.randint(len(images), (b,), generator=gen)
        batch = images[idx]
        if augment is not None:
            batch = trivial_augment(batch, int(torch.randint(2**62, (1,), generator=gen)))
        inputs = scale(batch.to(device))
        step_seed = int(torch.randint(2**62, (1,), generator=gen))
        # Backbones may hold dropout, which draws from torch's global RNG: confine it, seeded.
        with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            torch.manual_seed(step_seed)
            with autocast(device, precision):
                logits = net(inputs)
            loss = F.cross_entropy(logits.float(), target[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (N, K), penultimate features (N, D)) for uint8 images (N >= 1).

    The features are the input of the model's last linear layer (SmallCNN's pooled features,
    a backbone's embedding): the space the quality gate measures novelty and quality in.
    """
    device = next(model.parameters()).device
    model.eval()
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    feats: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: feats.append(args[0].flatten(1).float().cpu()))
    try:
        probs = [torch.softmax(model(to_tensor(x[i : i + batch_size], device)).float(), dim=1).cpu()
                 for i in range(0, len(x), batch_size)]
    finally:
        hook.remove()
    return torch.cat(probs).numpy(), torch.cat(feats).numpy()


def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, K) for uint8 images (N >= 1)."""
    return predict(model, x, batch_size)[0]
