"""The run-directory contract: its paths, the manifest, stage records, the lock, and loading a split.

    runs/<run-id>/
      config.yaml  manifest.parquet  stages/<stage>.json  images/<source>/<label>/<id>.png
      features/  gan/  benchmark/  expanded/  report/  history/

Every stage reads and writes the run directory through this module (PNG encoding lives in
augment.png, which spawned workers import without pandas).
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from augment.atomic import atomic_path, write_json
from augment.errors import UserError
from augment.safe_text import file_label
from augment.png import encode_png, load_each, load_images, save_encoded, save_png, to_channels  # noqa: F401  (the run directory's PNG io)
from augment.registry import REASONS, SOURCES, source_member  # noqa: F401

log = logging.getLogger("augment")

MANIFEST = "manifest.parquet"
GAN_CHECKPOINT = Path("gan") / "checkpoint.pt"
GATE_JUDGE = Path("gan") / "judge.pt"  # the quality gate's judge (augment.core.classify.classifier.save_classifier)
EXTRACTOR = Path("features") / "extractor.pt"  # the SMOTE stage's fitted feature extractor
PLAN = Path("plan.json")  # the plan's estimate per stage for the run under way (augment run, augment.plan)
DEVICE = Path("device.json")  # where the run computes: device, GPU name, precisions (graph.open_run)
MARKER = Path(".augment-run")  # written when the tool makes a run directory: only such a folder is ever written to
COLUMNS = {
    "id": "string",
    "path": "string",  # PNG relative to the run directory (smote rows: the decoded feature row)
    "label": "string",
    "split": "string",  # train | val | test | excluded (an input ingest left out; see reason)
    "split_origin": "string",  # real rows: how the split was decided, a key of registry.SPLIT_ORIGINS
    "source": "string",  # real | classical | smote | gan
    "parent_id": "string",
    "seed": "Int64",
    "generator": "string",  # what made the row: the input file, the preset, the sampler, the GAN mode
    "sha256": "string",
    "height": "Int64",
    "width": "Int64",
    "channels": "Int64",
    "score": "Float64",  # gate score (classifier confidence) for gan rows
    "novelty": "Float64",  # gan rows: distance to the nearest real train image / typical real spacing
    "kept": "boolean",
    "reason_code": "string",  # why a row was not kept: a key of registry.REASONS
    "reason": "string",  # the same, in words, with the figures
    "params": "string",  # classical rows: the applied albumentations parameters, JSON
}


# --------------------------------------------------------------------------- manifest


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


def normalise(rows: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """Give rows exactly the manifest's columns and dtypes (missing columns are null)."""
    frame = pd.DataFrame(rows)
    for col, dtype in COLUMNS.items():
        if col not in frame:
            frame[col] = pd.NA
        frame[col] = frame[col].astype(dtype)
    bad = set(frame["reason_code"].dropna()) - set(REASONS)
    if bad:
        raise ValueError(f"unknown reason code(s) {sorted(bad)}; add them to registry.REASONS")
    return frame[list(COLUMNS)].reset_index(drop=True)


def read_manifest(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return empty_manifest()
    return normalise(pd.read_parquet(path))


def write_manifest(run_dir: Path, frame: pd.DataFrame) -> None:
    with atomic_path(Path(run_dir) / MANIFEST) as tmp:
        normalise(frame).to_parquet(tmp, index=False)


def replace_source(run_dir: Path, source: str, rows: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """Swap every row of one source for `rows` (a stage re-run replaces its own rows only)."""
    current = read_manifest(run_dir)
    new = normalise(rows)
    if len(new) and (new["source"] != source).any():
        raise ValueError(f"rows for source {source!r} carry another source")
    parts = [f for f in (current[current["source"] != source], new) if len(f)]
    frame = pd.concat(parts, ignore_index=True) if parts else empty_manifest()
    write_manifest(run_dir, frame)
    return frame


# --------------------------------------------------------------------------- stage records


def stage_record_path(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "stages" / f"{stage}.json"


def stage_record(run_dir: Path, stage: str) -> dict | None:
    """What a finished stage recorded (its fingerprint, seconds and info), or None."""
    path = stage_record_path(run_dir, stage)
    return json.loads(path.read_text()) if path.is_file() else None


def recorded_fingerprint(run_dir: Path, stage: str) -> str | None:
    """The fingerprint a finished stage recorded, or None if it has not finished."""
    record = stage_record(run_dir, stage)
    return None if record is None else record.get("fingerprint")


def write_stage_record(run_dir: Path, stage: str, record: dict) -> None:
    """The record that marks a stage finished, written only once the stage's files are on disk
    (a power cut cannot leave a record whose files were still in the page cache), and itself synced."""
    os.sync()  # one call per stage: every file the stage wrote, however many
    write_json(stage_record_path(run_dir, stage), record)
    os.sync()


def clear_stage_record(run_dir: Path, stage: str) -> None:
    stage_record_path(run_dir, stage).unlink(missing_ok=True)


def ingest_info(run_dir: Path) -> dict:
    """What ingest recorded: working size, channels, classes, counts."""
    record = stage_record(run_dir, "ingest")
    if record is None:
        raise RuntimeError(f"{run_dir}: ingest has not finished")
    return record


def selected_generator(run_dir: Path) -> tuple[Path, float]:
    """The generator checkpoint the synthesize stage sampled and its latent scale (gan/quality.json
    "selection": gan.checkpoint_selection, gan.latent_scales); the last step's, at 1, before it ran."""
    path = Path(run_dir) / "gan" / "quality.json"
    chosen = json.loads(path.read_text()).get("selection") if path.is_file() else None
    if not chosen:
        return Path(run_dir) / GAN_CHECKPOINT, 1.0
    return Path(run_dir) / chosen["generator"], float(chosen["scale"])


def split_rows(frame: pd.DataFrame, split: str, sources=("real",)) -> pd.DataFrame:
    """The manifest rows load_split loads: kept images (with a file) of one split and sources; a
    member source ("gan:mix", augment.registry.member_source) is the rows of its source that generator drew."""
    picked = frame["source"].isin(sources)
    for stage, member in (source_member(s) for s in sources if ":" in s):
        picked |= (frame["source"] == stage) & (frame["generator"] == member)
    rows = frame[(frame["split"] == split) & picked & frame["kept"] & frame["path"].notna()]
    return rows.reset_index(drop=True)


def load_split(run_dir: Path, split: str, sources=("real",)) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Kept images of one split and sources at working size: (x uint8 NHWC, y class index, rows)."""
    rows = split_rows(read_manifest(run_dir), split, sources)
    return (*load_rows(run_dir, rows), rows)


def load_rows(run_dir: Path, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The images of manifest-shaped rows at working size and their class indices: (x uint8 NHWC, y)."""
    info = ingest_info(run_dir)
    x = load_images(run_dir, rows["path"], tuple(info["size"]), info["channels"], info.get("fit", "pad"))
    index = {c: i for i, c in enumerate(info["classes"])}
    y = np.array([index[label] for label in rows["label"]], dtype=np.int64)
    return x, y


def load_splits(run_dir: Path, splits: tuple[str, ...], sources=("real",)) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """load_split over several splits, concatenated in the order given (all of the first split, then the next)."""
    parts = [load_split(run_dir, s, sources) for s in splits]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            pd.concat([p[2] for p in parts], ignore_index=True))


# --------------------------------------------------------------------------- lock and leftovers


_TEMPORARY = re.compile(r"\..+\.\d+-\d+\.tmp")  # atomic_path's `.<name>.<pid>-<thread>.tmp`


def claim(run_dir: Path) -> None:
    """Make run_dir this tool's: a new or empty folder gets the marker file; one with the marker,
    or a run directory of a version before the marker (config.yaml and .lock, both ours),
    is used as it is. Any other folder is a one-line error, and nothing in it is touched."""
    run_dir = Path(run_dir)
    if (run_dir / MARKER).is_file():
        return
    # the marker's own temporary: another run is claiming this new folder at this moment (its lock refuses us next)
    entries = [p.name for p in run_dir.iterdir() if not (p.name.startswith(f".{MARKER.name}.") and _TEMPORARY.fullmatch(p.name))]
    legacy = (run_dir / "config.yaml").is_file() and (run_dir / ".lock").is_file()  # open_run wrote both first
    if entries and not legacy:
        raise UserError(f"run directory {run_dir} is not empty and was not made by augment (no {MARKER}); "
                        "choose a new or empty folder for --run-dir or run_root")
    write_json(run_dir / MARKER, {"tool": "augment", "note": "made by augment run: its files are the tool's"})


def remove_stale_temporaries(root: Path) -> int:
    """Delete temporary files an interrupted run left behind (`.<name>.<pid>-<thread>.tmp` from
    atomic_path) and nothing else. Only call it while holding the run lock: then no writer can be mid-way."""
    stale = [p for p in Path(root).rglob(".*.tmp") if _TEMPORARY.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink()
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted run", len(stale))
    return len(stale)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory for the whole run, or refuse at once.

    An OS file lock (flock): it is released when the process ends, however it ends (a killed
    run never leaves a stale lock), and a second `augment run` on the same directory gets a
    one-line error instead of interleaving its writes.
    """
    import fcntl

    path = Path(run_dir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"run directory {run_dir} is in use by another augment run (pid {holder}); "
                            "wait for it to finish or choose another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- the exported recipe

RECIPE = Path("recipe") / "recipe.json"
CLASSICAL_PIPELINE = Path("recipe") / "classical.json"  # the classical arms' pipeline as A.save writes it (A.load reads it)
REFIT_ROWS = Path("recipe") / "refit.parquet"  # classical copies of the real images the refit adds, refit GAN samples
REFIT_GAN = Path("recipe") / "gan"  # expand.refit_generator: the generator trained on the refit splits
TEACHER = Path("recipe") / "teacher.pt"  # benchmark.soft_labels: the teacher of the synthetic images' targets
REFIT_SPLITS = {"train": ("train",), "trainval": ("train", "val"), "all": ("train", "val", "test")}


def write_recipe(run_dir: Path, recipe: dict) -> Path:
    """recipe/recipe.json, what augment.load_training_data reads (the expand stage writes it)."""
    write_json(Path(run_dir) / RECIPE, recipe)
    return Path(run_dir) / RECIPE


# --------------------------------------------------------------------------- the gate's data and rows


@dataclass
class GateData:
    """What judging a generator needs (gate_data): the train images the judge and the novelty check
    read (real and classical; `real` marks the real rows), the images G learned from (its bank),
    real val, the classes, the working size, and the benchmark's classifier settings for CAS."""

    x: np.ndarray
    y: np.ndarray
    real: np.ndarray
    real_ids: list[str]
    bank: tuple[list[str], np.ndarray]
    x_val: np.ndarray
    y_val: np.ndarray
    classes: list[str]
    size: tuple[int, int]
    trainer: dict


def gate_data(cfg, run_dir: Path) -> GateData:
    """The gate's data (GateData) from the run directory, for the judge, synthesize and gan.patience."""
    x, y, rows = load_split(run_dir, "train", sources=("real", "classical"))
    real = (rows["source"] == "real").to_numpy()
    learned = rows["source"].isin(cfg.gan.sources).to_numpy()  # what G learned from, in load_split's order
    x_val, y_val, _ = load_split(run_dir, "val")
    info = ingest_info(run_dir)
    # the benchmark's step budget (set by the real train images), for the judge and the CAS classifier
    trainer = {**cfg.benchmark.trainer_kwargs(), "steps": cfg.benchmark.steps_for(int(real.sum()))}
    return GateData(x, y, real, rows.loc[real, "id"].tolist(), (rows.loc[learned, "id"].tolist(), y[learned]), x_val, y_val,
                    info["classes"], tuple(info["size"]), trainer)


CAS_CURVE = Path("gan") / "cas.json"  # the snapshots' CAS, scored while the GAN trained (gan.patience)


def read_curve(run_dir: Path) -> dict:
    path = Path(run_dir) / CAS_CURVE
    return json.loads(path.read_text()) if path.is_file() else {}


def gan_rows(run_dir: Path, images: np.ndarray, intended: np.ndarray, j, n: int, classes: list[str], seed: int,
             generator: str, folder: str = "images/gan", prefix: str = "gan", suffix: str = "") -> list[dict]:
    """Save every judged sample under run_dir/<folder>/<class>/ and return its manifest row (kept or not, why).
    A row names the generator that drew it (gan.mode; an ensemble's rows their member: "mix"), then `suffix`."""
    rows = []
    for i, image in enumerate(images):
        label = classes[intended[i]]
        gid = f"{prefix}-{file_label(label)}-{i % n:05d}"
        rel = f"{folder}/{label}/{gid}.png"
        rows.append(dict(
            id=gid, path=rel, label=label, split="train", source="gan", seed=seed % 2**32,
            generator=(generator if j.members is None else j.members[i]) + suffix,
            sha256=save_png(run_dir, rel, image),
            height=image.shape[0], width=image.shape[1], channels=image.shape[2], score=float(j.score[i]),
            novelty=float(j.novelty[i]), kept=bool(j.kept[i]), reason_code=j.codes[i], reason=j.reasons[i],
            **({} if j.parents is None or j.parents[i] is None else  # mix, hydra: its parents, as SMOTE rows record theirs
               {"parent_id": j.parents[i][0], "params": json.dumps({"parents": j.parents[i]})}),
        ))
    return rows


def classical_rows(run_dir: Path, parents: list[tuple[dict, int, int]], made: list[list[tuple]], generator: str) -> list[dict]:
    """Save each parent's classical copies (augment_copies' PNG bytes, shape and applied parameters)
    under run_dir/images/classical/<class>/ and return their manifest rows."""
    rows = []
    for (parent, seed, _), copies in zip(parents, made):
        for c, (data, shape, params) in enumerate(copies):
            cid = f"classical-{parent['id']}-{c}"
            rel = f"images/classical/{parent['label']}/{cid}.png"
            rows.append(dict(
                id=cid, path=rel, label=parent["label"], split="train", source="classical", parent_id=parent["id"],
                seed=seed % 2**32, generator=generator, sha256=save_encoded(run_dir, rel, data),
                height=shape[0], width=shape[1], channels=shape[2], kept=True, params=params,
            ))
    return rows


def classical_jobs(run_dir: Path, plan: list[tuple[dict, int, int]], per_job: int, **common) -> list[dict]:
    """The copy plan as augment_copies jobs of `per_job` parents each, every parent's image read
    (at its stored size) into its job; `common` (transforms) goes into every job."""
    images = load_each(run_dir, [parent["path"] for parent, _, _ in plan], None, ingest_info(run_dir)["channels"])
    return [dict(common, parents=[(images[i], seed, k) for i, (_, seed, k) in enumerate(plan[j : j + per_job], start=j)])
            for j in range(0, len(plan), per_job)]
