"""The batched training engine: every small classifier of a run, trained in rounds of stacked models.

A round is a list of Tasks (one classifier each: its real rows, its synthetic side stream, its
recipe, its seed) that share the trainer's settings. Its models train as one network (StackedCNN:
grouped convolutions, batch norm per model, a head per model), with one optimizer and the
OneCycle schedule precomputed; the images of the whole round sit on the device once as uint8.
Every model draws its batches, augmentation parameters and dropout masks from its own seeded
generator, CHUNK steps at a time, so a model's result does not depend on which others share its
round (tests/test_engine.py: one model alone equals the same model inside a round of 8).

Where the round's models stack is a measured choice (benchmarks/engine_throughput.py,
augment.core.bench.jobs.auto_per_round): on a GPU up to 64 at once; on a CPU, in each worker process,
up to 16 at once for images of at most 16x16 pixels (one thread's grouped convolutions cost about
what the models one by one do there, and the batched augmentation, the sampling and the optimizer's
calls are shared), one at a time above that (grouped convolutions cost 1.25-1.5x per model at 32x32).
"Equals" is to float rounding: grouped convolutions sum in another order than plain ones, and over
hundreds of steps such differences grow into another draw of the same training, so which models
share a round is fixed by the job list and the machine's core count (rounds_of), never by timing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augment.core.base.accel import CapturedStep, adam, autocast, use_cuda_graphs
from augment.core.transforms.batch_augment import TA_UNIFORMS, sync_free, trivial_augment, trivial_augment_batch
from augment.core.classify.side_stream import SideStream, per_batch, refresh
from augment.core.classify.stacked import StackedCNN
from augment.core.base.tensors import scale
from augment.errors import check_stop

CHUNK = 16  # steps whose draws a model makes at once (a constant: the draws depend on it, never on the round)
AUGMENT_ON = ("auto", "cpu", "device")


@dataclass
class Task:
    """One classifier: uint8 (N, H, W, C) real images and labels, an optional synthetic side stream,
    its recipe (the round's classical pipeline on the fly, TrivialAugmentWide, class balance) and seed."""

    x: np.ndarray
    y: np.ndarray
    seed: int
    stream: SideStream | None = None
    classical: bool = False
    augment: str | None = None  # "trivialaugment" or None
    balanced: bool = False

    def __post_init__(self):
        if len(self.x) != len(self.y) or (len(self.x) == 0 and (self.stream is None or len(self.stream.x) == 0)):
            raise ValueError(f"need matching, non-empty x and y, got {len(self.x)} and {len(self.y)}")
        if self.augment not in (None, "trivialaugment"):
            raise ValueError(f"unknown on-the-fly augmentation {self.augment!r}")

    @property
    def synthetic(self) -> bool:
        return self.stream is not None and len(self.stream.x) > 0

    @property
    def rows(self) -> int:
        return len(self.x) + (len(self.stream.x) if self.synthetic else 0)

    def shape(self) -> tuple[int, ...]:
        return tuple((self.x if len(self.x) else self.stream.x).shape[1:])


def _decay_split(net: nn.Module) -> tuple[list, list]:
    """(weights that take weight decay, the rest): no decay on batch-norm parameters and biases."""
    norms = {id(p) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    decay, rest = [], []
    for name, p in net.named_parameters():
        (rest if id(p) in norms or name.endswith("bias") else decay).append(p)
    return decay, rest


def optimizer(net: nn.Module, device, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay, none on batch-norm and bias parameters (fused on CUDA)."""
    decay, rest = _decay_split(net)
    return adam([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                device, lr=lr, decoupled=True)


def scheduler(opt: torch.optim.Optimizer, steps: int, lr: float, kind: str):
    """torch's OneCycleLR (warm-up, cosine annealing, beta1 cycled 0.95 -> 0.85 -> 0.95) or
    CosineAnnealingLR (from lr) over `steps`, stepped once per step."""
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 2))
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    raise ValueError(f"unknown schedule {kind!r}")


def schedule(steps: int, lr: float, kind: str) -> list[tuple[float, float]]:
    """(lr, beta1) for every step, precomputed: the scheduler stepped ahead over a stand-in optimizer."""
    dummy = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = scheduler(dummy, steps, lr, kind)
    out = []
    for _ in range(steps):
        group = dummy.param_groups[0]
        out.append((float(group["lr"]), float(group["betas"][0])))
        dummy.step()
        sched.step()
    return out


# --------------------------------------------------------------------------- a round's data


class _Sampler:
    """A task's batch rows from uniforms: per_batch synthetic rows after the real ones, each part
    uniform over its images or, balanced, a class uniformly (among those present) then an image of it."""

    def __init__(self, task: Task, n_classes: int, batch: int, offset: int, device):
        n_real = len(task.x)
        n_syn = per_batch(batch, n_real, task.stream) if task.synthetic else 0
        parts = [(np.asarray(task.y), 0, batch - n_syn if n_real else 0)]
        if task.synthetic:
            parts.append((np.asarray(task.stream.y), n_real, n_syn))
        self.parts = []
        for labels, start, n in parts:
            if n == 0:
                continue
            order = np.argsort(labels, kind="stable")
            classes, first, counts = np.unique(labels[order], return_index=True, return_counts=True)
            self.parts.append(dict(
                n=n, size=len(labels), balanced=task.balanced,
                order=torch.as_tensor(order + start + offset, device=device),
                first=torch.as_tensor(first, device=device), counts=torch.as_tensor(counts, device=device),
                start=start + offset))
        self.batch = batch

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """Round row ids (..., B) from uniforms (..., B, 2)."""
        out, at = [], 0
        for p in self.parts:
            v = u[..., at : at + p["n"], :]
            at += p["n"]
            if p["balanced"]:
                k = len(p["counts"])
                cls = (v[..., 0] * k).long().clamp_(max=k - 1)
                within = torch.minimum((v[..., 1] * p["counts"][cls]).long(), p["counts"][cls] - 1)
                out.append(p["order"][p["first"][cls] + within])
            else:
                out.append(p["start"] + (v[..., 0] * p["size"]).long().clamp_(max=p["size"] - 1))
        return torch.cat(out, dim=-1)


@dataclass
class _Round:
    """The device-resident rows of a round: each task's rows (real, then synthetic) in one list, as
    targets (R, K), loss weights (R,), labels (R,) and the row's image in a uint8 table (N, C, H, W)
    where an array shared by several tasks (the real train images of every arm) is stored once."""

    images: torch.Tensor
    row_image: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    labels: torch.Tensor
    offsets: list[int]
    samplers: list[_Sampler] = field(default_factory=list)


def _round_rows(tasks: list[Task], n_classes: int, batch: int, device) -> _Round:
    from augment.core.classify.side_stream import rows

    stored: dict[int, int] = {}  # id(array) -> its first row in the image table
    images, targets, weights, labels, index, offsets = [], [], [], [], [], []
    n_images = n_rows = 0
    for task in tasks:
        offsets.append(n_rows)
        for a in [task.x] + ([task.stream.x] if task.synthetic else []):
            if id(a) not in stored:
                stored[id(a)] = n_images
                images.append(torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2))
                n_images += len(a)
            index.append(torch.arange(stored[id(a)], stored[id(a)] + len(a)))
        _, dist, w, lab = rows(task.x, task.y, n_classes, task.stream if task.synthetic else None)
        targets.append(dist)
        weights.append(w)
        labels.append(lab)
        n_rows += task.rows
    data = _Round(torch.cat(images).contiguous().to(device), torch.cat(index).to(device), torch.cat(targets).to(device),
                  torch.cat(weights).to(device), torch.cat(labels).to(device), offsets)
    data.samplers = [_Sampler(t, n_classes, batch, off, device) for t, off in zip(tasks, offsets)]
    return data


# --------------------------------------------------------------------------- training


@dataclass
class Recipe:
    """What a round's on-the-fly augmentation is: the classical pipeline (albumentations transform
    dicts) and where it runs (benchmark.augment_on): `batched`, the batched ops on the training
    device (a ClassicalBatch, augment.core.transforms.batch_classical), or `cpu(batch, seed)`,
    albumentations and torchvision image by image on the CPU. augment.core.classify.classifier.recipe_of
    makes one from the transform list."""

    classical: list[dict] | None = None
    augment_on: str = "auto"
    batched: Callable | None = None
    cpu: Callable | None = None
    ran_on: str = "device"


def _draws(task: Task, gen: torch.Generator, batch: int, recipe: Recipe, features: int, device) -> dict:
    """One chunk of a model's draws: batch-row uniforms, augmentation uniforms, dropout uniforms."""
    out = {"rows": torch.rand(CHUNK, batch, 2, generator=gen, device=device)}
    if task.classical and recipe.batched is not None:
        out["classical"] = torch.rand(CHUNK, batch, recipe.batched.uniforms, generator=gen, device=device)
    if task.augment and recipe.ran_on == "device":
        out["ta"] = torch.rand(CHUNK, batch, TA_UNIFORMS, generator=gen, device=device)
    if features:
        out["dropout"] = torch.rand(CHUNK, batch, features, generator=gen, device=device)
    return out


def _at(t: torch.Tensor, s: int | torch.Tensor) -> torch.Tensor:
    """t[s]: by a number, or by a (1,) index on the device (a captured step reads its step from there)."""
    return t[s] if isinstance(s, int) else t.index_select(0, s).squeeze(0)


def _augment(x: torch.Tensor, tasks: list[Task], draws: list[dict], s: int | torch.Tensor, recipe: Recipe,
             gens: list[torch.Generator], host_gens: list[torch.Generator], which: dict) -> torch.Tensor:
    """The round's uint8 batch (M, B, C, H, W), each model's rows by its own recipe and draws: the
    batched ops run once over the rows of every model that asks for them (each row with its own
    model's draws); the references run image by image on the CPU. `which`: _which's."""
    m, b = x.shape[:2]
    out = x.clone()
    classical, idx = which["classical"]
    if classical and recipe.batched is not None:
        z = None
        if recipe.batched.noise:  # normal fields, each model's from its own generator
            z = torch.cat([torch.randn(b, recipe.batched.noise, *x.shape[2:], generator=gens[i], device=x.device)
                           for i in classical])
        u = torch.cat([_at(draws[i]["classical"], s) for i in classical])
        done = recipe.batched(out.index_select(0, idx).flatten(0, 1), u, z)
        out.index_copy_(0, idx, done.view(len(classical), b, *x.shape[2:]))
    elif classical:  # albumentations, image by image, on the CPU
        for i in classical:
            seed = int(torch.randint(2**62, (1,), generator=host_gens[i]))
            out[i] = recipe.cpu(out[i].cpu(), seed).to(x.device)
    ta, idx = which["ta"]
    if ta and recipe.ran_on == "device":
        u = torch.cat([_at(draws[i]["ta"], s) for i in ta])
        done = trivial_augment_batch(out.index_select(0, idx).flatten(0, 1), u)
        out.index_copy_(0, idx, done.view(len(ta), b, *x.shape[2:]))
    else:
        for i in ta:
            out[i] = trivial_augment(out[i].cpu(), int(torch.randint(2**62, (1,), generator=host_gens[i]))).to(x.device)
    return out


def _kinds(tasks: list[Task], recipe: Recipe) -> dict[str, list[int]]:
    """The models that take the classical pipeline and those that take TrivialAugmentWide."""
    return {"classical": [i for i, t in enumerate(tasks) if t.classical and recipe.classical is not None],
            "ta": [i for i, t in enumerate(tasks) if t.augment]}


def _which(tasks: list[Task], recipe: Recipe, device) -> dict:
    """_kinds' lists, each with its index tensor on the device."""
    return {k: (v, torch.tensor(v, dtype=torch.long, device=device)) for k, v in _kinds(tasks, recipe).items()}


def _capturable(tasks: list[Task], cnn: bool, recipe: Recipe, online: list[bool]) -> bool:
    """Whether a round's step runs on the device alone (a CUDA graph can replay it): SmallCNNs, no online
    GAN rows, every on-the-fly augmentation batched with no host-sized op (augment.core.transforms)."""
    kinds = _kinds(tasks, recipe)
    classical, ta = bool(kinds["classical"]), bool(kinds["ta"])
    return (cnn and not any(online) and (not classical or (recipe.batched is not None and recipe.batched.capturable))
            and (not ta or recipe.ran_on == "device"))


def _stream_gens(tasks: list[Task], device) -> tuple[list[torch.Generator], list[torch.Generator]]:
    """Each model's draws (on the device) and its host generator (image-by-image augmentation, online samples)."""
    gens = [torch.Generator(device=device).manual_seed((t.seed + 0x5EED) % 2**63) for t in tasks]
    host = [torch.Generator().manual_seed((t.seed + 0xB05) % 2**63) for t in tasks]
    return gens, host


def train_round(tasks: list[Task], nets: list[nn.Module], n_classes: int, *, steps: int, batch_size: int, lr: float,
                weight_decay: float, schedule_kind: str, label_smoothing: float, device, precision: str = "fp32",
                recipe: Recipe | None = None, channels_last: bool = True, cuda_graphs: str = "auto",
                progress=None) -> list[nn.Module]:
    """Train `nets` (freshly built, one per task, on `device`) for `steps` steps as one stacked model;
    returns them trained, in eval mode. Every task draws min(batch_size, its rows) images a step.
    cuda_graphs (benchmark.cuda_graphs; augment.core.base.accel.use_cuda_graphs): on CUDA, a round whose
    step needs no host (_capturable) is replayed as one CUDA graph after a few eager steps."""
    recipe = recipe or Recipe()
    batch = min(batch_size, min(t.rows for t in tasks))
    if any(min(batch_size, t.rows) != batch for t in tasks):
        raise ValueError("a round's tasks must draw batches of one size")
    device = torch.device(device)
    data = _round_rows(tasks, n_classes, batch, device)
    cnn = getattr(nets[0], "spec", {}).get("model") == "cnn"
    if len(nets) > 1 and not cnn:
        raise ValueError("only SmallCNNs stack: a torchvision backbone trains alone")
    net = StackedCNN(nets).to(device) if len(nets) > 1 else nets[0]
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    features = (net.width if len(nets) > 1 else nets[0].head.in_features) if cnn and nets[0].spec["dropout"] > 0 else 0
    p_drop = nets[0].spec["dropout"] if cnn else 0.0
    gens, host_gens = _stream_gens(tasks, device)
    online = [t.synthetic and t.stream.online is not None for t in tasks]
    graphed = use_cuda_graphs(cuda_graphs, device, "benchmark.cuda_graphs") and _capturable(tasks, cnn, recipe, online)
    opt = optimizer(net, device, lr, weight_decay)
    plan = schedule(steps, lr, schedule_kind)
    which = _which(tasks, recipe, device)
    draws: list[dict] = []
    m = len(tasks)

    def work(s: int | torch.Tensor) -> torch.Tensor:
        """Step s of the chunk's draws: the batch, its augmentation, the gradients; the loss (on the device).
        Replayed as a CUDA graph, it writes the gradients where the capture put them (opt.step reads them)."""
        rows = torch.stack([sampler(_at(d["rows"], s)) for sampler, d in zip(data.samplers, draws)])  # (M, B)
        images, targets, weights = data.images[data.row_image[rows]], data.targets[rows], data.weights[rows]
        for j in (j for j in range(m) if online[j]):
            _refresh_online(tasks[j], rows[j] - data.offsets[j], images[j], targets[j], data.labels[rows[j]], host_gens[j])
        images = _augment(images, tasks, draws, s, recipe, gens, host_gens, which)
        inputs = scale(images.transpose(0, 1).flatten(1, 2))  # (B, M*C, H, W)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        mask = None
        if features:
            mask = (torch.stack([_at(d["dropout"], s) for d in draws]) >= p_drop).to(inputs.dtype) / (1.0 - p_drop)
        with autocast(device, precision, cache=not graphed):
            logits = _forward(net, inputs, mask, len(nets) > 1, cnn, host_gens[0])
        per_image = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(0, 1), reduction="none",
                                    label_smoothing=label_smoothing).view(m, batch)
        loss = (per_image * weights).mean(dim=1).sum()  # each model's gradient is its own loss's
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss.detach()

    captured = CapturedStep(gens) if graphed else None
    at = torch.zeros(1, dtype=torch.long, device=device) if graphed else None
    with sync_free(device.type == "cuda"):  # on a GPU every batched op runs, none asks the device first
        for step in range(steps):
            check_stop()  # SIGTERM/SIGINT: abandon this round within one step
            if progress is not None:
                progress(step, steps)
            s = step % CHUNK
            if s == 0:
                fresh = [_draws(t, g, batch, recipe, features, device) for t, g in zip(tasks, gens)]
                if captured is not None and draws:  # the graph reads the first chunk's tensors: refill them
                    for mine, new in zip(draws, fresh):
                        for key, value in new.items():
                            mine[key].copy_(value)
                else:
                    draws = fresh
            lr_s, beta1 = plan[step]
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr_s, (beta1, group["betas"][1])
            if captured is None:
                work(s)
            else:  # benchmark.cuda_graphs: one graph; the draws in fixed tensors, the place in the chunk in `at`
                captured(lambda: work(at), (at.fill_(s),))
            opt.step()  # the fused AdamW at this step's lr and beta1, outside any graph
    if len(nets) > 1:
        net.unstack(nets)
    for n in nets:
        n.to(memory_format=torch.contiguous_format).eval()
    return nets


def _forward(net: nn.Module, inputs: torch.Tensor, mask, stacked: bool, cnn: bool, host_gen) -> torch.Tensor:
    """(M, B, K) logits: the stacked network, a SmallCNN with its drawn dropout mask, or a backbone
    whose own dropout draws from torch's global RNG, confined to this step and seeded from the model's stream."""
    if stacked:
        return net(inputs, mask)
    if cnn:
        h = net.features(inputs)
        return net.head(h * mask[0] if mask is not None else h).unsqueeze(0)
    with torch.random.fork_rng(devices=[inputs.device] if inputs.device.type == "cuda" else []):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=host_gen)))
        return net(inputs).unsqueeze(0)


def _refresh_online(task: Task, local: torch.Tensor, images: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                    gen: torch.Generator) -> None:
    """In place: the task's drawn rows (`local`: its own row ids) that are online GAN rows
    (benchmark.online_gan) get fresh gated samples of their class, and their soft labels."""
    local = local.cpu()
    n_real = len(task.x)
    online = torch.cat([torch.zeros(n_real, dtype=torch.bool), torch.from_numpy(np.asarray(task.stream.online_rows, bool))])
    fresh = online[local]
    if not fresh.any():
        return
    img, dist = images.cpu(), targets.cpu()
    refresh(img, dist, labels.cpu(), fresh, task.stream, gen)
    images.copy_(img.to(images.device))
    targets.copy_(dist.to(targets.device))
