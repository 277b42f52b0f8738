"""The whole chain on the smoke config, without Prefect: contracts of the run directory."""

import hashlib
import json
import math
import shutil

import pandas as pd
import pytest
from torchvision.datasets import ImageFolder

from augment import rundir
from augment.core.bench.stats import ids_digest
from augment.rundir import REFIT_ROWS
from augment.registry import ARMS, DEFAULT_ARMS
from augment.graph import load_config
from augment.graph import run_pipeline
from conftest import SMOKE, tree_state, write_image_folder


def test_every_stage_ran(smoke_run):
    _, run_dir, info = smoke_run
    assert list(info) == ["ingest", "classical", "judge", "gan", "smote", "synthesize", "benchmark", "expand", "report"]
    assert not any(i["skipped"] for i in info.values())
    for rel in ("config.yaml", "manifest.parquet", "benchmark/results.parquet", "benchmark/summary.json",
                "report/report.md", "report/results.json", "gan/checkpoint.pt", "gan/history.csv",
                "features/real.npz", "features/smote.npz"):
        assert (run_dir / rel).is_file(), rel


def test_manifest_contents(smoke_run):
    cfg, run_dir, _ = smoke_run
    frame = rundir.read_manifest(run_dir)
    assert list(frame.columns) == list(rundir.COLUMNS)
    assert frame["id"].is_unique
    assert set(frame["source"]) == {"real", "classical", "smote", "gan"}
    for rel, digest in zip(frame["path"], frame["sha256"]):
        assert hashlib.sha256((run_dir / rel).read_bytes()).hexdigest() == digest
    classical = frame[frame["source"] == "classical"]
    real_ids = set(frame.loc[frame["source"] == "real", "id"])
    assert classical["parent_id"].isin(real_ids).all()
    smote = frame[frame["source"] == "smote"]
    assert smote["parent_id"].isin(real_ids).all()
    provenance = [json.loads(p) for p in smote["params"]]
    assert all(set(p["parents"]) <= real_ids and 0 <= p["weight"] <= 1 for p in provenance)  # SMOTE on pixels
    assert len(classical) == cfg.classical.multiplier * (frame[(frame["source"] == "real") & (frame["split"] == "train")]).shape[0]
    gan = frame[frame["source"] == "gan"]
    assert len(gan) == 10 * math.ceil(cfg.gan.samples_per_class * cfg.gate.oversample)  # over-generated
    assert gan["score"].between(0, 1).all() and (gan["novelty"] >= 0).all()
    kept = gan[gan["kept"]]
    assert (kept["score"] >= cfg.gate.min_confidence).all() and (kept["novelty"] >= cfg.gate.min_novelty).all()
    assert (kept.groupby("label").size() <= cfg.gan.samples_per_class).all()
    assert gan["kept"].any() and not gan["kept"].all()  # the smoke config exercises both outcomes
    assert gan.loc[~gan["kept"], "reason"].notna().all() and gan.loc[gan["kept"], "reason"].isna().all()


def test_quality_metrics_and_overfitting_signal(smoke_run):
    _, run_dir, _ = smoke_run
    q = json.loads((run_dir / "gan" / "quality.json").read_text())
    assert len(q["classes"]) == 10 and 0 <= q["cas_accuracy_on_val"] <= 1
    for c in q["classes"].values():
        assert c["generated"]["frechet_distance"] >= 0 and 0 <= c["generated"]["recall"] <= 1
        assert isinstance(c["collapsed"], bool)
    history = pd.read_csv(run_dir / "gan" / "history.csv")
    acc = history[["d_acc_train", "d_acc_val"]].dropna().to_numpy()
    assert len(acc) == 2 and ((acc >= 0) & (acc <= 1)).all()  # every gan.sample_every steps


def test_no_synthetic_row_in_val_or_test(smoke_run):
    _, run_dir, _ = smoke_run
    frame = rundir.read_manifest(run_dir)
    held_out = frame[frame["split"].isin(["val", "test"])]
    assert (held_out["source"] == "real").all()
    assert (frame.loc[frame["source"] != "real", "split"] == "train").all()


def test_test_split_is_identical_across_arms(smoke_run):
    """Every arm is scored on the real val/test images ingest split off, and on nothing else."""
    _, run_dir, info = smoke_run
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    frame = rundir.read_manifest(run_dir)
    for split in ("val", "test"):
        ids = frame.loc[frame["split"] == split, "id"]
        assert summary["held_out"][split] == {"images": len(ids), "ids_sha256": ids_digest(ids)}
        assert len(ids) == sum(info["ingest"]["counts"][split].values())
    results = pd.read_parquet(run_dir / "benchmark" / "results.parquet")
    cnn = results[results["classifier"] == "cnn"]
    per_arm = cnn[cnn["split"] == "test"].groupby("arm")["seed"].nunique()
    # smoke is balanced: real+balanced would equal real and is skipped; step (b) adds the chosen recipe's
    # crossed arms to the configured ones
    crossed = set(summary["crossing"]["arms"].values())
    assert set(per_arm.index) == set(DEFAULT_ARMS) - {"real+balanced"} | crossed and (per_arm == 3).all()


def test_linear_probe_runs_in_the_smote_feature_space(smoke_run):
    _, run_dir, _ = smoke_run
    probe = json.loads((run_dir / "benchmark" / "summary.json").read_text())["linear_probe"]
    # on-the-fly arms have no fixed rows; real+balanced equals real on the balanced smoke set
    arms = json.loads((run_dir / "benchmark" / "summary.json").read_text())["arms"]
    assert set(probe) == {a for a in arms if not ARMS[a].augment}
    assert 0.0 <= probe["real+smote"]["test"]["balanced_accuracy"] <= 1.0
    results = pd.read_parquet(run_dir / "benchmark" / "results.parquet")
    assert set(results["classifier"]) == {"cnn", "linear"}


def test_expanded_loads_with_imagefolder(smoke_run):
    _, run_dir, _ = smoke_run
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    arm = summary["recommendation"]["arm"]
    ds = ImageFolder(run_dir / "expanded")
    assert ds.classes == [str(i) for i in range(10)]
    frame = rundir.read_manifest(run_dir)
    val = ((frame["split"] == "val") & (frame["source"] == "real") & frame["kept"]).sum()
    refit = pd.read_parquet(run_dir / REFIT_ROWS)  # classical copies of the val images, when the arm has copies
    assert len(refit) == 0 or "classical" in ARMS[arm].sources
    # the deliverable: train and val (expand.refit), and the copies of val the refit made
    assert len(ds) == summary["arms"][arm]["train_images"] + val + int(refit["kept"].sum())
    image, label = ds[0]
    assert image.size == (8, 8) and label == 0
    readme = (run_dir / "expanded" / "README.md").read_text()  # the recipe, for users outside PyTorch
    assert f"arm `{arm}`" in readme and f"{summary['classifier_steps']} steps of batch" in readme


def test_the_expanded_readme_states_the_synthetic_share_and_weight():
    from augment.graph import load_config
    from augment.stages.expand import how_to_train
    from augment.summary import SideStreamChoice

    class Summary:  # the fields how_to_train reads
        side_stream = {"real+gan": SideStreamChoice(share=0.25, chosen_on="val", weight=0.5)}
        classifier_steps = 600
        balanced_sampling = True

    rows = pd.DataFrame({"source": ["real"] * 4 + ["gan"] * 8, "split": ["train", "val"] * 2 + ["train"] * 8,
                         "generator": [None] * 4 + ["per_class"] * 8})
    text = how_to_train(load_config(None), Summary(), "real+gan", rows)
    assert "4 real images (train, val), 8 gan" in text and "25% of every batch" in text and "loss weight 0.5" in text
    assert "trained on the train split only" in text  # expand.refit_generator is off
    rows = pd.DataFrame({"source": ["real"] * 4 + ["classical"] * 8, "split": ["train", "val"] * 2 + ["train"] * 8,
                         "generator": [None] * 4 + ["albumentations:medium"] * 8})
    on_the_fly = how_to_train(load_config(None, ["benchmark.classical_on_the_fly=true"]), Summary(), "real+classical", rows)
    assert "The classical pipeline on every image of every batch" in on_the_fly and "A.load(\"recipe/classical.json\")" in on_the_fly
    copies = how_to_train(load_config(None, ["benchmark.classical_on_the_fly=false"]), Summary(), "real+classical", rows)
    assert "every image of every batch" not in copies
    assert "Class-balanced sampling" in text


def test_report_states_the_verdict_and_table(smoke_run):
    _, run_dir, info = smoke_run
    md = (run_dir / "report" / "report.md").read_text()
    assert info["report"]["verdict"] in md
    assert "| real |" in md or "| real (recommended) |" in md
    assert "## Data" in md and "```yaml" in md and "## Per-class recall" in md
    assert "Working size: every image is 8x8: the working size." in md  # how the working size was chosen


def test_rerun_resumes_and_a_changed_section_reruns_only_downstream(smoke_run, tmp_path):
    cfg, run_dir, _ = smoke_run
    again = run_pipeline(cfg, run_dir)
    assert all(i["skipped"] for i in again.values())
    changed = run_pipeline(load_config(SMOKE, ["benchmark.seeds=2"]), run_dir)
    assert [n for n, i in changed.items() if not i["skipped"]] == ["benchmark", "expand", "report"]
    run_pipeline(cfg, run_dir)  # back to the module's config for the other tests


def test_folder_input_is_never_written(tmp_path):
    root = write_image_folder(tmp_path / "in", {"a": 8, "b": 8}, size=(8, 8))
    (root / "b" / "broken.png").write_bytes(b"")
    before = tree_state(root)
    cfg = load_config(SMOKE, ["data.source=folder", f"data.path={root}", "data.per_class=null",
                              "data.on_bad_image=skip", "benchmark.seeds=1", "benchmark.steps=5", "gan.steps=2",
                              "gan.samples_per_class=2"])
    run_pipeline(cfg, tmp_path / "run")
    assert tree_state(root) == before  # checksums, sizes and times of every input file
    assert ImageFolder(tmp_path / "run" / "expanded").classes == ["a", "b"]
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    from augment.safe_text import md

    assert f"| {md(root / 'b' / 'broken.png')} | b | not a readable image" in report


def test_run_dir_inside_the_input_is_refused(tmp_path):
    from augment.errors import UserError

    root = write_image_folder(tmp_path / "in", {"a": 6, "b": 6})
    cfg = load_config(SMOKE, ["data.source=folder", f"data.path={root}"])
    with pytest.raises(UserError, match="inside the input dataset"):
        run_pipeline(cfg, root / "runs" / "x")
    assert not (root / "runs").exists()


def test_cuda_without_cuda_fails_before_any_work(tmp_path, monkeypatch):
    import torch

    from augment.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="config key 'device' is 'cuda'"):
        run_pipeline(load_config(SMOKE, ["device=cuda"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_adding_an_image_to_the_input_reruns_ingest(tmp_path):
    from augment.graph import run_stage

    root = write_image_folder(tmp_path / "in", {"a": 6, "b": 6}, size=(8, 8))
    cfg = load_config(SMOKE, ["data.source=folder", f"data.path={root}", "data.per_class=null"])
    assert not run_stage("ingest", cfg, tmp_path / "run")["skipped"]
    assert run_stage("ingest", cfg, tmp_path / "run")["skipped"]
    write_image_folder(root, {"a": 7}, size=(8, 8), seed=1)  # one more image in class a (006.png)
    assert not run_stage("ingest", cfg, tmp_path / "run")["skipped"]
    assert len(rundir.read_manifest(tmp_path / "run")) == 13


def test_the_input_cache_key_is_content_not_file_times(tmp_path):
    """A re-synced copy (new times, same bytes) is a cache hit; an edit that keeps the size and the
    modification time (a clock-skewed sync) is not."""
    import os

    from augment.graph import run_stage

    root = write_image_folder(tmp_path / "in", {"a": 6, "b": 6}, size=(8, 8))
    cfg = load_config(SMOKE, ["data.source=folder", f"data.path={root}", "data.per_class=null"])
    run_stage("ingest", cfg, tmp_path / "run")
    image = root / "a" / "000.png"
    os.utime(image, ns=(1, 1))
    assert run_stage("ingest", cfg, tmp_path / "run")["skipped"]
    data = bytearray(image.read_bytes())
    data[-13] ^= 0xFF  # a byte of the IEND chunk's CRC: same size, decoders do not care
    image.write_bytes(bytes(data))
    os.utime(image, ns=(1, 1))
    assert not run_stage("ingest", cfg, tmp_path / "run")["skipped"]


def test_a_second_run_on_the_same_directory_is_refused_and_a_finished_one_frees_it(tmp_path):
    import os

    from augment.errors import UserError
    from augment.rundir import run_lock

    from augment.rundir import claim

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    claim(run_dir)  # another run made the directory and holds it
    with run_lock(run_dir):
        with pytest.raises(UserError, match=rf"run directory {run_dir} is in use by another augment run "
                                            rf"\(pid {os.getpid()}\)"):
            run_pipeline(load_config(SMOKE), run_dir)
        assert not (run_dir / "config.yaml").exists()  # the refused run wrote nothing
    with run_lock(run_dir):  # released when the holder finished
        pass


def test_temporaries_of_an_interrupted_run_are_removed_under_the_lock(tmp_path):
    from augment.graph import open_run

    from augment.rundir import claim

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    claim(run_dir)  # a run directory the tool made, interrupted mid-write
    (run_dir / "images" / "real").mkdir(parents=True)
    stale = [run_dir / ".manifest.parquet.4242-139871.tmp", run_dir / "images" / "real" / ".x.png.17-3.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    keep = [run_dir / "images" / "real" / "x.png", run_dir / ".notes.tmp"]  # not atomic_path's: never deleted
    for p in keep:
        p.write_bytes(b"png")
    with open_run(load_config(SMOKE), run_dir):
        assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)


def test_benchmark_results_do_not_depend_on_the_number_of_worker_processes(smoke_run, tmp_path):
    """The arms x seeds classifiers run single-threaded, in this process or in a pool of spawned
    workers; either way every number is the same."""
    import shutil

    import pandas as pd

    from augment.graph import run_stage

    cfg, run_dir, _ = smoke_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    from augment.plan import force

    pooled = load_config(SMOKE, ["benchmark.workers=2"])
    assert run_stage("benchmark", pooled, copy)["skipped"]  # a worker count changes no result: cached
    force(pooled, copy, "benchmark")
    assert not run_stage("benchmark", pooled, copy)["skipped"]
    pd.testing.assert_frame_equal(pd.read_parquet(copy / "benchmark" / "results.parquet"),
                                  pd.read_parquet(run_dir / "benchmark" / "results.parquet"))
    assert not (copy / "benchmark" / "partial.json").exists()


def test_every_long_stage_reports_progress(smoke_run, tmp_path):
    """classical, gan, synthesize and benchmark call the progress callback up to their total."""
    import shutil

    from augment.graph import run_stage
    from augment.plan import force

    cfg, run_dir, _ = smoke_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    force(cfg, copy, "classical")  # classical, synthesize, benchmark and what follows
    force(cfg, copy, "gan")
    for name in ("classical", "gan", "synthesize", "benchmark"):
        seen: list[tuple[int, int]] = []
        run_stage(name, cfg, copy, progress=lambda step, total: seen.append((step, total)))
        assert seen and seen[-1][0] == seen[-1][1] > 0, name
        assert all(0 <= s <= t for s, t in seen), name


def test_an_arm_of_one_class_is_left_out_of_the_linear_probe_not_a_crash(smoke_run, tmp_path):
    """When the gate keeps one class's GAN samples only, synthetic_only has nothing for a logistic
    regression to separate: the probe skips it (found by a new user's 30-image run) and the CNN arms still run."""
    from augment import rundir
    from augment.graph import load_config, run_stage
    from augment.summary import read_summary
    from conftest import SMOKE

    _, run_dir, _ = smoke_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    frame = rundir.read_manifest(copy)
    frame.loc[(frame["source"] == "gan") & (frame["label"] != "0"), "kept"] = False  # the smoke gate keeps 0, 4 and 7
    rundir.write_manifest(copy, frame)
    cfg = load_config(SMOKE, ["benchmark.seeds=1", "benchmark.arms=[real, synthetic_only]", "benchmark.cross_sources=[]"])
    assert not run_stage("benchmark", cfg, copy)["skipped"]
    summary = read_summary(copy)
    assert set(summary.arms) == {"real", "synthetic_only"} and set(summary.linear_probe) == {"real"}
