"""The downstream classifier: a small CNN trained from scratch for a fixed budget of steps (by the
batched engine, augment.core.classify.engine; the networks: augment.core.classify.networks)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from augment.config import step_budget
from augment.core.classify import engine
from augment.core.classify.engine import Recipe, Task
from augment.core.classify.networks import (  # noqa: F401  (the networks' names, where callers of the trainer find them)
    Backbone, SmallCNN, backbone_transforms, build_backbone, build_network, load_classifier, network_spec, predict,
    predict_proba, predict_round, pretrained_weights_path, save_classifier)
from augment.core.classify.side_stream import SideStream
from augment.core.transforms.augmentation import batched_specs, build_pipeline, classical_augment
from augment.core.transforms.batch_augment import trivial_augment  # noqa: F401  (the per-image references, re-exported)
from augment.core.transforms.batch_classical import ClassicalBatch
from augment.errors import UserError


def _optimizer(net: nn.Module, device, lr: float, weight_decay: float, schedule: str, steps: int):
    """AdamW (decoupled weight decay, none on batch-norm and bias parameters) and its schedule:
    "onecycle" (warm-up then cosine annealing, per step) or "cosine" (annealing from lr); for a
    caller's own loop (the recipe export). The engine precomputes the same schedule."""
    opt = engine.optimizer(net, device, lr, weight_decay)
    return opt, engine.scheduler(opt, steps, lr, schedule)


def recipe_of(classical: list[dict] | None, augment_on: str = "auto") -> Recipe:
    """The engine's Recipe for a classical transform list (albumentations dicts, or None) under
    benchmark.augment_on: the batched ops where every transform has one (auto, device), else
    albumentations image by image on the CPU (cpu, or auto with a transform that has none)."""
    if augment_on not in engine.AUGMENT_ON:
        raise ValueError(f"benchmark.augment_on must be one of {engine.AUGMENT_ON}, got {augment_on!r}")
    recipe = Recipe(classical, augment_on, ran_on="cpu" if augment_on == "cpu" else "device")
    if classical is None:
        return recipe
    specs = None if augment_on == "cpu" else batched_specs(classical)
    if specs is None:
        if augment_on == "device":
            raise UserError("benchmark.augment_on: device, but classical.transforms holds a transform (or an "
                            "argument) with no batched equivalent: set benchmark.augment_on: auto or cpu")
        recipe.cpu, recipe.ran_on = partial(classical_augment, build_pipeline(classical)), "cpu"
    else:
        recipe.batched = ClassicalBatch(specs)
    return recipe


def train_classifiers(
    tasks: list[Task], n_classes: int, *, steps: int | str, batch_size: int = 64, lr: float = 2e-3,
    width: int = 32, depth: int = 3, dropout: float = 0.3, weight_decay: float = 5e-4, schedule: str = "onecycle",
    label_smoothing: float = 0.0, epochs: float = 40, min_steps: int = 600, max_steps: int = 4000,
    device: torch.device | str = "cpu", model: str = "cnn", weights: str | Path | None = None,
    input_size: int | None = None, precision: str = "fp32", classical: list[dict] | None = None,
    augment_on: str = "auto", cuda_graphs: str = "auto", stack: int = 1, progress=None,
) -> list[nn.Module]:
    """Train one classifier per task (augment.core.classify.engine.Task) for a fixed step budget, in rounds of
    up to `stack` models trained as one stacked network; each task's seed fixes its initialisation,
    batches, augmentation draws and dropout masks, whatever round it shares.

    The recipe (docs/outputs.md, "The benchmark's classifier"): SmallCNN (depth blocks from width, dropout)
    from scratch, or a torchvision `model` fine-tuned from weights on disk (trained alone); AdamW with
    weight decay under a OneCycle (or cosine) schedule; label smoothing; `steps` or "auto"
    (step_budget on each task's real images). `classical` (albumentations transforms, A.to_dict
    format) applies on the fly to the tasks that ask for it, before TrivialAugmentWide, real and
    synthetic rows alike; augment_on (benchmark.augment_on) says where: batched on the device, or
    by albumentations and torchvision image by image; cuda_graphs (benchmark.cuda_graphs), whether a
    round's step is replayed as a CUDA graph on a GPU. precision ("auto", "fp32", "bf16") is the
    forward pass's autocast; the loss is fp32. progress(done, total) counts steps over all rounds.
    """
    recipe = recipe_of(classical, augment_on)
    budgets = [step_budget(steps, len(t.x), batch_size, epochs, min_steps, max_steps) for t in tasks]
    batches = [min(batch_size, t.rows) for t in tasks]
    device = torch.device(device)
    nets: list[nn.Module | None] = [None] * len(tasks)
    rounds: dict[tuple, list[int]] = {}
    for i, t in enumerate(tasks):
        rounds.setdefault((budgets[i], batches[i], t.shape()), []).append(i)
    size = 1 if model != "cnn" else max(1, stack)
    total, done = sum(budgets), 0
    for (n_steps, _, shape), members in rounds.items():
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            built = [build_network(network_spec(shape[2], n_classes, model, width, depth, dropout, weights, input_size),
                                   torch.Generator().manual_seed(tasks[i].seed % 2**63)).to(device) for i in chunk]
            tick = None if progress is None else (lambda s, n, base=done, k=len(chunk): progress(base + s * k, total))
            trained = engine.train_round([tasks[i] for i in chunk], built, n_classes, steps=n_steps, batch_size=batch_size,
                                         lr=lr, weight_decay=weight_decay, schedule_kind=schedule,
                                         label_smoothing=label_smoothing, device=device, precision=precision,
                                         recipe=recipe, cuda_graphs=cuda_graphs, progress=tick)
            for i, net in zip(chunk, trained):
                nets[i] = net
            done += n_steps * len(chunk)
    if progress is not None:
        progress(total, total)
    return nets


def train_classifier(
    x: np.ndarray, y: np.ndarray, n_classes: int, *, seed: int = 0, augment: str | None = None, balanced: bool = False,
    synthetic: SideStream | None = None, classical: list[dict] | None = None, **trainer,
) -> nn.Module:
    """One classifier (train_classifiers with one task): uint8 images x (N, H, W, C) and labels y,
    an optional synthetic side stream, classical (the pipeline on the fly), augment="trivialaugment"
    and balanced=True (every class drawn equally often)."""
    task = Task(x, y, seed, stream=synthetic, classical=classical is not None, augment=augment, balanced=balanced)
    return train_classifiers([task], n_classes, classical=classical, **trainer)[0]

