"""Throughput of the classical stage vs a bare albumentations loop over the same images and pipeline.

    python benchmarks/classical_throughput.py [--mnist ../shared/data/mnist] [--images 2000] [--copies 4]
        [--size 64] [--preset medium] [--workers 1 2]

Images: MNIST test images (read by path, never copied) or scikit-learn's digits, resized to
--size and written as PNGs into a temporary run directory. Measured side by side, each once
after a warm-up, in output images per second:
  bare_in_memory  pipeline(image=...) over decoded arrays: the augmentation alone
  bare_files      what a user writes by hand: read each PNG, augment, write each copy as PNG
  stage_N         our classical stage with N worker processes (reads, seeds each parent, writes
                  PNGs atomically with sha256, records applied parameters, writes the manifest)
Targets (issue): stage_1 at most 10% slower than bare_files; stage_2 at least 1.7x stage_1 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from augment import manifest  # noqa: E402
from augment.classical import build_pipeline, classical_stage, transforms_for  # noqa: E402
from augment.config import load_config  # noqa: E402
from augment.data import ingest_stage, read_digits, read_idx  # noqa: E402
from augment.runtime import write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def source_images(mnist: Path | None, n: int, size: int) -> list[np.ndarray]:
    raw = read_idx(mnist) if mnist else read_digits()
    picked = raw.images[:n]
    return [np.asarray(Image.fromarray(im[:, :, 0]).resize((size, size), Image.Resampling.BILINEAR))[:, :, None]
            for im in picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=None, help="MNIST IDX folder (default: scikit-learn digits)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "classical_throughput.json")
    args = parser.parse_args()

    images = source_images(args.mnist, args.images, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "input"
        for i, im in enumerate(images):
            (folder / str(i % 10)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(im[:, :, 0]).save(folder / str(i % 10) / f"{i:05d}.png")
        base = ["data.source=folder", f"data.path={folder}", "data.val_fraction=0.05", "data.test_fraction=0.05",
                f"classical.preset={args.preset}", f"classical.multiplier={args.copies}"]
        run_dir = Path(tmp) / "run"
        ingest_stage(load_config(None, base), run_dir)
        frame = manifest.read(run_dir)
        train = frame[(frame["split"] == "train") & (frame["source"] == "real")]
        files = [run_dir / p for p in train["path"]]
        n_out = len(files) * args.copies
        transforms = transforms_for(load_config(None, base).classical, 1)
        pipeline = build_pipeline(transforms)
        arrays = [np.asarray(Image.open(f))[:, :, None] for f in files]

        def bare_in_memory() -> None:
            for i, im in enumerate(arrays):
                pipeline.set_random_seed(i)
                for _ in range(args.copies):
                    pipeline(image=im)

        out_dir = Path(tmp) / "bare"
        out_dir.mkdir()

        def bare_files() -> None:
            for i, f in enumerate(files):
                im = np.asarray(Image.open(f))[:, :, None]
                pipeline.set_random_seed(i)
                for c in range(args.copies):
                    Image.fromarray(pipeline(image=im)["image"][:, :, 0]).save(out_dir / f"{i}-{c}.png")

        def stage(workers: int):
            def go() -> None:
                cfg = load_config(None, [*base, f"classical.workers={workers}", f"seed={time.monotonic_ns()}"])
                classical_stage(cfg, run_dir)  # a new seed each time: the stage really runs
            return go

        def timed(fn) -> float:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        bare_in_memory()  # warm-up (imports, caches)
        results = {"bare_in_memory": n_out / timed(bare_in_memory), "bare_files": n_out / timed(bare_files)}
        for w in args.workers:
            results[f"stage_{w}"] = n_out / timed(stage(w))
    import torch

    record = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "workload": {"images": len(files), "copies": args.copies, "outputs": n_out, "size": args.size,
                     "preset": args.preset, "source": "mnist" if args.mnist else "digits", "transforms": transforms},
        "images_per_second": {k: round(v, 1) for k, v in results.items()},
        "stage_1_overhead_vs_bare_files": round(results["bare_files"] / results["stage_1"] - 1, 4) if "stage_1" in results else None,
        "speedup_2_vs_1": round(results["stage_2"] / results["stage_1"], 3) if {"stage_1", "stage_2"} <= set(results) else None,
    }
    write_json(args.out, record)
    print(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
