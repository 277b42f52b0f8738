"""What the user takes home: a loader that trains by the winning arm's exported recipe (the API's
`augment.load_training_data`; the recipe's files and their writing: augment.rundir).

The expand stage writes run_dir/recipe/recipe.json (the arm, the real splits it is built from,
the synthetic share per batch and loss weight, on-the-fly augmentation, the classifier and its
step budget). `augment.load_training_data(run_dir)` reads it back as torch pieces: a Dataset of
the real and synthetic rows, the BatchSampler that puts the measured synthetic share in every
batch, and a collate function that applies the on-the-fly augmentation, all seeded. The
benchmark's own training loop (augment.core.classify.classifier.train_classifier) draws its batches with
the same BatchSampler, so a loop over this loader trains as the benchmark measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augment import rundir
from augment.rundir import RECIPE, REFIT_ROWS
from augment.config import step_budget
from augment.core.classify.side_stream import BatchSampler, SideStream, refresh, rows
from augment.errors import UserError
from augment.png import load_images

@dataclass
class TrainingData:
    """The winning arm as torch pieces (see the module docstring). `loader()` yields (uint8 images
    (B, C, H, W), target distributions (B, K), loss weights (B,)) for `steps` steps."""

    recipe: dict
    dataset: torch.utils.data.TensorDataset  # (images, target distributions, loss weights, labels, fresh)
    batch_sampler: BatchSampler
    seed: int
    classes: list[str] = field(default_factory=list)
    stream: SideStream | None = None  # its `online` draws the rows marked fresh anew every batch
    _pipeline: object = None

    @property
    def steps(self) -> int:
        return self.recipe["steps"]

    def collate(self, items: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stack a batch, draw fresh generator samples for its online rows (with their soft labels),
        then apply the recipe's on-the-fly augmentation (classical pipeline, then TrivialAugmentWide),
        all seeded from the batch sampler's generator, in the benchmark's order."""

        images, dist, weights, labels, fresh = (torch.stack(t) for t in zip(*items))
        if self.stream is not None and self.stream.online is not None:
            refresh(images, dist, labels, fresh, self.stream, self.batch_sampler.gen)
        if self.recipe["classical_transforms"] is not None and self._pipeline is None:
            from augment.core.transforms.augmentation import build_pipeline

            self._pipeline = build_pipeline(self.recipe["classical_transforms"])
        images = augment_on_the_fly(images, self.batch_sampler.gen, self._pipeline, self.recipe["augment"])
        return images, dist, weights

    def loader(self) -> torch.utils.data.DataLoader:
        """A DataLoader over the recipe's batches (in this process: the draws stay in order)."""
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=self.batch_sampler, collate_fn=self.collate)

    def optimizer(self, model: torch.nn.Module, device: str | torch.device = "cpu"):
        """(optimizer, per-step scheduler) of the recipe: AdamW, weight decay off batch-norm and bias
        parameters, OneCycle or cosine over `steps` (augment.core.classify.engine's, as the benchmark's)."""
        from augment.core.classify.engine import optimizer, scheduler

        t = self.recipe["trainer"]
        opt = optimizer(model, device, t["lr"], t["weight_decay"])
        return opt, scheduler(opt, self.steps, t["lr"], t["schedule"])

    @staticmethod
    def inputs(images: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        """uint8 (B, C, H, W) -> the network's float input in [-1, 1] (a backbone adds its own preprocessing)."""
        from augment.core.base.tensors import scale

        return scale(images.to(device))

    def model(self, seed: int | None = None) -> torch.nn.Module:
        """A fresh classifier of the benchmark's architecture (augment.core.classify.classifier.build_network)."""
        from augment.core.classify.networks import build_network

        gen = torch.Generator().manual_seed((self.seed if seed is None else seed) % 2**63)
        return build_network(self.recipe["network"], gen)


def load_training_data(run_dir: str | Path, seed: int = 0, splits: tuple[str, ...] | None = None,
                       device: str | torch.device = "cpu") -> TrainingData:
    """The exported recipe of a finished run as a Dataset, BatchSampler and DataLoader factory.

    splits: the real splits to train on; default the recipe's (expand.refit: train and val);
    ("train",) trains on what the benchmark trained on, to reproduce its figure. device: where the
    teacher and the generator run (soft labels, online samples).
    """
    run_dir = Path(run_dir)
    path = run_dir / RECIPE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {RECIPE} (run `augment run` to the end first; the expand stage writes it)")
    recipe = json.loads(path.read_text())
    splits = tuple(splits or recipe["real_splits"])
    classes = recipe["classes"]
    x, y, _ = _images(run_dir, recipe, splits, ("real",))
    # the refit generator's samples stand in for the benchmark's GAN samples beyond the train split
    regenerated = recipe.get("generator_refit", False) and set(splits) != {"train"}
    xs, ys, sources = _images(run_dir, recipe, ("train",), tuple(s for s in recipe["sources"] if s != "real"
                                                                 and not (regenerated and s == "gan")))
    if (run_dir / REFIT_ROWS).is_file():  # copies of the val (and test) images the refit added, refit GAN samples
        refit = rundir.normalise(pd.read_parquet(run_dir / REFIT_ROWS))
        wanted = (refit["source"] == "classical") & refit["split"].isin(splits) | (refit["source"] == "gan") & regenerated
        refit = refit[wanted & refit["kept"] & refit["source"].isin(recipe["sources"])]
        index = {c: i for i, c in enumerate(classes)}
        xs = np.concatenate([xs, load_images(run_dir, refit["path"], tuple(recipe["size"]), recipe["channels"], recipe["fit"])])
        ys = np.concatenate([ys, np.array([index[label] for label in refit["label"]], dtype=np.int64)])
        sources = np.concatenate([sources, refit["source"].to_numpy(str)])
    stream = SideStream(xs, ys, share=recipe["share"] or 0.0, weight=recipe["weight"]) if len(xs) else None
    if stream is not None:
        _soft_and_online(run_dir, recipe, stream, x, sources, device)
    gen = torch.Generator().manual_seed(seed % 2**63)
    t = recipe["trainer"]  # the benchmark's budget rule, on these real images
    recipe = {**recipe, "steps": step_budget(t["steps"], len(x), t["batch_size"], t["epochs"], t["min_steps"], t["max_steps"])}
    sampler = BatchSampler(y, ys, len(classes), min(t["batch_size"], len(x) + len(xs)), stream.share if stream else 0.0,
                           gen, recipe["balanced"], steps=recipe["steps"])
    fresh = torch.zeros(len(x) + (len(xs) if stream else 0), dtype=torch.bool)
    if stream is not None and stream.online is not None:
        fresh[len(x):] = torch.from_numpy(stream.online_rows)
    dataset = torch.utils.data.TensorDataset(*rows(x, y, len(classes), stream), fresh)
    return TrainingData(recipe, dataset, sampler, seed, classes, stream)


def _soft_and_online(run_dir: Path, recipe: dict, stream: SideStream, x_real: np.ndarray, sources: np.ndarray,
                     device) -> None:
    """In place: soft labels from recipe/teacher.pt (benchmark.soft_labels) and fresh gated samples
    of the recipe's generator for the GAN rows (benchmark.online_gan), as the benchmark trained."""
    from augment.core.classify.networks import load_classifier, predict_proba
    from augment.core.classify.side_stream import soften

    if recipe.get("teacher"):
        teacher, t = load_classifier(run_dir / recipe["teacher"], device), recipe["temperature"]
        stream.soft = soften(predict_proba(teacher, stream.x), t)
        stream.soft_fn = lambda images: soften(predict_proba(teacher, images.permute(0, 2, 3, 1).numpy()), t)
    if recipe.get("online_gan") and (sources == "gan").any():
        from augment.core.gate.online import OnlineSamples
        from augment.core.gan.sampling import load_generator

        G = load_generator(run_dir / recipe["generator"], device, recipe["bn_seed"])
        judge = load_classifier(run_dir / recipe["judge"], device)
        stream.online = OnlineSamples(G, judge, x_real, len(recipe["classes"]), G.nz, tuple(recipe["size"]),
                                      *recipe["gate"], device, recipe.get("latent_scale", 1.0))
        stream.online_rows = sources == "gan"


def _images(run_dir: Path, recipe: dict, splits: tuple[str, ...], sources: tuple[str, ...]):
    """(images, labels, source per row) of the splits and sources."""
    if not sources:
        return np.empty((0, *recipe["size"], recipe["channels"]), np.uint8), np.empty(0, np.int64), np.empty(0, str)
    x, y, rows = rundir.load_splits(run_dir, splits, sources)
    return x, y, rows["source"].to_numpy(str)


def augment_on_the_fly(batch: torch.Tensor, gen: torch.Generator, pipeline=None, augment: str | None = None) -> torch.Tensor:
    """A batch's on-the-fly augmentation by the references, image by image on the CPU: the classical
    pipeline (an albumentations Compose, when given), then TrivialAugmentWide (augment="trivialaugment"),
    each seeded by a draw from `gen`, in that order (the recipe export's collate; the benchmark's
    batched equivalents compute the same draws, augment.core.classify.engine)."""
    from augment.core.transforms.augmentation import classical_augment
    from augment.core.transforms.batch_augment import trivial_augment

    if pipeline is not None:
        batch = classical_augment(pipeline, batch, int(torch.randint(2**62, (1,), generator=gen)))
    if augment is not None:
        batch = trivial_augment(batch, int(torch.randint(2**62, (1,), generator=gen)))
    return batch
