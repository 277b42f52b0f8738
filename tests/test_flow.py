"""The Prefect flow end to end on the smoke config, under one session-scoped test harness."""

import dataclasses
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO, SMOKE, tree_state, write_image_folder

pytestmark = pytest.mark.slow


def test_flow_runs_every_stage_as_a_task(prefect_harness, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.augment_flow import augment_dataset

    state = augment_dataset(str(SMOKE), [], str(tmp_path / "run"), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["run_dir"] == str(tmp_path / "run")
    assert "test split" in result["verdict"] and (tmp_path / "run" / "expanded").is_dir()

    from prefect.client.schemas.sorting import ArtifactSort, TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=50)
        keys = {a.key for a in client.read_artifacts(sort=ArtifactSort.ID_DESC, limit=50)}
    names = sorted(r.name.rsplit("-", 1)[0] for r in runs)
    assert names == sorted(["ingest", "classical", "judge", "gan", "smote", "synthesize", "benchmark", "expand", "report"])
    assert {"augment-report", "augment-arms", "gan-training"} <= keys

    # Re-running resumes: every stage is skipped and reads as a cache hit; the verdict is the same.
    again = augment_dataset(str(SMOKE), [], str(tmp_path / "run"), return_state=True)
    assert again.result()["verdict"] == result["verdict"]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[again.state_details.flow_run_id])), limit=50)
    states = {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}
    assert states == {**{s: "Cached" for s in names}, "report": "Completed"}, states


def _task_runs(flow_run_id):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        ids = [flow_run_id, *(f.id for f in subflows)]
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=100)


def test_gan_shards_fan_out_on_dask_workers_and_match_an_in_process_run(prefect_harness, tmp_path):
    """gan.shards: 2 with the Dask task runner: each shard is a task run on a Dask worker process,
    reported to the same Prefect API; the merged GAN is bit-identical to training the shards in one
    process (augment.graph, no Prefect)."""
    import torch

    from augment.graph import load_config
    from augment.graph import run_pipeline
    from flows.augment_flow import augment_dataset

    sets = ["gan.shards=2", "orchestration.task_runner=dask", "benchmark.seeds=1", "benchmark.arms=[real]"]
    state = augment_dataset(str(SMOKE), sets, str(tmp_path / "dask"), return_state=True)
    assert state.is_completed(), state.message
    runs = _task_runs(state.state_details.flow_run_id)
    shard_runs = [r for r in runs if r.name.startswith("gan-shard-")]
    assert len(shard_runs) == 2 and all(r.state.is_completed() and "gpu" in r.tags for r in shard_runs)
    run_pipeline(load_config(SMOKE, sets), tmp_path / "local")
    a = torch.load(tmp_path / "dask" / "gan" / "checkpoint.pt")
    b = torch.load(tmp_path / "local" / "gan" / "checkpoint.pt")
    for part in ("G", "D", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


def _flaky(error: Exception, fails: int, calls: list):
    def stage(cfg, run_dir, **kwargs):
        calls.append(1)
        if len(calls) <= fails:
            raise error
        return {"ok": True}

    return stage


@pytest.mark.parametrize("error, fails, expected_calls, completes", [
    (OSError(5, "Input/output error"), 2, 3, True),     # transient: retried with back-off until it passes
    (OSError(5, "Input/output error"), 5, 3, False),    # ... at most orchestration.retries times
    (FileNotFoundError(2, "No such file"), 1, 1, False),  # deterministic: not retried
    (ValueError("a bug"), 1, 1, False),                 # a bug: not retried
])
def test_only_transient_io_errors_are_retried(prefect_harness, monkeypatch, tmp_path, error, fails, expected_calls,
                                              completes):
    from prefect import flow

    from augment.config import OrchestrationConfig
    from augment.graph import load_config
    from augment.graph import BY_NAME
    from flows.augment_flow import TASKS, _with_retries

    calls: list = []
    monkeypatch.setitem(BY_NAME, "ingest", dataclasses.replace(BY_NAME["ingest"], run=_flaky(error, fails, calls)))
    task = _with_retries(TASKS["ingest"], OrchestrationConfig(retries=2, retry_delay=0.01))

    @flow
    def one_stage():
        return task(load_config(SMOKE), str(tmp_path))

    state = one_stage(return_state=True)
    assert len(calls) == expected_calls and state.is_completed() == completes


def test_a_users_mistake_is_not_retried(prefect_harness, monkeypatch, tmp_path):
    from prefect import flow

    from augment.config import OrchestrationConfig
    from augment.graph import load_config
    from augment.errors import UserError
    from augment.graph import BY_NAME
    from flows.augment_flow import TASKS, _with_retries

    calls: list = []
    flaky = _flaky(UserError("data.path: no such folder"), 1, calls)
    monkeypatch.setitem(BY_NAME, "ingest", dataclasses.replace(BY_NAME["ingest"], run=flaky))

    @flow
    def one_stage():
        task = _with_retries(TASKS["ingest"], OrchestrationConfig(retries=3, retry_delay=0.01))
        value = task(load_config(SMOKE), str(tmp_path))
        return value.type.value, value.message  # the task's Failed state, as the main flow sees it

    assert one_stage() == ("FAILED", "data.path: no such folder") and len(calls) == 1


def test_flow_fails_with_the_users_one_line_error(prefect_harness, tmp_path):
    from flows.augment_flow import augment_dataset

    root = write_image_folder(tmp_path / "in", {"a": 6, "b": 6})
    (root / "b" / "zz_broken.png").write_bytes(b"nope")
    before = tree_state(root)
    state = augment_dataset(str(SMOKE), ["data.source=folder", f"data.path={root}"], str(tmp_path / "run"),
                            return_state=True)
    assert state.is_failed()
    assert "zz_broken.png: not a readable image" in state.message
    assert tree_state(root) == before


def test_cli_runs_the_smoke_config(tmp_path):
    """The real console entry point, in its own process with Prefect's temporary server."""
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(SMOKE), "--run-dir", str(tmp_path / "run"), "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test split" in proc.stdout and "Report to send: " in proc.stdout and "report.html" in proc.stdout
    Image.open(next((tmp_path / "run" / "expanded").rglob("*.png"))).verify()
    # -q: warnings and the final summary only; none of Prefect's INFO lines, no progress bars
    quiet = proc.stdout + proc.stderr
    assert "INFO" not in quiet and "step/s" not in quiet, quiet[:2000]
    assert proc.stdout.strip().splitlines()[-2].startswith(("No synthetic", "The best synthetic", "Expanding"))
