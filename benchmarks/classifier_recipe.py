"""Choose the benchmark classifier's recipe on MNIST val (never test), then score it on test. Writes JSON.

    python benchmarks/classifier_recipe.py ../shared/data/mnist [--select-seeds 3] [--seeds 5]

Protocol (../shared/RESEARCH.md): the MNIST test set is permuted with numpy default_rng(0); the
first 5,000 images are the pool, the rest the test set. Val is the pool's last 1,000 images; each
seed draws its own scarce train set (10 or 50 per class) from the pool's first 4,000 with
default_rng(100 + seed), so the figures carry the variance of which images were labelled.
Every candidate trains with TrivialAugmentWide on the fly, as the arm the 40-line reference
script is compared with. The candidate with the best mean val accuracy at 10 per class (over
--select-seeds seeds) is the recipe; test accuracy is reported for it and for an ablation: two
blocks, no dropout or weight decay, lr 1e-3, cosine (roughly the recipe before this one).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from augment.atomic import write_json
from augment.core.classify.classifier import predict_proba, train_classifier
from augment.core.data.sources import read_idx

REPO = Path(__file__).resolve().parents[1]
BASE = dict(batch_size=64, width=32, depth=3, dropout=0.3, lr=2e-3, weight_decay=5e-4, schedule="onecycle",
            label_smoothing=0.0, steps="auto", epochs=40, min_steps=600, max_steps=4000)
CANDIDATES = {
    "reference": {},
    "label_smoothing_0.1": {"label_smoothing": 0.1},
    "no_dropout": {"dropout": 0.0},
    "cosine": {"schedule": "cosine"},
    "width_48": {"width": 48},
    "min_steps_1200": {"min_steps": 1200},
}
ABLATION = dict(batch_size=64, width=32, depth=2, dropout=0.0, lr=1e-3, weight_decay=0.0, schedule="cosine", steps=600)


def load(mnist: Path):
    raw = read_idx(mnist)
    x = np.stack(raw.images)
    y = np.array([int(label) for label in raw.labels])
    order = np.random.default_rng(0).permutation(len(x))
    pool, test = order[:5000], order[5000:]
    return x, y, pool[:4000], pool[4000:], test


def draw(y: np.ndarray, pool: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    return np.concatenate([rng.choice(pool[y[pool] == c], per_class, replace=False) for c in range(10)])


def score(x, y, train, held_out, recipe: dict, seed: int) -> float:
    model = train_classifier(x[train], y[train], 10, **recipe, seed=seed, augment="trivialaugment")
    return float((predict_proba(model, x[held_out]).argmax(1) == y[held_out]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist", type=Path)
    parser.add_argument("--select-seeds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "classifier_recipe.json")
    args = parser.parse_args()
    import torch

    x, y, pool, val, test = load(args.mnist)
    out = {"machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
           "base": BASE, "val": {}}
    for name, change in CANDIDATES.items():
        start = time.perf_counter()
        accs = [score(x, y, draw(y, pool, 10, s), val, {**BASE, **change}, s) for s in range(args.select_seeds)]
        out["val"][name] = {"change": change, "mean": round(float(np.mean(accs)), 4), "per_seed": accs,
                            "seconds_per_model": round((time.perf_counter() - start) / args.select_seeds, 1)}
        print(name, out["val"][name], flush=True)
        write_json(args.out, out)
    chosen = max(out["val"], key=lambda n: out["val"][n]["mean"])
    out["chosen"] = chosen
    out["test"] = {}
    for label, recipe in (("chosen", {**BASE, **CANDIDATES[chosen]}), ("two_blocks_plain", ABLATION)):
        for per_class in (10, 50):
            accs = [score(x, y, draw(y, pool, per_class, s), test, recipe, s) for s in range(args.seeds)]
            out["test"][f"{label}_{per_class}"] = {"mean": round(float(np.mean(accs)), 4),
                                                   "std": round(float(np.std(accs, ddof=1)), 4), "per_seed": accs}
            print(label, per_class, out["test"][f"{label}_{per_class}"], flush=True)
            write_json(args.out, out)


if __name__ == "__main__":
    main()
