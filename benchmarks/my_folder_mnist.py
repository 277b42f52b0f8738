"""A new user's run, timed: configs/my_folder.yaml on MNIST at 10 images per class, plan vs actual. Writes JSON.

    python benchmarks/my_folder_mnist.py ../shared/data/mnist [--per-class 10] [--set key=value ...] [--out FILE]

The settings are configs/my_folder.yaml's (32 px, the classical medium preset, SMOTE on PCA features,
the default generator ensemble with CAS snapshot selection, 5 seeds), reading the MNIST test set
in IDX format by path (grey: data.channels 1) with the split of benchmarks/mnist_scarce.py (seeded:
1,000 val, 5,000 test, the scarce train set from the rest). It first asks `augment run --plan` for
the estimate, then runs `augment run` as a user would (the Prefect flow, a fresh run directory),
and records every stage's estimate and actual seconds, the stop step of the GAN (gan.patience), the
CAS on val and every arm's test figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist", type=Path)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "my_folder_mnist")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "my_folder_mnist.json")
    args = parser.parse_args()
    sets = ["data.source=idx", f"data.path={args.mnist.resolve()}", "data.channels=1", "data.split=seeded",
            "data.val_fraction=0.1", "data.test_fraction=0.5", f"data.per_class={args.per_class}", *args.overrides]
    cmd = [sys.executable, "-m", "flows.cli", "run", str(REPO / "configs" / "my_folder.yaml"), "--run-dir", str(args.run_dir)]
    cmd += [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TQDM_DISABLE": "1"}
    plan = subprocess.run(cmd + ["--plan"], capture_output=True, text=True, cwd=REPO, env=env)
    if plan.returncode != 0:
        raise SystemExit(plan.stderr[-2000:])
    print(plan.stdout, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd + ["-q"], capture_output=True, text=True, cwd=REPO, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    stages = {p.stem: json.loads(p.read_text()) for p in sorted((args.run_dir / "stages").glob("*.json"))}
    summary = json.loads((args.run_dir / "benchmark" / "summary.json").read_text())
    quality = json.loads((args.run_dir / "gan" / "quality.json").read_text())
    from augment.summary import read_summary

    s = read_summary(args.run_dir)
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "settings": sets, "seconds": round(seconds, 1),
        "plan": plan.stdout, "plan_total_seconds": _plan_total(plan.stdout),
        "stage_seconds": {k: v.get("seconds") for k, v in stages.items()},
        "gan": {k: stages["gan"].get(k) for k in ("steps", "stopped_at", "best_step", "cas_best")},
        "cas_accuracy_on_val": quality["cas_accuracy_on_val"], "selection": quality["selection"],
        "recommended": summary["recommendation"]["arm"],
        "arms": {a: {m: {k: round(getattr(r.test.metrics[m], k), 4) for k in ("mean", "std", "ci_low", "ci_high")}
                     for m in ("accuracy", "balanced_accuracy")} for a, r in s.arms.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds", "plan_total_seconds", "stage_seconds", "gan",
                                             "cas_accuracy_on_val", "recommended")}, indent=2))


def _plan_total(text: str) -> float | None:
    m = re.search(r"^total: ~([\d.]+) (s|min)", text, re.M)
    return None if m is None else float(m.group(1)) * (60 if m.group(2) == "min" else 1)


if __name__ == "__main__":
    main()
