"""Does the exported recipe reproduce the benchmark's figure? Writes benchmarks/results/takehome.json.

    python benchmarks/takehome.py RUN_DIR [--seeds 5]

RUN_DIR is a finished run (for the headline, MNIST at 10 per class: `benchmarks/mnist_scarce.py
--cases 10` leaves it in runs/mnist_scarce/per_class_10). For each seed, a plain PyTorch loop
(examples/train_on_expanded.py) trains the recipe's classifier through `augment.load_training_data`
on the train split the benchmark trained on, with the same step budget, and scores it on the
same real test images. The reproduced mean should lie in the benchmark's 95% interval for the
recommended arm.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from pathlib import Path

import numpy as np

from augment.atomic import write_json
from augment.summary import read_summary

REPO = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("train_on_expanded", REPO / "examples" / "train_on_expanded.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "takehome.json")
    args = parser.parse_args()
    import torch

    summary = read_summary(args.run_dir)
    arm = summary.recommendation.arm
    stat = summary.arms[arm].test.metrics["accuracy"]
    example = _example()
    start = time.perf_counter()
    accuracy = [example.train(args.run_dir, seed, ("train",)) for seed in range(args.seeds)]
    result = {
        "arm": arm,
        "benchmark": {"mean": round(stat.mean, 4), "ci_low": round(stat.ci_low, 4), "ci_high": round(stat.ci_high, 4)},
        "reproduced": {"mean": round(float(np.mean(accuracy)), 4), "std": round(float(np.std(accuracy, ddof=1)), 4),
                       "per_seed": [round(a, 4) for a in accuracy]},
        "within_ci": bool(stat.ci_low <= np.mean(accuracy) <= stat.ci_high),
        "run_dir": str(args.run_dir),
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
