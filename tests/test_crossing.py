"""The benchmark's two steps (issue 33): (a) a recipe chosen among the recipe arms on val, (b) that recipe
crossed with every synthetic source; the choice never reads test, and a crossed arm trains on what its
name says."""

import shutil

import numpy as np
import torch

from augment import rundir
from augment.config import BenchmarkConfig
from augment.core.bench.jobs import JobPlan, plan_jobs
from augment.core.bench.selection import choose_recipe
from augment.registry import ARMS, CROSS_SOURCES, RECIPES, crossed

SOURCES = {"real", "classical", "smote", "gan"}


def _records(val: float, test: float) -> dict:
    return {"records": [{"split": "val", "metric": "balanced_accuracy", "value": val, "class": None},
                        {"split": "test", "metric": "balanced_accuracy", "value": test, "class": None}]}


def test_every_recipe_crossed_with_every_source_is_an_arm_of_that_recipe_and_source():
    for recipe, spec in RECIPES.items():
        for source in CROSS_SOURCES:
            arm = ARMS[crossed(recipe, source)]
            assert (arm.kind, arm.recipe, arm.source, arm.augment) == ("synthetic", recipe, source, spec.augment)
            assert arm.sources == (*spec.sources, source)
    assert ARMS["real+gan"].source == "gan" and ARMS["synthetic_only"].source is None
    assert ARMS["real+balanced"].recipe is None  # a sampling choice, not a recipe: never crossed


def test_the_recipe_is_chosen_on_val_alone_and_a_tie_goes_to_the_plainer_recipe():
    jobs = plan_jobs(BenchmarkConfig(seeds=2), 0, SOURCES, True, 1.0, 10, False, 64)
    assert jobs.recipes == list(RECIPES) and jobs.cross == ["smote", "gan"]
    finished = {f"{a}/{s}": _records(v, 1 - v) for a, v in zip(RECIPES, (0.5, 0.8, 0.8, 0.7)) for s in range(2)}
    assert jobs.recipe(finished) == "real+classical"  # tied with real+trivialaugment on val; test (inverted) unread
    assert choose_recipe({"real": 0.9, "real+classical": 0.8}) == "real"
    # step (b) adds what the config does not list: real+smote and real+gan are default arms
    assert jobs.crossed("real+classical") == jobs.added("real+classical") == ["real+classical+smote", "real+classical+gan"]
    assert jobs.added("real") == [] and jobs.most_added == 2
    listed = plan_jobs(BenchmarkConfig(arms=["real", "real+classical", "real+classical+gan"]), 0, SOURCES, True, 1.0, 10,
                       False, 64)
    assert listed.added("real+classical") == ["real+classical+smote"]


def test_a_member_source_is_its_generators_kept_rows_and_needs_that_generator():
    """gan:mix is the kept GAN rows the mix member drew; an arm or cross source naming a generator gan.mode
    does not train is a one-line config error; step (b) crosses with a member source where it has rows."""
    import pandas as pd
    import pytest

    from augment.config import Config

    frame = pd.DataFrame({"id": list("abcdef"), "split": "train", "path": "p", "kept": [True] * 5 + [False],
                          "source": ["real", "gan", "gan", "gan", "smote", "gan"],
                          "generator": ["in", "per_class", "mix", "mix", "SMOTE", "mix"]})
    assert list(rundir.split_rows(frame, "train", ("gan:mix",))["id"]) == ["c", "d"]
    assert list(rundir.split_rows(frame, "train", ("real", "gan:per_class"))["id"]) == ["a", "b"]
    assert list(rundir.split_rows(frame, "train", ("gan", "gan:mix"))["id"]) == ["b", "c", "d"]
    assert ARMS["real+gan:mix"].source == "gan:mix" and ARMS["real+gan:mix"].sources == ("real", "gan:mix")
    with pytest.raises(ValueError, match="benchmark.cross_sources 'gan:hydra' reads the samples of generator 'hydra'"):
        Config(benchmark={"cross_sources": ["gan", "gan:hydra"]})
    with pytest.raises(ValueError, match="benchmark.arms 'real\\+gan:mix'.*gan.mode 'per_class'"):
        Config(gan={"mode": "per_class"}, benchmark={"arms": ["real", "real+gan:mix"]})
    b = BenchmarkConfig(cross_sources=["gan", "gan:per_class", "gan:mix"])
    jobs = plan_jobs(b, 0, SOURCES | {"gan:per_class"}, True, 1.0, 10, False, 64)
    assert jobs.cross == ["gan", "gan:per_class"]  # no mix rows: no arm
    assert jobs.added("real+trivialaugment") == ["real+trivialaugment+gan", "real+trivialaugment+gan:per_class"]
    from augment.plan import benchmark_jobs  # --plan counts the member sources gan.mode trains

    planned = benchmark_jobs(Config(benchmark={"cross_sources": ["gan", "gan:mix"]}), 10, "cpu", (8, 8))
    assert planned.cross == ["gan", "gan:mix"]


def test_no_step_b_without_sources_and_none_for_a_source_without_images():
    assert plan_jobs(BenchmarkConfig(cross_sources=[]), 0, SOURCES, True, 1.0, 10, False, 64).most_added == 0
    jobs = plan_jobs(BenchmarkConfig(), 0, {"real", "classical", "gan"}, True, 1.0, 10, False, 64)
    assert jobs.cross == ["gan"] and jobs.added("real+classical+trivialaugment") == ["real+classical+trivialaugment+gan"]


def test_scrambled_test_labels_change_no_choice(smoke_run, tmp_path):
    """The recipe, every share and the recommended arm come from val: the smoke run's benchmark again
    with the test split's labels shuffled chooses exactly as before and scores val exactly as before."""
    from augment.stages import benchmark
    from augment.summary import read_summary

    cfg, run_dir, _ = smoke_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    frame = rundir.read_manifest(copy)
    test = frame.index[frame["split"] == "test"]
    frame.loc[test, "label"] = np.random.default_rng(0).permutation(frame.loc[test, "label"].to_numpy())
    rundir.write_manifest(copy, frame)
    benchmark.run(cfg, copy)
    before, after = read_summary(run_dir), read_summary(copy)
    assert after.crossing.recipe == before.crossing.recipe and after.crossing.arms == before.crossing.arms
    assert {a: c.share for a, c in after.side_stream.items()} == {a: c.share for a, c in before.side_stream.items()}
    assert after.recommendation.arm == before.recommendation.arm and list(after.arms) == list(before.arms)
    assert all(after.mean(a, "val") == before.mean(a, "val") for a in before.arms)
    assert any(after.mean(a) != before.mean(a) for a in before.arms)  # test was scored, on the scrambled labels


def _job(cfg, run_dir, arm: str, classical) -> dict:
    info = rundir.ingest_info(run_dir)
    return dict(key=f"{arm}/0", run_dir=str(run_dir), arm=arm, seed=0, seed_value=1, trainer={}, fold=None,
                classifier="cnn", device="cpu", classes=info["classes"], classical=classical, balanced=False,
                stream=dict(share=0.25, weight=1.0, soft_labels=False, temperature=2.0, online=False, bn_seed=0, gate=()))


def test_a_crossed_arms_batches_hold_its_recipe_and_its_source(smoke_run):
    """On the smoke run: real+classical+trivialaugment+gan trains with the classical pipeline and
    TrivialAugmentWide on the fly, and a quarter of every batch is drawn from the kept GAN samples, no
    other row; with the classical copies instead, +smote's side stream is the copies and the SMOTE images."""
    from augment.core.classify.side_stream import BatchSampler, per_batch
    from augment.core.transforms.copies import transforms_for
    from augment.stages.benchmark import _task

    cfg, run_dir, _ = smoke_run
    frame = rundir.read_manifest(run_dir)
    k = len(rundir.ingest_info(run_dir)["classes"])
    on_the_fly = transforms_for(cfg.classical, 1)
    for arm, classical, sources in (("real+classical+trivialaugment+gan", on_the_fly, {"gan"}),
                                    ("real+classical+trivialaugment+gan:per_class", on_the_fly, {"gan:per_class"}),
                                    ("real+classical+trivialaugment+smote", None, {"classical", "smote"})):
        task = _task(_job(cfg, run_dir, arm, classical))
        assert (task.classical, task.augment) == (classical is not None, "trivialaugment")
        synthetic = rundir.split_rows(frame, "train", tuple(sources))
        sources = {s.partition(":")[0] for s in sources}  # the manifest's source column
        assert len(task.x) == len(rundir.split_rows(frame, "train")) and len(synthetic) > 0
        assert np.array_equal(task.stream.x, rundir.load_rows(run_dir, synthetic)[0])  # exactly its source's rows
        n_real, batch = len(task.x), 32
        sampler = BatchSampler(task.y, task.stream.y, k, batch, task.stream.share, torch.Generator().manual_seed(0))
        drawn_from = set()
        for _, indices in zip(range(20), sampler):
            drawn = np.asarray(indices)
            assert (drawn >= n_real).sum() == per_batch(batch, n_real, task.stream) == 8  # round(0.25 x 32)
            drawn_from |= set(synthetic["source"].to_numpy()[drawn[drawn >= n_real] - n_real])
        assert drawn_from == sources  # every source of the stream reaches the batches


VAL = {"real": 0.5, "real+classical": 0.6, "real+trivialaugment": 0.7, "real+classical+trivialaugment": 0.7}


def _fake_round(jobs: list[dict], val: dict = VAL) -> list[dict]:
    """A stand-in for train_and_score: val decided by the arm and share, test by nothing the choice may read."""
    out = []
    for j in jobs:
        v = val[j["arm"]] if j["arm"] in val else 0.6 + (j["share"] or 0) / 10
        out.append(_records(v, float(np.random.default_rng(len(j["key"])).random())))
    return [dict(o, key=j["key"]) for o, j in zip(out, jobs)]


def _train_all(tmp_path, monkeypatch, finished=None, val=VAL, phases=None, **benchmark):
    """The stage's job loop over a plan with _fake_round: (plan, shares, recipe, keys trained, finished);
    `phases` (a list) gets the keys of each call's rounds, one list a call."""
    from augment.graph import load_config
    from augment.stages import benchmark as stage
    from conftest import SMOKE

    trained = []
    monkeypatch.setattr(stage, "train_and_score", lambda jobs: trained.extend(j["key"] for j in jobs) or _fake_round(jobs, val))
    if phases is not None:
        from augment.core.base.parallel import run_jobs

        monkeypatch.setattr(stage, "run_jobs", lambda fn, rounds, *a, **k: phases.append([j["key"] for r in rounds for j in r])
                            or run_jobs(fn, rounds, *a, **k))
    cfg = load_config(SMOKE, [f"benchmark.{k}={v}" for k, v in {"workers": 1, "seeds": 2, **benchmark}.items()])
    jobs = plan_jobs(cfg.benchmark, 0, SOURCES, True, 1.0, 10, False, 64)
    finished = dict(finished or {})
    shares, recipe = stage._train_all(cfg, tmp_path, jobs, lambda j: dict(key=j.key, arm=j.arm, share=j.share), finished,
                                      "fp", 1, torch.device("cpu"), None)
    return jobs, shares, recipe, trained, finished


def test_the_job_loop_trains_every_job_once_under_each_protocol(tmp_path, monkeypatch):
    """Val and k-fold, chosen and fixed shares, the copies' recipe a side stream (smoke's
    classical_on_the_fly: false): each job trains once, step (b) adds the chosen recipe's arms,
    and the plan's count is what trained when the recipe is the one adding the most."""
    for extra in ({}, {"selection": "kfold"}, {"synthetic_share": 0.3}, {"selection": "kfold", "synthetic_share": 0.3}):
        jobs, shares, recipe, trained, finished = _train_all(tmp_path, monkeypatch, **extra)
        assert recipe == "real+trivialaugment"  # 0.7, tied with +classical: the plainer one
        # nothing twice; the plan's count exact, but for step (b)'s choices foreseen for another recipe (val only)
        assert bool(jobs.foreseen) == (extra == {})
        assert len(trained) == len(set(trained)) == sum(jobs.count()) + len(jobs.foreseen), extra
        arms = jobs.arms + jobs.added(recipe)
        assert jobs.added(recipe) == ["real+trivialaugment+smote", "real+trivialaugment+gan"]
        assert all(f"{a}/{s}" in finished for a in arms for s in range(2)) and set(shares) == set(jobs.streams + jobs.added(recipe))
        if "synthetic_share" not in extra:
            assert all(c["share"] == 0.5 for a, c in shares.items() if a not in RECIPES)  # the fake's best, on val


def test_step_b_foreseen_for_the_chosen_recipe_trains_one_round_sooner(tmp_path, monkeypatch):
    """JobPlan.foreseen: step (b)'s share choices for the last recipe train with step (a)'s first rounds.
    When val chooses that recipe, its crossed arms train in the next call, beside the side-stream arms
    (one call fewer than when it does not), each job once, and every choice and result is the one
    made without foreseeing (the fake's scores depend on the job alone)."""
    best = {**VAL, "real+classical+trivialaugment": 0.8}
    runs = {}
    for foresee in (True, False):
        if not foresee:
            monkeypatch.setattr(JobPlan, "foreseen", property(lambda self: []))
        phases = []
        jobs, shares, recipe, trained, finished = _train_all(tmp_path / str(foresee), monkeypatch, val=best, phases=phases)
        assert recipe == "real+classical+trivialaugment"
        assert len(trained) == len(set(trained)) == sum(jobs.count())  # nothing twice, nothing spent for nothing
        runs[foresee] = (phases, shares, {k: v["records"] for k, v in finished.items()})
    (seen, shares, done), (plain, plain_shares, plain_done) = runs[True], runs[False]
    choices = [j.key for j in jobs.select_for(jobs.added(recipe))]
    assert set(choices) <= set(seen[0]) and not set(choices) & set(plain[0])  # in the first call, foreseen
    assert len(seen) == len(plain) - 1
    assert shares == plain_shares and done == plain_done


def test_a_resumed_job_loop_trains_only_what_is_left(tmp_path, monkeypatch):
    _, _, _, first, done = _train_all(tmp_path, monkeypatch)
    half = dict(list(done.items())[: len(first) // 2])
    _, shares, recipe, again, finished = _train_all(tmp_path, monkeypatch, finished=half)
    assert sorted(again) == sorted(set(first) - set(half)) and recipe == "real+trivialaugment"
    assert {k: v["records"] for k, v in finished.items()} == {k: v["records"] for k, v in done.items()}
