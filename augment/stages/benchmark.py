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
from augment.errors import UserError
from augment.core.classify.classifier import (load_classifier, predict_proba, predict_round, pretrained_weights_path, recipe_of,
                                              train_classifier, train_classifiers)
from augment.core.classify.engine import Task
from augment.core.gate.online import OnlineSamples
from augment.core.gan.sampling import load_generator
from augment.core.classify.side_stream import SideStream, soften
from augment.core.transforms.copies import transforms_for
from augment.core.smote.features import load_extractor, make_extractor
from augment.core.base.parallel import auto_workers, job_pool, run_jobs
from augment.core.bench.jobs import Job, JobPlan, plan_jobs, round_parallel, rounds_of
from augment.core.bench.selection import fold_count, fold_indices, without_held_out
from augment.core.bench.stats import ids_digest, linear_probe_scores, score_records, summarise
from augment.registry import SOURCES, member_source, trained_as
from augment.runtime import derive_seed, resolve_device
from augment.summary import METRICS, HeldOut, Selection, SideStreamChoice, write_summary

log = logging.getLogger("augment")


RESULT_COLUMNS = ["arm", "seed", "split", "classifier", "metric", "value", "class"]  # "class": per-class recall
PARTIAL = Path("benchmark") / "partial.json"  # the (arm, seed) results of a run stopped part-way


def _finished(run_dir: Path, fingerprint: str) -> dict[str, dict]:
    """The jobs (by key) a stopped run of the same fingerprint finished: a resumed benchmark
    trains only the rest (each job is independent and seeded, so the result is the same)."""
    path = Path(run_dir) / PARTIAL
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("fingerprint") != fingerprint or not isinstance(saved.get("done"), dict):
        return {}
    return saved["done"]


@functools.lru_cache(maxsize=16)
def _train(run_dir: str, sources: tuple[str, ...]):
    return rundir.load_split(Path(run_dir), "train", sources)


@functools.lru_cache(maxsize=2)
def _pool(run_dir: str):
    """The k-fold protocol's pool: the real train images, then the real val images, and their ids."""
    x, y, rows = rundir.load_splits(Path(run_dir), ("train", "val"))
    return x, y, rows["id"].to_numpy()


@functools.lru_cache(maxsize=4)
def _folds(run_dir: str, folds: int, seeds: int, random_state: int):
    return fold_indices(_pool(run_dir)[1], folds, seeds, random_state)


def _fold(run_dir: str, fold: tuple | None):
    """(fit, held-out) positions in the pool for a job's fold (folds, seeds, random_state, seed), or None."""
    return None if fold is None else _folds(run_dir, *fold[:3])[fold[3]]


def _real(run_dir: str, fold: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """The real images a job trains on: the train split, or under k-fold the pool outside its fold."""
    if fold is None:
        return _train(run_dir, ("real",))[:2]
    x, y, _ = _pool(run_dir)
    fit, _ = _fold(run_dir, fold)
    return x[fit], y[fit]


def _synthetic(run_dir: str, sources: tuple[str, ...], fold: tuple | None):
    """An arm's synthetic images (x, y, source per row); under k-fold without those whose parent is held out."""
    x, y, rows = _train(run_dir, sources)
    if fold is None:
        return x, y, rows["source"].to_numpy()
    keep = without_held_out(rows, _pool(run_dir)[2][_fold(run_dir, fold)[1]])
    return x[keep], y[keep], rows["source"].to_numpy()[keep]


@functools.lru_cache(maxsize=2)
def _online(run_dir: str, device: str, gate: tuple, bn_seed: int) -> OnlineSamples:
    """Fresh samples of the run's generator, gated by the synthesize stage's judge (cached per process)."""
    info = rundir.ingest_info(Path(run_dir))
    checkpoint, scale = rundir.selected_generator(Path(run_dir))  # the generator and latent scale the pool came from
    G = load_generator(checkpoint, device, bn_seed)
    judge = load_classifier(Path(run_dir) / rundir.GATE_JUDGE, device)
    min_confidence, min_novelty, oversample = gate
    return OnlineSamples(G, judge, _train(run_dir, ("real",))[0], len(info["classes"]), G.nz, tuple(info["size"]),
                         min_confidence, min_novelty, oversample, device, scale)


@functools.lru_cache(maxsize=2)
def _held_out(run_dir: str) -> dict:
    return {s: rundir.load_split(Path(run_dir), s)[:2] for s in ("val", "test")}


@functools.lru_cache(maxsize=4)
def _teacher(run_dir: str, trainer: tuple, seed_value: int, device: str, k: int, fold: tuple | None):
    """The soft labels' teacher for one seed: the same recipe on the seed's real train images alone,
    TrivialAugmentWide on the fly and class-balanced (cached per process: every arm of a seed shares it)."""
    x, y = _real(run_dir, fold)
    return train_classifier(x, y, k, **dict(trainer), seed=seed_value, device=device, augment="trivialaugment", balanced=True)


def side_stream(job: dict) -> tuple[tuple[np.ndarray, np.ndarray], SideStream | None]:
    """An arm's real train images and its synthetic ones as a side stream (None without any).

    Every source but "real" is synthetic: classical copies, SMOTE images, GAN samples. An arm of
    synthetic images only (the CAS diagnostic) draws whole batches from them, with hard labels.
    """
    spec, k = trained_as(job["arm"], job["classical"] is not None), len(job["classes"])
    synthetic = tuple(s for s in spec.sources if s != "real")
    if not synthetic:
        return _real(job["run_dir"], job["fold"]), None
    xs, ys, sources = _synthetic(job["run_dir"], synthetic, job["fold"])
    if "real" not in spec.sources:
        return (xs[:0], ys[:0]), SideStream(xs, ys, share=1.0)
    s = job["stream"]
    stream = SideStream(xs, ys, share=s["share"], weight=s["weight"])
    if s["soft_labels"]:
        teacher = _teacher(job["run_dir"], tuple(sorted(job["trainer"].items())), job["seed_value"], job["device"], k,
                           job["fold"])
        stream.soft = soften(predict_proba(teacher, xs), s["temperature"])
        stream.soft_fn = lambda images: soften(predict_proba(teacher, images.permute(0, 2, 3, 1).numpy()), s["temperature"])
    if s["online"] and "gan" in synthetic:
        stream.online = _online(job["run_dir"], job["device"], tuple(s["gate"]), s["bn_seed"])
        stream.online_rows = sources == "gan"
    return _real(job["run_dir"], job["fold"]), stream


def _scored_on(job: dict) -> dict:
    """The images a job is scored on: real val and test; under k-fold its held-out fold as "val"."""
    held_out = _held_out(job["run_dir"])
    if job["fold"] is None:
        return held_out
    x, y, _ = _pool(job["run_dir"])
    held = _fold(job["run_dir"], job["fold"])[1]
    return {"val": (x[held], y[held]), "test": held_out["test"]}


def _task(job: dict) -> Task:
    """A job's classifier as an engine task: its real images, its side stream and its recipe."""
    spec = trained_as(job["arm"], job["classical"] is not None)
    (x, y), stream = side_stream(job)
    return Task(x, y, job["seed_value"], stream=stream, classical=spec.classical, augment=spec.augment,
                balanced=spec.balanced or job["balanced"])


def train_and_score(jobs: list[dict]) -> list[dict]:
    """One round of arm-and-seed jobs: their classifiers trained together (augment.core.classify.engine; the
    same seed for every arm: paired runs share initialisation), each scored on val and test in one
    batched pass per split. A job for augment.core.base.parallel (it loads its own images, cached per process)."""
    first, k = jobs[0], len(jobs[0]["classes"])
    models = train_classifiers([_task(j) for j in jobs], k, **first["trainer"], device=first["device"],
                               classical=first["classical"], stack=len(jobs))
    scored = [_scored_on(j) for j in jobs]
    pred: list[dict] = [{} for _ in jobs]
    for split in ("val", "test"):
        if all(s[split][0] is scored[0][split][0] for s in scored):  # one set for the whole round: one pass
            probs = predict_round(models, scored[0][split][0])
            for i in range(len(jobs)):
                pred[i][split] = probs[i].argmax(1)
        else:  # k-fold: each seed's own held-out fold
            for i, model in enumerate(models):
                pred[i][split] = predict_proba(model, scored[i][split][0]).argmax(1)
    return [{
        "records": [r for split, (_, ys) in held_out.items()
                    for r in score_records(ys, p[split], job["classes"], arm=job["arm"], seed=job["seed"],
                                           split=split, classifier=job["classifier"])],
        "confusion": confusion_matrix(held_out["test"][1], p["test"], labels=range(k)).tolist(),
    } for job, held_out, p in zip(jobs, scored, pred)]


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


def _linear_probe(extractor, run_dir: Path, arms: list[str], held_out: dict, classes: list[str],
                  on_the_fly: bool) -> list[dict]:
    """Logistic regression in the SMOTE stage's feature space, one deterministic fit per arm.

    The SMOTE arm trains on its feature rows themselves (SMOTE's native output); every other arm
    on the same features of its images, so the comparison is fair. Arms that only change how
    batches are drawn on the fly (TrivialAugmentWide, the classical pipeline) have no fixed rows and are left out.
    """
    train = {}
    for arm in arms:
        spec = trained_as(arm, on_the_fly)
        if spec.augment or spec.classical:
            continue
        x, y, _ = rundir.load_split(run_dir, "train", tuple(s for s in spec.sources if s != "smote"))
        feats = extractor.transform(x)
        if "smote" in spec.sources:
            with np.load(Path(run_dir) / "features" / "smote.npz") as rows:
                feats, y = np.concatenate([feats, rows["x"]]), np.concatenate([y, rows["y"]])
        if len(np.unique(y)) < 2:  # e.g. synthetic_only when the gate kept one class's samples: nothing to fit
            log.warning("benchmark: linear probe of arm %s skipped: its images hold %d class(es)", arm, len(np.unique(y)))
            continue
        train[arm] = (feats, y, spec.balanced)
    return linear_probe_scores(train, {s: (extractor.transform(xs), ys) for s, (xs, ys) in held_out.items()}, classes)


def _job_plan(cfg: Config, run_dir: Path, frame: pd.DataFrame, classes: list[str], device) -> JobPlan:
    """augment.core.bench.jobs.plan_jobs over what the run directory holds (the plan calls it over the config)."""
    # a source without images (SMOTE rows in a non-invertible feature space) has no CNN arm
    rows = rundir.split_rows(frame, "train", SOURCES)
    sources = set(rows["source"]) | {member_source(g) for g in rows.loc[rows["source"] == "gan", "generator"]}
    real_counts = rundir.split_rows(frame, "train", ("real",))["label"].value_counts()
    val_per_class = int(rundir.split_rows(frame, "val", ("real",))["label"].value_counts()
                        .reindex(classes, fill_value=0).min())
    ratio = real_counts.max() / real_counts.min()
    size = rundir.ingest_info(run_dir)["size"]
    jobs = plan_jobs(cfg.benchmark, cfg.seed, sources, real_counts.nunique() == 1, ratio, val_per_class,
                     device.type == "cuda", size[0] * size[1])
    if jobs.no_images:
        log.warning("benchmark: arm(s) %s skipped, their stage produced no images", jobs.no_images)
    if jobs.same:
        log.info("benchmark: arm(s) %s skipped: they would equal their unbalanced arm (%s)", jobs.same,
                 "every arm samples classes equally" if jobs.balanced else f"every class has {real_counts.iloc[0]} real train images")
    if jobs.balanced:
        log.info("benchmark: class-balanced sampling in every arm (benchmark.balanced_sampling: %s; the largest class "
                 "has %.1fx the train images of the smallest)", cfg.benchmark.balanced_sampling, ratio)
    return jobs


def _kfold(cfg: Config, run_dir: Path, jobs: JobPlan) -> tuple | None:
    """(folds, seeds, random state) of k-fold selection, None on val; a class too small is a one-line error."""
    if jobs.protocol != "kfold":
        return None
    pool = _pool(str(run_dir))
    k = fold_count(cfg.benchmark.folds, pool[1])
    if k < 2:
        raise UserError(f"benchmark.selection: kfold needs at least 2 real train+val images in every class; "
                        f"one class has {k}: add images or set benchmark.selection: val")
    log.info("benchmark: choices by repeated stratified %d-fold over the %d real train+val images, one fold per "
             "seed (%s); test is not read", k, len(pool[1]), jobs.reason)
    return (k, cfg.benchmark.seeds, derive_seed(cfg.seed, "folds"))


def _train_all(cfg: Config, run_dir: Path, jobs: JobPlan, to_dict, finished: dict, fingerprint: str, steps: int,
               device, progress) -> tuple[dict[str, dict], str | None]:
    """Train every job not finished, saving each round to benchmark/partial.json: (a) the share choices
    (with step (b)'s for the likeliest recipe, JobPlan.foreseen) and the plain arms, then the side-stream
    arms at their chosen shares and, once the recipe is chosen, (b) the share choices of the arms crossing
    it with the sources (unless foreseen), then those arms. Returns the chosen share per side-stream arm
    and the recipe."""
    b = cfg.benchmark
    select, main = jobs.count()  # step (b) at its most until the recipe is chosen
    total = select + main - sum(k in finished for k in [j.key for j in jobs.select + jobs.foreseen] + jobs.main_keys)
    done = 0

    def execute(todo: list, pool) -> None:
        nonlocal done
        # rounds cut over the whole list, finished jobs included, then those dropped: a resumed run trains
        # each unfinished model in the round it had (a round's results are saved together)
        rounds = [[to_dict(j) for j in r if j.key not in finished]
                  for r in rounds_of(todo, jobs.per_round, round_parallel(str(device).startswith("cuda")))]
        rounds = [r for r in rounds if r]
        for i, outs in run_jobs(train_and_score, rounds, 1, pool=pool):
            for j, out in zip(rounds[i], outs):
                finished[j["key"]] = out
            write_json(run_dir / PARTIAL, {"fingerprint": fingerprint, "done": finished})
            done += len(rounds[i])
            if progress is not None:
                progress(done, max(total, done))

    log.info("benchmark: %d classifiers to train (%d arms x %d seeds, %d to choose synthetic shares; at most %d "
             "arms crossing the chosen recipe with %s), %d steps each", total, len(jobs.arms), b.seeds,
             len(jobs.select), jobs.most_added, jobs.cross, steps)
    with job_pool(auto_workers(total, b.workers, device, steps), (__name__,)) as pool:  # spawned once for every round
        execute(jobs.select + jobs.foreseen + jobs.main(jobs.plain), pool)  # the share choices and, meanwhile, the plain arms
        shares = jobs.choose_shares(jobs.streams, finished, b.synthetic_share)
        later = [] if jobs.shares_from_select else jobs.main(jobs.streams, shares)  # the side-stream arms at their shares
        if later and any(r in jobs.streams for r in jobs.recipes):
            execute(later, pool)  # a recipe with a side stream (the classical copies): step (a) waits for it
            later = []
        recipe = jobs.recipe(finished)
        added = jobs.added(recipe) if recipe else []
        if recipe:
            log.info("benchmark: recipe %s chosen on %s; crossed with %s as %s", recipe, jobs.protocol, jobs.cross,
                     jobs.crossed(recipe))
        choices, last = jobs.select_for(added), [] if jobs.shares_from_select else jobs.main(added)
        total = done + sum(j.key not in finished for j in later + choices + last)  # now known
        if any(j.key not in finished for j in choices):  # not foreseen: step (b)'s share choices first
            execute(later + choices, pool)
            later = []
        shares |= jobs.choose_shares(added, finished, b.synthetic_share)
        execute(later + (jobs.main(added, shares) if last else []), pool)  # and step (b)'s arms at their shares
    return shares, recipe


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    run_dir = Path(run_dir)
    info = rundir.ingest_info(run_dir)
    classes, device, b = info["classes"], resolve_device(cfg.device), cfg.benchmark
    classical = transforms_for(cfg.classical, info["channels"]) if b.classical_on_the_fly else None
    loaded = {s: rundir.load_split(run_dir, s) for s in ("val", "test")}  # real images only, once for all arms
    frame = rundir.read_manifest(run_dir)
    for cache in (_train, _pool, _folds, _held_out, _teacher, _online):
        cache.cache_clear()  # an earlier run in this process may have read other images under the same path
    jobs = _job_plan(cfg, run_dir, frame, classes, device)
    folds = _kfold(cfg, run_dir, jobs)
    n_real = len(rundir.split_rows(frame, "train", ("real",))) if folds is None else len(_folds(str(run_dir), *folds)[0][0])
    trainer = {**b.trainer_kwargs(), "steps": b.steps_for(n_real)}  # one budget for every arm: set by the real images
    stream = dict(weight=b.synthetic_weight, soft_labels=b.soft_labels, temperature=b.temperature, online=b.online_gan,
                  bn_seed=derive_seed(cfg.seed, "bn"), gate=(cfg.gate.min_confidence, cfg.gate.min_novelty, cfg.gate.oversample))

    def to_dict(j: Job) -> dict:  # what a worker needs to train one classifier
        return dict(key=j.key, run_dir=str(run_dir), arm=j.arm, seed=j.seed, seed_value=j.seed_value, trainer=trainer,
                    fold=(*folds, j.seed) if folds is not None and isinstance(j.seed, int) else None,
                    classifier=b.classifier, device=str(device), classes=classes, classical=classical,
                    balanced=jobs.balanced, stream=dict(share=j.share, **stream))

    finished = _finished(run_dir, fingerprint)  # job key -> {records, confusion}, from a run stopped part-way
    shares, recipe = _train_all(cfg, run_dir, jobs, to_dict, finished, fingerprint, trainer["steps"], device, progress)
    summary = _summary(cfg, run_dir, frame, classes, jobs, finished, loaded, folds, n_real, classical, shares, recipe)
    summary.classifier_steps = trainer["steps"]
    write_summary(run_dir, summary)
    (run_dir / PARTIAL).unlink(missing_ok=True)
    return {"arms": list(summary.arms), "recommended": summary.recommendation.arm}


def _summary(cfg: Config, run_dir: Path, frame: pd.DataFrame, classes: list[str], jobs: JobPlan, finished: dict,
             loaded: dict, folds, n_real: int, classical, shares: dict, recipe: str | None):
    """benchmark/results.parquet and the typed summary of the finished jobs (in arm and seed order)."""
    b = cfg.benchmark
    arms = jobs.arms + (jobs.added(recipe) if recipe else [])
    spec = functools.partial(trained_as, classical_on_the_fly=b.classical_on_the_fly)
    records, confusion = [], {}
    for arm in arms:  # in arm and seed order, however the jobs finished
        for s in range(b.seeds):
            out = finished[f"{arm}/{s}"]
            records += out["records"]
            confusion[arm] = (np.asarray(confusion.get(arm, 0)) + out["confusion"]).tolist()
    train_images = {arm: len(rundir.split_rows(frame, "train", spec(arm).sources)) for arm in arms}
    if folds is not None:  # the real part of seed 0's fit set, and every synthetic image (before its parents' fold)
        train_images = {arm: n - len(rundir.split_rows(frame, "train", ("real",))) + n_real
                        if "real" in spec(arm).sources else n for arm, n in train_images.items()}
    if b.linear_probe:
        # SMOTE rows without images (classifier feature spaces) are still scored here, natively
        has_rows = "smote" in set(frame.loc[frame["kept"], "source"])
        probe_arms = arms + [a for a in b.arms if a not in arms and set(spec(a).sources) == {"real", "smote"} and has_rows]
        held_out = {s: (xs, ys) for s, (xs, ys, _) in loaded.items()}
        records += _linear_probe(_extractor(cfg, run_dir, classes), run_dir, probe_arms, held_out, classes,
                                 b.classical_on_the_fly)
    results = pd.DataFrame(records, columns=RESULT_COLUMNS)
    with atomic_path(run_dir / "benchmark" / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    summary = summarise(results[results["classifier"] == b.classifier], arms, train_images, recipe, jobs.cross)
    linear = results[(results["classifier"] == "linear") & results["metric"].isin(METRICS)]
    summary.linear_probe = {
        arm: {split: dict(zip(g["metric"], g["value"])) for split, g in by_arm.groupby("split")}
        for arm, by_arm in linear.groupby("arm", sort=False)
    }
    summary.held_out = {s: HeldOut(images=len(rows), ids_sha256=ids_digest(rows["id"])) for s, (_, _, rows) in loaded.items()}
    if folds is not None:  # "val" scores came from the held-out folds of the train+val pool
        ids = _pool(str(run_dir))[2]
        summary.held_out["val"] = HeldOut(images=len(ids), ids_sha256=ids_digest(ids))
        summary.recommendation.chosen_on = "kfold"
        if summary.crossing is not None:
            summary.crossing.chosen_on = "kfold"
    summary.selection = Selection(protocol=jobs.protocol, reason=jobs.reason, folds=folds[0] if folds else None,
                                  val_per_class=jobs.val_per_class)
    summary.skipped_arms = jobs.skipped
    summary.confusion_test = confusion
    summary.side_stream = {arm: SideStreamChoice(weight=b.synthetic_weight, soft_labels=b.soft_labels,
                                                 temperature=b.temperature, **choice) for arm, choice in shares.items()}
    summary.augment_on = recipe_of(classical, b.augment_on).ran_on if any(spec(a).augment or spec(a).classical for a in arms) else None
    summary.models_per_round = jobs.per_round
    summary.balanced_sampling = bool(jobs.balanced)
    return summary
