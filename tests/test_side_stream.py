"""Synthetic images as a side stream: share per batch, loss weight, soft labels, the share chosen on val."""

import numpy as np
import pytest
import torch

from augment.config import BenchmarkConfig, step_budget
from augment.core.classify.classifier import SmallCNN, predict_proba, train_classifier
from augment.core.classify.side_stream import Batches, SideStream, per_batch, soften


def images(n, seed=0, value=None):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    if value is not None:
        x[:] = value  # a marker: every synthetic image is all `value`
    return x, np.arange(n) % 3


def test_every_batch_holds_the_configured_synthetic_share_with_its_weight():
    x, y = images(30)
    xs, ys = images(300, value=255)
    x[x == 255] = 254  # no real pixel looks like a synthetic one
    draw = Batches(x, y, 3, 32, SideStream(xs, ys, share=0.25, weight=0.3), torch.Generator().manual_seed(0))
    for _ in range(20):
        batch, target, weight = draw()
        synthetic = (batch == 255).flatten(1).all(1)
        assert batch.shape == (32, 1, 8, 8) and int(synthetic.sum()) == 8  # round(0.25 * 32)
        assert torch.allclose(weight[synthetic], torch.tensor(0.3)) and torch.all(weight[~synthetic] == 1)
        assert torch.allclose(target.sum(1), torch.ones(32))


def test_the_share_never_exceeds_what_concatenation_gives():
    x, y = images(90)
    xs, ys = images(10, value=255)
    assert per_batch(64, 90, SideStream(xs, ys, share=0.5)) == round(0.1 * 64)  # 10 of 100 images
    assert per_batch(64, 90, SideStream(xs, ys, share=0.05)) == round(0.05 * 64)
    assert per_batch(64, 0, SideStream(xs, ys, share=0.5)) == 64  # synthetic only: the whole batch
    assert per_batch(64, 90, None) == 0


def test_soft_labels_are_distributions_and_reach_the_loss(monkeypatch):
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3]])
    soft = soften(probs, 2.0)
    assert np.allclose(soft.sum(1), 1) and soft[0, 0] < 0.9 and soft[0].argmax() == 0  # softened, same argmax
    assert np.allclose(soften(probs, 1.0), probs, atol=1e-6)
    x, y = images(12)
    xs, ys = images(40, value=255)
    rows = np.tile(soften(probs[:1], 2.0), (40, 1))
    seen = []
    real_ce = torch.nn.functional.cross_entropy

    def spy(logits, target, **kw):
        seen.append(target.clone())
        return real_ce(logits, target, **kw)

    monkeypatch.setattr("torch.nn.functional.cross_entropy", spy)
    train_classifier(x, y, 3, steps=3, batch_size=8, width=4, seed=0, synthetic=SideStream(xs, ys, share=0.5, soft=rows))
    targets = torch.cat(seen)
    assert torch.allclose(targets.sum(1), torch.ones(len(targets)))
    assert (targets.max(1).values < 1).sum() == 3 * 4  # the synthetic half carries the teacher's soft rows


def test_dropout_is_seeded_and_really_drops():
    x, y = images(30)
    torch.manual_seed(1)
    a = predict_proba(train_classifier(x, y, 3, steps=4, batch_size=8, width=4, dropout=0.5, seed=3), x)
    torch.manual_seed(2)  # the global RNG must not matter
    b = predict_proba(train_classifier(x, y, 3, steps=4, batch_size=8, width=4, dropout=0.5, seed=3), x)
    assert np.array_equal(a, b)
    net = SmallCNN(1, 3, width=4, dropout=0.5).train()
    batch = torch.randn(4, 1, 8, 8)
    assert not torch.equal(net(batch), net(batch))  # dropout is active in training mode


def test_step_budget_scales_with_the_train_set_between_floor_and_ceiling():
    assert step_budget("auto", 100, 64, 40, 600, 4000) == 600
    assert step_budget("auto", 3200, 64, 40, 600, 4000) == 2000
    assert step_budget("auto", 10**6, 64, 40, 600, 4000) == 4000
    assert step_budget(123, 10**6, 64, 40, 600, 4000) == 123
    with pytest.raises(ValueError, match="min_steps"):
        BenchmarkConfig(min_steps=500, max_steps=100)


def test_the_share_is_chosen_on_val_only():
    def records(val, test):
        return {"records": [{"split": "val", "metric": "balanced_accuracy", "value": val, "class": None},
                            {"split": "test", "metric": "balanced_accuracy", "value": test, "class": None}]}

    finished = {"real+gan/share=0.1": records(0.80, 0.99), "real+gan/share=0.25": records(0.85, 0.10),
                "real+gan/share=0.5": records(0.85, 0.50)}
    from augment.core.bench.jobs import plan_jobs

    jobs = plan_jobs(BenchmarkConfig(share_grid=[0.1, 0.25, 0.5]), 0, {"real", "gan"}, True, 1.0, 10, False, 64)
    choice = jobs.choose_share("real+gan", finished)
    assert choice["share"] == 0.25  # best on val; the tie with 0.5 goes to the smaller share; test is never read
    assert choice["val"] == {"0.1": 0.80, "0.25": 0.85, "0.5": 0.85} and choice["chosen_on"] == "val"


def test_online_samples_are_seeded_gated_and_of_the_asked_classes():
    from augment.core.gan.dcgan import Generator
    from augment.core.gate.online import OnlineSamples

    x, y = images(30)
    torch.manual_seed(0)
    G = Generator(3, 8, 4, 1, 16, "per_class")
    judge = train_classifier(x, y, 3, steps=3, batch_size=8, width=4, seed=0)
    online = OnlineSamples(G, judge, x, 3, 8, (8, 8), min_confidence=0.3, min_novelty=0.0, oversample=4.0)
    labels = torch.tensor([0, 2, 2, 1, 0, 0])
    a = online(labels, torch.Generator().manual_seed(1))
    b = online(labels, torch.Generator().manual_seed(1))
    c = online(labels, torch.Generator().manual_seed(2))
    assert a.dtype == torch.uint8 and a.shape == (6, 1, 8, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    probs = predict_proba(judge, a.permute(0, 2, 3, 1).numpy())
    assert (probs[np.arange(6), labels.numpy()] >= 0.3).all()  # each passed the gate for its own class
    strict = OnlineSamples(G, judge, x, 3, 8, (8, 8), min_confidence=0.99, min_novelty=0.0, oversample=1.0)
    assert strict(labels, torch.Generator().manual_seed(1)).shape == (6, 1, 8, 8)  # none passes: the best-scoring fill in


def test_online_rows_are_replaced_by_fresh_samples_of_their_class():
    x, y = images(30)
    xs, ys = images(60, value=255)
    asked = []

    def fresh(labels, gen):
        asked.append(labels.clone())
        return torch.full((len(labels), 1, 8, 8), 7, dtype=torch.uint8)

    rows = np.arange(60) % 2 == 0  # half the pool stands for kept GAN images
    stream = SideStream(xs, ys, share=0.5, online=fresh, online_rows=rows)
    batch, target, _ = Batches(x, y, 3, 16, stream, torch.Generator().manual_seed(0))()
    new = (batch == 7).flatten(1).all(1)
    assert 0 < int(new.sum()) < 8 and int((batch == 255).flatten(1).all(1).sum()) == 8 - int(new.sum())
    assert torch.equal(target[new].argmax(1), asked[0])  # a fresh image carries the class it replaced


def test_the_benchmark_feeds_soft_labelled_online_samples_and_records_its_choices(smoke_run, tmp_path):
    """On a copy of the smoke run: the GAN arms with fresh gated samples and soft labels, a fixed
    share; the summary records how every synthetic arm was fed and the step budget."""
    import shutil

    from augment.graph import load_config, run_stage
    from augment.summary import read_summary
    from conftest import SMOKE

    _, run_dir, _ = smoke_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    cfg = load_config(SMOKE, ["benchmark.online_gan=true", "benchmark.soft_labels=true", "benchmark.synthetic_share=0.3",
                              "benchmark.seeds=2", "benchmark.arms=[real, real+gan, synthetic_only]",
                              "benchmark.cross_sources=[]"])
    assert not run_stage("benchmark", cfg, copy)["skipped"]
    summary = read_summary(copy)
    assert set(summary.arms) == {"real", "real+gan", "synthetic_only"} and summary.classifier_steps == 40
    choice = summary.side_stream["real+gan"]
    assert (choice.share, choice.chosen_on, choice.soft_labels) == (0.3, "config", True)
    auto = read_summary(run_dir).side_stream  # the smoke run chose its shares on val
    assert {c.chosen_on for c in auto.values()} == {"val"} and all(str(c.share) in c.val for c in auto.values())


INVERT = [{"__class_fullname__": "InvertImg", "p": 1.0}]


def test_the_classical_pipeline_runs_on_the_fly_over_real_and_synthetic_rows(monkeypatch):
    """benchmark.classical_on_the_fly: every image of every batch, real and synthetic alike, goes
    through the configured albumentations pipeline (here an inversion), seeded."""
    from augment.core.transforms import augmentation
    from augment.core.transforms.augmentation import build_pipeline

    batch = torch.from_numpy(images(6)[0]).permute(0, 3, 1, 2).contiguous()
    assert torch.equal(augmentation.classical_augment(build_pipeline(INVERT), batch, 0), 255 - batch)
    x, y = images(12)
    x[x == 0] = 1  # an inverted synthetic image (all 255) is all 0: no real image looks like it
    xs, ys = images(40, value=255)
    seen = []
    real = augmentation.classical_augment  # InvertImg has no batched op: albumentations, image by image
    from augment.core.classify import classifier  # classifier.recipe_of hands the engine the reference

    monkeypatch.setattr(classifier, "classical_augment", lambda p, b, s: seen.append(real(p, b, s)) or seen[-1])
    train_classifier(x, y, 3, steps=4, batch_size=8, width=4, seed=0, synthetic=SideStream(xs, ys, share=0.5), classical=INVERT)
    assert len(seen) == 4 and all(int((b == 0).flatten(1).all(1).sum()) == 4 for b in seen)  # synthetic rows inverted
    assert all(not (b == 255).flatten(1).all(1).any() for b in seen)  # none passed through unchanged


def test_on_the_fly_classical_is_seeded():
    x, y = images(24)
    medium = [{"__class_fullname__": "Affine", "rotate": [-15, 15], "translate_percent": [-0.1, 0.1], "p": 1.0}]
    runs = [train_classifier(x, y, 3, steps=3, batch_size=8, width=4, seed=s, classical=medium) for s in (0, 0, 1)]
    probs = [predict_proba(m, x) for m in runs]
    assert np.array_equal(probs[0], probs[1]) and not np.allclose(probs[0], probs[2])


def test_a_pipeline_that_changes_the_size_is_a_clear_error_on_the_fly():
    from augment.errors import UserError

    x, y = images(12)
    crop = [{"__class_fullname__": "CenterCrop", "height": 4, "width": 4, "p": 1.0}]
    with pytest.raises(UserError, match="classical.transforms: .* must keep the image size 8x8"):
        train_classifier(x, y, 3, steps=2, batch_size=8, width=4, seed=0, classical=crop)


def test_the_benchmark_applies_classical_on_the_fly_instead_of_the_copies(smoke_run, tmp_path):
    """On a copy of the smoke run: real+classical trains on the real images alone (no share to
    choose), real+classical+gan has only the GAN samples as its side stream."""
    import shutil

    from augment.graph import load_config, run_stage
    from augment.summary import read_summary
    from conftest import SMOKE

    _, run_dir, _ = smoke_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    cfg = load_config(SMOKE, ["benchmark.classical_on_the_fly=true", "benchmark.seeds=1",
                              "benchmark.arms=[real, real+classical, real+classical+gan]", "benchmark.cross_sources=[]"])
    assert not run_stage("benchmark", cfg, copy)["skipped"]
    summary, before = read_summary(copy), read_summary(run_dir)
    assert summary.arms["real+classical"].train_images == summary.arms["real"].train_images
    assert summary.arms["real+classical+gan"].train_images == before.arms["real+gan"].train_images
    assert set(summary.side_stream) == {"real+classical+gan"}
    assert "real+classical" not in summary.linear_probe  # no fixed rows to probe


def test_class_balanced_sampling_in_every_arm_when_asked(smoke_run, tmp_path, monkeypatch):
    """benchmark.balanced_sampling: all (auto does the same on imbalanced classes): every classifier
    draws classes equally often, real+balanced (then equal to real) is skipped, the summary says so."""
    import shutil

    from augment.graph import load_config, run_stage
    from augment.stages import benchmark
    from augment.summary import read_summary
    from conftest import SMOKE

    _, run_dir, _ = smoke_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    seen = []
    real = benchmark.train_classifiers
    monkeypatch.setattr(benchmark, "train_classifiers", lambda tasks, *a, **kw: seen.extend(t.balanced for t in tasks) or real(tasks, *a, **kw))
    cfg = load_config(SMOKE, ["benchmark.balanced_sampling=all", "benchmark.seeds=1", "benchmark.workers=1",
                              "benchmark.arms=[real, real+balanced, real+gan]", "benchmark.cross_sources=[]"])
    assert not run_stage("benchmark", cfg, copy)["skipped"]
    summary = read_summary(copy)
    assert summary.balanced_sampling and set(summary.arms) == {"real", "real+gan"} and "real+balanced" in summary.skipped_arms
    assert seen and all(seen)
