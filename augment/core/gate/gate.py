"""The quality gate: judge generated images, keep those that pass, measure per-class quality and collapse.

The judge is the benchmark's classifier trained (class-balanced) on the real train split plus
its classical augmentations. Every generated image is scored twice in the judge's terms:
its confidence that the image shows the intended class, and its novelty, the distance to
the nearest real training image in the judge's feature space over the typical spacing of
real training images (0 = a copy, about 1 = as far as a held-out real image). The synthesize
stage over-generates and keeps, per class, the most confident samples that pass both thresholds;
then per-class quality metrics in the same feature space go to gan/quality.json, and a class
whose generated samples are much less varied than its real images is flagged as collapsed and,
unless gate.keep_collapsed is set, not used. (k-NN recall is reported but not alarmed on: with
10 real images per class it moves in steps of 0.1 and was 0-0.3 for classes whose samples a
classifier recognised 83-94% of the time.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import recall_score

from augment.config import Config, GateConfig
from augment.core.gate import quality
from augment.core.classify.classifier import predict, train_classifier
from augment.core.gan.sampling import member_of_rows, sample, sample_parents
from augment.core.base.tensors import to_uint8
from augment.registry import GENERATORS, generator_modes

K_NEIGHBOURS = 3  # Kynkaanniemi et al. 2019's default for precision and recall


SURPLUS = {"confidence": "the {target} most confident passing samples of the class were kept",
           "random": "{target} passing samples of the class were kept, drawn at random",
           "farthest": "{target} passing samples of the class were kept, spread out by farthest-point sampling"}


def farthest_points(feats: np.ndarray, first: int, n: int) -> list[int]:
    """n row indices of feats by farthest-point sampling from row `first`: each next row is the one
    farthest (Euclidean) from every row chosen so far (ties: the lowest index)."""
    chosen = [first]
    dist = np.linalg.norm(feats - feats[first], axis=1)
    while len(chosen) < min(n, len(feats)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(feats - feats[nxt], axis=1))
    return chosen


def _rank(passing: np.ndarray, score: np.ndarray, how: str, feats: np.ndarray | None, target: int,
          rng: np.random.Generator) -> np.ndarray:
    """The passing samples of one class in keeping order: the first `target` are kept."""
    by_score = passing[np.argsort(-score[passing], kind="stable")]
    if how == "confidence" or len(passing) <= target:
        return by_score
    if how == "random":
        return rng.permutation(passing)
    picked = by_score[farthest_points(feats[by_score], 0, target)]  # from the most confident sample outward
    return np.concatenate([picked, by_score[~np.isin(by_score, picked)]])


def select(
    probs: np.ndarray, intended: np.ndarray, novelty: np.ndarray, nearest_id: list[str], target: int,
    min_confidence: float, min_novelty: float, how: str = "confidence", feats: np.ndarray | None = None, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str | None], list[str | None]]:
    """Per-sample gate decisions: (score, kept, reason code, reason in words); codes are registry.REASONS keys.

    score is the judge's probability for the intended class. A sample passes if score >=
    min_confidence and novelty >= min_novelty; of the passing samples of each class, `target`
    are kept (over-generation), the rest are surplus: the most confident (how="confidence"), a
    seeded random draw ("random"), or a spread in the judge's feature space `feats` ("farthest").
    """
    rng = np.random.default_rng(seed % 2**63)
    score = probs[np.arange(len(intended)), intended]
    predicted = probs.argmax(axis=1)
    kept = np.zeros(len(intended), dtype=bool)
    codes: list[str | None] = [None] * len(intended)
    reasons: list[str | None] = [None] * len(intended)
    for i in range(len(intended)):
        if score[i] < min_confidence:
            codes[i] = "low_confidence"
            reasons[i] = f"confidence {score[i]:.2f} < {min_confidence} (looks like class index {predicted[i]})"
        elif novelty[i] < min_novelty:
            codes[i] = "near_copy"
            reasons[i] = f"near-copy of real image {nearest_id[i]} (novelty {novelty[i]:.2f} < {min_novelty})"
    for c in np.unique(intended):
        passing = np.flatnonzero((intended == c) & np.array([code is None for code in codes]))
        ranked = _rank(passing, score, how, feats, target, rng)
        kept[ranked[:target]] = True
        for i in ranked[target:]:
            codes[i] = "surplus"
            reasons[i] = "surplus: " + SURPLUS[how].format(target=target)
    return score, kept, codes, reasons


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


def copying(real: np.ndarray, kept: np.ndarray, held_out: np.ndarray) -> dict:
    """Data-copying check (after Meehan et al. 2020): the median distance from the kept samples to
    their nearest real train image over the same for held-out real images of the class. A ratio
    well below 1 means the samples sit closer to the training images than fresh real images do."""
    if len(real) == 0 or len(kept) == 0 or len(held_out) == 0:
        return {"kept_to_train": None, "held_out_to_train": None, "ratio": None}
    fake_d, held_d = float(np.median(quality.nearest(kept, real)[0])), float(np.median(quality.nearest(held_out, real)[0]))
    return {"kept_to_train": round(fake_d, 4), "held_out_to_train": round(held_d, 4),
            "ratio": round(fake_d / held_d, 4) if held_d > 0 else None}


def class_quality(
    real_feats: np.ndarray, real_y: np.ndarray, fake_feats: np.ndarray, intended: np.ndarray, kept: np.ndarray,
    novelty: np.ndarray, classes: list[str], gate_cfg: GateConfig, held_out: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, dict]:
    """Per-class metrics for all generated samples and for the kept ones, the collapse alarm and,
    with held-out real features and labels, the data-copying ratio."""
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
        if held_out is not None:
            out[label]["copying"] = copying(real, fake_feats[mine & kept], held_out[0][held_out[1] == c])
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
    codes: list[str | None]  # registry.REASONS keys
    reasons: list[str | None]
    feats: np.ndarray  # (N, D) generated
    real_feats: np.ndarray  # (M, D) real train
    parents: list[list[str] | None] | None = None  # mix, hydra: each sample's parents' ids (None: an ensemble's rows without)
    members: list[str] | None = None  # an ensemble: the mode of the member that drew each sample


def judge_samples(
    judge, x_real: np.ndarray, real_ids: list[str], images: np.ndarray, intended: np.ndarray, target: int,
    gate_cfg: GateConfig, seed: int = 0, modes: list[str] | None = None, member: np.ndarray | None = None,
) -> Judged:
    """Score generated `images` (intended class indices) against the real train images with `judge`.

    An ensemble's samples (`member`: which of the generators `modes` drew each) are selected member
    by member, each keeping its share of `target` per class by its own rule (gate.select auto)."""
    _, real_feats = predict(judge, x_real)
    probs, feats = predict(judge, images)
    dist, idx = quality.nearest(feats, real_feats)
    novelty = dist / quality.spacing(real_feats)
    nearest = np.asarray(real_ids, dtype=object)[idx]
    modes = modes or [None]  # one generator, not named: the default rule
    member = np.zeros(len(images), dtype=int) if member is None else member
    score, kept = np.zeros(len(images)), np.zeros(len(images), dtype=bool)
    codes: list[str | None] = [None] * len(images)
    reasons: list[str | None] = [None] * len(images)
    for m, mode in enumerate(modes):
        rows = np.flatnonzero(member == m)
        share = target // len(modes) + (m < target % len(modes))
        out = select(probs[rows], intended[rows], novelty[rows], list(nearest[rows]), share, gate_cfg.min_confidence,
                     gate_cfg.min_novelty, selection_rule(gate_cfg.select, mode), feats[rows], seed + m)
        score[rows], kept[rows] = out[0], out[1]
        for j, i in enumerate(rows):
            codes[i], reasons[i] = out[2][j], out[3][j]
    members = [modes[m] for m in member] if len(modes) > 1 else None
    return Judged(score, novelty, kept, codes, reasons, feats, real_feats, members=members)


def selection_rule(select_how: str, mode: str | None) -> str:
    """gate.select for one generator: auto is the generator's own rule (augment.registry.GENERATORS:
    a spread, farthest, of the mix and hydra generators' samples, the most confident of the others'; measured:
    benchmarks/README.md, "Generators at 10 per class")."""
    if select_how != "auto":
        return select_how
    return GENERATORS[mode].select if mode is not None else "confidence"


def apply_alarm(per_class: dict[str, dict], classes: list[str], intended: np.ndarray, kept: np.ndarray,
                codes: list[str | None], reasons: list[str | None], keep_collapsed: bool) -> None:
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
            codes[i] = "class_collapsed"
            reasons[i] = f"class {label} flagged: {q['alarm']}"


def gate_quality(cfg: Config, j, intended: np.ndarray, real_y: np.ndarray, classes: list[str],
                 held_out: tuple[np.ndarray, np.ndarray] | None = None, cas_recall: list | None = None) -> dict[str, dict]:
    """The gate's last steps over judged samples (sample_and_judge's): per-class quality against the real
    images (labels real_y), the CAS recall per class when known, then the collapse alarm (in place on j)."""
    per_class = class_quality(j.real_feats, real_y, j.feats, intended, j.kept, j.novelty, classes, cfg.gate, held_out)
    for c, label in enumerate(classes):
        per_class[label]["cas_recall"] = cas_recall[c] if cas_recall else None
    apply_alarm(per_class, classes, intended, j.kept, j.codes, j.reasons, cfg.gate.keep_collapsed)
    return per_class


def sample_and_judge(cfg: Config, G, judge, x_real: np.ndarray, real_ids: list[str], bank: tuple[list[str], np.ndarray],
                     k: int, size: tuple, seed: int, device, scale: float = 1.0):
    """gan.samples_per_class x gate.oversample samples per class from G, class-major, judged against
    the real images x_real (ids real_ids): (images (K*n, H, W, C) uint8, intended class per image, the gate's Judged, n).

    bank: the ids and class indices of the images G was trained on, in its order (gan.train_on: the
    real images, or those and their classical copies); for a generator with parents (mix mode) that is
    its image bank's order, and Judged.parents holds each sample's parent ids."""
    target = cfg.gan.samples_per_class
    n = math.ceil(target * cfg.gate.oversample)
    samples = sample(G, n, cfg.gan.nz, k, seed, device, scale=scale)  # (n, K, C, S, S)
    images = to_uint8(samples.transpose(0, 1).flatten(0, 1), size)  # class-major (K*n, H, W, C)
    intended = np.repeat(np.arange(k), n)
    modes = generator_modes(cfg.gan.mode)
    member = np.tile(member_of_rows(n, len(modes)), k)  # class-major, as the images
    judged = judge_samples(judge, x_real, real_ids, images, intended, target, cfg.gate, seed, modes, member)
    parents = sample_parents(G, n, cfg.gan.nz, k, seed, device)
    if parents is not None:
        by_class = [np.asarray(bank[0])[np.asarray(bank[1]) == c] for c in range(k)]
        rows = parents.transpose(1, 0, 2).reshape(k * n, -1)  # class-major, as the images
        judged.parents = [None if row[0] < 0 else [str(by_class[c][a]) for a in row if a >= 0]  # -1: not a parent
                          for c, row in zip(intended, rows)]
    return images, intended, judged, n


def train_judge(cfg: Config, data, device, progress=None):  # data: augment.rundir.GateData
    """The gate's judge: the benchmark's classifier, class-balanced, on the real and classical train images."""
    from augment.runtime import derive_seed

    return train_classifier(data.x, data.y, len(data.classes), **data.trainer, balanced=True,
                            seed=derive_seed(cfg.seed, "gate"), device=device, progress=progress)


def score_generator(cfg: Config, data, G, judge, step: int, scale: float, device,
                    progress=None) -> tuple[dict, tuple]:  # data: augment.rundir.GateData
    """One candidate generator (a snapshot at `step`, a latent scale) sampled, gated and scored by
    CAS on val: (its curve row, (images, intended, Judged, n, cas)). The same seeds wherever it is
    called (the gan stage while it trains, the synthesize stage), so the same generator scores the same."""
    from augment.runtime import derive_seed

    k = len(data.classes)
    images, intended, j, n = sample_and_judge(cfg, G, judge, data.x[data.real], data.real_ids, data.bank, k, data.size,
                                              derive_seed(cfg.seed, "synthesize"), device, scale)
    cas = classification_accuracy_score(images[j.kept], intended[j.kept], data.x_val, data.y_val, k,
                                        {**data.trainer, "progress": progress}, derive_seed(cfg.seed, "cas"), device)
    row = {"step": step, "scale": scale, "cas_accuracy_on_val": cas["accuracy"], "kept": int(j.kept.sum()),
           "recall": cas["recall"]}
    return row, (images, intended, j, n, cas)


def better(row: dict, best: dict, prefer_later: bool = True) -> bool:
    """A higher CAS on val wins; on a tie, the later step (the earlier while training: a tie is no
    improvement), then the scale nearer 1."""
    def key(r):
        return (r["cas_accuracy_on_val"] or -1.0, r["step"] if prefer_later else -r["step"], -abs(math.log(r["scale"])))
    return key(row) > key(best)
