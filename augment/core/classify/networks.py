"""The downstream classifier's networks: a small CNN or a torchvision backbone, built from a spec, saved
and loaded, and used to predict (training: augment.core.classify.classifier, over the engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from augment.atomic import write_torch
from augment.core.base.small_maps import Conv2d
from augment.core.base.tensors import to_tensor
from augment.core.classify.stacked import StackedCNN
from augment.errors import UserError


class SmallCNN(nn.Module):
    """`depth` conv blocks (conv, batch norm, ReLU, 2x2 max-pool), doubling `width` each block
    (32-64-128 by default), global pooling (so any size from 8x8 up), dropout and a linear head.

    Training passes the dropout mask in (augment.core.classify.engine draws it from the model's own seeded
    stream); without one (evaluation, or a caller's own loop) nn.Dropout applies in train mode.
    """

    def __init__(self, in_channels: int, n_classes: int, width: int = 32, depth: int = 3, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(depth):
            cout = width * 2**i
            layers += [Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]  # state size. cout x ceil(H/2^(i+1)) x ...
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        return self.head(h * mask if mask is not None else self.dropout(h))


class Backbone(nn.Module):
    """A torchvision classifier fine-tuned from weights on disk. Grey images are repeated to RGB;
    `preprocess` is the weights' own transforms() (resize, crop, normalisation), or the same
    normalisation at `input_size` when one is configured."""

    def __init__(self, net: nn.Module, preprocess: nn.Module):
        super().__init__()
        self.net, self.preprocess = net, preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x + 1.0) / 2.0  # [-1, 1] -> [0, 1], what torchvision's transforms expect of a float image
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(self.preprocess(x))


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


def backbone_transforms(name: str, input_size: int | None) -> nn.Module:
    """torchvision's preprocessing for `name`'s default weights; at `input_size` (resize and crop) if given."""
    import torchvision
    from torchvision.transforms._presets import ImageClassification

    preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    if input_size is None:
        return preset
    return ImageClassification(crop_size=input_size, resize_size=input_size, mean=preset.mean, std=preset.std,
                               interpolation=preset.interpolation, antialias=preset.antialias)


def build_backbone(name: str, n_classes: int, weights: str | Path | None, input_size: int | None, gen: torch.Generator,
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
    return Backbone(net, backbone_transforms(name, input_size))


def _small_cnn(in_channels: int, n_classes: int, width: int, depth: int, dropout: float, gen: torch.Generator) -> SmallCNN:
    model = SmallCNN(in_channels, n_classes, width, depth, dropout)
    with torch.no_grad():  # re-init every weight from the seed: construction drew from the global RNG
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=5**0.5, generator=gen)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model


def build_network(spec: dict, gen: torch.Generator) -> nn.Module:
    """The network a spec names (SmallCNN, or a torchvision backbone from its weights), seeded;
    the spec rides along as `net.spec`, so save_classifier can write it beside the weights."""
    if spec["model"] == "cnn":
        net = _small_cnn(spec["in_channels"], spec["n_classes"], spec["width"], spec["depth"], spec["dropout"], gen)
    else:
        net = build_backbone(spec["model"], spec["n_classes"], spec["weights"], spec["input_size"], gen)
    net.spec = dict(spec)
    return net


def save_classifier(path: Path, net: nn.Module) -> None:
    """A trained classifier's spec and weights, atomically (loads with weights_only=True)."""
    write_torch(path, {"spec": net.spec, "state": {k: v.cpu() for k, v in net.state_dict().items()}})


def load_classifier(path: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The classifier save_classifier wrote, in eval mode on `device`."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    net = build_network(payload["spec"], torch.Generator().manual_seed(0))
    net.load_state_dict(payload["state"])
    return net.to(device).eval()


def network_spec(in_channels: int, n_classes: int, model: str = "cnn", width: int = 32, depth: int = 3,
                 dropout: float = 0.3, weights: str | Path | None = None, input_size: int | None = None) -> dict:
    return dict(in_channels=in_channels, n_classes=n_classes, model=model, width=width, depth=depth, dropout=dropout,
                weights=None if weights is None else str(weights), input_size=input_size)


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


@torch.no_grad()
def predict_round(models: list[nn.Module], x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (M, N, K) of M classifiers on the same uint8 images: SmallCNNs of one spec
    in one pass of their stacked network (augment.core.classify.stacked), others one after another."""
    spec = getattr(models[0], "spec", {})
    if len(models) == 1 or spec.get("model") != "cnn" or any(getattr(m, "spec", None) != spec for m in models):
        return np.stack([predict_proba(m, x, batch_size) for m in models])
    device = next(models[0].parameters()).device
    net = StackedCNN(models).to(device).eval()
    out = []
    for i in range(0, len(x), batch_size):
        batch = to_tensor(x[i : i + batch_size], device)
        out.append(torch.softmax(net(batch.repeat(1, len(models), 1, 1)).float(), dim=-1).cpu())
    return torch.cat(out, dim=1).numpy()


def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, K) for uint8 images (N >= 1)."""
    return predict(model, x, batch_size)[0]

