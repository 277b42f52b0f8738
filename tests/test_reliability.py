"""Interruption, concurrency and untrusted files: nothing lost, nothing corrupted, nothing executed."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from augment import rundir
from augment.graph import load_config
from augment.errors import UserError
from conftest import REPO, SMOKE


class Payload:
    """Unpickling this would create a file: proof that a loader executed code from a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_yaml_tags_that_would_run_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError, match=r"evil.yaml: not valid YAML"):
        load_config(cfg)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_are_loaded_without_running_pickled_code(tmp_path):
    from augment.config import GanConfig
    from augment.core.gan.train import build_state, load_checkpoint
    from augment.core.gan.sampling import load_generator

    marker = tmp_path / "pwned"
    torch.save({"fingerprint": "f", "ema": Payload(marker)}, tmp_path / "checkpoint.pt")
    state = build_state(GanConfig(mode="per_class", steps=2, image_size=16, ngf=4, ndf=4, nz=8), 2, 1, 0, torch.device("cpu"))
    with pytest.raises(UserError, match=r"checkpoint.pt: not a checkpoint this tool wrote \(UnpicklingError"):
        load_checkpoint(tmp_path / "checkpoint.pt", state, "f")
    with pytest.raises(UserError, match=r"checkpoint.pt: not a checkpoint this tool wrote"):
        load_generator(tmp_path / "checkpoint.pt", "cpu")
    (tmp_path / "checkpoint.pt").write_bytes(b"\x80garbage")
    with pytest.raises(UserError, match=r"checkpoint.pt: not a checkpoint this tool wrote"):
        load_checkpoint(tmp_path / "checkpoint.pt", state, "f")
    assert not marker.exists()


def test_backbone_weights_are_loaded_without_running_pickled_code(tmp_path):
    from augment.core.classify.classifier import build_backbone

    marker = tmp_path / "pwned"
    torch.save({"fc.weight": Payload(marker)}, tmp_path / "w.pth")
    with pytest.raises(UserError, match=r"w.pth: not resnet18 weights"):
        build_backbone("resnet18", 2, tmp_path / "w.pth", 32, torch.Generator())
    assert not marker.exists()


def test_config_strings_are_names_never_code():
    with pytest.raises(UserError, match=r"config key 'smote.sampler': unknown sampler"):
        load_config(None, ["smote.sampler=__import__('os').system('true')"])
    with pytest.raises(UserError, match=r"config key 'benchmark.classifier'"):
        load_config(None, ["benchmark.classifier=os.system"])


# --------------------------------------------------------------------------- kill and resume

# Smoke-sized, with stages long enough to be caught mid-way.
KILL_OVERRIDES = ["classical.multiplier=4", "gan.steps=200", "gan.checkpoint_every=25", "gan.sample_every=100"]


def _launch(run_dir, *extra: str):
    """`augment run` in its own process group (Prefect's temporary server is a child: kill both)."""
    cmd = [sys.executable, "-m", "flows.cli", "run", str(SMOKE), "--run-dir", str(run_dir), "-q"]
    for item in (*KILL_OVERRIDES, *extra):
        cmd += ["--set", item]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _done(run_dir, stage):
    return (run_dir / "stages" / f"{stage}.json").is_file()


# Where to pull the plug: a condition on the run directory that holds only while that stage runs.
KILL_POINTS = {
    "ingest": lambda d: (d / "images" / "real").is_dir() and not _done(d, "ingest"),
    "classical augmentation": lambda d: _done(d, "ingest") and not _done(d, "classical"),
    "GAN training": lambda d: (d / "gan" / "checkpoint.pt").is_file() and not _done(d, "gan"),
    "benchmark": lambda d: _done(d, "synthesize") and not _done(d, "benchmark"),
}


def _assert_same_outputs(run_dir, reference):
    """The run produced exactly what the reference run did: manifest (image bytes), results, expanded/."""
    ref_frame, ref_results, ref_expanded = _outputs(reference)
    frame, results, expanded = _outputs(run_dir)
    pd.testing.assert_frame_equal(frame, ref_frame)  # same rows, same image bytes (sha256)
    pd.testing.assert_frame_equal(results, ref_results)
    assert expanded == ref_expanded
    return frame


def _outputs(run_dir):
    """What a finished run produced, without timings or the run directory's own path."""
    frame = rundir.read_manifest(run_dir).drop(columns=["score", "novelty"])
    results = pd.read_parquet(run_dir / "benchmark" / "results.parquet")
    expanded = sorted(str(p.relative_to(run_dir)) for p in (run_dir / "expanded").rglob("*.png"))
    return frame, results, expanded


@pytest.mark.slow
def test_sigkill_at_any_stage_then_rerun_gives_the_uninterrupted_result(tmp_path):
    reference = _launch(tmp_path / "reference")
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-2000:]

    run_dir = tmp_path / "interrupted"
    for where, condition in KILL_POINTS.items():
        proc = _launch(run_dir)
        deadline = time.monotonic() + 600
        while not condition(run_dir):
            assert proc.poll() is None, f"the run finished before it reached {where}"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, where
    final = _launch(run_dir)
    out, _ = final.communicate(timeout=600)
    assert final.returncode == 0, out[-2000:]

    frame = _assert_same_outputs(run_dir, tmp_path / "reference")
    assert not list(run_dir.rglob("*.tmp")), "a half-written file was left behind"
    for rel, digest in zip(frame["path"].dropna(), frame["sha256"].dropna()):
        assert hashlib.sha256((run_dir / rel).read_bytes()).hexdigest() == digest


@pytest.mark.slow
def test_a_second_augment_run_on_a_busy_directory_is_refused(tmp_path):
    busy = "gan.steps=1000000"  # the first run is still training when the second starts, however slow that is
    first = _launch(tmp_path / "run", busy)
    deadline = time.monotonic() + 300
    while not (tmp_path / "run" / "config.yaml").is_file():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    second = _launch(tmp_path / "run", busy)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 2  # a mistake (the directory is in use), wherever it is caught
    assert f"run directory {tmp_path / 'run'} is in use by another augment run (pid" in out
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)


def test_a_full_disk_mid_run_is_one_line_and_a_rerun_resumes(smoke_run, tmp_path, monkeypatch):
    """No space left while the gate writes its images: one line naming the stage, the file and the
    mend; nothing half-written is left looking complete; after space is freed the same command
    resumes from the failed stage and gives the uninterrupted result."""
    import errno

    from augment.graph import run_pipeline

    cfg, reference, _ = smoke_run
    run_dir = tmp_path / "run"
    replace = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if f"{os.sep}images{os.sep}gan{os.sep}" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(UserError) as err:
        run_pipeline(cfg, run_dir)
    monkeypatch.undo()
    message = str(err.value)
    assert message.startswith(f"stage synthesize cannot write {run_dir}/images/gan/") and "\n" not in message
    assert message.endswith(": No space left on device; free space or fix the permissions, then run the same "
                            "command again (finished stages are kept)")
    assert not (run_dir / "stages" / "synthesize.json").exists() and not list(run_dir.rglob("*.tmp"))
    assert not (rundir.read_manifest(run_dir)["source"] == "gan").any()

    info = run_pipeline(cfg, run_dir)
    assert [s for s, i in info.items() if not i["skipped"]] == ["synthesize", "benchmark", "expand", "report"]
    _assert_same_outputs(run_dir, reference)


# Where to send the signal, and what each stop leaves to resume from.
STOP_POINTS = {
    "GAN training": (signal.SIGTERM, lambda d: (d / "gan" / "checkpoint.pt").is_file() and not _done(d, "gan")),
    "benchmark": (signal.SIGINT, lambda d: (d / "benchmark" / "partial.json").is_file()),
}


def _group_gone(pgid: int, wait: float = 5.0) -> bool:
    """Whether every process of the run's group (the CLI and Prefect's temporary server) has ended."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _wait_for(proc, run_dir, condition, where):
    deadline = time.monotonic() + 600
    while not condition(run_dir):
        assert proc.poll() is None, f"the run finished before it reached {where}"
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.mark.slow
def test_sigterm_and_sigint_stop_within_10_s_and_a_rerun_gives_the_uninterrupted_result(tmp_path):
    """As `timeout`, Kubernetes or SLURM stop a job: the signal goes to the main process only. It stops at
    the next step boundary with the GAN checkpoint (or the benchmark's finished seeds) written, releases
    the lock, stops Prefect's temporary server, exits 143 (130 for SIGINT) with one line saying how to
    resume, and a re-run gives exactly the uninterrupted result. A second signal exits at once."""
    reference = _launch(tmp_path / "reference")
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-2000:]

    run_dir = tmp_path / "stopped"
    for where, (sig, condition) in STOP_POINTS.items():
        proc = _launch(run_dir)
        _wait_for(proc, run_dir, condition, where)
        sent = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        assert time.monotonic() - sent <= 10, where
        assert proc.returncode == 128 + sig, (where, out[-2000:])
        assert f"augment: stopped by {signal.Signals(sig).name}; finished stages and the last GAN checkpoint are " \
               "kept: run the same command again to resume" in out
        assert "Traceback" not in out and _group_gone(proc.pid), where
        if where == "GAN training":
            assert torch.load(run_dir / "gan" / "checkpoint.pt")["step"] > 0 and not _done(run_dir, "gan")
        else:
            assert not _done(run_dir, "benchmark")

    before = (run_dir / "benchmark" / "partial.json").stat().st_mtime_ns
    proc = _launch(run_dir, "benchmark.seeds=4")  # a changed benchmark: it runs again, long enough to stop twice
    _wait_for(proc, run_dir, lambda d: (d / "benchmark" / "partial.json").stat().st_mtime_ns != before,
              "the benchmark, again")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143 and time.monotonic() - sent <= 5 and _group_gone(proc.pid)

    final = _launch(run_dir)
    out, _ = final.communicate(timeout=600)
    assert final.returncode == 0, out[-2000:]
    _assert_same_outputs(run_dir, tmp_path / "reference")
    assert not (run_dir / "benchmark" / "partial.json").exists()


@pytest.mark.slow
def test_a_real_full_disk_is_one_line_and_the_same_command_resumes_once_there_is_space(tmp_path):
    """A 5 MB tmpfs holds about half of a smoke run: `augment run` stops with one line naming the
    stage and the file, leaves no temporary file, and after the disk grows (remount) the same
    command finishes with exactly the result of a run that never hit a full disk."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        reference = _launch(tmp_path / "reference")
        assert reference.communicate(timeout=600)[1] is None and reference.returncode == 0
        run_dir = mount / "run"
        full = _launch(run_dir)
        out, _ = full.communicate(timeout=600)
        assert full.returncode == 3, out[-2000:]  # the machine refused (errors.MachineError)
        line = next(ln for ln in out.splitlines() if ln.startswith("augment: error: "))
        assert f"cannot write {run_dir}/" in line and ": No space left on device; free space or fix the permissions, then run " \
               "the same command again (finished stages are kept)" in line, line
        assert "Traceback" not in out and not list(run_dir.rglob(".*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        again = _launch(run_dir)
        out, _ = again.communicate(timeout=600)
        assert again.returncode == 0, out[-2000:]
        _assert_same_outputs(run_dir, tmp_path / "reference")
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
