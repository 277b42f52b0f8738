"""Stage synthesize: over-generate per class, gate every sample, keep the best gan.samples_per_class.

Writes the gan manifest rows (kept or not, with a reason code and message), the images, and
gan/quality.json (per-class quality metrics, classification accuracy score, collapse alarms).
"""

from __future__ import annotations

import math
from pathlib import Path


from augment import rundir
from augment.atomic import write_json
from augment.config import Config
from augment.core.classifier import predict, save_classifier, train_classifier
from augment.core.gate import (K_NEIGHBOURS, apply_alarm, class_quality, classification_accuracy_score, gan_rows,
                                sample_and_judge)
from augment.core.sampling import load_generator
from augment.runtime import derive_seed, resolve_device


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    run_dir = Path(run_dir)
    if not cfg.gan.enabled:
        rundir.replace_source(run_dir, "gan", [])
        return {"generated": 0, "kept": 0}
    info = rundir.ingest_info(run_dir)
    classes, size = info["classes"], tuple(info["size"])
    k = len(classes)
    device = resolve_device(cfg.device)
    x, y, train_rows = rundir.load_split(run_dir, "train", sources=("real", "classical"))
    real = (train_rows["source"] == "real").to_numpy()
    # the benchmark's step budget (set by the real train images), for the judge and the CAS classifier
    trainer = {**cfg.benchmark.trainer_kwargs(), "steps": cfg.benchmark.steps_for(int(real.sum()))}
    real_ids = train_rows.loc[real, "id"].tolist()
    learned = train_rows["source"].isin(cfg.gan.sources).to_numpy()  # what G learned from, in load_split's order
    bank = (train_rows.loc[learned, "id"].tolist(), y[learned])
    candidates = [(step, path, scale) for step, path in generators(cfg, run_dir) for scale in cfg.gan.latent_scales]
    # progress: the judge's steps, then a CAS classifier's per candidate generator (the long parts of this stage)
    parts = 1 + len(candidates)
    phase = (lambda offset: None if progress is None else (lambda s, n: progress(offset + s, parts * n)))
    judge = train_classifier(x, y, k, **trainer, balanced=True, seed=derive_seed(cfg.seed, "gate"), device=device,
                             progress=phase(0))
    save_classifier(run_dir / rundir.GATE_JUDGE, judge)  # the benchmark's online samples pass the same gate

    seed = derive_seed(cfg.seed, "synthesize")
    target = cfg.gan.samples_per_class
    x_val, y_val, _ = rundir.load_split(run_dir, "val")
    curve, best = [], None
    for i, (step, path, scale) in enumerate(candidates):  # the generator (step, latent scale) with the best CAS on val
        G = load_generator(path, device, derive_seed(cfg.seed, "bn"))
        images, intended, j, n = sample_and_judge(cfg, G, judge, x[real], real_ids, bank, k, size, seed, device, scale)
        cas = classification_accuracy_score(images[j.kept], intended[j.kept], x_val, y_val, k,
                                            {**trainer, "progress": phase((1 + i) * trainer["steps"])},
                                            derive_seed(cfg.seed, "cas"), device)
        curve.append({"step": step, "scale": scale, "cas_accuracy_on_val": cas["accuracy"], "kept": int(j.kept.sum())})
        if best is None or _better(curve[-1], best[0]):
            best = (curve[-1], path, images, intended, j, n, cas)
    chosen, path, images, intended, j, n, cas = best
    if progress is not None:
        progress(parts * trainer["steps"], parts * trainer["steps"])
    held_out = (predict(judge, x_val)[1], y_val) if len(x_val) else None  # for the data-copying ratio
    per_class = class_quality(j.real_feats, y[real], j.feats, intended, j.kept, j.novelty, classes, cfg.gate, held_out)
    for c, label in enumerate(classes):
        per_class[label]["cas_recall"] = cas["recall"][c] if cas["recall"] else None
    apply_alarm(per_class, classes, intended, j.kept, j.codes, j.reasons, cfg.gate.keep_collapsed)
    collapsed = [label for label, q in per_class.items() if q["collapsed"]]
    write_json(run_dir / "gan" / "quality.json", {
        "feature_space": "penultimate layer of the gate's judge (benchmark classifier, real + classical train)",
        "reference": "real train images of the class",
        "k": K_NEIGHBOURS,
        "generated_per_class": n,
        "target_per_class": target,
        "cas_accuracy_on_val": cas["accuracy"],
        "collapsed_classes": collapsed,
        "classes": per_class,
        # the generator sampled: gan.checkpoint_selection and gan.latent_scales, chosen by CAS on val
        "selection": {"how": cfg.gan.checkpoint_selection, "step": chosen["step"], "scale": chosen["scale"],
                      "generator": Path(path).relative_to(run_dir).as_posix(), "curve": curve},
    })

    rows = gan_rows(run_dir, images, intended, j, n, classes, seed, f"dcgan:{cfg.gan.mode}")
    rundir.replace_source(run_dir, "gan", rows)
    return {
        "generated": len(rows),
        "kept": int(j.kept.sum()),
        "kept_of_target_per_class": {label: round(float(j.kept[intended == c].sum() / target), 4)
                                     for c, label in enumerate(classes)},
        "collapsed_classes": collapsed,
        "cas_accuracy_on_val": cas["accuracy"],
        "generator_step": chosen["step"], "latent_scale": chosen["scale"],
    }


def generators(cfg: Config, run_dir: Path) -> list[tuple[int, Path]]:
    """The (step, checkpoint) the synthesize stage may sample: the last step's, or with
    gan.checkpoint_selection: cas every snapshot the gan stage kept (the last step among them)."""
    from augment.core.gan_train import snapshots

    found = snapshots(Path(run_dir) / "gan") if cfg.gan.checkpoint_selection == "cas" else []
    return found or [(cfg.gan.steps, Path(run_dir) / rundir.GAN_CHECKPOINT)]


def _better(row: dict, best: dict) -> bool:
    """A higher CAS on val wins; on a tie, the later step, then the scale nearer 1."""
    key = lambda r: (r["cas_accuracy_on_val"] or -1.0, r["step"], -abs(math.log(r["scale"])))  # noqa: E731
    return key(row) > key(best)
