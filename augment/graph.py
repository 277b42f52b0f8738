"""The stage graph: every stage declared once, with its inputs; fingerprints and skipping in one place.

A stage's fingerprint is derived here, and only here, from the config keys it reads, the
content it depends on outside the config (the input images, a pipeline file) and its upstream
stages' fingerprints. A stage whose recorded fingerprint matches is skipped (resume); any
change re-runs it and everything downstream. `run_pipeline` runs the graph without an
orchestrator; flows/augment_flow.py iterates the same declaration as Prefect tasks.
"""

from __future__ import annotations

import errno
import json
import hashlib
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from augment import config_file
from augment import rundir
from augment.atomic import write_json, write_text
from augment.config import BenchmarkConfig, ClassicalConfig, Config, GanConfig
from augment.config_file import dump_config
from augment.core.base.accel import use_cuda_graphs
from augment.errors import MachineError, UserError, check_stop
from augment.runtime import describe_device, graceful_stop, resolve_device, tune_allocator
from augment.stages import benchmark, classical, expand, gan, ingest, judge, report, smote, synthesize
from augment.summary import Summary, read_summary

log = logging.getLogger("augment")
Keys = tuple[str, ...]
_TRAINER_KEYS = tuple(f"benchmark.{k}" for k in BenchmarkConfig.TRAINER_KEYS)


def _section(name: str, model, but: tuple[str, ...] = ("workers",)) -> Keys:
    """A section's keys but those that change only how fast it runs (worker counts), not its output."""
    return tuple(f"{name}.{k}" for k in model.model_fields if k not in but)


@dataclass(frozen=True)
class Stage:
    """One stage: what runs it, what it depends on, and what it reads from the config."""

    name: str
    run: Callable[..., dict]  # run(cfg, run_dir, progress=None, fingerprint="") -> info
    doc: str
    after: Keys | Callable[[Config], Keys] = ()  # upstream stages whose outputs it reads
    reads: Keys | Callable[[Config], Keys] = ()  # config sections or dotted keys that change its output
    content: Callable[[Config], str] | None = None  # what it reads outside the config (input files)
    check: Callable[[Config], None] | None = None  # config checks that need the stage's code, at load
    parts: Callable[[Config, Path], int] | None = None  # independent parts an orchestrator may fan out
    run_part: Callable[..., dict] | None = None  # run_part(cfg, run_dir, i, fingerprint, progress)
    progress: str | None = None  # a progress artifact key, for stages long enough to show one

    def upstream(self, cfg: Config) -> Keys:
        return self.after(cfg) if callable(self.after) else self.after

    def keys(self, cfg: Config) -> Keys:
        return self.reads(cfg) if callable(self.reads) else self.reads


def _smote_after(cfg: Config) -> Keys:
    """SMOTE in the discriminator's feature space needs the trained GAN."""
    return ("ingest", "gan") if cfg.smote.enabled and cfg.smote.features == "discriminator" else ("ingest",)


def _gan_after(cfg: Config) -> Keys:
    """gan.train_on real+classical: the GAN learns from the classical copies too; gan.patience:
    it scores its snapshots with the gate's judge while it trains."""
    after = ("ingest", "classical") if "classical" in cfg.gan.sources or cfg.gan.stops_early else ("ingest",)
    return after + (("judge",) if cfg.gan.stops_early else ())


def _gan_reads(cfg: Config) -> Keys:
    """Its own section; with gan.patience also what scoring a snapshot reads (the gate, the classifier)."""
    own = ("seed", *_section("gan", GanConfig, but=("latent_scales",)))
    return own + (("device", "gate", "gan.latent_scales", *_TRAINER_KEYS) if cfg.gan.stops_early else ())


def _smote_reads(cfg: Config) -> Keys:
    """The cnn feature space is the benchmark's classifier trained here: its settings matter."""
    return ("seed", "smote") + (_TRAINER_KEYS if cfg.smote.features == "cnn" else ())


STAGES: tuple[Stage, ...] = (
    Stage("ingest", ingest.run, "Read and validate the images; split train/val/test; simulate scarcity.",
          reads=("seed", "data"), content=ingest.fingerprint_extra, check=ingest.check),
    Stage("classical", classical.run, "Classical augmentation of the train split with albumentations.",
          after=("ingest",), reads=("seed", *_section("classical", ClassicalConfig)), content=classical.fingerprint_extra, check=classical.check),
    Stage("judge", judge.run, "Train the quality gate's judge on the real and classical train images.",
          after=("ingest", "classical"), reads=("seed", "device", "gan.enabled", *_TRAINER_KEYS)),
    Stage("gan", gan.run, "Train the class-conditional DCGAN (resumes from its checkpoint; merges finished shards).",
          after=_gan_after, reads=_gan_reads, parts=gan.parts, run_part=gan.run_part, progress="gan-training"),
    # after gan: SMOTE may work in the trained discriminator's feature space
    Stage("smote", smote.run, "SMOTE-family over-sampling of train features with imbalanced-learn.",
          after=_smote_after, reads=_smote_reads, check=smote.check),
    Stage("synthesize", synthesize.run, "Sample the generator and gate every sample.",
          after=("gan", "classical", "judge"), reads=("seed", "gate", "device", "gan.latent_scales", *_TRAINER_KEYS)),
    Stage("benchmark", benchmark.run, "Train the classifier per arm and seed; score on the real test split.",
          after=("ingest", "classical", "smote", "synthesize"), reads=("seed", "device", "gate", *_section("benchmark", BenchmarkConfig, but=("workers", "models_per_round"))),
          check=benchmark.check, progress="benchmark-classifiers"),
    Stage("expand", expand.run, "Build the expanded ImageFolder and the recipe export for the recommended arm.",
          after=("benchmark",), reads=("expand",)),
    Stage("report", report.run, "Write the report and publish it.", after=("benchmark", "expand"),
          reads=tuple(Config.model_fields)),  # the report shows the whole config
)
BY_NAME = {s.name: s for s in STAGES}
_FULL_OR_FORBIDDEN = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# Errors no retry can heal (flows' retry condition reads this): the machine refused, or a name does not fit.
PERMANENT_ERRNOS = frozenset((*_FULL_OR_FORBIDDEN, errno.ENAMETOOLONG, errno.ELOOP, errno.EISDIR, errno.ENOTDIR,
                              errno.EINVAL))
_VERSION = "graph-v5"  # bump to re-run every stage once (a change in what stages write)


@contextmanager
def _disk_errors(who: str) -> Iterator[None]:
    """A full disk or a refused write becomes one line naming the file and the mend. Writes are
    atomic and a stage's record comes last: nothing half-written is left looking complete."""
    try:
        yield
    except OSError as exc:
        # pyarrow's writer raises OSError without an errno; its message names the cause
        full = exc.errno is None and "No space left on device" in str(exc)
        where = f" {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENAMETOOLONG:
            raise MachineError(f"{who} cannot write{where}: the file name is too long for this file system; "
                               "shorten the run directory's path or the class name") from None
        if exc.errno not in _FULL_OR_FORBIDDEN and not full:
            raise
        why = "No space left on device" if full else exc.strerror
        raise MachineError(f"{who} cannot write{where}: {why}; free space or fix the permissions, "
                        "then run the same command again (finished stages are kept)") from None


def fingerprints(cfg: Config) -> dict[str, str]:
    """Every stage's fingerprint, in graph order: its config keys, its outside content and its
    upstream stages' fingerprints. Changing any of them re-runs the stage and what depends on it."""
    out: dict[str, str] = {}
    for stage in STAGES:
        parts = [_VERSION, stage.name, cfg.section_hash(*stage.keys(cfg)) if stage.keys(cfg) else "-",
                 stage.content(cfg) if stage.content else "-", *(out[u] for u in stage.upstream(cfg))]
        out[stage.name] = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return out


def is_current(name: str, cfg: Config, run_dir: Path, fps: dict[str, str] | None = None) -> bool:
    """Whether the stage finished with the fingerprint it would have now (it would be skipped)."""
    return rundir.recorded_fingerprint(run_dir, name) == (fps or fingerprints(cfg))[name]


def terminal_bar(desc: str, position: int = 0):
    """A (step, total) callback drawing a tqdm bar with ETA, made on the first call (so stages that
    never report draw nothing) and closed at the total. `position`: its line, so bars of parts running
    side by side never interleave. TQDM_DISABLE=1 (augment run -q) hides it."""
    state: dict = {}

    def update(step: int, total: int) -> None:
        from tqdm.auto import tqdm

        if state.get("closed"):
            return
        if "bar" not in state:
            state["bar"] = tqdm(total=total, initial=step, desc=desc, unit="step", position=position, leave=False,
                                mininterval=1.0, dynamic_ncols=True)
        bar = state["bar"]
        bar.update(step - bar.n)
        if step >= total:
            bar.close()
            state["closed"] = True

    return update


def _both(*callbacks):
    live = [c for c in callbacks if c is not None]
    return lambda step, total: [c(step, total) for c in live] and None


def run_stage(name: str, cfg: Config, run_dir: Path, progress=None, fps: dict[str, str] | None = None) -> dict:
    """Run one stage unless it already finished with the same fingerprint (resume).

    Its record (stages/<name>.json) is written only after it returns, so an interrupted stage
    re-runs. Returns the stage's recorded info, with `skipped` telling whether it ran.
    """
    stage, run_dir = BY_NAME[name], Path(run_dir)
    fp = (fps or fingerprints(cfg))[name]
    record = rundir.stage_record(run_dir, name)
    if record is not None and record.get("fingerprint") == fp:
        log.info("stage %s: unchanged since the last run, skipped", name)
        return {**record, "skipped": True}
    rundir.clear_stage_record(run_dir, name)
    tune_allocator()  # whichever process runs the stage (the flow's, a Prefect or Dask worker)
    start = time.perf_counter()
    log.info("stage %s: started", name)
    with _disk_errors(f"stage {name}"):
        info = dict(stage.run(cfg, run_dir, progress=_both(terminal_bar(name), progress), fingerprint=fp) or {})
        info.update(fingerprint=fp, seconds=round(time.perf_counter() - start, 3), estimate_seconds=_estimate(run_dir, name, fps or fingerprints(cfg)))
        rundir.write_stage_record(run_dir, name, info)
    log.info("stage %s: done in %.1f s", name, info["seconds"])
    return {**info, "skipped": False}


def _estimate(run_dir: Path, name: str, fps: dict[str, str]) -> float | None:
    """The plan's estimate for this stage, when the plan of this very run (the same fingerprints) wrote one."""
    path = Path(run_dir) / rundir.PLAN
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return plan["estimates"].get(name) if plan.get("fingerprints") == fps else None


def fan_out(name: str, cfg: Config, run_dir: Path, fps: dict[str, str] | None = None) -> int:
    """How many parts an orchestrator should run side by side before the stage itself: 0 when the
    stage has no parts or will be skipped, else its part count (the stage then merges them)."""
    stage = BY_NAME[name]
    if stage.parts is None or is_current(name, cfg, run_dir, fps):
        return 0
    n = stage.parts(cfg, run_dir)
    return n if n > 1 else 0


def run_part(name: str, cfg: Config, run_dir: Path, part: int, progress=None, fps: dict[str, str] | None = None) -> dict:
    """Run (or resume, or find finished) one part of a stage."""
    bar = terminal_bar(f"{name} part {part}", position=part + 1)
    tune_allocator()
    with _disk_errors(f"stage {name} part {part}"):  # a full disk in a shard is the same one line
        return BY_NAME[name].run_part(cfg, Path(run_dir), part, (fps or fingerprints(cfg))[name], _both(bar, progress))


# --------------------------------------------------------------------------- config and run directory


def check_config(cfg: Config) -> Config:
    """Every check the config allows before any work: the device, and each stage's own checks
    (the input exists, albumentations transforms, sampler arguments, weights on disk)."""
    device = resolve_device(cfg.device)  # 'cuda' without CUDA, or cuda:N that does not exist
    for key, value in (("gan.cuda_graphs", cfg.gan.cuda_graphs), ("benchmark.cuda_graphs", cfg.benchmark.cuda_graphs)):
        try:
            use_cuda_graphs(value, device, key)
        except ValueError as exc:
            raise UserError(f"config key {exc}") from None
    for stage in STAGES:
        if stage.check is not None:
            stage.check(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load and fully check a config: the typed model (augment.config) plus every stage's checks."""
    return check_config(config_file.load_config(path, overrides))


def default_run_dir(cfg: Config, config_path: str | Path | None) -> Path:
    """runs/<config name>: the same config re-run lands in the same directory and resumes."""
    name = Path(config_path).stem if config_path else "default"
    return Path(cfg.run_root) / name


def check_run_dir(cfg: Config, run_dir: Path) -> Path:
    """Check, before any work, that the run directory can be used: outside the input and the input
    outside it, a folder we can create and write to, new, empty or made by this tool
    (rundir.claim). Creates it."""
    run_dir = Path(run_dir)
    for key, given in (("data.path", cfg.data.path), ("data.test_path", cfg.data.test_path)):
        if given is None:
            continue
        data_root = Path(given).resolve()
        data_root = data_root if data_root.is_dir() else data_root.parent
        if run_dir.resolve().is_relative_to(data_root):
            raise UserError(f"run directory {run_dir} is inside the input dataset {data_root} ({key}); "
                            "the input is never written to: choose another --run-dir or run_root")
        if data_root.is_relative_to(run_dir.resolve()):
            raise UserError(f"{key} {given} is inside the run directory {run_dir}, whose files the tool replaces; "
                            "move the dataset out of it or choose another --run-dir or run_root")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} exists and is not a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.claim(run_dir)  # before anything is written in it
        probe = run_dir / f".probe.{os.getpid()}.tmp"  # a read-only mount refuses this, not mkdir
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        kind = MachineError if exc.errno in _FULL_OR_FORBIDDEN else UserError
        raise kind(f"run directory {run_dir} cannot be created or written to: {exc.strerror or exc}") from None
    return run_dir


@contextmanager
def open_run(cfg: Config, run_dir: Path) -> Iterator[Path]:
    """Check, create and lock the run directory for the whole run; clear what an interrupted run
    left half-written; freeze the config in it. A second run on the same directory is refused."""
    run_dir = check_run_dir(cfg, run_dir)
    with rundir.run_lock(run_dir):
        rundir.remove_stale_temporaries(run_dir)
        with _disk_errors("the run"):
            write_text(run_dir / "config.yaml", dump_config(cfg))
            write_json(run_dir / rundir.DEVICE, device_record(cfg))
        yield run_dir


def device_record(cfg: Config) -> dict:
    """Where this run computes and how: device, GPU name, precisions, memory format, torch version."""
    from augment.core.base.accel import resolve_precision, use_channels_last

    device = resolve_device(cfg.device)
    return {**describe_device(device), "gan_precision": resolve_precision(cfg.gan.precision, device),
            "gan_channels_last": use_channels_last(cfg.gan.channels_last, device),
            "classifier_precision": resolve_precision(cfg.benchmark.precision, device)}


def run(config: Config | str | Path | None = None, overrides: list[str] | None = None,
        run_dir: str | Path | None = None) -> Summary:
    """The Python API: run every stage in this process (no Prefect) and return the benchmark's typed
    summary. `config`: a loaded Config, a YAML path, or None for the embedded default (configs/default.yaml,
    what `augment run` runs); the run directory defaults to <run_root>/<config name> and resumes like `augment run`."""
    if config is None and config_file.default_config_path().is_file():
        config = config_file.default_config_path()  # (an install without the file: the library defaults)
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    name = None if isinstance(config, Config) else config
    path = Path(run_dir) if run_dir is not None else default_run_dir(cfg, name)
    run_pipeline(cfg, path)
    return read_summary(path)


def run_pipeline(cfg: Config, run_dir: Path) -> dict[str, dict]:
    """Every stage in graph order, without an orchestrator (the flow does the same with one task each)."""
    fps = fingerprints(cfg)
    out = {}
    with graceful_stop(), open_run(cfg, run_dir) as run_dir:
        for stage in STAGES:
            check_stop()  # SIGTERM/SIGINT: stop between stages (long stages stop between steps)
            out[stage.name] = run_stage(stage.name, cfg, run_dir, fps=fps)
    return out
