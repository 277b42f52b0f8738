"""Train on a run's exported recipe in a plain PyTorch loop and score on the run's test split.

    python examples/train_on_expanded.py runs/default [--seed 0] [--splits train]

`augment.load_training_data(run_dir)` gives the winning arm as the benchmark trained it: a
Dataset of the real images (train and val: expand.refit) and the arm's synthetic images, a
BatchSampler that puts the measured synthetic share in every batch, on-the-fly augmentation in
its collate function, and the classifier, optimiser and step budget of the recipe. The test
images are the run's untouched real test split. Outside PyTorch, `expanded/` is the same
images as an ImageFolder, and `expanded/README.md` states the share and weights to use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import augment
from augment import rundir


def train(run_dir: Path, seed: int, splits: tuple[str, ...] | None = None, device: str = "cpu") -> float:
    """Train by the recipe with this seed; return the test accuracy."""
    data = augment.load_training_data(run_dir, seed=seed, splits=splits)
    model = data.model(seed).to(device).train()
    opt, sched = data.optimizer(model, device)
    smoothing = data.recipe["trainer"]["label_smoothing"]
    for images, targets, weights in data.loader():  # `steps` batches
        logits = model(data.inputs(images, device))
        per_image = F.cross_entropy(logits, targets.to(device), reduction="none", label_smoothing=smoothing)
        loss = (per_image * weights.to(device)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    x, y, _ = rundir.load_split(run_dir, "test")
    with torch.no_grad():
        pred = torch.cat([model(data.inputs(torch.from_numpy(x[i : i + 512]).permute(0, 3, 1, 2), device)).argmax(1).cpu()
                          for i in range(0, len(x), 512)])
    return float(np.mean(pred.numpy() == y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", nargs="*", default=None,
                        help="real splits to train on (default: the recipe's, train and val)")
    args = parser.parse_args()
    data = augment.load_training_data(args.run_dir, seed=args.seed, splits=args.splits and tuple(args.splits))
    accuracy = train(args.run_dir, args.seed, args.splits and tuple(args.splits))
    print(f"arm {data.recipe['arm']}: {len(data.dataset)} training rows, {data.steps} steps; "
          f"test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
