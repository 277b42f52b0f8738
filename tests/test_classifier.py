import numpy as np
import torch

from augment.classifier import predict_proba, train_classifier, trivial_augment


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (30, 8, 8, 1), dtype=np.uint8)
    y = np.array([0] * 24 + [1] * 6)
    return x, y


def test_training_is_deterministic_without_global_seeding():
    x, y = data()
    kw = dict(steps=5, batch_size=8, width=4)
    torch.manual_seed(1)
    a = predict_proba(train_classifier(x, y, 2, seed=3, augment="trivialaugment", **kw), x)
    torch.manual_seed(2)  # the global RNG must not matter
    b = predict_proba(train_classifier(x, y, 2, seed=3, augment="trivialaugment", **kw), x)
    c = predict_proba(train_classifier(x, y, 2, seed=4, augment="trivialaugment", **kw), x)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (30, 2) and np.allclose(a.sum(1), 1, atol=1e-5)


def test_trivial_augment_is_seeded_and_leaves_the_global_rng_alone():
    batch = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a, b = trivial_augment(batch, 5), trivial_augment(batch, 5)
    assert torch.equal(a, b) and not torch.equal(a, batch)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_balanced_sampling_draws_classes_equally(monkeypatch):
    x, y = data()
    seen = []
    real_ce = torch.nn.functional.cross_entropy

    def spy(logits, target):
        seen.append(target.clone())
        return real_ce(logits, target)

    monkeypatch.setattr("augment.classifier.F.cross_entropy", spy)
    train_classifier(x, y, 2, steps=60, batch_size=32, width=4, seed=0, balanced=True)
    share = torch.cat(seen).float().mean().item()  # share of the minority class (label 1) drawn
    assert 0.45 < share < 0.55
    seen.clear()
    train_classifier(x, y, 2, steps=60, batch_size=32, width=4, seed=0)
    assert torch.cat(seen).float().mean().item() < 0.3  # uniform over images: 6 of 30
