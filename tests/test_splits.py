"""Splits that stay put: a hash of each image's content, or the split the data gives."""

import shutil

import numpy as np
import pytest
from PIL import Image

from augment import rundir
from augment.core.data.splits import hash_split
from augment.errors import UserError
from augment.graph import load_config, run_stage
from conftest import write_image_folder


def keys(n, start=0):
    return [i.to_bytes(8, "little") for i in range(start, start + n)]


def test_the_hash_split_never_moves_an_image_when_others_are_added_or_removed():
    labels = ["a", "b", "c"] * 40
    before, _ = hash_split(keys(120), labels, [None] * 120, 0.2, 0.3, seed=7)
    grown, _ = hash_split(keys(150), labels + ["a", "b", "c"] * 10, [None] * 150, 0.2, 0.3, seed=7)
    assert (grown[:120] == before).all()
    kept = np.r_[0:30, 60:120]  # 30 images removed
    shrunk, _ = hash_split([keys(120)[i] for i in kept], [labels[i] for i in kept], [None] * 90, 0.2, 0.3, seed=7)
    assert (shrunk == before[kept]).all()
    share = {s: np.mean(before == s) for s in ("train", "val", "test")}
    assert abs(share["test"] - 0.3) < 0.12 and abs(share["val"] - 0.2) < 0.12  # the bands' fractions, roughly
    other, _ = hash_split(keys(120), labels, [None] * 120, 0.2, 0.3, seed=8)
    assert not (other == before).all()  # the seed picks another split


def test_every_class_gets_an_image_in_every_drawn_split():
    labels = [c for c in "abcdefgh" for _ in range(6)]
    split, how = hash_split(keys(48), labels, [None] * 48, 0.2, 0.3, seed=0)
    for c in "abcdefgh":
        mine = split[np.asarray(labels) == c]
        assert {"train", "val", "test"} <= set(mine)
    assert set(how) <= {"hash", "hash_fill"}
    from augment.core.data.splits import _unit

    held = [k for k in keys(400) if _unit(k, 0) < 0.5][:7]  # seven images whose hash puts them all in val or test
    split, how = hash_split(held + keys(7, start=1000), ["a"] * 7 + ["b"] * 7, [None] * 14, 0.2, 0.3, seed=0)
    assert {"train", "val", "test"} <= set(split[:7]) and (how[:7] == "hash_fill").sum() == 1


def test_a_given_split_stays_and_is_not_drawn_again():
    labels = ["a", "b"] * 20
    given = ["test"] * 6 + [None] * 34
    split, how = hash_split(keys(40), labels, given, 0.2, 0.3, seed=0)
    assert (split[:6] == "test").all() and (how[:6] == "given").all()
    assert (split[6:] != "test").all()  # the data gives test: the hash draws only val and train


def ingest(tmp_path, root, *overrides, name="run"):
    cfg = load_config(None, ["data.source=folder", f"data.path={root}", "data.min_per_class=3", *overrides])
    run_stage("ingest", cfg, tmp_path / name)
    frame = rundir.read_manifest(tmp_path / name)
    return frame[frame["kept"]].set_index("generator")


def test_adding_an_image_to_the_folder_moves_no_other_image_end_to_end(tmp_path):
    root = write_image_folder(tmp_path / "in", {"a": 12, "b": 12})
    before = ingest(tmp_path, root, name="before")
    Image.fromarray(np.full((12, 10), 7, np.uint8)).save(root / "a" / "new.png")
    after = ingest(tmp_path, root, name="after")
    assert len(after) == len(before) + 1
    same = after.loc[before.index]
    assert (same["split"] == before["split"]).all() and (same["id"] == before["id"]).all()  # ids come from content
    assert set(after["split_origin"]) <= {"hash", "hash_fill"}


def split_folder(tmp_path, counts=None):
    root = tmp_path / "given"
    for split, n in (counts or {"train": 6, "val": 3, "test": 3}).items():
        write_image_folder(root / split, {"a": n, "b": n}, seed=hash(split) % 1000)
    return root


def test_a_train_val_test_folder_layout_is_honoured(tmp_path):
    frame = ingest(tmp_path, split_folder(tmp_path))
    from_folder = frame.index.str.extract(r"/given/(train|val|test)/", expand=False)
    assert (frame["split"].to_numpy() == from_folder.to_numpy()).all()
    assert set(frame["split_origin"]) == {"given"}
    info = rundir.ingest_info(tmp_path / "run")
    assert set(info["split"]["given_by"]) == {"train", "val", "test"}


def test_without_val_folder_val_is_drawn_from_train_by_hash(tmp_path):
    frame = ingest(tmp_path, split_folder(tmp_path, {"train": 10, "test": 3}))
    assert set(frame.loc[frame["split"] == "test", "split_origin"]) == {"given"}
    val = frame[frame["split"] == "val"]
    assert val["label"].nunique() == 2 and set(val["split_origin"]) <= {"hash", "hash_fill"}
    assert val.index.str.contains("/train/").all()


def test_a_class_missing_from_a_given_split_is_one_clear_line(tmp_path):
    root = split_folder(tmp_path)
    shutil.rmtree(root / "test" / "b")
    with pytest.raises(UserError, match=r"given/test: class 'b' has no image in the test split") as err:
        ingest(tmp_path, root)
    assert "\n" not in str(err.value)


def test_an_image_in_two_splits_is_one_clear_line_naming_both_files(tmp_path):
    root = split_folder(tmp_path)
    shutil.copy(root / "train" / "a" / "000.png", root / "test" / "a" / "copy.png")
    with pytest.raises(UserError, match=r"test/a/copy.png \(test\) and .*train/a/000.png \(train\) are the same image; "
                                        r"an image can sit in one split only") as err:
        ingest(tmp_path, root)
    assert "\n" not in str(err.value)


def test_a_csv_split_column_and_a_test_path_are_honoured(tmp_path):
    root = write_image_folder(tmp_path / "imgs", {"a": 8, "b": 8})
    rows = [f"{c}/{i:03d}.png,{c},{'test' if i < 2 else ('val' if i == 2 else '')}" for c in "ab" for i in range(8)]
    (root / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    cfg = load_config(None, ["data.source=csv", f"data.path={root / 'labels.csv'}", "data.min_per_class=3"])
    run_stage("ingest", cfg, tmp_path / "csv")
    frame = rundir.read_manifest(tmp_path / "csv").set_index("generator")
    row = {int(o.rsplit(":", 1)[1]) - 2: r for o, r in frame.iterrows()}  # CSV row index -> manifest row
    assert all(row[k]["split"] == "test" and row[k]["split_origin"] == "given" for k in (0, 1, 8, 9))
    assert all(row[k]["split"] == "val" for k in (2, 10)) and all(row[k]["split"] == "train" for k in (3, 4, 11))
    (root / "labels.csv").write_text("path,label,split\na/000.png,a,holdout\n")
    with pytest.raises(UserError, match=r"labels.csv:2: split 'holdout' is not train, val or test"):
        run_stage("ingest", load_config(None, ["data.source=csv", f"data.path={root / 'labels.csv'}"]), tmp_path / "bad")

    pool = write_image_folder(tmp_path / "pool", {"a": 8, "b": 8}, seed=1)
    test = write_image_folder(tmp_path / "test", {"a": 3, "b": 3}, seed=2)
    frame = ingest(tmp_path, pool, f"data.test_path={test}", name="test_path")
    assert (frame.loc[frame.index.str.contains("/test/"), "split"] == "test").all()
    assert set(frame.loc[frame.index.str.contains("/pool/"), "split"]) == {"train", "val"}
    with pytest.raises(UserError, match=r"data.split: seeded cannot be combined"):
        ingest(tmp_path, pool, f"data.test_path={test}", "data.split=seeded", name="seeded")
