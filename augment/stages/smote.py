"""Stage smote: features of the real train split, over-sampled per class with imbalanced-learn.

Writes features/real.npz, features/smote.npz (rows with their parents), features/extractor.pt
(the fitted extractor: the benchmark's linear probe reuses it) and the smote manifest rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from augment import rundir
from augment.atomic import write_npz
from augment.config import Config
from augment.core.classify.networks import pretrained_weights_path
from augment.core.smote.features import make_extractor, save_extractor
from augment.core.smote.oversampling import check_params, interpolation_parents, oversample
from augment.runtime import derive_seed


def check(cfg: Config) -> None:
    """Sampler arguments and backbone weights, checked at config load, before any work."""
    if not cfg.smote.enabled:
        return
    check_params(cfg.smote.sampler, cfg.smote.params)
    if cfg.smote.features == "pretrained":
        pretrained_weights_path(cfg.smote.backbone, cfg.smote.weights, ("smote.backbone", "smote.weights"))


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    if not cfg.smote.enabled:
        (Path(run_dir) / rundir.EXTRACTOR).unlink(missing_ok=True)
        rundir.replace_source(run_dir, "smote", [])
        return {"rows": 0}
    info = rundir.ingest_info(run_dir)
    x_img, y, rows = rundir.load_split(run_dir, "train")
    seed = derive_seed(cfg.seed, "smote")
    extractor = make_extractor(cfg.smote, seed, cfg.benchmark.trainer_kwargs(), Path(run_dir).resolve() / rundir.GAN_CHECKPOINT)
    extractor.fit(x_img, y, len(info["classes"]))
    save_extractor(Path(run_dir) / rundir.EXTRACTOR, extractor)
    feats = extractor.transform(x_img)
    target = int(round(cfg.smote.fill_ratio * np.bincount(y).max()))
    x_new, y_new = oversample(feats, y, {c: target for c in range(len(info["classes"]))}, cfg.smote.sampler,
                              cfg.smote.params, seed, info["classes"])
    ids = np.array([f"smote-{i:06d}" for i in range(len(y_new))])
    real_ids = rows["id"].to_numpy(str)
    a, b, t, residual = interpolation_parents(x_new, y_new, feats, y)
    exact = residual <= 1e-6 * max(1.0, float(np.abs(feats).max()))
    write_npz(Path(run_dir) / "features" / "real.npz", ids=real_ids, x=feats, y=y)
    write_npz(Path(run_dir) / "features" / "smote.npz", ids=ids, x=x_new, y=y_new, parent_a=real_ids[a],
              parent_b=real_ids[b], weight=t, residual=residual)
    provenance = [json.dumps({"parents": [real_ids[i], real_ids[j]], "weight": round(float(w), 6)} if ok
                             else {"parents": None, "nearest": real_ids[i], "residual": round(float(e), 6)})
                  for i, j, w, e, ok in zip(a, b, t, residual, exact)]
    # Pixel (and PCA) rows decode back to images: the image view the CNN arm trains on.
    # Classifier features do not: those rows stay feature rows (the linear probe uses them).
    labels = [info["classes"][c] for c in y_new]
    if extractor.invertible:
        paths = [f"images/smote/{label}/{sid}.png" for sid, label in zip(ids, labels)]
        digests = [rundir.save_png(run_dir, rel, im) for rel, im in zip(paths, extractor.inverse_transform(x_new))]
    else:
        paths, digests = [None] * len(ids), [None] * len(ids)
    rundir.replace_source(run_dir, "smote", pd.DataFrame(dict(
        id=ids, path=paths, label=labels, split="train", source="smote", parent_id=real_ids[a],
        seed=seed % 2**32, generator=f"imblearn:{cfg.smote.sampler}", sha256=digests,
        height=info["size"][0], width=info["size"][1], channels=info["channels"], kept=True, params=provenance,
    )))
    return {"rows": len(ids), "features": int(feats.shape[1]), "target_per_class": target,
            "interpolations_recovered": int(exact.sum())}
