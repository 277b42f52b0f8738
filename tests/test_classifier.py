import numpy as np
import pytest
import torch

from augment.core.classify.classifier import predict_proba, train_classifier, trivial_augment


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


def test_trivial_augment_is_seeded_and_leaves_the_global_rng_alone(monkeypatch):
    """It seeds only the CPU generator, which fork_rng(devices=[]) restores: reseeding every
    device (torch.manual_seed) would leave the CUDA generators changed on a GPU machine."""
    cuda_seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeds.append)
    batch = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    cuda_seeds.clear()
    before = torch.random.get_rng_state()
    a, b = trivial_augment(batch, 5), trivial_augment(batch, 5)
    assert torch.equal(a, b) and not torch.equal(a, batch)
    assert torch.equal(torch.random.get_rng_state(), before) and cuda_seeds == []


@pytest.mark.parametrize("shape", [(64, 1, 8, 8), (16, 3, 28, 20)])
def test_trivial_augment_equals_torchvisions_transform_image_by_image(shape):
    """Our loop skips the transform's per-call overhead but makes the same draws in the same order:
    the result is torchvision's to the bit (a torchvision upgrade that changes this fails here)."""
    from torchvision.transforms import v2

    batch = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ta = v2.TrivialAugmentWide()
    for seed in range(10):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            reference = torch.stack([ta(image) for image in batch])
        assert torch.equal(trivial_augment(batch, seed), reference)


def test_balanced_sampling_draws_classes_equally(monkeypatch):
    x, y = data()
    seen = []
    real_ce = torch.nn.functional.cross_entropy

    def spy(logits, target, **kw):
        seen.append(target.argmax(1))  # target distributions; one-hot for real images
        return real_ce(logits, target, **kw)

    monkeypatch.setattr("torch.nn.functional.cross_entropy", spy)
    train_classifier(x, y, 2, steps=60, batch_size=32, width=4, seed=0, balanced=True)
    share = torch.cat(seen).float().mean().item()  # share of the minority class (label 1) drawn
    assert 0.45 < share < 0.55
    seen.clear()
    train_classifier(x, y, 2, steps=60, batch_size=32, width=4, seed=0)
    assert torch.cat(seen).float().mean().item() < 0.3  # uniform over images: 6 of 30


def save_resnet18(path):
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


BACKBONE = dict(steps=2, batch_size=4, model="resnet18", input_size=32)


def test_backbone_fine_tunes_from_a_checkpoint_on_disk(tmp_path):
    x, y = data()
    weights = save_resnet18(tmp_path / "r18.pth")
    a = predict_proba(train_classifier(x, y, 2, weights=weights, seed=1, **BACKBONE), x[:5])
    b = predict_proba(train_classifier(x, y, 2, weights=weights, seed=1, **BACKBONE), x[:5])
    assert a.shape == (5, 2) and np.array_equal(a, b)


def test_backbone_weights_come_from_the_hub_cache_or_a_clear_error(tmp_path, monkeypatch):
    import pytest

    from augment.errors import UserError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    x, y = data()
    with pytest.raises(UserError, match=r"no resnet18 weights on disk \(looked for .*resnet18-f37072fd\.pth\)"):
        train_classifier(x, y, 2, seed=0, **BACKBONE)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    save_resnet18(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    assert predict_proba(train_classifier(x, y, 2, seed=0, **BACKBONE), x[:2]).shape == (2, 2)


def test_wrong_or_missing_weights_file_is_named(tmp_path):
    import pytest

    from augment.errors import UserError

    x, y = data()
    with pytest.raises(UserError, match="benchmark.weights.*nope.pth not found"):
        train_classifier(x, y, 2, weights=tmp_path / "nope.pth", seed=0, **BACKBONE)
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="other.pth: not resnet18 weights"):
        train_classifier(x, y, 2, weights=tmp_path / "other.pth", seed=0, **BACKBONE)


def test_unknown_classifier_name_is_a_config_error(tmp_path, monkeypatch):
    import pytest

    from augment.errors import UserError
    from augment.graph import load_config

    with pytest.raises(UserError, match="config key 'benchmark.classifier'.*'resnet9000'"):
        load_config(None, ["benchmark.classifier=resnet9000"])
    # A known model without weights on disk is caught at load too, before any work.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError, match=r"config key 'benchmark.classifier': no resnet18 weights on disk"):
        load_config(None, ["benchmark.classifier=resnet18"])
    (tmp_path / "w.pth").write_bytes(b"")
    cfg = load_config(None, ["benchmark.classifier=resnet18", f"benchmark.weights={tmp_path / 'w.pth'}"])
    assert cfg.benchmark.classifier == "resnet18"


def test_backbone_preprocesses_with_the_weights_own_transforms():
    import torchvision

    from augment.core.classify.classifier import backbone_transforms

    preset = torchvision.models.get_model_weights("resnet18").DEFAULT.transforms()
    own = backbone_transforms("resnet18", None)
    assert own.crop_size == preset.crop_size and own.mean == preset.mean and own.std == preset.std
    sized = backbone_transforms("resnet18", 32)
    assert sized.crop_size == [32] and sized.resize_size == [32] and sized.mean == preset.mean
    assert sized(torch.rand(2, 3, 8, 8)).shape == (2, 3, 32, 32)
