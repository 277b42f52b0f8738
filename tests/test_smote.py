import logging

import numpy as np
import pytest

from augment.errors import UserError
from augment.core.smote.features import PixelFeatures
from augment.core.smote.oversampling import oversample


def blobs(counts, dim=4, seed=0, gap=10.0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c * gap, 1.0, (n, dim)) for c, n in enumerate(counts)])
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return x, y


def test_reaches_the_requested_counts():
    x, y = blobs([10, 6, 4])
    x_new, y_new = oversample(x, y, {0: 20, 1: 20, 2: 20}, "SMOTE", seed=0)
    assert np.bincount(y_new).tolist() == [10, 14, 16]
    assert x_new.shape == (40, 4)


def test_new_rows_interpolate_within_their_class():
    x, y = blobs([8, 8])
    x_new, y_new = oversample(x, y, {0: 30, 1: 30}, "SMOTE", seed=0)
    for c in (0, 1):
        lo, hi = x[y == c].min(0), x[y == c].max(0)
        assert ((x_new[y_new == c] >= lo - 1e-9) & (x_new[y_new == c] <= hi + 1e-9)).all()


def test_deterministic_with_a_seed():
    x, y = blobs([6, 5])
    a = oversample(x, y, {0: 12, 1: 12}, "SMOTE", seed=3)
    b = oversample(x, y, {0: 12, 1: 12}, "SMOTE", seed=3)
    c = oversample(x, y, {0: 12, 1: 12}, "SMOTE", seed=4)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])


def test_k_neighbors_is_clamped_for_tiny_classes():
    x, y = blobs([3, 3])  # SMOTE's default k=5 needs 6 rows per class
    x_new, y_new = oversample(x, y, {0: 9, 1: 9}, "SMOTE", {"k_neighbors": 5}, seed=0)
    assert np.bincount(y_new).tolist() == [6, 6]


def test_single_image_class_is_duplicated_with_a_warning(caplog):
    x, y = blobs([5, 1])
    with caplog.at_level(logging.WARNING, logger="augment"):
        x_new, y_new = oversample(x, y, {0: 5, 1: 4}, "SMOTE", seed=0, class_names=["a", "b"])
    assert "class 'b' has one image" in caplog.text
    assert np.bincount(y_new, minlength=2).tolist() == [0, 3]
    assert np.allclose(x_new, x[5])


@pytest.mark.parametrize("name", ["BorderlineSMOTE", "ADASYN", "RandomOverSampler", "SVMSMOTE"])
def test_other_samplers_by_name(name):
    x, y = blobs([30, 12, 10], dim=2, seed=1, gap=1.0)  # overlapping classes: border samplers find a border
    try:
        x_new, y_new = oversample(x, y, {0: 30, 1: 30, 2: 30}, name, seed=0)
    except UserError as err:  # ADASYN may find no neighbours of another class: a clear message
        assert name in str(err)
        return
    assert set(np.unique(y_new)) <= {1, 2} and len(x_new) > 0


def test_bad_sampler_params_name_the_key():
    x, y = blobs([6, 6])
    with pytest.raises(UserError, match="smote.params"):
        oversample(x, y, {0: 10, 1: 10}, "SMOTE", {"bogus": 1}, seed=0)


def test_pixel_features_round_trip_and_pca():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    ex = PixelFeatures().fit(images)
    assert ex.transform(images).shape == (20, 64)
    assert np.array_equal(ex.inverse_transform(ex.transform(images)), images)
    pca = PixelFeatures(pca_components=5, seed=0).fit(images)
    rows = pca.transform(images)
    assert rows.shape == (20, 5) and pca.inverse_transform(rows).shape == (20, 8, 8, 1)


@pytest.mark.parametrize("sampler", ["SMOTEENN", "SMOTETomek"])
def test_combined_samplers_add_only_new_rows_with_small_classes(sampler):
    x, y = blobs([12, 5, 3])  # k_neighbors must be clamped to 2 for the 3-row class
    x_new, y_new = oversample(x, y, {0: 20, 1: 20, 2: 20}, sampler, seed=0)
    assert len(x_new) and not any((x_new[i] == x).all(1).any() for i in range(len(x_new)))  # none is a real row
    assert set(np.unique(y_new)) <= {0, 1, 2} and (np.bincount(y_new, minlength=3) <= [8, 15, 17]).all()
    a, _ = oversample(x, y, {0: 20, 1: 20, 2: 20}, sampler, seed=0)
    assert np.array_equal(a, x_new)


def test_interpolation_parents_are_recovered_for_smote_rows():
    from augment.core.smote.oversampling import interpolation_parents

    x, y = blobs([9, 6], dim=5)
    x_new, y_new = oversample(x, y, {0: 20, 1: 20}, "SMOTE", seed=1)
    a, b, t, residual = interpolation_parents(x_new, y_new, x, y)
    assert residual.max() < 1e-9
    assert (y[a] == y_new).all() and (y[b] == y_new).all() and ((t >= 0) & (t <= 1)).all()
    assert np.allclose(x[a] + t[:, None] * (x[b] - x[a]), x_new)
    copies, copy_y = oversample(x, y, {0: 12, 1: 12}, "RandomOverSampler", seed=1)
    a, b, t, residual = interpolation_parents(copies, copy_y, x, y)
    assert residual.max() < 1e-9 and np.allclose(x[a] + t[:, None] * (x[b] - x[a]), copies)


def _digits(n_per_class=6):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    idx = np.concatenate([np.flatnonzero(y == c)[:n_per_class] for c in range(3)])
    return (x[idx].reshape(-1, 8, 8, 1) * 255 / 16).astype(np.uint8), y[idx]


def test_each_extractor_gives_one_row_per_image(tmp_path):
    from augment.config import SmoteConfig
    from augment.core.smote.features import make_extractor
    from test_classifier import save_resnet18

    images, labels = _digits()
    pixels = make_extractor(SmoteConfig(pca_components=5), 0).fit(images)
    assert pixels.transform(images).shape == (18, 5) and pixels.invertible
    trainer = dict(steps=3, batch_size=8, width=8)
    cnn = make_extractor(SmoteConfig(features="cnn"), 0, trainer).fit(images, labels, 3)
    assert cnn.transform(images).shape == (18, 32) and not cnn.invertible  # 4 x width: the third block's channels
    again = make_extractor(SmoteConfig(features="cnn"), 0, trainer).fit(images, labels, 3)
    assert np.array_equal(cnn.transform(images), again.transform(images))  # seeded
    weights = save_resnet18(tmp_path / "r18.pth")
    backbone = make_extractor(SmoteConfig(features="pretrained", weights=weights, input_size=32), 0).fit(images, labels, 3)
    assert backbone.transform(images[:4]).shape == (4, 512)


def test_missing_pretrained_weights_are_an_offline_error_naming_the_smote_keys(tmp_path, monkeypatch):
    import torch

    from augment.config import SmoteConfig
    from augment.core.smote.features import make_extractor

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    images, labels = _digits()
    with pytest.raises(UserError, match=r"config key 'smote.backbone': no resnet18 weights on disk .* set smote.weights"):
        make_extractor(SmoteConfig(features="pretrained"), 0).fit(images, labels, 3)
    with pytest.raises(UserError, match=r"config key 'smote.weights': .*nope.pth not found"):
        make_extractor(SmoteConfig(features="pretrained", weights=tmp_path / "nope.pth"), 0).fit(images, labels, 3)


@pytest.mark.parametrize("features, gan", [("cnn", "false"), ("discriminator", "true")])
def test_smote_in_a_classifier_feature_space_feeds_the_linear_probe_not_the_cnn_arm(tmp_path, features, gan):
    import json

    from augment import rundir
    from augment.graph import load_config
    from augment.graph import run_pipeline
    from conftest import SMOKE

    cfg = load_config(SMOKE, [f"smote.features={features}", f"gan.enabled={gan}", "benchmark.seeds=2",
                              "benchmark.steps=10", "gan.steps=4"])
    run_pipeline(cfg, tmp_path / "run")
    frame = rundir.read_manifest(tmp_path / "run")
    smote = frame[frame["source"] == "smote"]
    assert len(smote) and smote["path"].isna().all() and smote["parent_id"].notna().all()
    summary = json.loads((tmp_path / "run" / "benchmark" / "summary.json").read_text())
    assert "real+smote" not in summary["arms"] and "real+smote" in summary["linear_probe"]
    # cnn: the last block's pooled channels; discriminator (per class, 16 px): 10 classes x ndf x 2
    width = {"cnn": 2 ** (cfg.benchmark.depth - 1) * cfg.benchmark.width, "discriminator": 10 * cfg.gan.ndf * 2}[features]
    with np.load(tmp_path / "run" / "features" / "smote.npz") as rows:
        assert rows["x"].shape == (len(smote), width)


@pytest.mark.parametrize("mode, width", [("per_class", 3 * 8 * 2), ("conditional", 8 * 2)])
def test_discriminator_features_are_label_free(mode, width):
    import torch

    from augment.core.gan.dcgan import Discriminator

    D = Discriminator(3, 8, 1, 16, mode).eval()
    x = torch.randn(5, 1, 16, 16)
    assert D.image_features(x).shape == (5, width)
    assert torch.allclose(D.image_features(x[:2]), D.image_features(x)[:2], atol=1e-6)  # per image


def test_discriminator_features_need_the_gan():
    from augment.graph import load_config

    with pytest.raises(UserError, match=r"smote.features 'discriminator' needs the GAN stage"):
        load_config(None, ["smote.features=discriminator", "gan.enabled=false"])


def test_a_sampler_that_finds_nothing_to_do_is_a_clear_error_naming_sampler_and_class():
    x, y = blobs([10, 10], gap=1000.0)  # class 1 has no neighbour of another class: ADASYN has no hard cases
    with pytest.raises(UserError, match=r"smote.sampler ADASYN failed to over-sample class\(es\) \['1'\]: "):
        oversample(x, y, {0: 10, 1: 20}, "ADASYN", seed=0)
