"""The classical stage's worker: augment parents and write their PNGs, in or out of process.

Kept apart from augment.classical so a spawned worker imports only numpy, Pillow and
albumentations (not pandas, scikit-learn or pydantic), and not torch either: albumentations
imports torch only for its optional ToTensorV2, and the worker initializer blocks that import.
That takes a worker's start from about 4 s to under 1 s on this machine.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import


def _albumentations():
    import albumentations as A

    return A


def with_p(item: dict) -> dict:
    """A transform dict with `p` filled from the class default when missing (no warning spam)."""
    if "p" in item or item.get("__class_fullname__") is None:
        return item
    cls = getattr(_albumentations(), item["__class_fullname__"].rsplit(".", 1)[-1])
    default = inspect.signature(cls.__init__).parameters.get("p")
    return {**item, "p": default.default if default is not None else 1.0}


def build_pipeline(transforms: list[dict], seed: int | None = None, save_params: bool = False):
    """An albumentations Compose from serialised transform dicts (A.from_dict format)."""
    spec = {"transform": {"__class_fullname__": "Compose", "transforms": [with_p(t) for t in transforms], "p": 1.0}}
    pipeline = _albumentations().from_dict(spec)
    pipeline.save_applied_params = save_params
    if seed is not None:
        pipeline.set_random_seed(seed % 2**32)
    return pipeline


def _plain(params: dict) -> dict:
    """Applied parameters without arrays (transformation matrices) and numpy scalars, for JSON."""
    out = {}
    for k, v in params.items():
        if isinstance(v, np.ndarray) or k in ("shape",):
            continue
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, dict):
            v = _plain(v)
        elif isinstance(v, (list, tuple)):
            v = [x.item() if isinstance(x, np.generic) else x for x in v]
        out[k] = v
    return out


def copies_of(pipeline, image: np.ndarray, seed: int, copies: int):
    """`copies` augmentation results (dicts) of one image, drawn from the image's own seeded
    stream, so they do not depend on the order or the process images are handled in."""
    pipeline.set_random_seed(seed % 2**32)
    for _ in range(copies):
        yield pipeline(image=image)


def augment_parents(job: dict) -> list[dict]:
    """One worker's share: read each parent, write its augmented copies, return their manifest rows.

    `job`: run_dir, transforms, channels, generator and parents [(row dict, seed, copies)]. A
    top-level function so a process pool can run it.
    """
    from augment.png import load_images, save_png

    run_dir = Path(job["run_dir"])
    pipeline = build_pipeline(job["transforms"], save_params=True)
    rows = []
    for parent, seed, copies in job["parents"]:
        image = load_images(run_dir, [parent["path"]], None, job["channels"])[0]  # native size
        for c, result in enumerate(copies_of(pipeline, image, seed, copies)):
            aug = result["image"].reshape(image.shape)
            applied = [[name, _plain(p)] for name, p in result.get("applied_transforms", [])]
            cid = f"classical-{parent['id']}-{c}"
            rel = f"images/classical/{parent['label']}/{cid}.png"
            rows.append(dict(
                id=cid, path=rel, label=parent["label"], split="train", source="classical", parent_id=parent["id"],
                seed=seed % 2**32, generator=job["generator"], sha256=save_png(run_dir, rel, aug),
                height=aug.shape[0], width=aug.shape[1], channels=aug.shape[2], kept=True,
                params=json.dumps(applied, default=str),
            ))
    return rows


def _init_worker() -> None:
    sys.modules.setdefault("torch", None)  # albumentations then skips its torch-only transforms
    import cv2

    cv2.setNumThreads(1)  # one process per core: no nested thread pools


def run_jobs(jobs: list[dict], workers: int) -> list[dict]:
    """Run augment_parents over jobs, in-process or in a pool of `workers` processes (spawned:
    safe beside torch's threads); rows come back in job order either way."""
    if workers <= 1 or len(jobs) <= 1:
        return [row for job in jobs for row in augment_parents(job)]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker) as pool:
        return [row for rows in pool.map(augment_parents, jobs) for row in rows]


