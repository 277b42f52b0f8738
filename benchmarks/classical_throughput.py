"""Throughput of the classical stage vs a bare albumentations loop over the same images and pipeline.

    python benchmarks/classical_throughput.py [--mnist ../shared/data/mnist] [--images 1000] [--copies 4]
        [--size 224] [--channels 3] [--preset medium] [--workers 1 2]

Images: MNIST test images (read by path, never copied) or scikit-learn's digits, resized to
--size (and repeated to RGB with --channels 3: the size of a typical photo dataset) and written
as PNGs into a temporary run directory. Measured side by side
after a warm-up, in output images per second (--repeats rounds, interleaved; the best of each kept):
  bare_in_memory  pipeline(image=...) over decoded arrays: the augmentation alone
  bare_files      what a user writes by hand: read each PNG, augment, write each copy as PNG
  bare_files_same_png  the same loop with the stage's PNG setting (compress_level=1): what is
                  left between it and stage_1 is the stage's bookkeeping
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
REPO = Path(__file__).resolve().parents[1]
# The project's modules are imported inside main(): spawned workers re-import this script as a
# module, and should pay only for what a worker of the real stage pays for.


def source_images(mnist: Path | None, n: int, size: int, channels: int) -> list[Image.Image]:
    from augment.core.data.sources import read_digits, read_idx

    raw = read_idx(mnist) if mnist else read_digits()
    mode = "L" if channels == 1 else "RGB"
    return [Image.fromarray(im[:, :, 0]).resize((size, size), Image.Resampling.BILINEAR).convert(mode)
            for im in raw.images[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=None, help="MNIST IDX folder (default: scikit-learn digits)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=3, choices=[1, 3])
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3,
                        help="measure every variant this many times, interleaved (drift hits all alike); keep the best")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "classical_throughput.json")
    args = parser.parse_args()
    from augment import rundir
    from augment.core.transforms.augmentation import build_pipeline
    from augment.core.transforms.copies import transforms_for
    from augment.atomic import write_json
    from augment.graph import load_config, run_stage

    images = source_images(args.mnist, args.images, args.size, args.channels)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "input"
        for i, im in enumerate(images):
            (folder / str(i % 10)).mkdir(parents=True, exist_ok=True)
            im.save(folder / str(i % 10) / f"{i:05d}.png")
        base = ["data.source=folder", f"data.path={folder}", "data.val_fraction=0.05", "data.test_fraction=0.05",
                f"classical.preset={args.preset}", f"classical.multiplier={args.copies}", f"data.channels={args.channels}"]
        run_dir = Path(tmp) / "run"
        run_stage("ingest", load_config(None, base), run_dir)
        frame = rundir.read_manifest(run_dir)
        train = frame[(frame["split"] == "train") & (frame["source"] == "real")]
        files = [run_dir / p for p in train["path"]]
        n_out = len(files) * args.copies
        transforms = transforms_for(load_config(None, base).classical, args.channels)
        pipeline = build_pipeline(transforms)
        def read(f: Path) -> np.ndarray:
            arr = np.asarray(Image.open(f))
            return arr[:, :, None] if arr.ndim == 2 else arr

        arrays = [read(f) for f in files]

        def bare_in_memory() -> None:
            for i, im in enumerate(arrays):
                pipeline.set_random_seed(i)
                for _ in range(args.copies):
                    pipeline(image=im)

        out_dir = Path(tmp) / "bare"
        out_dir.mkdir()

        def bare_files() -> None:
            for i, f in enumerate(files):
                im = read(f)
                pipeline.set_random_seed(i)
                for c in range(args.copies):
                    Image.fromarray(pipeline(image=im)["image"].squeeze()).save(out_dir / f"{i}-{c}.png")

        def bare_files_same_png() -> None:  # the same loop with our PNG encoder setting: bookkeeping alone
            for i, f in enumerate(files):
                im = read(f)
                pipeline.set_random_seed(i)
                for c in range(args.copies):
                    Image.fromarray(pipeline(image=im)["image"].squeeze()).save(out_dir / f"{i}-{c}.png", compress_level=1)

        def stage(workers: int):
            def go() -> None:
                cfg = load_config(None, [*base, f"classical.workers={workers}", f"seed={time.monotonic_ns()}"])
                run_stage("classical", cfg, run_dir)  # a new seed each time: the stage really runs
            return go

        def timed(fn) -> float:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        bare_in_memory()  # warm-up (imports, caches)
        variants = {"bare_in_memory": bare_in_memory, "bare_files": bare_files,
                    "bare_files_same_png": bare_files_same_png, **{f"stage_{w}": stage(w) for w in args.workers}}
        runs: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                runs[name].append(n_out / timed(fn))
        results = {name: max(r) for name, r in runs.items()}
    import torch

    record = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "workload": {"images": len(files), "copies": args.copies, "outputs": n_out, "size": args.size,
                     "channels": args.channels,
                     "preset": args.preset, "source": "mnist" if args.mnist else "digits", "transforms": transforms},
        "images_per_second": {k: round(v, 1) for k, v in results.items()},
        "images_per_second_every_repeat": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "repeats": args.repeats,
        "stage_1_overhead_vs_bare_files": round(results["bare_files"] / results["stage_1"] - 1, 4) if "stage_1" in results else None,
        "stage_1_overhead_vs_bare_files_same_png": (round(results["bare_files_same_png"] / results["stage_1"] - 1, 4)
                                                    if "stage_1" in results else None),
        "speedup_2_vs_1": round(results["stage_2"] / results["stage_1"], 3) if {"stage_1", "stage_2"} <= set(results) else None,
    }
    write_json(args.out, record)
    print(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
