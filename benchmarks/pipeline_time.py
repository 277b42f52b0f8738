"""Wall-clock time of `augment run` on the shipped configs, Prefect start-up included. Writes JSON.

    python benchmarks/pipeline_time.py [smoke default] [--out benchmarks/results/pipeline_time.json]
    python benchmarks/pipeline_time.py default --pair REV [--repeats 2] [--out FILE]

Each config runs in a fresh run directory (nothing to resume), as a user's first run would. Then,
on that run, the expand stage once more as if the GAN arm had won, with expand.refit_generator:
true: what training the generator again on train+val would add to the run ("refit_generator").

--pair REV: the same config run by the code at REV (checked out in a git worktree, its own
configs/) and by this checkout, alternately (REV, this, REV, this, ...), so both see the same
machine; the JSON keeps every run and the ratio of the medians (no refit timing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def time_config(name: str, code: Path = REPO, refit: bool = True) -> dict:
    from augment.summary import read_summary

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", str(code / "configs" / f"{name}.yaml"), "--run-dir", tmp, "-q"],
            cwd=code, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(code)},
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{name}: augment run failed:\n{proc.stderr[-2000:]}")
        stages = {p.stem: json.loads(p.read_text())["seconds"] for p in sorted(Path(tmp, "stages").glob("*.json"))}
        summary = read_summary(Path(tmp))
        refit = time_generator_refit(name, Path(tmp)) if refit else None
    return {
        "refit_generator": refit,
        "seconds": round(seconds, 1),
        "stage_seconds": stages,
        "recommended": summary.recommendation.arm,
        "test_balanced_accuracy": {a: round(summary.mean(a, "test", "balanced_accuracy"), 4) for a in summary.arms},
        "crossing": summary.crossing.model_dump(exclude={"val_gain", "plain_val_gain"}) if summary.crossing else None,
    }


def time_generator_refit(name: str, run_dir: Path) -> dict:
    """The expand stage with expand.refit_generator: true, as if real+gan had won (the arm's choice
    does not change what the refit costs)."""
    from augment.graph import load_config, run_stage
    from augment.summary import SUMMARY

    path = run_dir / SUMMARY
    summary = json.loads(path.read_text())
    summary["recommendation"]["arm"] = "real+gan"
    path.write_text(json.dumps(summary))
    info = run_stage("expand", load_config(REPO / "configs" / f"{name}.yaml", ["expand.refit_generator=true"]), run_dir)
    return {"expand_seconds": info["seconds"], "gan_kept": info["refit_gan_kept"], "real_splits": info["real_splits"]}


def pair(name: str, rev: str, repeats: int) -> dict:
    """`name` run by the code at `rev` and by this checkout, alternately, `repeats` times each."""
    import statistics

    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "previous"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), rev], cwd=REPO, check=True, capture_output=True)
        try:
            runs: dict[str, list[dict]] = {"previous": [], "this": []}
            for _ in range(repeats):
                for which, code in (("previous", worktree), ("this", REPO)):
                    runs[which].append(time_config(name, code, refit=False))
                    print(which, runs[which][-1]["seconds"], runs[which][-1]["stage_seconds"], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, capture_output=True)
    median = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    stages = {k: {s: round(statistics.median(r["stage_seconds"][s] for r in v), 1) for s in v[0]["stage_seconds"]}
              for k, v in runs.items()}
    return {"previous_rev": rev, "runs": runs, "median_seconds": median, "median_stage_seconds": stages,
            "this_over_previous": round(median["this"] / median["previous"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=["smoke", "default"])
    parser.add_argument("--pair", metavar="REV", help="time REV's code and this checkout alternately")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pipeline_time.json")
    args = parser.parse_args()
    if args.pair:
        results = {"machine": machine(), "pairs": {name: pair(name, args.pair, args.repeats) for name in args.configs}}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps({n: {k: p[k] for k in ("median_seconds", "this_over_previous")} for n, p in results["pairs"].items()}, indent=2))
        return
    results = {"machine": machine(), "configs": {name: time_config(name) for name in args.configs}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
