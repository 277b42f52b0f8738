import json

import numpy as np
import pytest

from augment import rundir
from augment.core.transforms.augmentation import PRESETS, augment_images, build_pipeline, validate_transforms
from augment.core.transforms.copies import copies_per_class, spread, transforms_for
from augment.config import ClassicalConfig
from augment.graph import load_config
from augment.graph import run_stage
from augment.errors import UserError


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("shape", [(8, 8, 1), (32, 32, 3)])
def test_presets_run_on_small_and_colour_images(preset, shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, *shape), dtype=np.uint8)
    transforms = transforms_for(ClassicalConfig(preset=preset), shape[2])
    out = augment_images(images, [1, 2, 3], build_pipeline(transforms), copies=2)
    assert out.shape == (6, *shape) and out.dtype == np.uint8
    assert not np.array_equal(out[0], images[0])


def test_presets_cover_geometry_noise_photometry_and_blur_without_flips():
    names = {t["__class_fullname__"] for t in PRESETS["heavy"]}
    assert {"Affine", "CropAndPad", "GaussNoise", "SaltAndPepper", "ColorJitter", "RandomBrightnessContrast",
            "Sharpen", "GaussianBlur"} <= names
    assert not any("Flip" in n for p in PRESETS.values() for n in (t["__class_fullname__"] for t in p))
    assert transforms_for(ClassicalConfig(flips=True), 1)[-1]["__class_fullname__"] == "HorizontalFlip"
    assert "ColorJitter" not in {t["__class_fullname__"] for t in transforms_for(ClassicalConfig(), 1)}


def test_each_parent_has_its_own_seeded_stream():
    """The same image with the same seed gives the same copies, whatever order images come in."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    pipeline = build_pipeline(PRESETS["medium"])
    forward = augment_images(images, [10, 11, 12], pipeline, copies=2)
    backward = augment_images(images[::-1], [12, 11, 10], pipeline, copies=2)
    assert np.array_equal(forward[0:2], backward[4:6])
    assert not np.array_equal(forward[0], forward[1])  # two copies of one parent differ


def test_seed_count_must_match():
    with pytest.raises(ValueError):
        augment_images(np.zeros((2, 8, 8, 1), np.uint8), [1], build_pipeline(PRESETS["light"]), 1)


@pytest.mark.parametrize("item, message", [
    ({"__class_fullname__": "Affinee"}, r"item 0: 'Affinee' is not an albumentations transform"),
    ({"__class_fullname__": "Affine", "rotat": 5}, r"item 0 \(Affine\): .*'rotat' are not valid for transform Affine"),
    ({"__class_fullname__": "Affine", "rotate": "abc"}, r"item 0 \(Affine\): .*rotate"),
    ({"rotate": 5}, r"item 0: expected a mapping with '__class_fullname__'"),
    ({"__class_fullname__": "os.system"}, r"item 0: 'os.system' is not an albumentations transform"),
])
def test_custom_transforms_are_validated_strictly_at_config_load(item, message):
    with pytest.raises(ValueError, match=message):
        validate_transforms([item])
    with pytest.raises(UserError, match=r"config key 'classical.transforms': " + message):
        load_config(None, ["classical.transforms=" + json.dumps([item])])


def test_custom_list_and_a_saved_pipeline_file(tmp_path):
    import albumentations as A

    custom = [{"__class_fullname__": "Rotate", "limit": [-5, 5]}, {"__class_fullname__": "GaussianBlur", "p": 0.3}]
    cfg = load_config(None, ["classical.transforms=" + json.dumps(custom)])
    assert transforms_for(cfg.classical, 1) == custom
    A.save(A.Compose([A.Affine(rotate=(-5, 5), p=1.0), A.GaussNoise(p=0.5)]), tmp_path / "pipe.yaml", data_format="yaml")
    (tmp_path / "run.yaml").write_text("classical:\n  pipeline_file: pipe.yaml\n")  # relative to the config
    cfg = load_config(tmp_path / "run.yaml")
    assert [t["__class_fullname__"] for t in transforms_for(cfg.classical, 1)] == ["Affine", "GaussNoise"]
    (tmp_path / "bad.json").write_text(json.dumps({"transform": {"transforms": [{"__class_fullname__": "Nope"}]}}))
    with pytest.raises(UserError, match=r"bad.json \(classical.pipeline_file\): item 0: 'Nope' is not"):
        transforms_for(load_config(None, [f"classical.pipeline_file={tmp_path / 'bad.json'}"]).classical, 1)
    with pytest.raises(UserError, match=r"classical.pipeline_file: .*missing.yaml not found"):
        load_config(None, [f"classical.pipeline_file={tmp_path / 'missing.yaml'}"])


def test_copies_by_multiplier_target_or_balance():
    counts = {"a": 10, "b": 2}
    assert copies_per_class(counts, ClassicalConfig(multiplier=3)) == {"a": 30, "b": 6}
    assert copies_per_class(counts, ClassicalConfig(target=8)) == {"a": 0, "b": 6}
    # balance: the multiplier's budget (12 images), minority first: b to 10, then both to 12
    assert copies_per_class(counts, ClassicalConfig(multiplier=1, balance=True)) == {"a": 2, "b": 10}
    assert spread(7, 3) == [3, 2, 2] and spread(2, 4) == [1, 1, 0, 0]
    with pytest.raises(UserError, match="classical.target or classical.balance, not both"):
        load_config(None, ["classical.target=5", "classical.balance=true"])


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    cfg = load_config(None, ["data.class_counts={'0': 6, '1': 6, '2': 6, '3': 6, '4': 6, '5': 2, '6': 2, "
                             "'7': 2, '8': 2, '9': 2}", "data.per_class=null"])
    run_dir = tmp_path_factory.mktemp("classical")
    run_stage("ingest", cfg, run_dir)
    return run_dir


def _classical(run_dir, *overrides):
    cfg = load_config(None, ["data.class_counts={'0': 6, '1': 6, '2': 6, '3': 6, '4': 6, '5': 2, '6': 2, "
                             "'7': 2, '8': 2, '9': 2}", "data.per_class=null", *overrides])
    info = run_stage("classical", cfg, run_dir)
    frame = rundir.read_manifest(run_dir)
    return info, frame[frame["source"] == "classical"].reset_index(drop=True)


def test_stage_balances_and_records_parents_and_applied_parameters(ingested):
    info, rows = _classical(ingested, "classical.balance=true", "classical.multiplier=1")
    counts = rows.groupby("label").size().to_dict()
    assert sum(counts.values()) == 40 and {counts[c] for c in "56789"} == {6} and {counts[c] for c in "01234"} == {2}
    real = rundir.read_manifest(ingested)
    assert rows["parent_id"].isin(real.loc[real["source"] == "real", "id"]).all()
    applied = json.loads(rows["params"].iloc[0])
    assert applied[0][0] == "Affine" and "rotate" in applied[0][1]
    assert info["workers"] == 1


def test_a_process_pool_gives_the_same_images_as_one_process(ingested, tmp_path):
    _, one = _classical(ingested, "classical.workers=1", "classical.target=9")
    _, two = _classical(ingested, "classical.workers=2", "classical.target=9")
    assert len(one) == 9 * 10 - 40
    assert one[["id", "sha256", "params"]].equals(two[["id", "sha256", "params"]])


def test_the_stage_copies_a_folder_of_mixed_image_sizes(tmp_path):
    """data.image_size auto over images of several sizes: ingest keeps each at its own size (stages fit
    them to the working size when they load them), so the classical stage augments each parent at its
    stored size, and the copies load at the working size like every other image."""
    from conftest import write_image_folder

    root = write_image_folder(tmp_path / "in", {"a": 8, "b": 8}, size=(12, 10))
    write_image_folder(tmp_path / "in", {"a": 4, "b": 4}, size=(20, 16), seed=1)  # more files, another size
    for label in ("a", "b"):  # the second call wrote 000-003 again: rename them apart
        for i in range(4):
            (root / label / f"{i:03d}.png").rename(root / label / f"big{i}.png")
    write_image_folder(tmp_path / "in", {"a": 4, "b": 4}, size=(12, 10), seed=2)
    cfg = load_config(None, ["data.source=folder", f"data.path={root}", "data.min_per_class=5", "data.per_class=null",
                             "data.image_size=auto", "classical.multiplier=1"])
    run_dir = tmp_path / "run"
    run_stage("ingest", cfg, run_dir)
    assert rundir.ingest_info(run_dir)["size"] == [10, 10]
    info = run_stage("classical", cfg, run_dir)
    frame = rundir.read_manifest(run_dir)
    copies = frame[frame["source"] == "classical"]
    assert len(copies) > 0 and not info["skipped"]
    assert {(h, w) for h, w in zip(copies["height"], copies["width"])} == {(12, 10), (20, 16)}
    x, _, _ = rundir.load_split(run_dir, "train", ("real", "classical"))
    assert x.shape[1:] == (10, 10, 1)
