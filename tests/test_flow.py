"""The Prefect flow end to end on the smoke config, under one session-scoped test harness."""

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
    assert names == sorted(["ingest", "classical", "gan", "smote", "synthesize", "benchmark", "expand", "report"])
    assert {"augment-report", "augment-arms", "gan-training"} <= keys

    # Re-running resumes: every stage is skipped, the verdict is the same.
    again = augment_dataset(str(SMOKE), [], str(tmp_path / "run"), return_state=True)
    assert again.result()["verdict"] == result["verdict"]


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
    assert "test split" in proc.stdout and "report.md" in proc.stdout
    Image.open(next((tmp_path / "run" / "expanded").rglob("*.png"))).verify()
