"""Stage synthesize: over-generate per class, gate every sample, keep the best gan.samples_per_class.

Writes the gan manifest rows (kept or not, with a reason code and message), the images, and
gan/quality.json (per-class quality metrics, classification accuracy score, collapse alarms).
"""

from __future__ import annotations

from pathlib import Path


from augment import rundir
from augment.atomic import write_json
from augment.config import Config
from augment.core.classify.networks import load_classifier, predict
from augment.core.gate.gate import K_NEIGHBOURS, better, gate_quality, sample_and_judge, score_generator
from augment.core.gan.sampling import load_generator
from augment.runtime import derive_seed, resolve_device


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    run_dir = Path(run_dir)
    if not cfg.gan.enabled:
        rundir.replace_source(run_dir, "gan", [])
        return {"generated": 0, "kept": 0}
    device = resolve_device(cfg.device)
    data = rundir.gate_data(cfg, run_dir)
    classes, target = data.classes, cfg.gan.samples_per_class
    judge = load_classifier(run_dir / rundir.GATE_JUDGE, device)  # the judge stage's
    chosen, path, (images, intended, j, n, cas), curve = _choose(cfg, run_dir, data, judge, device, progress)
    held_out = (predict(judge, data.x_val)[1], data.y_val) if len(data.x_val) else None  # for the data-copying ratio
    per_class = gate_quality(cfg, j, intended, data.y[data.real], classes, held_out, cas["recall"])
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
    rows = rundir.gan_rows(run_dir, images, intended, j, n, classes, derive_seed(cfg.seed, "synthesize"), cfg.gan.mode)
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


def _choose(cfg: Config, run_dir: Path, data, judge, device, progress):
    """The generator (step, latent scale) with the best CAS on val among those the config offers, and its
    gated samples: (its curve row, its checkpoint, (images, intended, judged, n, cas), the whole curve)."""
    candidates = [(step, path, scale) for step, path in generators(cfg, run_dir) for scale in cfg.gan.latent_scales]
    scored = {(r["step"], r["scale"]): r for r in reusable_curve(cfg, run_dir)}  # what the gan stage scored as it trained
    steps = data.trainer["steps"]
    # progress: a CAS classifier's steps per candidate the gan stage did not score (the long part of this stage)
    parts = max(1, sum((c[0], c[2]) not in scored for c in candidates))
    phase = (lambda offset: None if progress is None else (lambda s, n: progress(offset + s, parts * n)))
    curve, best, done = [], None, 0
    for step, path, scale in candidates:
        if (step, scale) in scored:
            row, out = scored[(step, scale)], None
        else:
            G = load_generator(path, device, derive_seed(cfg.seed, "bn"))
            row, out = score_generator(cfg, data, G, judge, step, scale, device, phase(done * steps))
            done += 1
        curve.append({key: row[key] for key in ("step", "scale", "cas_accuracy_on_val", "kept")})
        if best is None or better(row, best[0]):
            best = (row, path, out)
    chosen, path, out = best
    if out is None:  # scored while the GAN trained: sample and gate it again (the same seeds: the same samples)
        G = load_generator(path, device, derive_seed(cfg.seed, "bn"))
        out = (*sample_and_judge(cfg, G, judge, data.x[data.real], data.real_ids, data.bank, len(data.classes), data.size,
                                 derive_seed(cfg.seed, "synthesize"), device, chosen["scale"]),
               {"accuracy": chosen["cas_accuracy_on_val"], "recall": chosen["recall"]})
    if progress is not None:
        progress(parts * steps, parts * steps)
    return {key: chosen[key] for key in ("step", "scale", "cas_accuracy_on_val", "kept")}, path, out, curve


def generators(cfg: Config, run_dir: Path) -> list[tuple[int, Path]]:
    """The (step, checkpoint) the synthesize stage may sample: the last step's, or with
    gan.checkpoint_selection: cas every snapshot the gan stage kept (the last step among them)."""
    from augment.core.gan.checkpoint import snapshots

    found = snapshots(Path(run_dir) / "gan") if cfg.gan.checkpoint_selection == "cas" else []
    return found or [(cfg.gan.steps, Path(run_dir) / rundir.GAN_CHECKPOINT)]


def reusable_curve(cfg: Config, run_dir: Path) -> list[dict]:
    """The curve the gan stage scored while it trained (gan.patience), when it belongs to the GAN this
    run holds: its scoring read the same gate and classifier settings (they are in its fingerprint)."""
    saved = rundir.read_curve(run_dir)
    if not cfg.gan.stops_early or saved.get("fingerprint") != rundir.recorded_fingerprint(run_dir, "gan"):
        return []
    return saved["curve"]
