"""The `augment-dataset` flow: one Prefect task per stage, paths (not tensors) between them.

Caching: a stage is skipped when its fingerprint (the content of its inputs and its config
section, augment.runtime.run_stage) is unchanged; the task then ends in a Completed state
named "Cached", as a Prefect cache hit would. Prefect's own result cache stays off: it would
skip a stage whose outputs were deleted from the run directory.

Retries: a stage that fails with a transient I/O error (an OSError such as a dropped network
file system) is retried with exponential back-off; a user's mistake (bad config or input, a
UserError) and a bug are not, since running them again gives the same failure.

Scale-out: with gan.shards > 1 the per-class GAN shards train in the sub-flow `gan-shards`
on the task runner orchestration.task_runner names: threads in this process, or Dask workers
(prefect-dask; one worker per GPU with dask_cuda.LocalCUDACluster).
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from augment.config import Config, OrchestrationConfig, load_config
from augment.data import ingest_info
from augment.errors import UserError
from augment.gan_training import class_shards, gan_fingerprint, train_shard
from augment.pipeline import STAGES, default_run_dir, open_run
from augment.report import arm_rows, summary_markdown
from augment.runtime import stage_fingerprint

# Errors that say nothing about the input or the code, and may pass: worth another try.
_DETERMINISTIC_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                            NotADirectoryError)


def is_transient(task, task_run, state: State) -> bool:
    """Prefect retry condition: retry only on a transient I/O error raised by the stage."""
    exc = state.data
    return isinstance(exc, OSError) and not isinstance(exc, _DETERMINISTIC_OS_ERRORS)


_TASK_OPTS = dict(cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=is_transient)


def _outcome(result: dict) -> dict | State:
    """A stage skipped because nothing changed reads as a cache hit in the Prefect UI."""
    if result.get("skipped"):
        return Completed(name="Cached", message="unchanged since the last run (same inputs and config)", data=result)
    return result


def _call(name: str, cfg: Config, run_dir: str, **kwargs) -> dict | State:
    """Run a stage; a user's mistake becomes a Failed state with one line, not a traceback."""
    try:
        return _outcome(STAGES[name](cfg, Path(run_dir), **kwargs))
    except UserError as err:
        return Failed(message=str(err))


def _stage_task(name: str, doc: str):
    """A Prefect task named after the stage that just runs it."""

    def run(cfg: Config, run_dir: str):
        return _call(name, cfg, run_dir)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    return task(name=name, **_TASK_OPTS)(run)


def _progress(key: str, description: str):
    """A Prefect progress artifact and the (step, total) callback that moves it."""
    artifact = create_progress_artifact(progress=0.0, key=key, description=description)

    def progress(step: int, total: int) -> None:
        update_progress_artifact(artifact_id=artifact, progress=100.0 * step / total)

    return progress


ingest = _stage_task("ingest", "Read and validate the images; split train/val/test; simulate scarcity.")
classical = _stage_task("classical", "Classical augmentation of the train split with albumentations.")
smote = _stage_task("smote", "SMOTE-family over-sampling of train features with imbalanced-learn.")
synthesize = _stage_task("synthesize", "Sample the generator and gate every sample.")
benchmark = _stage_task("benchmark", "Train the classifier per arm and seed; score on the real test split.")
expand = _stage_task("expand", "Build the expanded ImageFolder for the recommended arm.")


@task(name="gan", **_TASK_OPTS)
def gan(cfg: Config, run_dir: str):
    """Train the class-conditional DCGAN (resumes from its checkpoint; merges finished shards)."""
    return _call("gan", cfg, run_dir, progress=_progress("gan-training", "GAN training steps"))


@task(name="report", **_TASK_OPTS)
def report(cfg: Config, run_dir: str):
    """Write the report and publish it as a Prefect artifact."""
    result = _call("report", cfg, run_dir)
    if isinstance(result, State) and result.is_completed():
        result = result.result()
    if isinstance(result, dict):
        summary = json.loads((Path(run_dir) / "benchmark" / "summary.json").read_text())
        create_markdown_artifact(markdown=summary_markdown(summary, result["verdict"]), key="augment-report",
                                 description=result["verdict"][:200])
        create_table_artifact(table=arm_rows(summary), key="augment-arms",
                              description="Per-arm test results (mean over seeds, 95% CI, gain over real)")
    return result


def _with_retries(t, o: OrchestrationConfig):
    """The task with orchestration.retries retries, retry_delay seconds apart, doubling each time."""
    delays = exponential_backoff(o.retry_delay)(o.retries) if o.retries and o.retry_delay else 0
    return t.with_options(retries=o.retries, retry_delay_seconds=delays)


# --------------------------------------------------------------------------- GAN shards


@task(name="gan-shard", tags=["gpu"], **_TASK_OPTS)
def gan_shard(cfg: Config, run_dir: str, shard: int):
    """Train (or resume) one shard of the per-class GANs into gan/shards/<shard>/."""
    progress = _progress(f"gan-training-shard-{shard}", f"GAN training steps, shard {shard}")
    try:
        return train_shard(cfg, Path(run_dir), shard, progress)
    except UserError as err:
        return Failed(message=str(err))


def task_runner(o: OrchestrationConfig, tasks: int):
    """The Prefect task runner orchestration.task_runner names, sized for `tasks` parallel tasks."""
    if o.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=o.workers or tasks)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise UserError("orchestration.task_runner 'dask' needs prefect-dask: pip install -e '.[dask]'") from None
    if o.dask_address:
        return DaskTaskRunner(address=o.dask_address)
    if o.dask_cluster:  # e.g. dask_cuda.LocalCUDACluster: one worker per visible GPU unless workers is set
        try:
            return DaskTaskRunner(cluster_class=o.dask_cluster,
                                  cluster_kwargs={"n_workers": o.workers} if o.workers else {})
        except (ImportError, AttributeError, ValueError) as exc:
            raise UserError(f"orchestration.dask_cluster {o.dask_cluster!r} cannot be imported ({exc}); "
                            "for dask_cuda.LocalCUDACluster: pip install dask-cuda") from None
    return DaskTaskRunner(cluster_kwargs={"n_workers": o.workers or tasks, "threads_per_worker": 1})


@flow(name="gan-shards")
def gan_shards(cfg: Config, run_dir: str, n: int) -> list[dict] | State:
    """The n shards of classes train as tasks of their own, side by side on the flow's task runner."""
    shard_task = _with_retries(gan_shard, cfg.orchestration)
    futures = [shard_task.submit(cfg, run_dir, i) for i in range(n)]
    states = [f.wait() or f.state for f in futures]
    failed = [s for s in states if not s.is_completed()]
    if failed:
        return Failed(message=failed[0].message)
    return [s.result() for s in states]


def _train_shards(cfg: Config, run_dir: str) -> State | None:
    """Fan the GAN shards out before the gan task merges them (nothing to do when it is finished)."""
    if not cfg.gan.enabled or cfg.gan.shards == 1 or stage_fingerprint(Path(run_dir), "gan") == gan_fingerprint(cfg):
        return None
    n = len(class_shards(len(ingest_info(Path(run_dir))["classes"]), cfg.gan.shards))
    try:
        runner = task_runner(cfg.orchestration, n)
    except UserError as err:
        return Failed(message=str(err))
    # Task runs on Dask workers report to this flow's API, also when that is the temporary
    # server `augment run` starts: the workers get its address (else each starts its own).
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = PREFECT_API_URL.value() or str(get_client().api_url).rstrip("/")
    with temporary_settings(updates={PREFECT_API_URL: api}):
        state = gan_shards.with_options(task_runner=runner)(cfg, run_dir, n, return_state=True)
    return None if state.is_completed() else Failed(message=state.message)


# --------------------------------------------------------------------------- the flow


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
                if stage is gan and (failed := _train_shards(cfg, out)) is not None:
                    return failed
                value = _with_retries(stage, cfg.orchestration)(cfg, out)
                if isinstance(value, State):
                    if not value.is_completed():  # a Failed state carrying the user's one-line error
                        return Failed(message=value.message)
                    value = value.result()
                result = value
    except UserError as err:  # the run directory is unusable or in use
        return Failed(message=str(err))
    return {"run_dir": out, "verdict": result["verdict"]}
