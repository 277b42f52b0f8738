"""The tiny-val protocol: choices by repeated stratified k-fold over real train+val, test never read."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from augment.core.bench.selection import choose_protocol, fold_count, fold_indices, without_held_out


def test_k_fold_replaces_val_below_the_threshold_or_when_asked():
    assert choose_protocol("auto", 5, 2)[0] == "kfold" and choose_protocol("auto", 5, 4)[0] == "kfold"
    assert choose_protocol("auto", 5, 5)[0] == "val"
    assert choose_protocol("val", 5, 1)[0] == "val" and choose_protocol("kfold", 5, 100)[0] == "kfold"
    assert "fewer than benchmark.kfold_below (5)" in choose_protocol("auto", 5, 2)[1]


def test_every_run_of_k_seeds_holds_out_each_image_once_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [7, 6, 9])
    folds = fold_indices(labels, 5, 7, random_state=3)
    assert len(folds) == 7
    first = np.concatenate([held for _, held in folds[:5]])
    assert sorted(first) == list(range(len(labels)))  # seeds 0-4: every image held out exactly once
    for fit, held in folds:
        assert not set(fit) & set(held) and len(fit) + len(held) == len(labels)
        assert set(labels[held]) == {0, 1, 2}  # stratified: each fold holds every class
    assert not np.array_equal(folds[5][1], folds[0][1])  # seeds 5-6: a second, reshuffled repeat
    again = fold_indices(labels, 5, 7, random_state=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert fold_count(5, np.repeat([0, 1], [3, 9])) == 3  # lowered to the smallest class


def test_synthetic_images_of_a_held_out_parent_are_left_out():
    rows = pd.DataFrame({
        "parent_id": ["real-a", "real-b", pd.NA, "real-c"],
        "params": ['[["Affine", {}]]', "[]", None, json.dumps({"parents": ["real-c", "real-d"]})],
    })
    assert without_held_out(rows, ["real-a"]).tolist() == [False, True, True, True]
    assert without_held_out(rows, ["real-d"]).tolist() == [True, True, True, False]  # either SMOTE parent


def _copy(smoke_run, tmp_path, name):
    _, run_dir, _ = smoke_run
    copy = tmp_path / name
    shutil.copytree(run_dir, copy)
    return copy


ARGS = ["benchmark.selection=kfold", "benchmark.seeds=2", "benchmark.share_grid=[0.05, 0.5]",
        "benchmark.arms=[real, real+trivialaugment, real+classical, real+smote]", "benchmark.linear_probe=false"]


def test_k_fold_selection_never_reads_test(smoke_run, tmp_path):
    """The same k-fold benchmark with the test labels scrambled: every choice (shares, their fold
    scores, the recommended arm) is the same; only the test figures move."""
    from augment import rundir
    from augment.graph import load_config, run_stage
    from augment.summary import read_summary
    from conftest import SMOKE

    cfg = load_config(SMOKE, ARGS)
    plain, scrambled = _copy(smoke_run, tmp_path, "plain"), _copy(smoke_run, tmp_path, "scrambled")
    frame = rundir.read_manifest(scrambled)
    test = frame.index[frame["split"] == "test"]
    frame.loc[test, "label"] = np.roll(frame.loc[test, "label"].to_numpy(), 7)
    rundir.write_manifest(scrambled, frame)
    for run_dir in (plain, scrambled):
        assert not run_stage("benchmark", cfg, run_dir)["skipped"]
    a, b = read_summary(plain), read_summary(scrambled)
    assert a.selection.protocol == "kfold" and a.selection.folds == 5 and a.recommendation.chosen_on == "kfold"
    pool = len(rundir.split_rows(frame, "train")) + len(rundir.split_rows(frame, "val"))
    assert a.held_out["val"].images == pool  # "val" scores come from the held-out folds of train+val
    assert a.side_stream == b.side_stream and {c.chosen_on for c in a.side_stream.values()} == {"kfold"}
    assert a.recommendation.arm == b.recommendation.arm
    assert all(a.arms[arm].val == b.arms[arm].val for arm in a.arms)
    assert any(a.mean(arm, "test") != b.mean(arm, "test") for arm in a.arms)
    from augment.core.report.report_text import protocol_text

    assert "5-fold cross-validation" in protocol_text(a) and "never on test" in protocol_text(a)


def test_each_seed_trains_outside_its_fold(smoke_run, tmp_path):
    """Seed s trains on the pool outside fold s, without the copies of held-out images, and is
    scored on fold s as its "val"."""
    from augment import rundir
    from augment.core.bench.selection import parents
    from augment.stages import benchmark

    run_dir = str(_copy(smoke_run, tmp_path, "folds"))
    benchmark._pool.cache_clear()
    benchmark._train.cache_clear()
    x, y, ids = benchmark._pool(run_dir)
    fold = (5, 2, 11, 1)
    fit, held = benchmark._fold(run_dir, fold)
    real_x, real_y = benchmark._real(run_dir, fold)
    assert np.array_equal(real_x, x[fit]) and np.array_equal(real_y, y[fit])
    val_x, val_y = benchmark._scored_on({"run_dir": run_dir, "fold": fold})["val"]
    assert np.array_equal(val_x, x[held]) and set(ids[fit]).isdisjoint(ids[held])
    copies = rundir.split_rows(rundir.read_manifest(run_dir), "train", ("classical", "smote"))
    dropped = [bool(p & set(ids[held])) for p in parents(copies)]
    assert any(dropped) and not all(dropped)
    xs, _, _ = benchmark._synthetic(run_dir, ("classical", "smote"), fold)
    assert len(xs) == len(copies) - sum(dropped)


def test_k_fold_needs_two_images_per_class(smoke_run, tmp_path):
    from augment import rundir
    from augment.errors import UserError
    from augment.graph import load_config, run_stage
    from conftest import SMOKE

    copy = _copy(smoke_run, tmp_path, "one")
    frame = rundir.read_manifest(copy)
    one = frame.index[(frame["source"] == "real") & frame["split"].isin(["train", "val"]) & (frame["label"] == "3")]
    frame.loc[one[1:], "split"] = "test"  # class 3 keeps a single train+val image
    rundir.write_manifest(copy, frame)
    with pytest.raises(UserError, match="benchmark.selection: kfold needs at least 2 real train\\+val images"):
        run_stage("benchmark", load_config(SMOKE, ARGS), copy)
