"""The `augment-dataset` flow: one Prefect task per stage, paths (not tensors) between them."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from augment.config import Config, load_config
from augment.errors import UserError
from augment.pipeline import STAGES, default_run_dir, open_run
from augment.report import arm_rows, summary_markdown

# Stages resume through the run directory's own markers (augment.runtime.run_stage), so
# Prefect's result cache stays off: it would skip a stage whose outputs were deleted.
_TASK_OPTS = dict(cache_policy=NO_CACHE, persist_result=False)


def _call(name: str, cfg: Config, run_dir: str, **kwargs) -> dict | State:
    """Run a stage; a user's mistake becomes a Failed state with one line, not a traceback."""
    try:
        return STAGES[name](cfg, Path(run_dir), **kwargs)
    except UserError as err:
        return Failed(message=str(err))


def _stage_task(name: str, doc: str):
    """A Prefect task named after the stage that just runs it."""

    def run(cfg: Config, run_dir: str):
        return _call(name, cfg, run_dir)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    return task(name=name, **_TASK_OPTS)(run)


ingest = _stage_task("ingest", "Read and validate the images; split train/val/test; simulate scarcity.")
classical = _stage_task("classical", "Classical augmentation of the train split with albumentations.")
smote = _stage_task("smote", "SMOTE-family over-sampling of train features with imbalanced-learn.")
synthesize = _stage_task("synthesize", "Sample the generator and gate every sample.")
benchmark = _stage_task("benchmark", "Train the classifier per arm and seed; score on the real test split.")
expand = _stage_task("expand", "Build the expanded ImageFolder for the recommended arm.")


@task(name="gan", **_TASK_OPTS)
def gan(cfg: Config, run_dir: str):
    """Train the class-conditional DCGAN (resumes from its checkpoint)."""
    artifact = create_progress_artifact(progress=0.0, key="gan-training", description="GAN training steps")

    def progress(step: int, total: int) -> None:
        update_progress_artifact(artifact_id=artifact, progress=100.0 * step / total)

    return _call("gan", cfg, run_dir, progress=progress)


@task(name="report", **_TASK_OPTS)
def report(cfg: Config, run_dir: str):
    """Write the report and publish it as a Prefect artifact."""
    result = _call("report", cfg, run_dir)
    if isinstance(result, dict):
        summary = json.loads((Path(run_dir) / "benchmark" / "summary.json").read_text())
        create_markdown_artifact(markdown=summary_markdown(summary, result["verdict"]), key="augment-report",
                                 description=result["verdict"][:200])
        create_table_artifact(table=arm_rows(summary), key="augment-arms",
                              description="Per-arm test results (mean over seeds, 95% CI, gain over real)")
    return result


@flow(name="augment-dataset", log_prints=True)
def augment_dataset(config_path: str | None = None, overrides: list[str] | None = None, run_dir: str | None = None):
    """Expand a scarce image dataset and measure whether it helped; returns the report's verdict."""
    try:
        cfg = load_config(config_path, overrides)
    except UserError as err:
        return Failed(message=str(err))
    try:
        with open_run(cfg, Path(run_dir) if run_dir else default_run_dir(cfg, config_path)) as path:
            out = str(path)
            result: dict = {}
            for stage in (ingest, classical, gan, smote, synthesize, benchmark, expand, report):
                value = stage(cfg, out)
                if isinstance(value, State):  # a Failed state carrying the user's one-line error
                    return Failed(message=value.message)
                result = value
    except UserError as err:  # the run directory is unusable or in use
        return Failed(message=str(err))
    return {"run_dir": out, "verdict": result["verdict"]}
