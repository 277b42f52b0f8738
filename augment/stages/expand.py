"""Stage expand: an ImageFolder view of real train images plus the recommended arm's images."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from augment import rundir
from augment.config import Config
from augment.atomic import atomic_path
from augment.core.transforms.augmentation import save_pipeline
from augment.core.transforms.copies import copies_per_class, plan_copies, run_jobs, transforms_for
from augment.rundir import CLASSICAL_PIPELINE, REFIT_GAN, REFIT_ROWS, REFIT_SPLITS, TEACHER, write_recipe
from augment.runtime import derive_seed, resolve_device
from augment.registry import ARMS, trained_as
from augment.summary import read_summary

log = logging.getLogger("augment")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same run directory, same filesystem: no extra space
    except OSError:
        shutil.copyfile(src, dst)


def how_to_train(cfg: Config, summary, arm: str, rows) -> str:
    """expanded/README.md: the recipe the benchmark measured, for users outside PyTorch."""
    spec, b = ARMS[arm], cfg.benchmark
    real = rows[rows["source"] == "real"]
    lines = [f"# Expanded dataset: arm `{arm}` ({spec.description})", "",
             f"An ImageFolder (`<class>/<id>.png`): {len(real)} real images ({', '.join(sorted(set(real['split'])))})"
             + "".join(f", {n} {source}" for source, n in rows[rows["source"] != "real"].groupby("source").size().items())
             + ". The file name is the manifest id (manifest.parquet: source, parent, seed, split). In PyTorch, "
             "`augment.load_training_data(run_dir)` gives the same recipe as a Dataset, BatchSampler and DataLoader.", "",
             "To reproduce the benchmark's gain, train as it did:", ""]
    choice = summary.side_stream.get(arm)
    if choice is not None:
        ids = ", ".join(sorted(set(rows["source"]) - {"real"}))
        lines.append(f"- Synthetic images ({ids}; file names not starting with `real-`) are {choice.share:.0%} of "
                     f"every batch, the rest real images (chosen on {choice.chosen_on}), with loss weight "
                     f"{choice.weight:g}" + (f" and soft labels (temperature {choice.temperature:g})" if choice.soft_labels else "")
                     + ". Pouring them in with the real images is not what was measured.")
    if "gan" in set(rows["source"]):
        refit = rows["generator"].fillna("").str.contains(":refit", regex=False).any()
        lines.append("- GAN samples come from a generator trained again on the real images here (expand.refit_generator)."
                     if refit else "- GAN samples come from the generator the benchmark measured, trained on the train split "
                     "only" + (" (expand.refit_generator: true trains it again on every real image here)." if "gan" in spec.sources
                               else ", the kept samples of one ensemble member (expand.refit_generator re-trains only for the "
                               "whole 'gan' source)."))
    if cfg.benchmark.online_gan and "gan" in spec.sources:  # a member source (gan:mix) keeps its pool
        lines.append("- Every batch, the GAN images drawn are replaced by fresh generator samples of their class that "
                     "pass the quality gate (benchmark.online_gan; augment.load_training_data does it, the files here are "
                     "the kept pool).")
    if trained_as(arm, b.classical_on_the_fly).classical:
        lines.append("- The classical pipeline on every image of every batch, real and synthetic (albumentations; "
                     "`A.load(\"recipe/classical.json\")`, the same transforms as `recipe/recipe.json` \"classical_transforms\"): that is what was "
                     "measured. "
                     "The classical copies here are a frozen stand-in for a trainer that cannot augment on the fly.")
    if spec.augment:
        lines.append("- TrivialAugmentWide (torchvision) on every image of every batch.")
    if spec.balanced or summary.balanced_sampling:
        lines.append("- Class-balanced sampling: every class drawn equally often.")
    lines.append(f"- {summary.classifier_steps or b.steps} steps of batch {b.batch_size}, AdamW lr {b.lr:g}, weight decay "
                 f"{b.weight_decay:g}, {b.schedule} schedule (the tool's docs/outputs.md, \"The benchmark's classifier\").")
    return "\n".join(lines) + "\n"


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    """Build expanded/<label>/<id>.png and recipe/ for the arm the benchmark recommended (chosen on val or by k-fold).

    expanded/ holds every real image of the expand.refit splits (train and val by default: the
    benchmark has chosen, so val need not stay held out) plus the arm's synthetic images. When no
    synthetic arm won, it holds no generated images: the tool does not hand over synthetic images
    it could not show to help. Arms that change only how batches are drawn (trivialaugment,
    balanced) add no files; recipe/ and expanded/README.md say how to train.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    arm = summary.recommendation.arm
    spec = ARMS[arm]
    frame = rundir.read_manifest(run_dir)
    splits = REFIT_SPLITS[cfg.expand.refit]  # the deliverable: every real image of these splits
    real = frame[frame["split"].isin(splits) & (frame["source"] == "real") & frame["kept"]]
    regenerate = cfg.expand.refit_generator and "gan" in spec.sources and splits != ("train",)
    from_manifest = set(spec.sources) - {"real"} - ({"gan"} if regenerate else set())
    synthetic = rundir.split_rows(frame, "train", tuple(sorted(from_manifest)))  # a member source: its generator's rows
    refit = refit_copies(cfg, run_dir, frame, splits) if "classical" in spec.sources else rundir.normalise([])
    if regenerate:
        copies = None  # gan.train_on real+classical: the generator learns from the refit splits' copies too
        if "classical" in cfg.gan.sources:
            copies = refit if "classical" in spec.sources else refit_copies(cfg, run_dir, frame, splits)
        refit = pd.concat([refit, refit_generator(cfg, run_dir, splits, fingerprint, copies)], ignore_index=True)
    with atomic_path(run_dir / REFIT_ROWS) as tmp:
        refit.to_parquet(tmp, index=False)
    rows = pd.concat([real, synthetic, refit[refit["kept"]]])
    staging = run_dir / ".expanded.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    for rel, label, rid in zip(rows["path"], rows["label"], rows["id"]):
        _link_or_copy(run_dir / rel, staging / label / f"{rid}.png")
    (staging / "README.md").write_text(how_to_train(cfg, summary, arm, rows))
    target = run_dir / "expanded"
    old = run_dir / ".expanded.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)  # the view appears whole or not at all
    shutil.rmtree(old, ignore_errors=True)
    recipe(cfg, run_dir, summary, arm, splits, regenerate)
    counts = rows.groupby("source").size().to_dict()
    how = ("train with torchvision's TrivialAugmentWide on the fly" if spec.augment
           else "train with class-balanced sampling" if spec.balanced else None)
    return {"arm": arm, "images": len(rows), "by_source": {k: int(v) for k, v in counts.items()}, "training": how,
            "real_splits": list(splits), "refit_copies": int((refit["source"] == "classical").sum()),
            "generator_refit": bool(regenerate), "refit_gan_kept": int((refit["kept"] & (refit["source"] == "gan")).sum()), "real_by_split": {k: int(v) for k, v in real.groupby("split").size().items()}}


def refit_copies(cfg: Config, run_dir: Path, frame: pd.DataFrame, splits: tuple[str, ...]) -> pd.DataFrame:
    """Classical copies of the real images the refit adds (val, and test with expand.refit: all), as
    many per class as the classical stage would have made had they been train images, with the
    seeds it would have used; manifest-shaped rows whose split is their parent's."""
    c, info = cfg.classical, rundir.ingest_info(run_dir)
    real = frame[(frame["source"] == "real") & frame["kept"]]
    added = real[real["split"].isin(set(splits) - {"train"})]
    if not c.enabled or added.empty:
        return rundir.normalise([])
    before = copies_per_class(real[real["split"] == "train"].groupby("label").size().to_dict(), c)
    after = copies_per_class(real[real["split"].isin(splits)].groupby("label").size().to_dict(), c)
    extra = {label: max(0, n - before.get(label, 0)) for label, n in after.items()}
    plan = plan_copies(added[["id", "path", "label"]].to_dict("records"), extra,
                       lambda pid: derive_seed(cfg.seed, "classical", pid))
    if not plan:
        return rundir.normalise([])
    jobs = rundir.classical_jobs(run_dir, plan, len(plan), transforms=transforms_for(c, info["channels"]))
    rows = rundir.classical_rows(run_dir, plan, next(run_jobs(jobs, 1)), "albumentations:refit")
    split_of = dict(zip(added["id"], added["split"]))
    return rundir.normalise([{**r, "split": split_of[r["parent_id"]]} for r in rows])


def refit_generator(cfg: Config, run_dir: Path, splits: tuple[str, ...], fingerprint: str,
                    copies: pd.DataFrame | None = None) -> pd.DataFrame:
    """The GAN trained again (resumably, in recipe/gan/) on every real image of the refit splits (and,
    with gan.train_on real+classical, the train split's classical copies and `copies`, the refit's), its
    samples gated as the synthesize stage gates (the same judge; novelty against these real images; the
    collapse alarm): manifest-shaped rows, kept or not, generator "<mode>:refit" (an ensemble's rows: "<member>:refit")."""
    from augment.core.classify.networks import load_classifier
    from augment.core.gan.train import train_generators
    from augment.core.gate.gate import gate_quality, sample_and_judge
    from augment.core.gan.sampling import load_generator

    info, device = rundir.ingest_info(run_dir), resolve_device(cfg.device)
    classes, k = info["classes"], len(info["classes"])
    x, y, rows = rundir.load_splits(run_dir, splits)
    ids = rows["id"].tolist()
    bank_x, bank_y, bank_ids = x, y, ids
    if copies is not None:
        copies = pd.concat([rundir.split_rows(rundir.read_manifest(run_dir), "train", ("classical",)),
                            copies[copies["kept"]]], ignore_index=True)
        x_c, y_c = rundir.load_rows(run_dir, copies)
        bank_x, bank_y, bank_ids = np.concatenate([x, x_c]), np.concatenate([y, y_c]), ids + copies["id"].tolist()
    log.info("expand: training the generator again on the %d real images of %s (expand.refit_generator)%s", len(y),
             "+".join(splits), "" if copies is None else f" and {len(copies)} classical copies")
    quality = run_dir / "gan" / "quality.json"
    chosen = json.loads(quality.read_text()).get("selection", {}).get("step") if quality.is_file() else None
    # as long as the generator the synthesize stage sampled had trained (a snapshot chosen by CAS, gan.patience)
    gan_cfg = cfg.gan.model_copy(update={"steps": int(chosen)}) if chosen and cfg.gan.checkpoint_selection == "cas" else cfg.gan
    train_generators(bank_x, bank_y, k, gan_cfg, seed=derive_seed(cfg.seed, "gan", "refit"), device=device,
                     out_dir=run_dir / REFIT_GAN, fingerprint=f"{fingerprint}-refit")
    G = load_generator(run_dir / REFIT_GAN / "checkpoint.pt", device, derive_seed(cfg.seed, "bn"))
    judge = load_classifier(run_dir / rundir.GATE_JUDGE, device)
    seed = derive_seed(cfg.seed, "synthesize", "refit")
    images, intended, j, n = sample_and_judge(cfg, G, judge, x, ids, (bank_ids, bank_y), k, tuple(info["size"]), seed, device,
                                              rundir.selected_generator(run_dir)[1])  # the latent scale chosen on val
    gate_quality(cfg, j, intended, y, classes)  # the collapse alarm un-keeps a flagged class's samples
    return rundir.normalise(rundir.gan_rows(run_dir, images, intended, j, n, classes, seed, cfg.gan.mode,
                                     folder=f"{REFIT_GAN.as_posix()}/images", prefix="gan-refit", suffix=":refit"))


def recipe(cfg: Config, run_dir: Path, summary, arm: str, splits: tuple[str, ...], regenerate: bool = False) -> Path:
    """recipe/recipe.json: how the benchmark trained the winning arm (augment.load_training_data reads it)."""
    b, info = cfg.benchmark, rundir.ingest_info(run_dir)
    spec = trained_as(arm, b.classical_on_the_fly)
    choice = summary.side_stream.get(arm)
    trainer = b.trainer_kwargs()
    soft = bool(b.soft_labels and choice is not None)
    if soft:  # the benchmark's teacher, on the deliverable's real images: TrivialAugmentWide, class-balanced
        from augment.core.classify.classifier import save_classifier, train_classifier

        x, y, _ = rundir.load_splits(run_dir, splits)
        teacher = train_classifier(x, y, len(info["classes"]), **{**trainer, "steps": b.steps_for(len(y))},
                                   seed=derive_seed(cfg.seed, "teacher"), device=resolve_device(cfg.device),
                                   augment="trivialaugment", balanced=True)
        save_classifier(run_dir / TEACHER, teacher)
    else:
        (run_dir / TEACHER).unlink(missing_ok=True)
    online = bool(b.online_gan and "gan" in spec.sources)
    generator, scale = rundir.selected_generator(run_dir)  # the generator and latent scale the GAN samples came from
    transforms = transforms_for(cfg.classical, info["channels"]) if spec.classical else None
    if transforms is not None:  # the pipeline as albumentations' own file: A.load gives it back
        save_pipeline(transforms, run_dir / CLASSICAL_PIPELINE)
    else:
        (run_dir / CLASSICAL_PIPELINE).unlink(missing_ok=True)
    return write_recipe(run_dir, {
        "arm": arm, "sources": list(spec.sources), "real_splits": list(splits), "classes": info["classes"],
        "size": info["size"], "channels": info["channels"], "fit": info.get("fit", "pad"),
        "share": choice.share if choice else None, "weight": choice.weight if choice else 1.0,
        "augment": spec.augment, "balanced": spec.balanced or summary.balanced_sampling,
        "classical_transforms": transforms,
        "classical_pipeline": CLASSICAL_PIPELINE.as_posix() if transforms is not None else None,
        "trainer": {k: (str(v) if isinstance(v, Path) else v) for k, v in trainer.items()},
        "network": dict(in_channels=info["channels"], n_classes=len(info["classes"]), model=trainer["model"],
                        width=b.width, depth=b.depth, dropout=b.dropout,
                        weights=None if b.weights is None else str(b.weights), input_size=b.input_size),
        "benchmark_steps": summary.classifier_steps,
        "generator_refit": regenerate,  # the GAN rows of recipe/refit.parquet replace the manifest's on the refit splits
        "teacher": TEACHER.as_posix() if soft else None, "temperature": b.temperature,
        "online_gan": online, "generator": (REFIT_GAN / "checkpoint.pt" if regenerate else
                                            generator.relative_to(run_dir)).as_posix(),
        "latent_scale": scale,
        "judge": rundir.GATE_JUDGE.as_posix(), "bn_seed": derive_seed(cfg.seed, "bn"),
        "gate": [cfg.gate.min_confidence, cfg.gate.min_novelty, cfg.gate.oversample],
    })
