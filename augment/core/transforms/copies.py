"""The classical copies, in core: which transforms a config asks for (transforms_for), how many
copies each class and parent gets, and the worker that computes and encodes them (it reads and
writes no file: the stages hand it images and write what it returns, augment.rundir.classical_rows).
albumentations itself stays behind augment.core.transforms.augmentation. Light on purpose, as that
module: a spawned worker imports only numpy, Pillow and albumentations (albumentations imports torch
only for its optional ToTensorV2, and the worker initializer blocks that import, which takes a
worker's start from about 4 s to under 1 s on 2 cores).
"""

from __future__ import annotations

import heapq
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Iterator

from augment.core.transforms.augmentation import FLIP, PRESETS, plain_params, build_pipeline, copies_of, read_pipeline_file
from augment.errors import check_stop
from augment.runtime import cpu_cores

if TYPE_CHECKING:
    from augment.config import ClassicalConfig


def transforms_for(c: ClassicalConfig, channels: int) -> list[dict]:
    """The configured transform list: a custom list or file, else the preset (+ flips).

    Presets drop colour jitter on greyscale images (it needs three channels to mean anything).
    """
    if c.transforms is not None:
        return c.transforms
    if c.pipeline_file is not None:
        return read_pipeline_file(c.pipeline_file)
    out = [t for t in PRESETS[c.preset] if channels == 3 or t["__class_fullname__"] != "ColorJitter"]
    return out + [FLIP] if c.flips else out


def copies_per_class(counts: dict[str, int], c: ClassicalConfig) -> dict[str, int]:
    """How many augmented images each class gets.

    multiplier: every real image gets `multiplier` copies. target: each class is filled up to
    `target` images (real + augmented). balance: the same budget as multiplier (multiplier x all
    real train images), given one image at a time to the class that has the fewest so far, so
    minority classes are filled first.
    """
    if c.target is not None:
        return {label: max(0, c.target - n) for label, n in counts.items()}
    if not c.balance:
        return {label: c.multiplier * n for label, n in counts.items()}
    extra = {label: 0 for label in counts}
    heap = [(n, label) for label, n in sorted(counts.items())]
    heapq.heapify(heap)
    for _ in range(c.multiplier * sum(counts.values())):  # one image at a time to the smallest class
        n, label = heapq.heappop(heap)
        extra[label] += 1
        heapq.heappush(heap, (n + 1, label))
    return extra


def spread(total: int, parents: int) -> list[int]:
    """`total` copies over `parents` images, as evenly as possible (the first ones get the remainder)."""
    base, rest = divmod(total, parents)
    return [base + (i < rest) for i in range(parents)]


def plan_copies(parents: list[dict], extra: dict[str, int], seed_of) -> list[tuple[dict, int, int]]:
    """(parent, seed, copies) for every parent that gets copies: each class's `extra` copies spread
    over its parents (in the order given), each parent's stream seeded by seed_of(parent id)."""
    plan = []
    for label in sorted({p["label"] for p in parents}):
        group = [p for p in parents if p["label"] == label]
        for parent, k in zip(group, spread(extra.get(label, 0), len(group))):
            if k:
                plan.append((parent, seed_of(parent["id"]), k))
    return plan


AUTO_POOL_PIXELS = 100_000_000  # output pixels (H x W x C summed) from which a pool pays off


def auto_workers(n_outputs: int, pixels_each: int, configured: int | None) -> int:
    """classical.workers, else every core once there is enough work to repay starting processes
    (each spawned worker imports albumentations and torch: about 4 s on this machine)."""
    if configured is not None:
        return configured
    return cpu_cores() if n_outputs * pixels_each >= AUTO_POOL_PIXELS else 1


def augment_copies(job: dict) -> list[list[tuple[bytes, tuple[int, int, int], str]]]:
    """One worker's share of the classical copies, computed and encoded, no file read or written:
    for each parent, its copies as (PNG bytes, shape, applied parameters as JSON), drawn from the
    parent's own seeded stream. A top-level function so a process pool can run it.

    `job`: transforms and parents [(image uint8 (H, W, C), seed, copies)]. The classical stage
    and the take-home refit write the bytes (augment.rundir.classical_rows).
    """
    from augment.png import encode_png

    pipeline = build_pipeline(job["transforms"], save_params=True)
    out = []
    for image, seed, copies in job["parents"]:
        check_stop()  # in this process: a SIGTERM stops between images (a pool's workers finish their job)
        made = []
        for result in copies_of(pipeline, image, seed, copies):
            aug = result["image"].reshape(image.shape)
            applied = [[name, plain_params(p)] for name, p in result.get("applied_transforms", [])]
            made.append((encode_png(aug), tuple(aug.shape), json.dumps(applied, default=str)))
        out.append(made)
    return out


def _init_worker() -> None:
    sys.modules.setdefault("torch", None)  # albumentations then skips its torch-only transforms
    import cv2

    cv2.setNumThreads(1)  # one process per core: no nested thread pools


def run_jobs(jobs: list[dict], workers: int, progress=None) -> Iterator[list]:
    """Yield augment_copies(job) for each job in job order, in-process or from a pool of `workers`
    processes (spawned: safe beside torch's threads). progress(done, total) after each job."""
    def done(parts):
        for n, made in enumerate(parts, start=1):
            yield made
            if progress is not None:
                progress(n, len(jobs))

    if workers <= 1 or len(jobs) <= 1:
        yield from done(augment_copies(job) for job in jobs)
        return
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker) as pool:
        yield from done(pool.map(augment_copies, jobs))
