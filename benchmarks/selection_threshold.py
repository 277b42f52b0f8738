"""How many val images per class the benchmark needs to choose its arm (benchmark.kfold_below). Writes JSON.

    python benchmarks/selection_threshold.py runs/mnist_scarce/per_class_10 [more run dirs] [--draws 2000]

Reads finished MNIST runs (benchmarks/mnist_scarce.py; val holds about 100 images per class) and
asks: had val held only m images per class, how often would the arm chosen on it (best mean val
balanced accuracy over seeds, diagnostic arms aside) be the one chosen on the full val, and how
many test points would the choice cost? Each class's val recall per arm and seed is taken as
measured and m images are drawn from that class's val images, without replacement, per arm:
  - independent: every arm scored on its own draw (no pairing: more noise than a shared val set);
  - shared: one draw of images and one uniform number per image shared by all arms, an image counted
    correct for an arm when that number is below the arm's recall (the strongest pairing: less noise).
The truth lies between the two. Under the k-fold protocol every real train+val image is scored once
per k seeds, so a user with n train+val images per class chooses as if val held n per class.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from augment import rundir
from augment.atomic import write_json
from augment.registry import ARMS

REPO = Path(__file__).resolve().parents[1]
SIZES = (1, 2, 3, 4, 5, 7, 10, 20, 50)


def recalls(run_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Arms (diagnostics aside), val recall [arm, seed, class], test balanced accuracy [arm] and val images per class."""
    r = pd.read_parquet(run_dir / "benchmark" / "results.parquet")
    r = r[r["classifier"] == "cnn"]
    arms = [a for a in r["arm"].unique() if ARMS[a].kind != "diagnostic"]
    val = r[(r["split"] == "val") & (r["metric"] == "recall")]
    classes = sorted(val["class"].unique(), key=str)
    seeds = sorted(val["seed"].unique())
    table = val.pivot_table(index=["arm", "seed"], columns="class", values="value")
    rec = np.array([[table.loc[(a, s), classes].to_numpy(float) for s in seeds] for a in arms])
    test = r[(r["split"] == "test") & (r["metric"] == "balanced_accuracy")].groupby("arm")["value"].mean()
    counts = rundir.split_rows(rundir.read_manifest(run_dir), "val")["label"].astype(str).value_counts()
    return arms, rec, test.loc[arms].to_numpy(), counts.reindex([str(c) for c in classes]).to_numpy()


def simulate(rec: np.ndarray, test: np.ndarray, counts: np.ndarray, m: int, draws: int, shared: bool,
             rng: np.random.Generator) -> dict:
    """Agreement with the full-val choice and the mean test regret (points) when val holds m per class."""
    n_arms, n_seeds, n_classes = rec.shape
    full = int(np.argmax(rec.mean(axis=(1, 2))))
    correct = np.rint(rec * counts).astype(int)  # correctly classified val images per arm, seed, class
    picks = np.empty(draws, int)
    for d in range(draws):
        if shared:  # one image draw per seed and class, scored by every arm with the same uniform numbers
            u = rng.random((1, n_seeds, n_classes, m))
            hits = (u < rec[..., None]).sum(-1)
        else:
            hits = rng.hypergeometric(correct, counts - correct, m)
        picks[d] = np.argmax((hits / m).mean(axis=(1, 2)))
    return {"agrees_with_full_val": round(float(np.mean(picks == full)), 4),
            "test_regret_points": round(float(100 * np.mean(test[full] - test[picks])), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "selection_threshold.json")
    args = p.parse_args()
    out = {"machine": platform.platform(), "draws": args.draws, "runs": {}}
    for run_dir in args.run_dirs:
        arms, rec, test, counts = recalls(run_dir)
        rng = np.random.default_rng(0)
        out["runs"][run_dir.name] = {
            "arms": arms, "full_val_choice": arms[int(np.argmax(rec.mean(axis=(1, 2))))],
            "val_per_class": int(counts.min()),
            "by_val_per_class": {m: {kind: simulate(rec, test, counts, m, args.draws, kind == "shared", rng)
                                     for kind in ("independent", "shared")} for m in SIZES if m <= counts.min()},
        }
        print(run_dir.name, json.dumps(out["runs"][run_dir.name]["by_val_per_class"]))
    write_json(args.out, out)


if __name__ == "__main__":
    main()
