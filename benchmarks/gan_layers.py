"""The GAN step with and without the CPU fast paths of augment.core.gan.layers, back to back. Writes JSON.

    python benchmarks/gan_layers.py [--sizes 8 16] [--repeats 4] [--steps 40] [--out benchmarks/results/gan_layers.json]

The embedded default's GAN (configs/default.yaml: 10 classes, batch 32 a class, the per_class+mix
ensemble) at each size: each member alone and both stepped together, on this process's threads,
the plain layers (nn.Conv2d's kernels) and the fast paths alternately (plain, fast, plain, fast, ...)
from the same seed, so both see the same machine. Reports the median ms a step and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from augment.core.gan import layers
    from augment.core.gan.train import build_state, train_step
    from augment.graph import load_config
    from augment.registry import generator_modes
    from augment.runtime import tune_allocator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gan_layers.json")
    args = parser.parse_args()
    tune_allocator()  # as the gan stage runs
    fast = layers._fast
    cfg = load_config(REPO / "configs" / "default.yaml", [])
    k = 10
    results = []
    for size in args.sizes:
        bank = torch.rand(k, 10, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
        counts = torch.full((k,), 10)
        modes = generator_modes(cfg.gan.mode)
        for members in [[m] for m in modes] + [modes]:
            def run(on: bool) -> float:
                layers._fast = fast if on else (lambda x: False)
                states = []
                for mode in members:
                    member = cfg.gan.model_copy(update={"mode": mode, "image_size": size})
                    states.append((build_state(member, k, 1, seed=0, device=torch.device("cpu"), bank=(bank, counts)), member))
                for _ in range(3):  # allocation and first-call costs
                    for state, member in states:
                        train_step(state, bank, counts, member)
                start = time.perf_counter()
                for _ in range(args.steps):
                    for state, member in states:
                        train_step(state, bank, counts, member)
                return (time.perf_counter() - start) / args.steps * 1000

            times: dict[str, list[float]] = {"plain": [], "fast": []}
            for _ in range(args.repeats):
                for name, on in (("plain", False), ("fast", True)):
                    times[name].append(round(run(on), 2))
            layers._fast = fast
            plain, quick = statistics.median(times["plain"]), statistics.median(times["fast"])
            row = {"image_size": size, "members": "+".join(members), "ms_per_step": times,
                   "median_plain_ms": plain, "median_fast_ms": quick, "ratio": round(quick / plain, 3)}
            print(json.dumps(row), flush=True)
            results.append(row)
    out = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "platform": platform.platform(), "processor": platform.processor()},
           "steps": args.steps, "repeats": args.repeats, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
