"""Stage synthesize: over-generate per class, gate every sample, keep the best gan.samples_per_class.

Writes the gan manifest rows (kept or not, with a reason code and message), the images, and
gan/quality.json (per-class quality metrics, classification accuracy score, collapse alarms).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from augment import rundir
from augment.atomic import write_json
from augment.config import Config
from augment.core.classifier import save_classifier, train_classifier
from augment.core.gate import K_NEIGHBOURS, apply_alarm, class_quality, classification_accuracy_score, judge_samples
from augment.core.sampling import load_generator, sample
from augment.core.tensors import to_uint8
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
    # progress: the judge's steps, then the CAS classifier's (the two long parts of this stage)
    phase = (lambda offset: None if progress is None else (lambda s, n: progress(offset + s, 2 * n)))
    judge = train_classifier(x, y, k, **trainer, balanced=True, seed=derive_seed(cfg.seed, "gate"), device=device,
                             progress=phase(0))
    save_classifier(run_dir / rundir.GATE_JUDGE, judge)  # the benchmark's online samples pass the same gate

    G = load_generator(run_dir / "gan" / "checkpoint.pt", device, derive_seed(cfg.seed, "bn"))
    seed = derive_seed(cfg.seed, "synthesize")
    target = cfg.gan.samples_per_class
    n = math.ceil(target * cfg.gate.oversample)
    samples = sample(G, n, cfg.gan.nz, k, seed, device)  # (n, K, C, S, S)
    images = to_uint8(samples.transpose(0, 1).flatten(0, 1), size)  # class-major (K*n, H, W, C)
    intended = np.repeat(np.arange(k), n)
    j = judge_samples(judge, x[real], train_rows.loc[real, "id"].tolist(), images, intended, target, cfg.gate)

    per_class = class_quality(j.real_feats, y[real], j.feats, intended, j.kept, j.novelty, classes, cfg.gate)
    x_val, y_val, _ = rundir.load_split(run_dir, "val")
    cas = classification_accuracy_score(images[j.kept], intended[j.kept], x_val, y_val, k,
                                        {**trainer, "progress": phase(trainer["steps"])}, derive_seed(cfg.seed, "cas"), device)
    if progress is not None:
        progress(2 * trainer["steps"], 2 * trainer["steps"])
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
    })

    rows = []
    for i, image in enumerate(images):
        label = classes[intended[i]]
        gid = f"gan-{label}-{i % n:05d}"
        rel = f"images/gan/{label}/{gid}.png"
        rows.append(dict(
            id=gid, path=rel, label=label, split="train", source="gan", seed=seed % 2**32,
            generator=f"dcgan:{cfg.gan.mode}", sha256=rundir.save_png(run_dir, rel, image),
            height=size[0], width=size[1], channels=image.shape[2], score=float(j.score[i]),
            novelty=float(j.novelty[i]), kept=bool(j.kept[i]), reason_code=j.codes[i], reason=j.reasons[i],
        ))
    rundir.replace_source(run_dir, "gan", rows)
    return {
        "generated": len(rows),
        "kept": int(j.kept.sum()),
        "kept_of_target_per_class": {label: round(float(j.kept[intended == c].sum() / target), 4)
                                     for c, label in enumerate(classes)},
        "collapsed_classes": collapsed,
        "cas_accuracy_on_val": cas["accuracy"],
    }
