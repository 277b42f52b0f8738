"""The stages in order and the run directory they share; usable without Prefect."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from augment.benchmark import benchmark_stage
from augment.classical import classical_stage
from augment.config import Config, dump_config
from augment.data import ingest_stage
from augment.expand import expand_stage
from augment.gan_training import gan_stage
from augment.report import report_stage
from augment.errors import UserError
from augment.runtime import remove_stale_temporaries, resolve_device, run_lock, write_text
from augment.smote import smote_stage
from augment.synthesis import synthesize_stage

log = logging.getLogger("augment")

# name -> stage entry point taking (cfg, run_dir); the flow runs them in this order.
STAGES: dict[str, Callable[[Config, Path], dict]] = {
    "ingest": ingest_stage,
    "classical": classical_stage,
    "gan": gan_stage,
    "smote": smote_stage,  # after gan: it may work in the trained discriminator's feature space
    "synthesize": synthesize_stage,
    "benchmark": benchmark_stage,
    "expand": expand_stage,
    "report": report_stage,
}


def default_run_dir(cfg: Config, config_path: str | Path | None) -> Path:
    """runs/<config name>: the same config re-run lands in the same directory and resumes."""
    name = Path(config_path).stem if config_path else "default"
    return Path(cfg.run_root) / name


def check_run_dir(cfg: Config, run_dir: Path) -> Path:
    """Check what can be checked before any work: the device, and that the run directory can be used."""
    run_dir = Path(run_dir)
    resolve_device(cfg.device)  # 'cuda' without CUDA fails now, not after an hour of CPU work
    if cfg.data.path is not None:
        data_root = Path(cfg.data.path).resolve()
        data_root = data_root if data_root.is_dir() else data_root.parent
        if run_dir.resolve().is_relative_to(data_root):
            raise UserError(f"run directory {run_dir} is inside the input dataset {data_root}; "
                            "the input is never written to: choose another --run-dir or run_root")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} exists and is not a folder")
    return run_dir


@contextmanager
def open_run(cfg: Config, run_dir: Path) -> Iterator[Path]:
    """Check, create and lock the run directory for the whole run; clear what an interrupted run
    left half-written; freeze the config in it. A second run on the same directory is refused."""
    run_dir = check_run_dir(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        remove_stale_temporaries(run_dir)
        write_text(run_dir / "config.yaml", dump_config(cfg))
        yield run_dir


def run_pipeline(cfg: Config, run_dir: Path) -> dict[str, dict]:
    """Every stage in order, without an orchestrator (the flow does the same with one task each)."""
    with open_run(cfg, run_dir) as run_dir:
        return {name: stage(cfg, run_dir) for name, stage in STAGES.items()}
