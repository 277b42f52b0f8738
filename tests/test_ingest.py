import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from augment import rundir
from augment.config import DataConfig
from augment.graph import load_config
from augment.core.data.sources import read_csv, read_digits, read_folder, read_idx
from augment.core.data.splits import scarce_counts, simulate_scarcity, split_indices
from augment.graph import run_stage
from augment.rundir import ingest_info
from augment.errors import UserError
from conftest import tree_state, write_image_folder


def folder(path, **kw) -> DataConfig:
    return DataConfig(source="folder", path=path, **kw)


def csv_source(path, **kw) -> DataConfig:
    return DataConfig(source="csv", path=path, **kw)


def folder_cfg(path, *extra):
    return load_config(None, ["data.source=folder", f"data.path={path}", "data.min_per_class=5", *extra])


def test_digits_source():
    data = read_digits()
    assert len(data.images) == 1797 and data.images[0].shape == (8, 8, 1)
    assert data.images[0].dtype == np.uint8 and max(im.max() for im in data.images) == 255
    assert sorted(set(data.labels)) == [str(i) for i in range(10)]
    assert read_digits(channels=3).images[0].shape == (8, 8, 3)


def test_folder_source_reads_every_class(image_folder):
    data = read_folder(folder(image_folder))
    assert pd.Series(data.labels).value_counts().to_dict() == {"cat": 8, "dog": 7, "owl": 6}
    assert data.images[0].shape == (12, 10, 1)
    assert read_folder(folder(image_folder, channels=3)).images[0].shape == (12, 10, 3)


def test_unreadable_image_is_named(image_folder):
    bad = image_folder / "dog" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"broken\.png: not a readable image"):
        read_folder(folder(image_folder))


def test_non_image_files_are_skipped(image_folder):
    (image_folder / "cat" / "notes.txt").write_text("hello")
    assert len(read_folder(folder(image_folder)).images) == 21


def test_class_with_too_few_images_is_named(tmp_path):
    root = write_image_folder(tmp_path / "in", {"big": 9, "tiny": 2})
    with pytest.raises(UserError, match=r"class 'tiny' has 2 image\(s\); at least 5 are needed \(data.min_per_class\)"):
        run_stage("ingest", folder_cfg(root), tmp_path / "run")


def test_one_class_is_an_error(tmp_path):
    root = write_image_folder(tmp_path / "in", {"only": 9})
    with pytest.raises(UserError, match="at least two are needed"):
        run_stage("ingest", folder_cfg(root), tmp_path / "run")


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="data.path is not a folder"):
        read_folder(folder(tmp_path / "nowhere"))


def test_csv_source_with_relative_paths(tmp_path, image_folder):
    rows = [(f"input/{p.parent.name}/{p.name}", p.parent.name) for p in sorted(image_folder.rglob("*.png"))]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(csv, index=False)
    data = read_csv(csv_source(csv))
    assert len(data.images) == 21 and set(data.labels) == {"cat", "dog", "owl"}


def test_csv_errors_name_the_row(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nmissing.png,cat\n")
    with pytest.raises(UserError, match=r"labels.csv:2: image file .*missing.png not found"):
        read_csv(csv_source(csv))
    csv.write_text("file,label\na.png,cat\n")
    with pytest.raises(UserError, match=r"missing column\(s\) \['path'\]"):
        read_csv(csv_source(csv))


def test_ingest_never_writes_to_the_input(tmp_path, image_folder):
    before = tree_state(image_folder)
    run_stage("ingest", folder_cfg(image_folder), tmp_path / "run")
    assert tree_state(image_folder) == before
    assert not any(p.is_relative_to(image_folder) for p in (tmp_path / "run").rglob("*"))


def test_ingest_writes_manifest_and_pngs(tmp_path, image_folder):
    run = tmp_path / "run"
    info = run_stage("ingest", folder_cfg(image_folder, "data.channels=3"), run)
    frame = rundir.read_manifest(run)
    assert list(frame.columns) == list(rundir.COLUMNS)
    assert len(frame) == 21 and (frame["source"] == "real").all() and frame["kept"].all()
    assert set(frame["split"]) == {"train", "val", "test"}
    assert frame["id"].is_unique
    assert (frame[["height", "width", "channels"]].to_numpy() == [12, 10, 3]).all()
    for rel, digest in zip(frame["path"], frame["sha256"]):
        assert hashlib.sha256((run / rel).read_bytes()).hexdigest() == digest
        assert Image.open(run / rel).mode == "RGB"
    assert frame["generator"].str.endswith(".png").all()  # provenance: the input file
    assert info["size"] == [12, 10] and ingest_info(run)["classes"] == ["cat", "dog", "owl"]


def test_different_sizes_get_a_working_size_and_keep_their_aspect(tmp_path):
    """A real photo folder: sizes differ. auto picks a square working size (the median shorter side,
    at most 64), says so, and every image is fitted by padding (default) or center-cropping."""
    root = write_image_folder(tmp_path / "in", {"a": 6, "b": 6})  # 12x10
    write_image_folder(root, {"c": 6}, size=(20, 20))
    with pytest.raises(UserError, match=r"data.image_size is native but the images differ in size: 12x10 \(e\.g\. "):
        run_stage("ingest", folder_cfg(root, "data.image_size=native"), tmp_path / "run0")
    info = run_stage("ingest", folder_cfg(root), tmp_path / "run")
    assert info["size"] == [10, 10] and info["fit"] == "pad"
    assert info["size_note"].startswith("data.image_size auto: 2 image sizes (12x10 to 20x20); working size 10x10")
    assert "padding" in info["size_note"]
    x, _, rows = rundir.load_split(tmp_path / "run", "train")
    assert x.shape[1:] == (10, 10, 1)
    tall = rows["label"].isin(["a", "b"]).to_numpy()  # 12 high, 10 wide: padded left and right
    assert (x[tall][:, :, 0] == 0).all() and (x[~tall][:, :, 0] != 0).any()
    info = run_stage("ingest", folder_cfg(root, "data.image_size=16"), tmp_path / "run2")
    assert info["size"] == [16, 16]
    frame = rundir.read_manifest(tmp_path / "run2")
    assert set(frame["height"]) == {12, 20}  # the manifest keeps native sizes
    run_stage("ingest", folder_cfg(root, "data.resize=crop"), tmp_path / "run3")
    x, _, _ = rundir.load_split(tmp_path / "run3", "train")
    assert x.shape[1:] == (10, 10, 1) and (x[:, :, 0] != 0).any()


def test_split_is_stratified_disjoint_and_seeded():
    labels = [str(i % 4) for i in range(200)]
    a = split_indices(labels, 0.2, 0.3, seed=1)
    assert (a == split_indices(labels, 0.2, 0.3, seed=1)).all()
    assert not (a == split_indices(labels, 0.2, 0.3, seed=2)).all()
    counts = pd.crosstab(np.asarray(labels), a)
    assert (counts["test"] == 15).all() and (counts["val"] == 10).all() and (counts["train"] == 25).all()


def test_scarce_counts_follow_the_imbalance_ratio():
    assert scarce_counts(["a", "b", "c"], 20, 1.0) == {"a": 20, "b": 20, "c": 20}
    assert scarce_counts(["a", "b", "c"], 20, 4.0) == {"a": 20, "b": 10, "c": 5}


def test_scarcity_only_touches_train():
    labels = np.array([str(i % 3) for i in range(300)])
    split = split_indices(labels, 0.2, 0.3, seed=0)
    keep = simulate_scarcity(labels, split, scarce_counts(["0", "1", "2"], 5, 5.0), seed=0)
    assert keep[split != "train"].all()
    kept_train = pd.Series(labels[keep & (split == "train")]).value_counts().to_dict()
    assert kept_train == {"0": 5, "1": 2, "2": 1}


def test_digits_ingest_scarce_val_test_identical_to_full(tmp_path):
    """Scarcity simulation never changes val or test: the same held-out images whatever per_class is."""
    run_stage("ingest", load_config(None, ["data.per_class=5"]), tmp_path / "a")
    run_stage("ingest", load_config(None, ["data.per_class=20"]), tmp_path / "b")
    a, b = rundir.read_manifest(tmp_path / "a"), rundir.read_manifest(tmp_path / "b")
    for split in ("val", "test"):
        assert sorted(a[a["split"] == split]["id"]) == sorted(b[b["split"] == split]["id"])
    assert (a[a["split"] == "train"].groupby("label").size() == 5).all()


def write_idx(path, array: np.ndarray, gz: bool = True):
    import gzip
    import struct

    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_idx_source_from_a_folder_or_the_images_file(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 5, 4), dtype=np.uint8)
    labels = np.arange(12) % 3
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    for path in (tmp_path, tmp_path / "t10k-images-idx3-ubyte.gz"):
        data = read_idx(path)
        assert np.array_equal(np.stack(data.images)[:, :, :, 0], images)
        assert data.labels == [str(v) for v in labels]
    assert read_idx(tmp_path, channels=3).images[0].shape == (5, 4, 3)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-3], "file holds"),
    (lambda b: b"\1\1" + b[2:], "bad magic number"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "IDX type 0x0d is not supported"),
])
def test_idx_damage_is_named(tmp_path, damage, message):
    labels = write_idx(tmp_path / "x-labels-idx1-ubyte", np.zeros(4), gz=False)
    images = tmp_path / "x-images-idx3-ubyte"
    write_idx(images, np.zeros((4, 3, 3)), gz=False)
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(UserError, match=message):
        read_idx(images)
    assert labels.is_file()


def test_shared_mnist_reads_when_present():
    mnist = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    if not mnist.is_dir():
        pytest.skip("../shared/data/mnist is not on this machine")
    data = read_idx(mnist)
    assert len(data.images) == 10000 and data.images[0].shape == (28, 28, 1)
    assert pd.Series(data.labels).value_counts()["1"] == 1135


def test_class_counts_make_an_exact_imbalance(tmp_path):
    cfg = load_config(None, ["data.class_counts={'0': 12, '1': 3, '2': 3, '3': 3, '4': 3, '5': 3, '6': 3, '7': 3, '8': 3, '9': 2}"])
    run_stage("ingest", cfg, tmp_path / "run")
    frame = rundir.read_manifest(tmp_path / "run")
    train = frame[frame["split"] == "train"].groupby("label").size().to_dict()
    assert train == {"0": 12, **{str(i): 3 for i in range(1, 9)}, "9": 2}
    with pytest.raises(UserError, match=r"data.class_counts names class\(es\) \['x'\]"):
        run_stage("ingest", load_config(None, ["data.class_counts={x: 3}"]), tmp_path / "run2")
