"""The `augment-dataset` flow: one Prefect task per stage of augment.graph, paths (not tensors) between them.

The flow iterates the stage graph's declaration: it repeats no stage order, no skip logic and
no shard plan. Caching: a stage whose fingerprint (augment.graph.fingerprints) is unchanged is
skipped; its task then ends in a Completed state named "Cached", as a Prefect cache hit would.
Prefect's own result cache stays off: it would skip a stage whose outputs were deleted from
the run directory.

Retries: a stage that fails with a transient I/O error (an OSError such as a dropped network
file system) is retried with exponential back-off; a user's mistake (bad config or input, a
UserError) and a bug are not, since running them again gives the same failure.

Scale-out: a stage with parts (the GAN with gan.shards > 1) runs them in the sub-flow
`stage-parts` on the task runner orchestration.task_runner names: threads in this process, or
Dask workers (prefect-dask; one worker per GPU with dask_cuda.LocalCUDACluster).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from augment import graph
from augment.config import Config, OrchestrationConfig
from augment.core.report.report_text import arm_rows, summary_markdown
from augment.safe_text import md
from augment.errors import UserError, check_stop, kind
from augment.runtime import graceful_stop
from augment.summary import read_summary

log = logging.getLogger("augment")

# Errors that say nothing about the input or the code, and may pass: worth another try.
_DETERMINISTIC_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                            NotADirectoryError)


def is_transient(task, task_run, state: State) -> bool:
    """Prefect retry condition: retry only on a transient I/O error raised by the stage (never on a
    full disk, a refused write or a name too long: graph.PERMANENT_ERRNOS)."""
    exc = state.data
    return (isinstance(exc, OSError) and not isinstance(exc, _DETERMINISTIC_OS_ERRORS)
            and exc.errno not in graph.PERMANENT_ERRNOS)


_TASK_OPTS = dict(cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=is_transient)


def _progress(key: str, description: str):
    """A Prefect progress artifact and the (step, total) callback that moves it."""
    artifact = create_progress_artifact(progress=0.0, key=key, description=description)
    shown = [0.0]

    def progress(step: int, total: int) -> None:
        percent = 100.0 * step / total
        if percent - shown[0] >= 2.0 or step >= total:  # one API call per 2%, not per step
            shown[0] = percent
            update_progress_artifact(artifact_id=artifact, progress=percent)

    return progress


def _publish_report(run_dir: str, info: dict) -> None:
    """The report's verdict and tables as Prefect artifacts under stable keys (their history in the UI)."""
    summary = read_summary(Path(run_dir))
    create_markdown_artifact(markdown=summary_markdown(summary, info["verdict"]), key="augment-report",
                             description=md(info["verdict"][:200]))
    create_table_artifact(table=arm_rows(summary), key="augment-arms",
                          description="Per-arm test results (mean over seeds, 95% CI, gain over real)")


# What a stage's task does in Prefect beyond the stage itself, also when the stage was cached.
_AFTER = {"report": _publish_report}


def _stage_task(stage: graph.Stage):
    """A Prefect task named after the stage that runs it through the graph."""

    def run(cfg: Config, run_dir: str, fps: dict[str, str] | None = None):
        progress = _progress(stage.progress, f"{stage.name} steps") if stage.progress else None
        try:
            info = graph.run_stage(stage.name, cfg, Path(run_dir), progress, fps)
        except UserError as err:  # a user's mistake: a Failed state with one line, no traceback
            log.debug("stage %s failed", stage.name, exc_info=True)  # the trace, under -v / AUGMENT_DEBUG=1
            return Failed(message=str(err), name=kind(err))  # the name keeps the exit status (errors.EXIT_STATUS)
        if stage.name in _AFTER:
            _AFTER[stage.name](run_dir, info)
            return info
        if info.get("skipped"):  # unchanged since the last run: reads as a cache hit in the Prefect UI
            return Completed(name="Cached", message="unchanged since the last run (same inputs and config)", data=info)
        return info

    run.__name__ = run.__qualname__ = stage.name
    run.__doc__ = stage.doc
    return task(name=stage.name, **_TASK_OPTS)(run)


TASKS = {stage.name: _stage_task(stage) for stage in graph.STAGES}


def _with_retries(t, o: OrchestrationConfig):
    """The task with orchestration.retries retries, retry_delay seconds apart, doubling each time."""
    delays = exponential_backoff(o.retry_delay)(o.retries) if o.retry_delay and o.retries else 0
    return t.with_options(retries=o.retries, retry_delay_seconds=delays)


# --------------------------------------------------------------------------- parts (GAN shards)


@task(name="stage-part", tags=["gpu"], **_TASK_OPTS)
def stage_part(name: str, cfg: Config, run_dir: str, part: int):
    """Train (or resume) one part of a stage, e.g. one shard of the per-class GANs."""
    progress = _progress(f"{name}-part-{part}", f"{name} steps, part {part}")
    try:
        return graph.run_part(name, cfg, Path(run_dir), part, progress)
    except UserError as err:
        return Failed(message=str(err), name=kind(err))


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


@flow(name="stage-parts")
def stage_parts(name: str, cfg: Config, run_dir: str, n: int) -> list[dict] | State:
    """The n parts of a stage run as tasks of their own, side by side on the flow's task runner."""
    part_task = _with_retries(stage_part, cfg.orchestration)
    futures = [part_task.with_options(name=f"{name}-shard").submit(name, cfg, run_dir, i) for i in range(n)]
    states = [f.wait() or f.state for f in futures]
    failed = [s for s in states if not s.is_completed()]
    if failed:
        return Failed(message=failed[0].message, name=failed[0].name)
    return [s.result() for s in states]


def _fan_out(name: str, cfg: Config, run_dir: str, n: int) -> State | None:
    """Run a stage's n parts side by side before its task merges them."""
    try:
        runner = task_runner(cfg.orchestration, n)
    except UserError as err:
        return Failed(message=str(err), name=kind(err))
    # Task runs on Dask workers report to this flow's API, also when that is the temporary
    # server `augment run` starts: the workers get its address (else each starts its own).
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = PREFECT_API_URL.value() or str(get_client().api_url).rstrip("/")
    with temporary_settings(updates={PREFECT_API_URL: api}):
        state = stage_parts.with_options(task_runner=runner)(name, cfg, run_dir, n, return_state=True)
    return None if state.is_completed() else Failed(message=state.message, name=state.name)


# --------------------------------------------------------------------------- the flow


@flow(name="augment-dataset", log_prints=True)
def augment_dataset(config_path: str | None = None, overrides: list[str] | None = None, run_dir: str | None = None):
    """Expand a scarce image dataset and measure whether it helped; returns the report's verdict."""
    try:
        cfg = graph.load_config(config_path, overrides)
        with graceful_stop(), graph.open_run(cfg, Path(run_dir) if run_dir else graph.default_run_dir(cfg, config_path)) as path:
            out, info = str(path), {}
            fps = graph.fingerprints(cfg)  # once: the input's content is hashed once per run
            for stage in graph.STAGES:
                check_stop()  # SIGTERM/SIGINT between stages: stop before the next one
                if n := graph.fan_out(stage.name, cfg, path, fps):
                    if (failed := _fan_out(stage.name, cfg, out, n)) is not None:
                        return failed
                state = _with_retries(TASKS[stage.name], cfg.orchestration)(cfg, out, fps, return_state=True)
                if not state.is_completed():  # a Failed state carrying the user's one-line error
                    return Failed(message=state.message, name=state.name)
                info = state.result()
    except UserError as err:  # a bad config, or the run directory is unusable or in use
        return Failed(message=str(err), name=kind(err))
    return {"run_dir": out, "verdict": info["verdict"]}
