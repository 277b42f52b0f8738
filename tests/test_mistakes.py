"""Every mistake a config or a command line can show is one line naming the key, path or value,
before any work starts (and before Prefect's start-up)."""

import os
import subprocess
import sys

import pytest

from augment.config_file import load_config as parse_config
from augment.errors import UserError
from augment.graph import load_config
from conftest import REPO, SMOKE
from flows.cli import main


@pytest.mark.parametrize("override, message", [
    ("smote.params={k_neighbours: 3}",
     r"config key 'smote.params': SMOTE has no parameter 'k_neighbours' \(did you mean 'k_neighbors'\?\)"),
    ("smote.params={k_neighbors: five}", r"config key 'smote.params': The 'k_neighbors' parameter of SMOTE must be"),
    ("smote.params={random_state: 1}", r"SMOTE has no parameter 'random_state'; it is set by the tool"),
    ("classical.transforms=[{__class_fullname__: Affine, rotat: 3}]", r"config key 'classical.transforms': item 0"),
    ("device=gpu", r"config key 'device': expected auto, cpu, cuda or cuda:N"),
    ("gan.enabled=no", r"config key 'gan.enabled': expected true or false, got 'no'"),
    ("benchmark.linear_probe=on", r"config key 'benchmark.linear_probe': expected true or false, got 'on'"),
])
def test_config_mistakes_are_caught_at_load(override, message):
    with pytest.raises(UserError, match=message) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_sampler_arguments_of_combined_samplers_are_checked_too():
    assert load_config(None, ["smote.sampler=SMOTEENN", "smote.params={k_neighbors: 3}"]).smote.params
    with pytest.raises(UserError, match=r"SMOTEENN has no parameter 'k_neigh' \(did you mean 'k_neighbors'\?\)"):
        load_config(None, ["smote.sampler=SMOTEENN", "smote.params={k_neigh: 3}"])


def test_yaml_booleans_are_true_or_false_only(tmp_path):
    (tmp_path / "c.yaml").write_text("gan:\n  enabled: off\n")
    with pytest.raises(UserError, match=r"c.yaml: config key 'gan.enabled': expected true or false, got 'off'"):
        parse_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("gan:\n  enabled: False\nclassical:\n  flips: true\n")
    cfg = parse_config(tmp_path / "c.yaml")
    assert cfg.gan.enabled is False and cfg.classical.flips is True
    # a class named 'no' stays a name, in the file and on the command line
    (tmp_path / "c.yaml").write_text("data:\n  class_counts: {no: 3, yes: 4}\n")
    assert parse_config(tmp_path / "c.yaml").data.class_counts == {"no": 3, "yes": 4}


def test_class_counts_keyed_by_numbers_mean_the_class_names(tmp_path):
    cfg = parse_config(None, ["data.class_counts={0: 3, 1: 4}"])
    assert cfg.data.class_counts == {"0": 3, "1": 4}
    (tmp_path / "c.yaml").write_text("data:\n  class_counts:\n    0: 3\n    1: 4\n")
    assert parse_config(tmp_path / "c.yaml").data.class_counts == {"0": 3, "1": 4}


def test_relative_paths_follow_one_rule(tmp_path, monkeypatch):
    """A relative input path is relative to where it is written (the config file's folder, or the
    current folder for --set), and is absolute once loaded, so the run's frozen config is unambiguous."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.yaml").write_text("data:\n  source: folder\n  path: imgs\nsmote:\n  weights: w.pth\n")
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(tmp_path / "conf" / "c.yaml")
    assert cfg.data.path == tmp_path / "conf" / "imgs" and cfg.smote.weights == tmp_path / "conf" / "w.pth"
    cfg = parse_config(tmp_path / "conf" / "c.yaml", ["data.path=other", "benchmark.weights=b.pth"])
    assert cfg.data.path == tmp_path / "other" and cfg.benchmark.weights == tmp_path / "b.pth"


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`augment` in a real process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)


def test_a_missing_data_path_is_named_as_missing(tmp_path):
    """Not "the run directory is inside the input dataset": the input is not there at all."""
    done = _cli("run", str(REPO / "configs" / "my_folder.yaml"), "--set", f"data.path={tmp_path / 'nope'}",
                "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2
    assert done.stderr == f"augment: error: data.path {tmp_path / 'nope'} does not exist\n"


@pytest.mark.parametrize("where, reason", [
    ("under_a_file/run", "Not a directory"),
    ("/proc/augment-test/run", "No such file or directory"),
])
def test_a_run_directory_that_cannot_be_created_is_one_line(tmp_path, where, reason):
    (tmp_path / "under_a_file").write_text("a file, not a folder")
    run_dir = where if where.startswith("/") else str(tmp_path / where)
    done = _cli("run", str(SMOKE), "--run-dir", run_dir)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"augment: error: run directory {run_dir} cannot be created or written to: {reason}")


def test_the_same_checks_hold_in_process(tmp_path, capsys):
    """main() as a notebook or a wrapper script calls it: the same one line (a temporary server
    started meanwhile is ended: tests/test_cli.py)."""
    (tmp_path / "f").write_text("")
    assert main(["run", str(SMOKE), "--run-dir", str(tmp_path / "f" / "run")]) == 2
    assert capsys.readouterr().err.startswith(f"augment: error: run directory {tmp_path / 'f' / 'run'} cannot be")


def test_the_cli_shows_a_trace_only_when_asked(tmp_path):
    """A user's mistake is one line; AUGMENT_DEBUG=1 (or -v) adds the full trace. Real processes,
    as a user runs them (the mistake is found before the flow starts)."""
    args = ["run", str(SMOKE), "--set", "smote.params={k_neighbours: 3}", "--run-dir", str(tmp_path / "run")]
    plain = _cli(*args)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [
        "augment: error: config key 'smote.params': SMOTE has no parameter 'k_neighbours' (did you mean "
        "'k_neighbors'?); it takes k_neighbors"]
    debug = _cli(*args, env={**os.environ, "AUGMENT_DEBUG": "1"})
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "check_params" in debug.stderr
