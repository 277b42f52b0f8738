"""Synthesize from the trained generator and gate each sample before it can be used.

The judge is the benchmark's classifier trained (class-balanced) on the real train split plus
its classical augmentations. Every generated image is scored twice in the judge's terms:
its confidence that the image shows the intended class, and its novelty, the distance to
the nearest real training image in the judge's feature space over the typical spacing of
real training images (0 = a copy, about 1 = as far as a held-out real image). The stage
over-generates and keeps, per class, the most confident samples that pass both thresholds;
then per-class quality metrics in the same feature space go to gan/quality.json, and a class
whose generated samples are much less varied than its real images is flagged as collapsed and,
unless gate.keep_collapsed is set, not used. (k-NN recall is reported but not alarmed on: with
10 real images per class it moves in steps of 0.1 and was 0-0.3 for classes whose samples a
classifier recognised 83-94% of the time.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import recall_score

from augment import manifest, quality
from augment.classical import classical_fingerprint
from augment.classifier import predict, train_classifier
from augment.config import Config, GateConfig
from augment.data import ingest_info, load_split
from augment.gan_training import gan_fingerprint, load_generator, sample, to_uint8
from augment.runtime import combine, derive_seed, resolve_device, run_stage, write_json

K_NEIGHBOURS = 3  # Kynkaanniemi et al. 2019's default for precision and recall


def select(
    probs: np.ndarray, intended: np.ndarray, novelty: np.ndarray, nearest_id: list[str], target: int,
    min_confidence: float, min_novelty: float,
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Per-sample gate decisions: (score, kept, reason).

    score is the judge's probability for the intended class. A sample passes if score >=
    min_confidence and novelty >= min_novelty; of the passing samples of each class, the
    `target` highest-scoring are kept (over-generation), the rest are surplus.
    """
    score = probs[np.arange(len(intended)), intended]
    predicted = probs.argmax(axis=1)
    kept = np.zeros(len(intended), dtype=bool)
    reasons: list[str | None] = [None] * len(intended)
    for i in range(len(intended)):
        if score[i] < min_confidence:
            reasons[i] = f"confidence {score[i]:.2f} < {min_confidence} (looks like class index {predicted[i]})"
        elif novelty[i] < min_novelty:
            reasons[i] = f"near-copy of real image {nearest_id[i]} (novelty {novelty[i]:.2f} < {min_novelty})"
    for c in np.unique(intended):
        passing = np.flatnonzero((intended == c) & np.array([r is None for r in reasons]))
        ranked = passing[np.argsort(-score[passing], kind="stable")]
        kept[ranked[:target]] = True
        for i in ranked[target:]:
            reasons[i] = f"surplus: the {target} most confident passing samples of the class were kept"
    return score, kept, reasons


def _set_metrics(real: np.ndarray, fake: np.ndarray) -> dict:
    """Frechet distance, k-NN precision/recall and diversity of one class's fake vs real features
    (None where a set is too small for the metric)."""
    out: dict = {"n": int(len(fake)), "frechet_distance": None, "precision": None, "recall": None, "diversity": None}
    if len(fake) >= 2 and len(real) >= 2:
        out["frechet_distance"] = round(quality.frechet_distance(real, fake), 4)
        out["diversity"] = round(quality.diversity(fake, real), 4)
    if len(fake) > K_NEIGHBOURS and len(real) > K_NEIGHBOURS:
        p, r = quality.precision_recall(real, fake, K_NEIGHBOURS)
        out["precision"], out["recall"] = round(p, 4), round(r, 4)
    return out


def class_quality(
    real_feats: np.ndarray, real_y: np.ndarray, fake_feats: np.ndarray, intended: np.ndarray, kept: np.ndarray,
    novelty: np.ndarray, classes: list[str], gate_cfg: GateConfig,
) -> dict[str, dict]:
    """Per-class metrics for all generated samples and for the kept ones, plus the collapse alarm."""
    out = {}
    for c, label in enumerate(classes):
        real, mine = real_feats[real_y == c], intended == c
        generated = _set_metrics(real, fake_feats[mine])
        div = generated["diversity"]  # the generator's collapse, not the narrowing our selection adds
        collapsed = div is not None and div < gate_cfg.min_diversity
        out[label] = {
            "generated": generated,
            "kept": _set_metrics(real, fake_feats[mine & kept]),
            "median_novelty": round(float(np.median(novelty[mine])), 4) if mine.any() else None,
            "collapsed": bool(collapsed),
            "alarm": (f"mode collapse: its samples are {div:.2f} times as varied as the real images "
                      f"(< gate.min_diversity {gate_cfg.min_diversity})") if collapsed else None,
        }
    return out


def classification_accuracy_score(
    x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int, trainer: dict, seed: int, device,
) -> dict:
    """Classification accuracy score (Ravuri & Vinyals 2019): train on synthetic only, test on real val.

    Per-class recall on val says which classes the generator actually learned.
    """
    if len(x) == 0 or len(x_val) == 0:
        return {"accuracy": None, "recall": {}}
    model = train_classifier(x, y, n_classes, **trainer, balanced=True, seed=seed, device=device)
    pred = predict(model, x_val)[0].argmax(1)
    recall = recall_score(y_val, pred, labels=np.arange(n_classes), average=None, zero_division=0.0)
    return {"accuracy": round(float((pred == y_val).mean()), 4), "recall": [round(float(r), 4) for r in recall]}


@dataclass
class Judged:
    """The gate's verdict on generated images, with the judge's features for quality metrics."""

    score: np.ndarray  # judge's probability for the intended class
    novelty: np.ndarray  # nearest-real distance / real spacing, in the judge's feature space
    kept: np.ndarray
    reasons: list[str | None]
    feats: np.ndarray  # (N, D) generated
    real_feats: np.ndarray  # (M, D) real train


def judge_samples(
    judge, x_real: np.ndarray, real_ids: list[str], images: np.ndarray, intended: np.ndarray, target: int,
    gate_cfg: GateConfig,
) -> Judged:
    """Score generated `images` (intended class indices) against the real train images with `judge`."""
    _, real_feats = predict(judge, x_real)
    probs, feats = predict(judge, images)
    dist, idx = quality.nearest(feats, real_feats)
    novelty = dist / quality.spacing(real_feats)
    score, kept, reasons = select(probs, intended, novelty, [real_ids[i] for i in idx], target,
                                  gate_cfg.min_confidence, gate_cfg.min_novelty)
    return Judged(score, novelty, kept, reasons, feats, real_feats)


def apply_alarm(per_class: dict[str, dict], classes: list[str], intended: np.ndarray, kept: np.ndarray,
                reasons: list[str | None], keep_collapsed: bool) -> None:
    """Un-keep every sample of a class flagged as collapsed, unless the user overrides (in place)."""
    for c, label in enumerate(classes):
        q = per_class[label]
        if not q["collapsed"]:
            continue
        q["alarm"] += " (kept anyway: gate.keep_collapsed)" if keep_collapsed else " (not used: set gate.keep_collapsed to override)"
        if keep_collapsed:
            continue
        for i in np.flatnonzero((intended == c) & kept):
            kept[i] = False
            reasons[i] = f"class {label} flagged: {q['alarm']}"


def synthesize_stage(cfg: Config, run_dir: Path) -> dict:
    """Over-generate per class, gate every sample, keep the best gan.samples_per_class, write gan/quality.json."""
    run_dir = Path(run_dir)

    def body() -> dict:
        if not cfg.gan.enabled:
            manifest.replace_source(run_dir, "gan", [])
            return {"generated": 0, "kept": 0}
        info = ingest_info(run_dir)
        classes, size = info["classes"], tuple(info["size"])
        k = len(classes)
        device = resolve_device(cfg.device)
        trainer = cfg.benchmark.trainer_kwargs()
        x, y, train_rows = load_split(run_dir, "train", sources=("real", "classical"))
        judge = train_classifier(x, y, k, **trainer, balanced=True, seed=derive_seed(cfg.seed, "gate"), device=device)
        real = (train_rows["source"] == "real").to_numpy()
        real_y = y[real]

        G = load_generator(run_dir / "gan", cfg.gan, k, info["channels"], device, derive_seed(cfg.seed, "bn"))
        seed = derive_seed(cfg.seed, "synthesize")
        target = cfg.gan.samples_per_class
        n = math.ceil(target * cfg.gate.oversample)
        samples = sample(G, n, cfg.gan.nz, k, seed, device)  # (n, K, C, S, S)
        images = to_uint8(samples.transpose(0, 1).flatten(0, 1), size)  # class-major (K*n, H, W, C)
        intended = np.repeat(np.arange(k), n)
        j = judge_samples(judge, x[real], train_rows.loc[real, "id"].tolist(), images, intended, target, cfg.gate)
        kept, reasons = j.kept, j.reasons

        per_class = class_quality(j.real_feats, real_y, j.feats, intended, kept, j.novelty, classes, cfg.gate)
        x_val, y_val, _ = load_split(run_dir, "val")
        cas = classification_accuracy_score(images[kept], intended[kept], x_val, y_val, k, trainer,
                                            derive_seed(cfg.seed, "cas"), device)
        for c, label in enumerate(classes):
            per_class[label]["cas_recall"] = cas["recall"][c] if cas["recall"] else None
        apply_alarm(per_class, classes, intended, kept, reasons, cfg.gate.keep_collapsed)
        write_json(run_dir / "gan" / "quality.json", {
            "feature_space": "penultimate layer of the gate's judge (benchmark classifier, real + classical train)",
            "reference": "real train images of the class",
            "k": K_NEIGHBOURS,
            "generated_per_class": n,
            "target_per_class": target,
            "cas_accuracy_on_val": cas["accuracy"],
            "collapsed_classes": [label for label, q in per_class.items() if q["collapsed"]],
            "classes": per_class,
        })

        rows = []
        for i, image in enumerate(images):
            label = classes[intended[i]]
            gid = f"gan-{label}-{i % n:05d}"
            rel = f"images/gan/{label}/{gid}.png"
            rows.append(dict(
                id=gid, path=rel, label=label, split="train", source="gan", parent_id=None, seed=seed % 2**32,
                generator=f"dcgan:{cfg.gan.mode}", sha256=manifest.save_png(run_dir, rel, image),
                height=size[0], width=size[1], channels=image.shape[2], score=float(j.score[i]),
                novelty=float(j.novelty[i]), kept=bool(kept[i]), reason=reasons[i],
            ))
        manifest.replace_source(run_dir, "gan", rows)
        kept_fraction = {label: round(float(kept[intended == c].sum() / target), 4) for c, label in enumerate(classes)}
        return {
            "generated": len(rows),
            "kept": int(kept.sum()),
            "kept_of_target_per_class": kept_fraction,
            "collapsed_classes": [label for label, q in per_class.items() if q["collapsed"]],
            "cas_accuracy_on_val": cas["accuracy"],
        }

    judge = sorted(cfg.benchmark.trainer_kwargs().items())  # not seeds or arms
    fp = combine(gan_fingerprint(cfg), classical_fingerprint(cfg), cfg.section_hash("gate", "device"), str(judge), "gate-v3")
    return run_stage(run_dir, "synthesize", fp, body)
