"""The quality gate and its metrics on constructed cases where the answer is known."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from augment.core.gate import quality
from augment.core.classify.classifier import train_classifier
from augment.config import GateConfig
from augment.core.gate.gate import apply_alarm, class_quality, judge_samples, select


def test_select_rejects_unconfident_and_copies_and_keeps_the_best_up_to_the_target():
    probs = np.array([
        [0.9, 0.1],  # intended 0, confident, novel: kept
        [0.95, 0.05],  # intended 0, most confident but a copy: rejected
        [0.7, 0.3],  # intended 0, passes but the target of 1 is met: surplus
        [0.6, 0.4],  # intended 1, looks like 0: rejected
        [0.5, 0.5],  # intended 1, exactly at both thresholds: kept
    ])
    novelty = np.array([1.0, 0.01, 1.2, 1.0, 0.25])
    score, kept, codes, reasons = select(probs, np.array([0, 0, 0, 1, 1]), novelty, ["a", "b", "c", "d", "e"], target=1,
                                         min_confidence=0.5, min_novelty=0.25)
    assert codes == [None, "near_copy", "surplus", "low_confidence", None]
    assert score.tolist() == [0.9, 0.95, 0.7, 0.4, 0.5]
    assert kept.tolist() == [True, False, False, False, True]
    assert reasons[0] is None and reasons[4] is None
    assert reasons[1] == "near-copy of real image b (novelty 0.01 < 0.25)"
    assert reasons[2].startswith("surplus: the 1 most confident")
    assert reasons[3] == "confidence 0.40 < 0.5 (looks like class index 0)"


def _passing_cluster():
    """Ten passing samples of one class: the five most confident sit on one point in feature space,
    the other five are spread out."""
    probs = np.stack([np.linspace(0.99, 0.6, 10), 1 - np.linspace(0.99, 0.6, 10)], axis=1)
    feats = np.zeros((10, 2))
    feats[5:] = [[5, 0], [0, 5], [-5, 0], [0, -5], [4, 4]]
    return probs, np.zeros(10, int), np.ones(10), [f"r{i}" for i in range(10)], feats


def test_random_selection_keeps_the_target_among_passing_samples_seeded():
    probs, intended, novelty, ids, feats = _passing_cluster()
    probs[0] = [0.1, 0.9]  # fails the confidence threshold: never kept
    runs = [select(probs, intended, novelty, ids, 4, 0.5, 0.25, how="random", seed=s)[1] for s in (3, 3, 4)]
    assert all(k.sum() == 4 and not k[0] for k in runs)
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
    _, _, codes, reasons = select(probs, intended, novelty, ids, 4, 0.5, 0.25, how="random", seed=3)
    assert codes.count("surplus") == 5 and any("drawn at random" in (r or "") for r in reasons)


def test_farthest_point_selection_spreads_the_kept_samples():
    probs, intended, novelty, ids, feats = _passing_cluster()
    confident = select(probs, intended, novelty, ids, 4, 0.5, 0.25)[1]
    spread = select(probs, intended, novelty, ids, 4, 0.5, 0.25, how="farthest", feats=feats)[1]
    assert np.flatnonzero(confident).tolist() == [0, 1, 2, 3]  # four copies of one point
    assert spread[0] and spread.sum() == 4 and spread[1:5].sum() == 0  # the most confident, then the far ones
    spacing = lambda kept: np.linalg.norm(feats[kept][:, None] - feats[kept][None], axis=-1).sum()  # noqa: E731
    assert spacing(spread) > spacing(confident) == 0


@pytest.fixture(scope="module")
def digits_judge():
    """A small judge trained on 30 real digits per class; the rest of the digits are held out."""
    x, y = load_digits(return_X_y=True)
    images = (x.reshape(-1, 8, 8, 1) * 255 / 16).round().astype(np.uint8)
    train = np.concatenate([np.flatnonzero(y == c)[:30] for c in range(10)])
    held = np.setdiff1d(np.arange(len(y)), train)
    judge = train_classifier(images[train], y[train], 10, steps=400, batch_size=64, width=16, seed=0, balanced=True)
    return judge, images, y, train, held


def test_gate_catches_copies_rejects_the_wrong_class_and_passes_held_out_real_images(digits_judge):
    judge, images, y, train, held = digits_judge
    ids = [f"real-{i}" for i in train]
    copies = train[y[train] == 3][:10]  # a generator that memorised ten training 3s
    wrong = held[y[held] == 1][:10]  # 1s presented as 0s
    novel = held[::10]  # real digits the judge never saw: what a good generator draws
    batch = np.concatenate([copies, wrong, novel])
    intended = np.concatenate([np.full(10, 3), np.full(10, 0), y[novel]])
    j = judge_samples(judge, images[train], ids, images[batch], intended, target=100, gate_cfg=GateConfig())

    assert not j.kept[:10].any()
    assert all(r.startswith("near-copy of real image real-") for r in j.reasons[:10])
    assert set(j.codes[:10]) == {"near_copy"} and set(j.codes[10:20]) == {"low_confidence"}
    assert j.novelty[:10].max() < 1e-3
    assert {r.split()[4] for r in j.reasons[:10]} == {f"real-{i}" for i in copies}  # names the copied image
    assert not j.kept[10:20].any()
    assert all(r.startswith("confidence") for r in j.reasons[10:20])
    # The novelty threshold never rejects a genuinely new real image; the judge is confident on most.
    assert j.novelty[20:].min() > GateConfig().min_novelty and np.median(j.novelty[20:]) > 1.0
    assert j.kept[20:].mean() >= 0.7


def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    assert quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifts = [quality.frechet_distance(a, a + s) for s in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)  # |mu shift|^2, covariances equal
    # 1-D closed form: (m1 - m2)^2 + (s1 - s2)^2
    b = rng.normal(size=(20000, 1))
    assert quality.frechet_distance(b, 3 * b + 1) == pytest.approx((1 + 2 * b.mean()) ** 2 + 4 * np.var(b, ddof=1), rel=1e-6)


def test_frechet_distance_stays_real_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(200, 64))
    d = quality.frechet_distance(a, b)
    assert np.isfinite(d) and d > 0


def test_precision_recall_on_known_cases():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 4))
    assert quality.precision_recall(real, real.copy()) == (1.0, 1.0)
    far = real + 100.0
    assert quality.precision_recall(real, far) == (0.0, 0.0)
    collapsed = real[:1] + rng.normal(scale=1e-3, size=(100, 4))  # every sample near one real point
    precision, recall = quality.precision_recall(real, collapsed)
    assert precision == 1.0 and recall <= 0.02
    with pytest.raises(ValueError, match="more than k=3"):
        quality.precision_recall(real[:3], real)


def test_collapse_alarm_flags_only_the_collapsed_class_and_unkeeps_it():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(size=(10, 6)), rng.normal(size=(10, 6)) + 5])
    real_y = np.repeat([0, 1], 10)
    varied = real[:10][rng.integers(0, 10, 50)] + rng.normal(scale=0.3, size=(50, 6))  # covers class 0
    one_mode = real[10] + rng.normal(scale=1e-3, size=(50, 6))  # class 1: one image, over and over
    fake, intended = np.concatenate([varied, one_mode]), np.repeat([0, 1], 50)
    kept = np.ones(100, dtype=bool)
    codes, reasons = [None] * 100, [None] * 100
    per_class = class_quality(real, real_y, fake, intended, kept, np.ones(100), ["a", "b"], GateConfig())
    assert not per_class["a"]["collapsed"] and per_class["a"]["kept"]["recall"] >= 0.5
    assert per_class["b"]["collapsed"] and per_class["b"]["kept"]["recall"] <= 0.1
    assert per_class["b"]["generated"]["diversity"] < 0.01 and per_class["a"]["generated"]["diversity"] > 0.5
    assert per_class["a"]["kept"]["frechet_distance"] < per_class["b"]["kept"]["frechet_distance"]

    apply_alarm(per_class, ["a", "b"], intended, kept, codes, reasons, keep_collapsed=False)
    assert kept[:50].all() and not kept[50:].any()
    assert codes[50] == "class_collapsed" and codes[49] is None
    assert reasons[50].startswith("class b flagged: mode collapse") and "gate.keep_collapsed" in reasons[50]

    kept_anyway = np.ones(100, dtype=bool)
    per_class = class_quality(real, real_y, fake, intended, kept_anyway, np.ones(100), ["a", "b"], GateConfig())
    apply_alarm(per_class, ["a", "b"], intended, kept_anyway, [None] * 100, [None] * 100,
                keep_collapsed=True)
    assert kept_anyway.all() and "kept anyway" in per_class["b"]["alarm"]


def test_the_generator_step_and_latent_scale_are_chosen_by_cas_on_val_never_test(smoke_run, tmp_path):
    """gan.checkpoint_selection: cas with two latent scales, on a copy of the smoke run whose test
    images are deleted (a stage that read them would fail): every snapshot x scale gets a CAS on
    val, the best is sampled, and the benchmark's online sampler and the recipe use the same one."""
    import json
    import shutil

    from augment import rundir
    from augment.graph import load_config, run_stage
    from conftest import SMOKE

    _, source, _ = smoke_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    frame = rundir.read_manifest(run_dir)
    for rel in frame.loc[frame["split"] == "test", "path"]:
        (run_dir / rel).unlink()
    cfg = load_config(SMOKE, ["gan.checkpoint_selection=cas", "gan.latent_scales=[0.5, 1.0]", "gan.patience=null"])
    run_stage("gan", cfg, run_dir)
    assert sorted(p.name for p in (run_dir / "gan" / "snapshots").iterdir()) == ["step_000010.pt", "step_000020.pt"]
    info = run_stage("synthesize", cfg, run_dir)
    selection = json.loads((run_dir / "gan" / "quality.json").read_text())["selection"]
    curve = selection["curve"]
    assert [(r["step"], r["scale"]) for r in curve] == [(10, 0.5), (10, 1.0), (20, 0.5), (20, 1.0)]
    best = max(curve, key=lambda r: (r["cas_accuracy_on_val"], r["step"], -abs(np.log(r["scale"]))))
    assert (selection["step"], selection["scale"]) == (best["step"], best["scale"]) == (info["generator_step"], info["latent_scale"])
    assert info["cas_accuracy_on_val"] == best["cas_accuracy_on_val"]
    path, scale = rundir.selected_generator(run_dir)
    assert path == run_dir / "gan" / "snapshots" / f"step_{best['step']:06d}.pt" and scale == best["scale"]
    from augment.core.report.report_gan import quality_section

    text = quality_section(cfg, json.loads((run_dir / "gan" / "quality.json").read_text()), None, rundir.read_manifest(run_dir))
    assert f"EMA generator at step {best['step']} with latent scale {best['scale']:g}" in text and "| 10 | 0.5 |" in text
    # a changed scale grid re-runs the synthesize stage, not the GAN's training
    again = load_config(SMOKE, ["gan.checkpoint_selection=cas", "gan.latent_scales=[1.0]", "gan.patience=null"])
    assert run_stage("gan", again, run_dir)["skipped"]


@pytest.mark.parametrize("mode", ["per_class", "per_class+mix"])
def test_patience_stops_the_gan_when_cas_stops_rising_and_the_synthesize_stage_reuses_its_curve(smoke_run, tmp_path,
                                                                                              monkeypatch, mode):
    """gan.patience: 1 with a snapshot every 5 steps: the gan stage scores each snapshot as it takes it
    (here a curve that peaks at step 5), stops at step 10 with every member checkpointed there, records
    where; the synthesize stage samples the best snapshot and trains no CAS classifier again."""
    import json
    import shutil

    from augment import rundir
    from augment.core.gate import gate
    from augment.core.gan.checkpoint import snapshots
    from augment.graph import load_config, run_stage
    from augment.stages import gan
    from conftest import SMOKE

    _, source, _ = smoke_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    cfg = load_config(SMOKE, ["gan.checkpoint_selection=cas", "gan.patience=1", "gan.sample_every=5", f"gan.mode={mode}",
                              "gan.nz=48"])
    real = gate.score_generator
    fake_cas = {5: 0.5, 10: 0.4}

    def scored(cfg, data, G, judge, step, scale, device, progress=None):
        row, out = real(cfg, data, G, judge, step, scale, device, progress)
        return {**row, "cas_accuracy_on_val": fake_cas[step]}, out

    monkeypatch.setattr(gan, "score_generator", scored)
    info = run_stage("gan", cfg, run_dir)
    assert (info["steps"], info["stopped_at"], info["best_step"], info["cas_best"]) == (10, 10, 5, 0.5)
    assert [s for s, _ in snapshots(run_dir / "gan")] == [5, 10]
    curve = json.loads((run_dir / rundir.CAS_CURVE).read_text())["curve"]
    assert [(r["step"], r["cas_accuracy_on_val"]) for r in curve] == [(5, 0.5), (10, 0.4)]
    from augment.core.gan.checkpoint import read_checkpoint
    from augment.registry import generator_modes as member_modes
    from augment.core.gan.ensemble import member_dir

    dirs = [run_dir / "gan"] if mode == "per_class" else [member_dir(run_dir / "gan", m) for m in member_modes(mode)]
    assert all(read_checkpoint(d / "checkpoint.pt")["step"] == 10 for d in dirs)  # every member stopped there
    cas_trained = []
    monkeypatch.setattr(gate, "classification_accuracy_score", lambda *a, **k: cas_trained.append(1) or {"accuracy": 0, "recall": []})
    out = run_stage("synthesize", cfg, run_dir)
    assert out["generator_step"] == 5 and out["cas_accuracy_on_val"] == 0.5 and cas_trained == []
    assert rundir.selected_generator(run_dir)[0].name == "step_000005.pt"


def test_the_copying_ratio_flags_samples_that_hug_the_training_images():
    from augment.core.gate.gate import copying

    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 8))
    held_out = rng.normal(size=(30, 8))  # fresh real images: their own distance to the train set
    copies = train[:20] + rng.normal(scale=0.01, size=(20, 8))
    novel = rng.normal(size=(20, 8))
    assert copying(train, copies, held_out)["ratio"] < 0.05
    assert 0.7 < copying(train, novel, held_out)["ratio"] < 1.4
    assert copying(train, novel[:0], held_out)["ratio"] is None
