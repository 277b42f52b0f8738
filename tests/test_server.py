"""Against a real `prefect server start`: a process work pool and worker run the deployment from
prefect.yaml; `augment schedule` creates future runs; a second run is served from the cache.

Everything runs in subprocesses with their own PREFECT_HOME; the server and workers are stopped
at the end (a worker needs a second signal to stop while a run is in flight).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

PREFECT = [sys.executable, "-m", "prefect"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGINT, and a second one if it is still running (Prefect workers and runners ask for it),
    then SIGTERM and SIGKILL; returns once the process has exited and been reaped (on a busy
    machine a killed process is not gone the instant the signal is sent: polling then raced)."""
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout / 3)
            return
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        proc.kill()
        proc.wait()  # SIGKILL cannot be refused: this returns


class Server:
    """A `prefect server start` on 127.0.0.1 and helpers to drive it like a user's shell does."""

    def __init__(self, home: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": self.url, "PWD": str(REPO),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "NO_ALBUMENTATIONS_UPDATE": "1",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
            "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "PREFECT_CLI_WRAP_LINES": "false",
        }
        self.env.pop("PREFECT_PROFILES_PATH", None)
        self.procs: list[subprocess.Popen] = []
        self.services: list[subprocess.Popen] = []  # processes that must outlive every wait (server, worker)
        self.logs = home / "logs"
        self.logs.mkdir(parents=True)

    def start(self, name: str, *args: str, cwd: Path = REPO, service: bool = False) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        proc = subprocess.Popen(list(args), cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        if service:
            self.services.append(proc)
        return proc

    def cli(self, *args: str) -> str:
        proc = subprocess.run([*PREFECT, *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=1800)  # a backstop: a CLI call ends on its own, slowly on a busy machine
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc.stdout

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-4000:]

    def api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(self.url + path, method=method, data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"})
        # A busy machine answers slowly, not never: the socket's limit is a backstop, and a wait's
        # check that times out polls again (wait); a dead server is seen by its process exiting. An
        # overloaded server answers 503 (its database busy) without acting: the request is sent again.
        end = time.monotonic() + 1800
        while True:
            try:
                with urllib.request.urlopen(req, timeout=300) as resp:
                    return json.loads(resp.read() or "null")
            except urllib.error.HTTPError as err:
                retry = (503,) if method != "GET" else (502, 503, 504)  # a 503 was not acted on: safe to send again
                if err.code not in retry or time.monotonic() > end or any(p.poll() is not None for p in self.services):
                    raise
            time.sleep(2)

    def wait(self, what: str, check, timeout: float = 1800, every: float = 2.0, producer: subprocess.Popen | None = None):
        """Poll check() until it holds. The wait fails as soon as `producer` (the process that makes it
        hold: a runner), or a service (the server, a worker), exits, however busy
        the machine is; a check whose request times out is asked again. `timeout` is only the
        backstop against a hang, not a guess at how long the work takes."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                value = check()
            except urllib.error.HTTPError:  # an answer, not a slow server: the error is the test's
                raise
            except (TimeoutError, urllib.error.URLError, ConnectionError):  # the server is slow to answer
                value = None
            if value:
                return value
            for proc in [*self.services, *([producer] if producer is not None else [])]:
                if proc.poll() is not None:
                    pytest.fail(f"{what}: {proc.args[-1] if proc.args else 'a process'} exited ({proc.returncode}) "
                                f"before it held; logs:\n" + self._all_logs())
            time.sleep(every)
        pytest.fail(f"timed out waiting for {what}; logs:\n" + self._all_logs())

    def _all_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.iterdir()))

    def flow_run(self, run_id: str) -> dict:
        return self.api("GET", f"/flow_runs/{run_id}")

    def finished(self, run_id: str) -> dict:
        """The flow run once it is final: the server and the worker running it are the producers."""
        return self.wait(f"flow run {run_id}", lambda: (_state(r := self.flow_run(run_id), "type") in
                         ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")) and r)

    def task_states(self, run_id: str) -> dict[str, str]:
        runs = self.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 100})
        return {r["name"].rsplit("-", 1)[0]: _state(r, "name") for r in runs}

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


def _state(run: dict, field: str) -> str | None:
    """A run's state field, or None while the server knows the run but not yet its state (task runs
    reach it as events: CI once read a task run whose state was still null)."""
    return (run.get("state") or {}).get(field)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("prefect-server"))
    proc = srv.start("server", *PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(srv.port), service=True)
    try:
        srv.wait("the Prefect server", lambda: _healthy(srv.url), every=1.0, producer=proc)
        yield srv
    finally:
        srv.close()
    assert all(p.poll() is not None for p in srv.procs), "a server, worker or runner process outlived the tests"


def test_process_worker_runs_the_deployment_and_a_rerun_is_cached(server, tmp_path):
    run_dir = tmp_path / "run"
    server.cli("work-pool", "create", "augment", "--type", "process")
    out = server.cli("--no-prompt", "deploy", "-n", "augment-smoke")
    assert "augment-dataset/augment-smoke" in out
    server.start("worker", *PREFECT, "worker", "start", "--pool", "augment", "--limit", "1", "--name", "test-worker",
                 service=True)
    deployment = server.api("GET", "/deployments/name/augment-dataset/augment-smoke")
    assert deployment["work_pool_name"] == "augment" and deployment["parameters"]["config_path"] == "configs/smoke.yaml"

    def trigger() -> str:
        run = server.api("POST", f"/deployments/{deployment['id']}/create_flow_run",
                         {"parameters": {"config_path": "configs/smoke.yaml", "run_dir": str(run_dir)}})
        return run["id"]

    first = server.finished(trigger())
    assert first["state"]["type"] == "COMPLETED", (first["state"], server.log("worker"))
    assert (run_dir / "report" / "report.html").is_file() and (run_dir / "expanded").is_dir()
    keys = {a["key"] for a in server.api("POST", "/artifacts/filter",
                                         {"artifacts": {"flow_run_id": {"any_": [first["id"]]}}, "limit": 50})}
    assert {"augment-report", "augment-arms", "gan-training"} <= keys
    stages = ["ingest", "classical", "judge", "gan", "smote", "synthesize", "benchmark", "expand"]
    # Task-run states reach the server as events, a moment after the flow run finishes.
    server.wait("the first run's task runs", lambda: set(server.task_states(first["id"])) == {*stages, "report"})

    # The same dataset and config again: every stage is a cache hit and no stage body runs (a stage
    # writes its marker only after its body has run, so the markers are untouched).
    markers = {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").iterdir() if p.name != "report.json"}
    second = server.finished(trigger())
    assert second["state"]["type"] == "COMPLETED"
    expected = {**{s: "Cached" for s in stages}, "report": "Completed"}
    server.wait("the second run's task runs", lambda: server.task_states(second["id"]) == expected)
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").iterdir() if p.name != "report.json"} == markers


def test_augment_schedule_serves_a_deployment_whose_schedule_creates_future_runs(server, tmp_path):
    runner = server.start("schedule", sys.executable, "-m", "flows.cli", "schedule", "configs/smoke.yaml",
                          "--cron", "0 2 * * *", "--timezone", "Europe/Berlin", "--name", "nightly-test",
                          "--run-dir", str(tmp_path / "nightly"))

    def deployment():
        try:
            return server.api("GET", "/deployments/name/augment-dataset/nightly-test")
        except OSError:
            return None

    dep = server.wait("the served deployment", deployment, producer=runner)
    assert dep["parameters"]["run_dir"] == str(tmp_path / "nightly")
    assert dep["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
    assert dep["schedules"][0]["schedule"]["timezone"] == "Europe/Berlin"

    def scheduled():
        runs = server.api("POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}},
                                                        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
        return runs if len(runs) >= 3 else None

    runs = server.wait("scheduled flow runs", scheduled, producer=runner)
    starts = sorted(r["expected_start_time"] for r in runs)
    assert all("T00:00:00" in s or "T01:00:00" in s for s in starts), starts  # 02:00 Berlin, in UTC
    assert runner.poll() is None, server.log("schedule")  # still serving
    _stop(runner)
    assert runner.poll() is not None


def test_augment_run_against_a_server_keeps_its_flow_run_and_artifacts(server, tmp_path):
    """The Prefect UI story: with PREFECT_API_URL pointing at a running `prefect server start`,
    `augment run` records its flow run, task runs and artifacts there, found through the client."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    proc = server.start("run", sys.executable, "-m", "flows.cli", "run", "configs/smoke.yaml",
                        "--run-dir", str(tmp_path / "run"), "-q")
    assert proc.wait(timeout=1800) == 0, server.log("run")  # a backstop: the run ends on its own
    assert "Report to send: " in server.log("run")
    with temporary_settings(updates={PREFECT_API_URL: server.url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["augment-dataset"])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=10)
        mine = [r for r in runs if r.parameters.get("run_dir") == str(tmp_path / "run")]
        assert len(mine) == 1 and mine[0].state.is_completed(), [(r.name, r.parameters) for r in runs]
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[mine[0].id])), limit=50)
    assert {"augment-report", "augment-arms", "gan-training"} <= {a.key for a in artifacts}
    report = next(a for a in artifacts if a.key == "augment-report")
    assert "test split" in report.data
