"""The Python API, `augment --version` and `augment init`: what a new user touches first."""

import runpy
import sys

import numpy as np
import pytest
from PIL import Image

from augment.errors import UserError
from conftest import REPO, SMOKE, write_image_folder
from flows.cli import main


def test_the_python_api_example_runs_on_the_smoke_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["python_api.py", str(SMOKE), str(tmp_path / "run")])
    runpy.run_path(str(REPO / "examples" / "python_api.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.startswith("recommended arm: ") and "gain over real images alone: " in out
    assert (tmp_path / "run" / "report" / "report.html").is_file()

    from augment import load_config, run
    from augment.summary import Summary

    again = run(load_config(SMOKE, ["benchmark.seeds=3"]), run_dir=tmp_path / "run")  # resumes: nothing re-runs
    assert isinstance(again, Summary) and f"recommended arm: {again.recommendation.arm} " in out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == "augment 0.1.0"


def test_init_writes_a_config_that_run_accepts(tmp_path, monkeypatch, capsys):
    """A photo-like folder: colour, sizes that differ, one class larger, a stray text file and a
    broken image. The written config loads with every check and ingest runs on it."""
    from augment.graph import load_config, run_stage

    root = write_image_folder(tmp_path / "photos", {"cat": 6, "dog": 14}, size=(20, 16), mode="RGB")
    Image.fromarray(np.zeros((30, 24, 3), np.uint8) + 90).save(root / "cat" / "big.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    monkeypatch.chdir(tmp_path)
    assert main(["init", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 classes (7 to 15 images each), colour, 2 image size(s).") and "photos.yaml" in out
    text = (tmp_path / "photos.yaml").read_text()
    assert "channels: 3" in text and "on_bad_image: skip" in text and "balance: true" in text
    cfg = load_config(tmp_path / "photos.yaml")
    assert cfg.data.path == root.resolve() and cfg.data.image_size == "auto"
    info = run_stage("ingest", cfg, tmp_path / "run")
    assert info["classes"] == ["cat", "dog"] and info["skipped_inputs"] == 1 and info["channels"] == 3

    assert main(["init", str(root)]) == 2  # never overwrites without --force
    assert "photos.yaml exists; choose another --out or add --force" in capsys.readouterr().err
    assert main(["init", str(root), "--force"]) == 0


@pytest.mark.parametrize(("side", "gan_size"), [(8, 8), (12, 16), (28, 32)])
def test_init_trains_the_gan_near_the_images_own_size(tmp_path, monkeypatch, side, gan_size):
    """8x8 images (the digits' size): the GAN at their own size, as the embedded default trains it."""
    from augment.graph import load_config

    root = write_image_folder(tmp_path / "small", {"a": 3, "b": 3}, size=(side, side), mode="L")
    monkeypatch.chdir(tmp_path)
    assert main(["init", str(root)]) == 0
    assert load_config(tmp_path / "small.yaml").gan.image_size == gan_size


def test_init_on_a_folder_without_classes_is_one_line(tmp_path):
    from augment.core.data.survey import survey_folder

    (tmp_path / "flat").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(UserError, match=r"flat: found 0 class folder\(s\) with images; at least two are needed"):
        survey_folder(tmp_path / "flat")


def test_init_reads_the_folder_as_ingest_does(tmp_path):
    """A class folder without images stops `augment init` with ingest's one-line error (not a
    config that run then rejects), and train/val/test folders are splits, not classes."""
    from augment.core.data.survey import survey_folder

    root = write_image_folder(tmp_path / "imgs", {"a": 3, "b": 4})
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("todo")
    with pytest.raises(UserError, match=rf"^{root / 'c'}: class folder has no images"):
        survey_folder(root)

    split = tmp_path / "split"
    write_image_folder(split / "train", {"a": 3, "b": 4})
    write_image_folder(split / "val", {"a": 1, "b": 2})
    assert survey_folder(split)["classes"] == {"a": 4, "b": 6}
