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
