"""The whole pipeline on MNIST made scarce: does any arm beat TrivialAugmentWide? Writes JSON.

    python benchmarks/mnist_scarce.py ../shared/data/mnist [--cases 10 50 imbalanced] [--draws 5] [--set key=value ...]

Reads the MNIST test set in IDX format from the given path (never copied). Protocol: a stratified,
seeded split gives 5,000 test and 1,000 val images (real, never augmented); the scarce train set
is drawn from the remaining 4,000-image pool: 10 or 50 per class, or the imbalanced case of
5 classes with 200 images and 5 with 10. Every arm trains the same small CNN for the same number
of steps over 5 seeds. With --draws N each seed also draws its own scarce train set (data.scarcity_seed,
one whole pipeline per draw, GAN included; val and test stay the same images), so the figures carry
the variance of which images were labelled, as published low-data results do; the draws are then
paired like seeds. Reference (../shared/RESEARCH.md, same CNN family, 600 steps, 5 seeds):
10/class real 72.2% +- 0.9, TrivialAugmentWide 88.5% +- 1.1; 50/class 93.4% / 95.6%; imbalanced with
TrivialAugment 49.6% balanced accuracy (uniform sampling) and 91.4% (class-balanced sampling).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

from augment.atomic import write_json
from augment.graph import load_config, run_pipeline
from augment.summary import read_summary

REPO = Path(__file__).resolve().parents[1]
COMMON = [
    "data.source=idx", "data.split=seeded", "data.val_fraction=0.1", "data.test_fraction=0.5", "device=auto",
    "classical.preset=medium", "classical.multiplier=4",
    "gan.image_size=32", "gan.steps=1000", "gan.batch_size=32", "gan.samples_per_class=200",
    "gan.checkpoint_every=250", "gan.sample_every=250",
    "benchmark.seeds=5",  # the classifier: the library's recipe (docs/outputs.md, "The benchmark's classifier")
]
CASES = {
    "10": ["data.per_class=10"],
    "50": ["data.per_class=50"],
    "imbalanced": ["data.class_counts={" + ", ".join(f"'{c}': {200 if c < 5 else 10}" for c in range(10)) + "}"],
}
MINORITY = [str(c) for c in range(5, 10)]


def pooled_summary(run_dirs: list[Path]):
    """One Summary over pipeline runs of one seed each (one per draw): draw d is seed d."""
    import pandas as pd

    from augment.core.bench.stats import summarise

    summaries = [read_summary(r) for r in run_dirs]
    arms = [a for a in summaries[0].arms if all(a in s.arms for s in summaries)]
    frames = []
    for draw, run_dir in enumerate(run_dirs):
        frame = pd.read_parquet(run_dir / "benchmark" / "results.parquet")
        frames.append(frame[frame["classifier"] == "cnn"].assign(seed=draw))
    train_images = {a: summaries[0].arms[a].train_images for a in arms}
    recipes = {s.crossing.recipe for s in summaries if s.crossing}  # step (b): pooled only where every draw agreed
    recipe = recipes.pop() if len(recipes) == 1 and all(s.crossing for s in summaries) else None
    cross = list(summaries[0].crossing.arms) if recipe else []
    pooled = summarise(pd.concat(frames, ignore_index=True), arms, train_images, recipe, cross)
    pooled.side_stream = summaries[0].side_stream
    return pooled, {a: [s.side_stream[a].share for s in summaries] for a in summaries[0].side_stream}


def _gain(g) -> dict | None:
    return None if g is None else {k: round(getattr(g, k), 4) for k in ("gain", "ci_low", "ci_high", "p_value")}


def _test_gain(run_dir: Path, arm: str, base: str) -> dict | None:
    """`arm`'s paired test gain over `base` (the primary metric over the seeds), from one run's results.parquet
    (None when they are the same arm)."""
    if arm == base:
        return None
    import pandas as pd

    from augment.core.bench.stats import PRIMARY, paired_gain

    r = pd.read_parquet(run_dir / "benchmark" / "results.parquet")
    r = r[(r["classifier"] == "cnn") & (r["split"] == "test") & (r["metric"] == PRIMARY)]
    seeds = {a: r[r["arm"] == a].sort_values("seed")["value"].to_numpy() for a in (arm, base)}
    return _gain(paired_gain(seeds[arm], seeds[base]))


def crossing(summary, run_dir: Path) -> dict | None:
    """Step (b) of the benchmark: the recipe chosen on val, each source's gain over it (val and test), the
    best source's, the same on the plain real images, and the recommended arm's test gain over the recipe."""
    c = summary.crossing
    if c is None:
        return None
    over = {}
    for source, arm in c.arms.items():
        cmp = summary.comparison(arm, c.recipe)
        over[arm] = {"val": _gain(cmp.val), "test": _gain(cmp.test)} if cmp else None
    rec = summary.recommendation.arm
    return {"recipe": c.recipe, "chosen_on": c.chosen_on, "recipe_val": {a: round(v, 4) for a, v in c.val.items()},
            "over_recipe": over, "best": c.best, "best_test_gain": _gain(c.test_gain),
            "plain_best": c.plain_best, "plain_val_gain": _gain(c.plain_val_gain), "plain_test_gain": _gain(c.plain_test_gain),
            "recommended_test_gain_over_recipe": _test_gain(run_dir, rec, c.recipe) if run_dir else None}


def summarise_case(run_dir: Path, case: str, seconds: float, summary=None, shares=None) -> dict:
    summary = summary or read_summary(run_dir)
    arms = {}
    for arm, result in summary.arms.items():
        t = result.test
        row = {m: {k: round(getattr(t.metrics[m], k), 4) for k in ("mean", "std", "ci_low", "ci_high")}
               for m in ("accuracy", "balanced_accuracy", "macro_f1", "geometric_mean")}
        if case == "imbalanced":
            row["minority_recall"] = round(sum(t.recall[c].mean for c in MINORITY) / len(MINORITY), 4)
        row["train_images"] = result.train_images
        arms[arm] = row
    rec = summary.recommendation
    gate = None
    if (run_dir / "gan" / "quality.json").is_file():
        q = json.loads((run_dir / "gan" / "quality.json").read_text())
        synth = json.loads((run_dir / "stages" / "synthesize.json").read_text())
        gate = {"generated": synth["generated"], "kept": synth["kept"],
                "kept_of_target_per_class": synth["kept_of_target_per_class"],
                "collapsed_classes": q["collapsed_classes"], "cas_accuracy_on_val": q["cas_accuracy_on_val"],
                "kept_diversity": {c: v["kept"]["diversity"] for c, v in q["classes"].items()},
                "kept_frechet_distance": {c: v["kept"]["frechet_distance"] for c, v in q["classes"].items()}}
    ta = summary.mean("real+trivialaugment", "test", "accuracy") if "real+trivialaugment" in summary.arms else None
    best = summary.mean(rec.arm, "test", "accuracy")
    return {
        "seconds": round(seconds, 1),
        "arms": arms,
        "recommended": rec.arm,
        "synthetic_helps_on_val": rec.synthetic_helps_on_val,
        "synthetic_share_chosen_on_val": shares or {a: c.share for a, c in summary.side_stream.items()},
        "classifier_steps": summary.classifier_steps,
        "crossing": crossing(summary, run_dir if shares is None else None),  # pooled draws: no one run's table
        "gate": gate,
        "recommended_minus_trivialaugment_accuracy_points": None if ta is None else round(100 * (best - ta), 2),
        "stage_seconds": {p.stem: json.loads(p.read_text())["seconds"] for p in sorted((run_dir / "stages").glob("*.json"))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist", type=Path, help="folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--draws", type=int, default=1, help="scarce train sets drawn, one pipeline (of one seed) each")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "mnist_scarce")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mnist_scarce.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = {"platform": platform.platform(), "torch_threads": torch.get_num_threads(),
                          "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    results["protocol"] = COMMON + args.overrides + ([f"--draws {args.draws}"] if args.draws > 1 else [])
    for case in args.cases:
        common = [*COMMON, f"data.path={args.mnist.resolve()}", *CASES[case], *args.overrides]
        start = time.perf_counter()
        if args.draws == 1:
            run_dir = args.runs / f"per_class_{case}"
            run_pipeline(load_config(None, common), run_dir)  # resumes: a finished case is not recomputed
            summary, shares = None, None
        else:
            run_dirs = [args.runs / f"per_class_{case}_draw{d}" for d in range(args.draws)]
            for d, run_dir in enumerate(run_dirs):
                run_pipeline(load_config(None, [*common, f"data.scarcity_seed={d}", "benchmark.seeds=1"]), run_dir)
            run_dir = run_dirs[0]
            summary, shares = pooled_summary(run_dirs)
        results.setdefault("cases", {})[case] = summarise_case(run_dir, case, time.perf_counter() - start, summary, shares)
        write_json(args.out, results)  # after every case, atomically: partial results survive
        print(json.dumps(results["cases"][case], indent=2))


if __name__ == "__main__":
    main()
