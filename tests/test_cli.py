import pytest

from flows.cli import build_parser, main


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for option in ("--set", "--run-dir", "--quiet", "config"):
        assert option in out


def test_top_level_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "run" in capsys.readouterr().out


def test_parser_defaults():
    args = build_parser().parse_args(["run"])
    assert args.config is None and args.overrides == [] and args.run_dir is None


def test_bad_config_is_one_line_before_prefect_starts(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gan:\n  stepz: 1\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"augment: error: {bad}: unknown config key 'gan.stepz'"


def test_bad_override_is_one_line(capsys):
    assert main(["run", "--set", "gan.mode=lstm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'gan.mode'" in err[0]


@pytest.mark.parametrize("args, message", [
    (["--cron", "0 2 * *"], "augment: error: --cron '0 2 * *': not a cron expression"),
    (["--cron", "0 2 * * *", "--timezone", "Mars/Base"], "augment: error: --timezone 'Mars/Base': not an IANA time zone"),
    (["--cron", "0 2 * * *", "--set", "gan.shards=0"], "config key 'gan.shards'"),
    (["--cron", "0 2 * * *"], "augment schedule needs a Prefect server"),  # no PREFECT_API_URL
])
def test_schedule_mistakes_are_one_line(capsys, monkeypatch, args, message):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from conftest import SMOKE

    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert main(["schedule", str(SMOKE), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_schedule_help_names_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["schedule", "--help"])
    out = capsys.readouterr().out
    for option in ("--cron", "--timezone", "--name", "--set", "--run-dir", "PREFECT_API_URL"):
        assert option in out


def test_task_runner_mistakes_are_one_line():
    from augment.config import OrchestrationConfig
    from augment.errors import UserError
    from flows.augment_flow import task_runner

    with pytest.raises(UserError, match=r"orchestration.dask_cluster 'no_such_module.Cluster' cannot be imported"):
        task_runner(OrchestrationConfig(task_runner="dask", dask_cluster="no_such_module.Cluster"), 2)
    runner = task_runner(OrchestrationConfig(task_runner="thread"), 3)
    assert runner._max_workers == 3


def test_a_typed_config_mistake_is_reported_before_prefects_server_is_started(capsys, monkeypatch, tmp_path):
    from flows.local_server import EarlyServer

    started = []
    monkeypatch.setattr(EarlyServer, "start", classmethod(lambda cls: started.append(1) or cls()))
    bad = tmp_path / "bad.yaml"
    bad.write_text("gan:\n  steps: -3\n")
    assert main(["run", str(bad)]) == 2 and started == []
    assert "'gan.steps'" in capsys.readouterr().err


def test_with_a_prefect_api_configured_no_temporary_server_is_started():
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, temporary_settings

    from flows.local_server import EarlyServer

    for updates in ({PREFECT_API_URL: "http://127.0.0.1:9/api"}, {PREFECT_API_URL: None, PREFECT_SERVER_EPHEMERAL_ENABLED: False}):
        with temporary_settings(updates=updates):
            early = EarlyServer.start()
            assert early.process is None and early.api_url is None
            early.ready()
            with early.for_the_flow():
                assert PREFECT_API_URL.value() == updates[PREFECT_API_URL]
        early.discard()


@pytest.mark.slow
def test_the_early_server_is_the_one_the_flow_gets_and_a_later_mistake_ends_it(capsys, monkeypatch, tmp_path):
    """The temporary server started before the imports is the one the flow's client talks to (Prefect
    boots none of its own), and later runs of this process reuse it; a mistake found after it started
    ends it at once."""
    from prefect.client.orchestration import get_client
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from conftest import SMOKE
    from flows.local_server import EarlyServer

    def second_boot(self):
        raise AssertionError("the flow's client started a server of Prefect's own")

    monkeypatch.setattr(SubprocessASGIServer, "_run_uvicorn_command", second_boot)
    monkeypatch.setattr(EarlyServer, "_running", None)  # this test's server only
    with temporary_settings(updates={PREFECT_API_URL: None}):
        early = EarlyServer.start()
        early.ready()
    proc = early.process
    try:
        assert early.error is None and early.up
    except AssertionError:
        early.stop()
        raise
    with temporary_settings(updates={PREFECT_API_URL: None}):
        with early.for_the_flow(), get_client(sync_client=True) as client:
            assert str(client.api_url).rstrip("/") == early.api_url and client.api_healthcheck() is None
            assert PREFECT_UI_URL.value() == ""  # no "View at" link to a UI it does not serve
        assert EarlyServer.start() is early  # a later run in this process: the same server

        not_a_folder = tmp_path / "file"
        not_a_folder.write_text("")
        assert main(["run", str(SMOKE), "--run-dir", str(not_a_folder)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert proc.poll() is not None and early.process is None and EarlyServer._running is None


@pytest.mark.slow
def test_the_temporary_server_ends_itself_when_its_process_is_killed(tmp_path):
    """A SIGKILL leaves no atexit hook to stop it: the server notices its parent is gone and ends."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from prefect.settings import PREFECT_API_URL, temporary_settings\n"
        "from flows.local_server import EarlyServer\n"
        "with temporary_settings(updates={PREFECT_API_URL: None}):\n"
        "    early = EarlyServer.start()\n"
        "    early.ready()\n"
        "print(early.process.pid, early.up, flush=True)\n"
        "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pid, up = parent.stdout.readline().split()
    assert up == "True"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        if open(f"/proc/{pid}/stat").read().split()[2] == "Z":  # ended, not yet reaped by init
            break
        time.sleep(0.2)
    else:
        os.kill(int(pid), signal.SIGKILL)
        raise AssertionError("the server outlived its killed parent")


def test_a_temporary_server_that_fails_to_start_is_ended_and_prefect_starts_its_own(monkeypatch):
    """A server that exits during its start: ready() records why, and the flow's settings are left
    alone (Prefect then starts its own temporary server, which reports its own error)."""
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.local_server import EarlyServer

    monkeypatch.setattr(EarlyServer, "_running", None)
    monkeypatch.setattr(EarlyServer, "_launch", lambda self, env: setattr(self, "port", 9) or setattr(
        self, "process", subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])))
    with temporary_settings(updates={PREFECT_API_URL: None}):
        early = EarlyServer.start()
        early.ready()
        assert "status 7" in str(early.error) and early.process is None and EarlyServer._running is None
        with early.for_the_flow():
            assert PREFECT_API_URL.value() is None

    def refused(self, env):  # no process can be started (a sandbox, no file descriptors left)
        self.port = 9
        raise OSError("no process")

    monkeypatch.setattr(EarlyServer, "_launch", refused)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        early = EarlyServer.start()
        early.ready()
        assert "no process" in str(early.error) and early.process is None and early.api_url is None
        assert EarlyServer._running is None and not early.up
        with early.for_the_flow():
            assert PREFECT_API_URL.value() is None


def test_the_command_imports_without_the_collector_and_runs_the_flow_with_it(monkeypatch):
    """entry() (the `augment` command): the cyclic collector is off while main() starts up, on again (the
    imports frozen) once the flow is imported, and the whole heap frozen before the interpreter's exit.
    main() called from Python leaves the caller's collector alone."""
    import gc

    import flows.cli as cli

    seen = {}

    def fake_main(argv=None, *, own_process=False):
        seen["during start-up"] = gc.isenabled()
        cli._imported(own_process)
        seen["during the flow"], seen["frozen"] = gc.isenabled(), gc.get_freeze_count()
        seen["made"] = [[] for _ in range(1000)]  # the run's objects: entry() freezes them before the exit
        return 3

    monkeypatch.setattr(cli, "main", fake_main)
    try:
        with pytest.raises(SystemExit) as stopped:
            cli.entry()
        seen["at exit"] = gc.get_freeze_count()
    finally:
        gc.unfreeze()
        gc.enable()
    assert stopped.value.code == 3
    assert seen["during start-up"] is False and seen["during the flow"] is True and seen["frozen"] > 0
    assert seen["at exit"] > seen["frozen"] + 900
    before = gc.isenabled(), gc.get_freeze_count()
    cli._imported(False)
    assert (gc.isenabled(), gc.get_freeze_count()) == before
