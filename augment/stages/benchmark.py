"""Stage benchmark: the same classifier and step budget per arm and seed, scored on untouched real val/test.

Writes benchmark/results.parquet (the long table: arm, seed, split, metric, class, value,
classifier) and benchmark/summary.json (augment.summary.Summary).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from augment import rundir
from augment.atomic import atomic_path, write_json
from augment.config import Config
from augment.core.classifier import predict_proba, pretrained_weights_path, train_classifier
from augment.core.features import load_extractor, make_extractor
from augment.core.parallel import auto_workers, run_jobs
from augment.core.stats import ids_digest, linear_probe_scores, score_records, summarise
from augment.registry import ARMS, SOURCES
from augment.runtime import derive_seed, resolve_device
from augment.summary import METRICS, HeldOut, write_summary

log = logging.getLogger("augment")


RESULT_COLUMNS = ["arm", "seed", "split", "classifier", "metric", "value", "class"]  # "class": per-class recall
PARTIAL = Path("benchmark") / "partial.json"  # the (arm, seed) results of a run stopped part-way


def _finished(run_dir: Path, fingerprint: str) -> dict[tuple[str, int], list[dict]]:
    """The per-(arm, seed) records a stopped run of the same fingerprint finished: a resumed
    benchmark trains only the rest (each seed is independent, so the result is the same)."""
    path = Path(run_dir) / PARTIAL
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("fingerprint") != fingerprint:
        return {}
    return {(done["records"][0]["arm"], done["records"][0]["seed"]): done for done in saved["done"]}


@functools.lru_cache(maxsize=16)
def _train(run_dir: str, sources: tuple[str, ...]):
    return rundir.load_split(Path(run_dir), "train", sources)[:2]


@functools.lru_cache(maxsize=2)
def _held_out(run_dir: str) -> dict:
    return {s: rundir.load_split(Path(run_dir), s)[:2] for s in ("val", "test")}


def train_and_score(job: dict) -> dict:
    """One arm and seed: train the classifier, score it on val and test; a job for augment.core.parallel
    (it loads its own images, cached per process). The same seed for every arm: paired runs share
    initialisation."""
    spec, k = ARMS[job["arm"]], len(job["classes"])
    x, y = _train(job["run_dir"], spec.sources)
    model = train_classifier(x, y, k, **job["trainer"], seed=job["seed_value"], device=job["device"],
                             augment=spec.augment, balanced=spec.balanced)
    held_out = _held_out(job["run_dir"])
    pred = {split: predict_proba(model, xs).argmax(1) for split, (xs, _) in held_out.items()}
    return {
        "records": [r for split, (_, ys) in held_out.items()
                    for r in score_records(ys, pred[split], job["classes"], arm=job["arm"], seed=job["seed"],
                                           split=split, classifier=job["classifier"])],
        "confusion": confusion_matrix(held_out["test"][1], pred["test"], labels=range(k)).tolist(),
    }


def check(cfg: Config) -> None:
    """A torchvision classifier's weights must be on disk (nothing is downloaded): checked at load."""
    if cfg.benchmark.classifier != "cnn":
        pretrained_weights_path(cfg.benchmark.classifier, cfg.benchmark.weights)


def _extractor(cfg: Config, run_dir: Path, classes: list[str]):
    """The SMOTE stage's fitted extractor; with SMOTE off, the same extractor fitted here."""
    if (Path(run_dir) / rundir.EXTRACTOR).is_file():
        return load_extractor(Path(run_dir) / rundir.EXTRACTOR)
    x, y, _ = rundir.load_split(run_dir, "train")
    extractor = make_extractor(cfg.smote, derive_seed(cfg.seed, "smote"), cfg.benchmark.trainer_kwargs(),
                               Path(run_dir) / rundir.GAN_CHECKPOINT)
    return extractor.fit(x, y, len(classes))


def _linear_probe(extractor, run_dir: Path, arms: list[str], held_out: dict, classes: list[str]) -> list[dict]:
    """Logistic regression in the SMOTE stage's feature space, one deterministic fit per arm.

    The SMOTE arm trains on its feature rows themselves (SMOTE's native output); every other arm
    on the same features of its images, so the comparison is fair. Arms that only change how
    batches are drawn on the fly (TrivialAugmentWide) have no fixed rows and are left out.
    """
    train = {}
    for arm in arms:
        spec = ARMS[arm]
        if spec.augment:
            continue
        x, y, _ = rundir.load_split(run_dir, "train", tuple(s for s in spec.sources if s != "smote"))
        feats = extractor.transform(x)
        if "smote" in spec.sources:
            with np.load(Path(run_dir) / "features" / "smote.npz") as rows:
                feats, y = np.concatenate([feats, rows["x"]]), np.concatenate([y, rows["y"]])
        train[arm] = (feats, y, spec.balanced)
    return linear_probe_scores(train, {s: (extractor.transform(xs), ys) for s, (xs, ys) in held_out.items()}, classes)


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    run_dir = Path(run_dir)
    info = rundir.ingest_info(run_dir)
    classes = info["classes"]
    device = resolve_device(cfg.device)
    b = cfg.benchmark
    loaded = {s: rundir.load_split(run_dir, s) for s in ("val", "test")}  # real images only, once for all arms
    held_out = {s: (xs, ys) for s, (xs, ys, _) in loaded.items()}
    frame = rundir.read_manifest(run_dir)
    # a source without images (SMOTE rows in a non-invertible feature space) has no CNN arm
    kept_sources = set(rundir.split_rows(frame, "train", SOURCES)["source"])
    arms = [a for a in b.arms if set(ARMS[a].sources) <= kept_sources]
    skipped = sorted(set(b.arms) - set(arms))
    if skipped:
        log.warning("benchmark: arm(s) %s skipped, their stage produced no images", skipped)
    _train.cache_clear()  # an earlier run in this process may have read other images under the same path
    _held_out.cache_clear()
    finished = _finished(run_dir, fingerprint)  # (arm, seed) -> {records, confusion}, from a run stopped part-way
    todo = [dict(run_dir=str(run_dir), arm=arm, seed=s, trainer=b.trainer_kwargs(), classifier=b.classifier,
                 seed_value=derive_seed(cfg.seed, "benchmark", s), device=str(device), classes=classes)
            for arm in arms for s in range(b.seeds) if (arm, s) not in finished]
    workers = auto_workers(len(todo), b.workers, device, b.steps)
    if todo:
        log.info("benchmark: %d classifiers (%d arms x %d seeds) on %d worker(s)", len(todo), len(arms), b.seeds, workers)
    for n, (i, out) in enumerate(run_jobs(train_and_score, todo, workers), start=1):
        finished[(todo[i]["arm"], todo[i]["seed"])] = out
        write_json(run_dir / PARTIAL, {"fingerprint": fingerprint, "done": list(finished.values())})
        if progress is not None:
            progress(n, len(todo))
    records, confusion = [], {}
    for arm in arms:  # in arm and seed order, however the jobs finished
        for s in range(b.seeds):
            records += finished[(arm, s)]["records"]
            confusion[arm] = (np.asarray(confusion.get(arm, 0)) + finished[(arm, s)]["confusion"]).tolist()
    train_images = {arm: len(rundir.split_rows(frame, "train", ARMS[arm].sources)) for arm in arms}
    if b.linear_probe:
        # SMOTE rows without images (classifier feature spaces) are still scored here, natively
        has_rows = "smote" in set(frame.loc[frame["kept"], "source"])
        probe_arms = arms + [a for a in b.arms if a not in arms and set(ARMS[a].sources) == {"real", "smote"} and has_rows]
        records += _linear_probe(_extractor(cfg, run_dir, classes), run_dir, probe_arms, held_out, classes)
    results = pd.DataFrame(records, columns=RESULT_COLUMNS)
    with atomic_path(run_dir / "benchmark" / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    summary = summarise(results[results["classifier"] == b.classifier], arms, train_images)
    linear = results[(results["classifier"] == "linear") & results["metric"].isin(METRICS)]
    summary.linear_probe = {
        arm: {split: dict(zip(g["metric"], g["value"])) for split, g in by_arm.groupby("split")}
        for arm, by_arm in linear.groupby("arm", sort=False)
    }
    summary.held_out = {s: HeldOut(images=len(rows), ids_sha256=ids_digest(rows["id"])) for s, (_, _, rows) in loaded.items()}
    summary.skipped_arms = skipped
    summary.confusion_test = confusion
    write_summary(run_dir, summary)
    (run_dir / PARTIAL).unlink(missing_ok=True)
    return {"arms": arms, "recommended": summary.recommendation.arm}
