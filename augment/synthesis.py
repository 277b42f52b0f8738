"""Synthesize from the trained generator and gate each sample before it can be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from augment import manifest
from augment.classical import classical_fingerprint
from augment.classifier import predict_proba, train_classifier
from augment.config import Config
from augment.data import ingest_info, load_split
from augment.gan_training import gan_fingerprint, load_generator, sample, to_uint8
from augment.runtime import combine, derive_seed, resolve_device, run_stage


def gate(probs: np.ndarray, intended: np.ndarray, min_confidence: float) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Score = the gate classifier's probability for the intended class; keep if >= min_confidence.

    Returns (score, kept, reason) per sample; reason names the class the classifier saw instead.
    """
    score = probs[np.arange(len(intended)), intended]
    kept = score >= min_confidence
    predicted = probs.argmax(axis=1)
    reasons = [
        None if k else f"confidence {s:.2f} < {min_confidence} (looks like class index {p})"
        for k, s, p in zip(kept, score, predicted)
    ]
    return score, kept, reasons


def synthesize_stage(cfg: Config, run_dir: Path) -> dict:
    """Sample gan.samples_per_class per class, score them with a real-data classifier, keep the passing ones."""
    run_dir = Path(run_dir)

    def body() -> dict:
        if not cfg.gan.enabled:
            manifest.replace_source(run_dir, "gan", [])
            return {"generated": 0, "kept": 0}
        info = ingest_info(run_dir)
        classes, size = info["classes"], tuple(info["size"])
        device = resolve_device(cfg.device)
        # The gate's judge: the benchmark's classifier trained on real train (+ classical) images.
        x, y, _ = load_split(run_dir, "train", sources=("real", "classical"))
        judge = train_classifier(x, y, len(classes), **cfg.benchmark.trainer_kwargs(),
                                 seed=derive_seed(cfg.seed, "gate"), device=device)
        G = load_generator(run_dir / "gan", cfg.gan, len(classes), info["channels"], device, derive_seed(cfg.seed, "bn"))
        seed = derive_seed(cfg.seed, "synthesize")
        n = cfg.gan.samples_per_class
        samples = sample(G, n, cfg.gan.nz, len(classes), seed, device)  # (n, K, C, S, S)
        images = to_uint8(samples.transpose(0, 1).flatten(0, 1), size)  # class-major (K*n, H, W, C)
        intended = np.repeat(np.arange(len(classes)), n)
        score, kept, reasons = gate(predict_proba(judge, images), intended, cfg.gate.min_confidence)
        rows = []
        for i, image in enumerate(images):
            label = classes[intended[i]]
            gid = f"gan-{label}-{i % n:05d}"
            rel = f"images/gan/{label}/{gid}.png"
            rows.append(dict(
                id=gid, path=rel, label=label, split="train", source="gan", parent_id=None, seed=seed % 2**32,
                generator=f"dcgan:{cfg.gan.mode}", sha256=manifest.save_png(run_dir, rel, image),
                height=size[0], width=size[1], channels=image.shape[2], score=float(score[i]),
                kept=bool(kept[i]), reason=reasons[i],
            ))
        manifest.replace_source(run_dir, "gan", rows)
        per_class = pd.Series(kept).groupby(intended).mean()
        return {
            "generated": len(rows),
            "kept": int(kept.sum()),
            "kept_fraction_per_class": {classes[c]: round(float(v), 4) for c, v in per_class.items()},
        }

    judge = sorted(cfg.benchmark.trainer_kwargs().items())  # not seeds or arms
    fp = combine(gan_fingerprint(cfg), classical_fingerprint(cfg), cfg.section_hash("gate", "device"), str(judge))
    return run_stage(run_dir, "synthesize", fp, body)
