"""Wall time of training 16 benchmark classifiers: one after another vs the batched engine. Writes JSON.

    python benchmarks/engine_throughput.py [--size 8] [--steps 600] [--baseline-rev b7f9012]
        [--variants previous sequential engine one_per_worker stacked] [--repeats 2] [--out FILE]

The 16 classifiers are the benchmark's recipe mix, four seeds each of real, real+classical (the
medium preset on the fly), real+trivialaugment and real+classical+trivialaugment, on 100 digits
(10 per class) at --size pixels, --steps steps of batch 64. Variants, each in its own fresh
process, timed from the first model's construction to the last one trained:
  previous    the code before the engine (--baseline-rev, checked out in a git worktree):
              train_classifier 16 times, one after another, in one process (torch's threads)
  sequential  this code's train_classifier 16 times one after another in one process
  engine      what the benchmark stage runs: benchmark.models_per_round auto on this device and
              benchmark.workers auto (on a CPU, a pool of one single-threaded process per core, each
              training its round of the models stacked, up to 16 at once, at most 16x16 pixels)
  one_per_worker  the same pool, each worker training one model at a time (the CPU's auto before
              2026-12-06, and still its auto above 16x16 pixels)
  stacked     all 16 as one stacked network (models_per_round 16) in one process
Variants alternate (A B C D A B C D ...) over --repeats rounds; the JSON keeps every time, the
medians and each variant's speed-up over `previous`, and each model's accuracy on 500 held-out
digits (the same recipe must learn the same, within seed noise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = [("real", False, None), ("real+classical", True, None), ("real+trivialaugment", False, "trivialaugment"),
        ("real+classical+trivialaugment", True, "trivialaugment")]

CHILD = r'''
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
variant, size, steps = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
arms = json.loads(sys.argv[5])
import torch
import engine_job
x, y, train, test = engine_job.data(size)
from augment.core.transforms.copies import transforms_for
from augment.config import ClassicalConfig
classical = transforms_for(ClassicalConfig(preset="medium"), 1)
kw = dict(steps=steps, batch_size=64, width=32)
jobs = [(arm, c, a, seed) for arm, c, a in arms for seed in range(4)]
from augment.core.classify.classifier import predict_proba, train_classifier
start = time.perf_counter()
if variant in ("previous", "sequential"):
    models = [train_classifier(x[train], y[train], 10, seed=seed, augment=a, classical=classical if c else None, **kw)
              for arm, c, a, seed in jobs]
else:
    from augment.core.classify.classifier import train_classifiers
    from augment.core.classify.engine import Task
    from augment.core.base.parallel import auto_workers, job_pool, run_jobs
    tasks = [Task(x[train], y[train], seed, classical=c, augment=a) for arm, c, a, seed in jobs]
    from augment.config import BenchmarkConfig
    from augment.core.bench.jobs import auto_per_round, round_parallel, rounds_of
    cuda = torch.cuda.is_available()
    per_round = {"stacked": len(tasks), "one_per_worker": 1}.get(variant) or auto_per_round(BenchmarkConfig(), cuda, size * size)
    if variant == "stacked":
        models = train_classifiers(tasks, 10, classical=classical, stack=per_round, **kw)
    else:
        import engine_job
        rounds = rounds_of(list(range(len(tasks))), per_round, round_parallel(cuda))
        workers = auto_workers(len(rounds), None, "cuda" if torch.cuda.is_available() else "cpu", steps * per_round)
        models = [None] * len(tasks)
        with job_pool(workers) as pool:
            for i, out in run_jobs(engine_job.run, [(sys.argv[1], size, steps, r) for r in rounds], workers, pool=pool):
                for j, m in zip(rounds[i], out):
                    models[j] = m
seconds = time.perf_counter() - start
acc = [float((predict_proba(m, x[test]).argmax(1) == y[test]).mean()) for m in models]
print(json.dumps({"seconds": seconds, "accuracy": acc, "threads": torch.get_num_threads()}))
'''

JOB = r'''
"""A worker's share of the engine variant (imported by name in spawned workers)."""
import numpy as np

def data(size):
    """(digits at size x size, labels, 10 train images per class, 500 held-out images)."""
    import torch, torch.nn.functional as F
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images * 16).clip(0, 255).astype(np.uint8)[..., None]
    if size != 8:
        x = (F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear",
                           antialias=True).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    y = d.target
    train = np.concatenate([np.flatnonzero(y == c)[:10] for c in range(10)])
    return x, y, train, np.setdiff1d(np.arange(len(y)), train)[:500]


def run(item):
    import sys
    repo, size, steps, members = item
    sys.path.insert(0, repo)
    from augment.core.transforms.copies import transforms_for
    from augment.config import ClassicalConfig
    from augment.core.classify.classifier import train_classifiers
    from augment.core.classify.engine import Task
    x, y, train, _ = data(size)
    arms = ARMS
    jobs = [(arm, c, a, seed) for arm, c, a in arms for seed in range(4)]
    tasks = [Task(x[train], y[train], jobs[i][3], classical=jobs[i][1], augment=jobs[i][2]) for i in members]
    classical = transforms_for(ClassicalConfig(preset="medium"), 1)
    return train_classifiers(tasks, 10, classical=classical, stack=len(tasks), steps=steps, batch_size=64, width=32)
'''


def run_variant(variant: str, code: Path, size: int, steps: int, helper: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{helper}{os.pathsep}{code}", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(code), variant, str(size), str(steps), json.dumps(ARMS)],
                          capture_output=True, text=True, env=env, cwd=code)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--baseline-rev", default="b7f9012")
    parser.add_argument("--variants", nargs="*", default=["previous", "sequential", "engine", "stacked"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine_throughput.json")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        helper = Path(tmp) / "helper"
        helper.mkdir()
        (helper / "engine_job.py").write_text(f"ARMS = {ARMS!r}\n" + JOB)
        worktree = Path(tmp) / "previous"
        if "previous" in args.variants:
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.baseline_rev], cwd=REPO, check=True,
                           capture_output=True)
        try:
            times: dict[str, list[float]] = {v: [] for v in args.variants}
            accuracy: dict[str, list[float]] = {}
            for _ in range(args.repeats):
                for v in args.variants:
                    out = run_variant(v, worktree if v == "previous" else REPO, args.size, args.steps, helper)
                    times[v].append(round(out["seconds"], 2))
                    accuracy[v] = out["accuracy"]
                    print(v, out["seconds"], flush=True)
        finally:
            if "previous" in args.variants:
                subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, capture_output=True)
    median = {v: statistics.median(t) for v, t in times.items()}
    base = median.get("previous")
    result = {
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "setup": {"models": 16, "arms": [a for a, _, _ in ARMS], "seeds_per_arm": 4, "size": args.size, "steps": args.steps,
                  "batch_size": 64, "train_images": 100, "baseline_rev": args.baseline_rev},
        "seconds": times, "median_seconds": median,
        "speedup_over_previous": {v: round(base / m, 2) for v, m in median.items()} if base else None,
        "mean_accuracy": {v: round(statistics.mean(a), 4) for v, a in accuracy.items()},
        "accuracy": accuracy,
    }
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[f"{args.size}px"] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_seconds", "speedup_over_previous", "mean_accuracy")}, indent=2))


if __name__ == "__main__":
    main()
