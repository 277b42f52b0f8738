"""The downstream classifier: a small CNN trained from scratch for a fixed budget of steps."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augment.atomic import write_torch
from augment.config import step_budget
from augment.core.accel import adam, autocast
from augment.core.side_stream import Batches, SideStream
from augment.core.tensors import scale, to_tensor
from augment.errors import UserError
from augment.runtime import check_stop


class SmallCNN(nn.Module):
    """`depth` conv blocks (conv, batch norm, ReLU, 2x2 max-pool), doubling `width` each block
    (32-64-128 by default), global pooling (so any size from 8x8 up), dropout and a linear head.

    Dropout draws from torch's global RNG: train_classifier runs every step under fork_rng with a
    seed drawn from the classifier's own generator, so the masks are seeded too.
    """

    def __init__(self, in_channels: int, n_classes: int, width: int = 32, depth: int = 3, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(depth):
            cout = width * 2**i
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]  # state size. cout x ceil(H/2^(i+1)) x ...
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


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


def trivial_augment(batch: torch.Tensor, seed: int) -> torch.Tensor:
    """torchvision's TrivialAugmentWide on uint8 (B, C, H, W), one draw per image, from an explicit seed.

    The same random draws, in the same order, as calling v2.TrivialAugmentWide on each image
    (tested to the bit), without the transform's per-call input flattening, which cost more than
    the operations themselves on small images. torchvision draws from torch's global RNG; fork_rng
    confines that draw to this call.
    """
    ta = _trivial_augment()
    space, bins = ta._AUGMENTATION_SPACE, ta.num_magnitude_bins
    ops = tuple(space)
    magnitudes = _magnitudes(tuple(batch.shape[-2:]))
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only: what fork_rng restores
        for image in batch:
            op = ops[int(torch.randint(len(ops), ()))]
            values, magnitude = magnitudes[op], 0.0
            if values is not None:
                magnitude = float(values[int(torch.randint(bins, ()))])
                if space[op][1] and torch.rand(()) <= 0.5:
                    magnitude *= -1
            out.append(ta._apply_image_or_video_transform(image, op, magnitude, interpolation=ta.interpolation, fill=ta._fill))
    return torch.stack(out)


@functools.lru_cache(maxsize=1)
def _trivial_augment():
    from torchvision.transforms import v2

    return v2.TrivialAugmentWide()


@functools.lru_cache(maxsize=8)
def _magnitudes(size: tuple[int, int]) -> dict:
    ta = _trivial_augment()
    return {op: fn(ta.num_magnitude_bins, *size) for op, (fn, _) in ta._AUGMENTATION_SPACE.items()}


def classical_augment(pipeline, batch: torch.Tensor, seed: int) -> torch.Tensor:
    """The configured albumentations pipeline on uint8 (B, C, H, W), one seeded draw per image
    (augment.core.augmentation.augment_images, the same draws as the classical copies)."""
    from augment.core.augmentation import augment_images

    seeds = np.random.default_rng(seed).integers(2**32, size=len(batch)).tolist()
    images = np.ascontiguousarray(batch.permute(0, 2, 3, 1).numpy())
    try:
        out = augment_images(images, seeds, pipeline, 1)
    except ValueError as exc:  # a transform that changes the size cannot be reshaped back
        raise UserError(f"classical.transforms: on the fly (benchmark.classical_on_the_fly) the pipeline must keep "
                        f"the image size {images.shape[1]}x{images.shape[2]} ({exc})") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def augment_on_the_fly(batch: torch.Tensor, gen: torch.Generator, pipeline=None, augment: str | None = None) -> torch.Tensor:
    """A batch's on-the-fly augmentation: the classical pipeline (when given), then
    TrivialAugmentWide (augment="trivialaugment"), each seeded by a draw from `gen`, in that order.
    The benchmark's loop and the recipe export (augment.core.recipe) both call it."""
    if pipeline is not None:
        batch = classical_augment(pipeline, batch, int(torch.randint(2**62, (1,), generator=gen)))
    if augment is not None:
        batch = trivial_augment(batch, int(torch.randint(2**62, (1,), generator=gen)))
    return batch


def _optimizer(net: nn.Module, device, lr: float, weight_decay: float, schedule: str, steps: int):
    """AdamW (decoupled weight decay, none on batch-norm and bias parameters) and its schedule:
    "onecycle" (warm-up then cosine annealing, per step) or "cosine" (annealing from lr)."""
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    opt = adam([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
               device, lr=lr, decoupled=True)
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 2))
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return opt, sched


def train_classifier(
    x: np.ndarray, y: np.ndarray, n_classes: int, *, steps: int | str, batch_size: int = 64, lr: float = 2e-3,
    width: int = 32, depth: int = 3, dropout: float = 0.3, weight_decay: float = 5e-4, schedule: str = "onecycle",
    label_smoothing: float = 0.0, epochs: float = 40, min_steps: int = 600, max_steps: int = 4000,
    seed: int = 0, device: torch.device | str = "cpu", augment: str | None = None, balanced: bool = False,
    model: str = "cnn", weights: str | Path | None = None, input_size: int | None = None, precision: str = "fp32",
    synthetic: SideStream | None = None, classical: list[dict] | None = None, progress=None,
) -> nn.Module:
    """Train a classifier on uint8 images for a fixed step budget; the seed fixes initialisation,
    data order, augmentation draws and dropout masks.

    The recipe (README, "The benchmark's classifier"): SmallCNN (depth blocks from width, dropout)
    from scratch, or a torchvision `model` fine-tuned from weights on disk; AdamW with weight decay
    under a OneCycle (or cosine) schedule; label smoothing; `steps` or "auto" (step_budget).
    classical (albumentations transforms, A.to_dict format) and augment="trivialaugment"
    (TrivialAugmentWide) apply on the fly to every image of a batch, real and synthetic alike, in
    that order; balanced=True draws every class equally often. `synthetic` feeds generated
    images as a side stream (augment.core.side_stream): a share of every batch, a loss weight,
    optional soft labels. precision ("auto", "fp32", "bf16") is the forward pass's autocast; the
    loss is fp32.
    """
    if len(x) != len(y) or (len(x) == 0 and (synthetic is None or len(synthetic.x) == 0)):
        raise ValueError(f"need matching, non-empty x and y, got {len(x)} and {len(y)}")
    if augment not in (None, "trivialaugment"):
        raise ValueError(f"unknown on-the-fly augmentation {augment!r}")
    steps = step_budget(steps, len(x), batch_size, epochs, min_steps, max_steps)
    gen = torch.Generator().manual_seed(seed % 2**63)
    spec = dict(in_channels=int((x if len(x) else synthetic.x).shape[3]), n_classes=n_classes, model=model, width=width,
                depth=depth, dropout=dropout, weights=None if weights is None else str(weights), input_size=input_size)
    net = build_network(spec, gen).to(device).train()
    n_all = len(x) + (len(synthetic.x) if synthetic is not None else 0)
    batches = Batches(x, y, n_classes, min(batch_size, n_all), synthetic, gen, balanced)
    pipeline = None
    if classical is not None:
        from augment.core.augmentation import build_pipeline

        pipeline = build_pipeline(classical)
    opt, sched = _optimizer(net, device, lr, weight_decay, schedule, steps)
    for step in range(steps):
        check_stop()  # SIGTERM/SIGINT: abandon this model within one step
        if progress is not None:
            progress(step, steps)
        batch, target, weight = batches()
        batch = augment_on_the_fly(batch, gen, pipeline, augment)
        inputs = scale(batch.to(device))
        step_seed = int(torch.randint(2**62, (1,), generator=gen))
        # Dropout draws from torch's global RNG: confine it to this step, seeded.
        with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            torch.manual_seed(step_seed)
            with autocast(device, precision):
                logits = net(inputs)
            per_image = F.cross_entropy(logits.float(), target.to(device), reduction="none", label_smoothing=label_smoothing)
            loss = (per_image * weight.to(device)).mean()
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
