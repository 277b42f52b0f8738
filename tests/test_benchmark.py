import math

import numpy as np
import pandas as pd
import pytest

from augment.core.bench.stats import mean_ci, paired_gain, score, summarise
from augment.core.report.report_text import verdict


def test_mean_ci_matches_the_t_interval():
    mean, sd, lo, hi = mean_ci([0.70, 0.72, 0.74])
    assert mean == pytest.approx(0.72) and sd == pytest.approx(0.02)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n)
    assert (lo, hi) == (pytest.approx(0.72 - half), pytest.approx(0.72 + half))
    assert math.isnan(mean_ci([0.5])[2])


def test_paired_gain():
    arm, base = np.array([0.80, 0.82, 0.85, 0.81, 0.84]), np.array([0.70, 0.71, 0.74, 0.73, 0.72])
    g = paired_gain(arm, base)
    diff = arm - base  # 0.10, 0.11, 0.11, 0.08, 0.12
    assert g.gain == pytest.approx(diff.mean())
    assert g.p_value == pytest.approx(stats_t_p(diff))
    assert g.wilcoxon_p == pytest.approx(0.0625)  # the floor for 5 pairs, two-sided
    assert diff.min() <= g.boot_low < g.gain < g.boot_high <= diff.max()
    assert paired_gain(np.array([0.5, 0.6]), np.array([0.5, 0.6])).p_value == 1.0
    assert math.isnan(paired_gain(np.array([0.5]), np.array([0.4])).p_value)


def stats_t_p(diff):
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff)))
    from scipy.stats import t as student

    return 2 * student.sf(abs(t), len(diff) - 1)


def test_score():
    s = score(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), ["a", "b"])
    assert s["accuracy"] == 0.75 and s["balanced_accuracy"] == 0.5
    assert s["recall"] == {"a": 1.0, "b": 0.0}
    assert s["geometric_mean"] == 0.0  # a class never recognised zeroes the geometric mean


def results(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = []
    for (arm, split), vals in values.items():
        for seed, v in enumerate(vals):
            for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
                rows.append(dict(arm=arm, seed=seed, split=split, metric=metric, value=v))
    return pd.DataFrame(rows)


def test_recommendation_is_chosen_on_val_not_test():
    table = results({
        ("real", "val"): [0.70, 0.71, 0.72], ("real", "test"): [0.70, 0.70, 0.70],
        ("real+classical", "val"): [0.80, 0.81, 0.82], ("real+classical", "test"): [0.75, 0.75, 0.76],
        ("real+gan", "val"): [0.75, 0.76, 0.77], ("real+gan", "test"): [0.90, 0.91, 0.92],  # best on test only
    })
    s = summarise(table, ["real", "real+classical", "real+gan"], {"real": 10, "real+classical": 50, "real+gan": 30})
    rec = s.recommendation
    assert {(c.arm, c.base) for c in s.comparisons} == {
        ("real+classical", "real"), ("real+gan", "real"), ("real+gan", "real+classical")}
    assert rec.arm == "real+classical" and rec.chosen_on == "val"
    assert not rec.synthetic_helps_on_val
    assert s.comparison("real+gan", "real").test.gain == pytest.approx(0.21)
    text = verdict(s)
    assert "recommends not using the synthetic data" in text and "'real+classical'" in text
    g = s.recommendation.test_gain_over_real
    assert ("a significant gain" if g.p_value < 0.05 and g.ci_low > 0 else "not statistically significant") in text


def test_verdict_reports_a_synthetic_gain_with_its_interval():
    table = results({
        ("real", "val"): [0.70, 0.71, 0.72], ("real", "test"): [0.70, 0.71, 0.72],
        ("real+gan", "val"): [0.80, 0.81, 0.83], ("real+gan", "test"): [0.80, 0.82, 0.83],
    })
    s = summarise(table, ["real", "real+gan"], {"real": 10, "real+gan": 30})
    assert s.recommendation.arm == "real+gan" and s.recommendation.synthetic_helps_on_val
    text = verdict(s)
    assert "from 71.0% to 81.7%" in text and "+10.7 points" in text and "a significant gain" in text


def test_trivialaugment_is_a_baseline_a_synthetic_arm_must_beat():
    table = results({
        ("real", "val"): [0.70, 0.71, 0.72], ("real", "test"): [0.70, 0.71, 0.72],
        ("real+trivialaugment", "val"): [0.90, 0.91, 0.92], ("real+trivialaugment", "test"): [0.88, 0.89, 0.90],
        ("real+gan", "val"): [0.80, 0.81, 0.83], ("real+gan", "test"): [0.80, 0.82, 0.83],
        ("synthetic_only", "val"): [0.95, 0.96, 0.97], ("synthetic_only", "test"): [0.95, 0.96, 0.97],
    })
    s = summarise(table, ["real", "real+trivialaugment", "real+gan", "synthetic_only"])
    rec = s.recommendation
    assert rec.arm == "real+trivialaugment" and rec.best_synthetic == "real+gan"
    assert not rec.synthetic_helps_on_val  # synthetic_only is a diagnostic, never a candidate


def test_a_tiny_unsupported_val_gain_is_not_enough():
    table = results({
        ("real", "val"): [0.70, 0.75, 0.72], ("real", "test"): [0.70, 0.71, 0.72],
        ("real+gan", "val"): [0.71, 0.74, 0.73], ("real+gan", "test"): [0.90, 0.91, 0.92],
    })
    rec = summarise(table, ["real", "real+gan"]).recommendation
    assert rec.arm == "real" and rec.synthetic_val_gain_over_best_baseline.gain > 0


def test_summary_round_trips_through_its_json(tmp_path):
    """summary.json is written and read through one pair of functions; NaN (one seed) survives."""
    from augment.summary import read_summary, write_summary

    table = results({("real", "val"): [0.7], ("real", "test"): [0.6], ("real+gan", "val"): [0.8],
                     ("real+gan", "test"): [0.9]})
    s = summarise(table, ["real", "real+gan"], {"real": 10, "real+gan": 30})
    write_summary(tmp_path, s)
    back = read_summary(tmp_path)
    assert back.recommendation.arm == s.recommendation.arm and back.train_images == s.train_images
    assert math.isnan(back.arms["real"].test.metrics["accuracy"].ci_low)
    assert back.comparison("real+gan", "real").test.gain == pytest.approx(0.3)


def test_summaries_written_before_the_typed_model_are_still_read():
    """`augment runs` reads history entries of older runs (keys "X vs Y" and "recall[c]")."""
    from augment.summary import summary_from_json

    stat = {"mean": 0.5, "std": 0.1, "ci_low": 0.4, "ci_high": 0.6}
    gain = {"gain": 0.1, "ci_low": 0.0, "ci_high": 0.2, "seeds": 3, "p_value": 0.04, "wilcoxon_p": 0.25,
            "boot_low": 0.05, "boot_high": 0.15}
    arm = {s: {"accuracy": stat, "balanced_accuracy": stat, "recall[a]": stat} for s in ("val", "test")}
    old = {"primary_metric": "balanced_accuracy", "arms": {"real": arm, "real+gan": arm},
           "gains": {"real+gan vs real": {"val": gain, "test": gain}}, "train_images": {"real": 10, "real+gan": 20},
           "recommendation": {"arm": "real", "chosen_on": "val", "rule": "r", "best_baseline": "real",
                              "best_synthetic": "real+gan", "synthetic_val_gain_over_best_baseline": gain,
                              "synthetic_helps_on_val": False, "test_gain_over_real": gain,
                              "test_gain_over_best_baseline": gain, "synthetic_test_gain_over_best_baseline": gain}}
    s = summary_from_json(old)
    assert s.arms["real"].test.recall == {"a": s.arms["real"].test.metrics["accuracy"]}
    assert s.comparison("real+gan", "real").test.p_value == 0.04 and s.train_images["real+gan"] == 20


def test_verdict_wording_follows_significance():
    """A synthetic arm 1 point above the best baseline on val without significance "did not
    significantly beat" it; one below it did not score above it; a significant gain says so."""
    noisy = results({
        ("real", "val"): [0.70, 0.75, 0.72], ("real", "test"): [0.70, 0.71, 0.72],
        ("real+gan", "val"): [0.74, 0.73, 0.73], ("real+gan", "test"): [0.70, 0.72, 0.71],
    })
    s = summarise(noisy, ["real", "real+gan"], {"real": 10, "real+gan": 30})
    g = s.recommendation.synthetic_val_gain_over_best_baseline
    assert 0 < g.gain and g.p_value >= 0.05 and s.recommendation.arm == "real"
    text = verdict(s)
    assert text.startswith(f"The best synthetic arm, 'real+gan', scored +{100 * g.gain:.1f} points above 'real' on "
                           "the validation split but did not significantly beat it (paired t-test p=")
    assert "recommends not using the synthetic data" in text and "beat 'real' on" not in text

    worse = results({
        ("real", "val"): [0.70, 0.71, 0.72], ("real", "test"): [0.70, 0.71, 0.72],
        ("real+gan", "val"): [0.60, 0.62, 0.61], ("real+gan", "test"): [0.60, 0.61, 0.62],
    })
    text = verdict(summarise(worse, ["real", "real+gan"], {"real": 10, "real+gan": 30}))
    assert text.startswith("No synthetic arm (SMOTE or GAN) scored above 'real' on the validation split (the best, "
                           "'real+gan', -10.0 points)")
    text = verdict(summarise(results({("real", "val"): [0.7, 0.71], ("real", "test"): [0.7, 0.71]}), ["real"],
                             {"real": 10}))
    assert text.startswith("No synthetic arm (SMOTE or GAN) was benchmarked")


def test_arms_are_reported_baselines_first_then_synthetic_as_configured():
    table = results({(a, sp): [0.7, 0.71] for a in ("real", "real+gan", "real+classical", "synthetic_only",
                                                      "real+smote") for sp in ("val", "test")})
    s = summarise(table, ["real+gan", "synthetic_only", "real", "real+smote", "real+classical"])
    assert list(s.arms) == ["real", "real+classical", "real+gan", "real+smote", "synthetic_only"]


def test_rounds_are_cut_evenly_for_the_cores_and_never_above_models_per_round():
    """benchmark.models_per_round > 1: a stage's jobs in contiguous rounds of near-equal size, as many as
    a multiple of the cores (every worker the same work), each at most models_per_round; one a round
    is the jobs one by one."""
    from augment.core.bench.jobs import rounds_of

    for n, per_round, cores, sizes in [(22, 16, 2, [11, 11]), (34, 16, 2, [9, 9, 8, 8]), (7, 16, 2, [4, 3]),
                                       (5, 16, 4, [2, 1, 1, 1]), (3, 16, 4, [1, 1, 1]), (100, 64, 1, [50, 50]),
                                       (5, 1, 2, [1] * 5), (0, 16, 2, [])]:
        rounds = rounds_of(list(range(n)), per_round, cores)
        assert [len(r) for r in rounds] == sizes and sum(rounds, []) == list(range(n)), (n, per_round, cores)


def test_models_per_round_auto_stacks_small_images_on_a_cpu_and_many_on_a_gpu():
    """auto: up to 16 SmallCNNs a round on a CPU for images of at most 16x16 (measured faster there),
    one at a time above it or for a torchvision backbone, up to 64 on a GPU; a number as configured."""
    from augment.config import BenchmarkConfig
    from augment.core.bench.jobs import auto_per_round

    auto = BenchmarkConfig()
    assert auto_per_round(auto, False, 8 * 8) == auto_per_round(auto, False, 16 * 16) == 16
    assert auto_per_round(auto, False, 28 * 28) == auto_per_round(auto, False, 16 * 17) == 1
    assert auto_per_round(auto, True, 224 * 224) == 64
    assert auto_per_round(BenchmarkConfig(models_per_round=3), False, 64 * 64) == 3
    backbone = BenchmarkConfig.model_construct(**{**auto.model_dump(), "classifier": "resnet18"})
    assert auto_per_round(backbone, False, 8 * 8) == 1


def test_workers_and_rounds_follow_the_processors_this_process_may_use(monkeypatch):
    """A container's cpuset or taskset gives fewer processors than the machine has: the worker pools and
    the benchmark's rounds are sized by the affinity, not by os.cpu_count()."""
    import os

    from augment.core.base.parallel import auto_workers
    from augment.core.bench.jobs import round_parallel
    from augment.core.transforms.copies import auto_workers as classical_workers
    from augment.runtime import cpu_cores

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert cpu_cores() == round_parallel(False) == auto_workers(40, None, "cpu", 10_000) == 3
    assert classical_workers(10**6, 10**6, None) == 3
    assert round_parallel(True) == 1
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows: the machine's count
    assert cpu_cores() == 64


def test_pool_workers_import_their_jobs_modules_frozen_and_collect_the_rest():
    """job_pool's workers import the jobs' modules with the collector off and freeze them (no collection
    walks them again), then train with the collector on."""
    import gc
    import operator

    from augment.core.base.parallel import job_pool, run_jobs

    with job_pool(2, ("augment.stages.benchmark",)) as pool:
        out = dict(run_jobs(operator.call, [gc.isenabled, gc.get_freeze_count], 2, pool=pool))
    assert out[0] is True and out[1] > 10_000
