"""Every malformed input a user can plausibly supply: a one-line error naming the file, or a recorded skip."""

import io
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from augment import rundir
from augment.config import DataConfig
from augment.graph import load_config
from augment.core.data.sources import read_csv, read_folder, read_source, to_array
from augment.graph import run_stage
from augment.errors import UserError
from conftest import write_image_folder


def folder(path, **kw) -> DataConfig:
    return DataConfig(source="folder", path=path, min_per_class=3, **kw)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def root(tmp_path):
    return write_image_folder(tmp_path / "in", {"a": 5, "b": 5})


DAMAGE = {
    "zero-byte": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(png_bytes(Image.new("L", (64, 64), 128))[:60]),
    "not an image": lambda p: p.write_text("name,label\nx,y\n"),
    "corrupt data": lambda p: p.write_bytes(png_bytes(Image.new("L", (32, 32), 7))[:33] + os.urandom(200)),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_file_is_named_or_skipped(root, tmp_path, damage):
    bad = root / "a" / "bad.png"
    DAMAGE[damage](bad)
    with pytest.raises(UserError, match=rf"^{bad}: not a readable image \(") as err:
        read_folder(folder(root))
    assert "\n" not in str(err.value)
    data = read_folder(folder(root, on_bad_image="skip"))
    assert len(data.images) == 10
    assert data.skipped == [{"origin": str(bad), "label": "a", "code": "bad_image", "reason": data.skipped[0]["reason"]}]
    assert data.skipped[0]["reason"].startswith("not a readable image")


def test_skips_are_recorded_in_the_manifest_and_never_split(root, tmp_path):
    DAMAGE["zero-byte"](root / "b" / "empty.png")
    cfg = load_config(None, ["data.source=folder", f"data.path={root}", "data.min_per_class=3",
                             "data.on_bad_image=skip"])
    info = run_stage("ingest", cfg, tmp_path / "run")
    frame = rundir.read_manifest(tmp_path / "run")
    skipped = frame[~frame["kept"]]
    assert info["skipped_inputs"] == 1 and len(skipped) == 1
    row = skipped.iloc[0]
    assert row["generator"] == str(root / "b" / "empty.png") and row["label"] == "b"
    assert row["split"] == "excluded" and pd.isna(row["path"]) and row["reason"].startswith("not a readable image")
    assert row["reason_code"] == "bad_image"


MODES = {
    "16-bit grey": (Image.fromarray(np.full((4, 4), 65535, np.uint16)), 255),
    "16-bit mid": (Image.fromarray(np.full((4, 4), 32896, np.uint16)), 128),
    "palette": (Image.new("P", (4, 4), 3), None),
    "CMYK": (Image.new("CMYK", (4, 4), (0, 0, 0, 0)), 255),  # no ink: white
    "bilevel": (Image.new("1", (4, 4), 1), 255),
    "RGBA transparent": (Image.new("RGBA", (4, 4), (255, 255, 255, 0)), 0),  # onto black
    "LA half": (Image.new("LA", (4, 4), (200, 128)), 100),
}


@pytest.mark.parametrize("mode", MODES)
def test_image_modes_are_converted_by_explicit_rules(mode):
    pil, expected = MODES[mode]
    grey = to_array(pil, 1, "x.png")
    assert grey.shape == (4, 4, 1) and grey.dtype == np.uint8
    if expected is not None:
        assert abs(int(grey[0, 0, 0]) - expected) <= 1
    assert to_array(pil, 3, "x.png").shape == (4, 4, 3)


def test_alpha_background_white_and_refused_modes():
    clear = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert to_array(clear, 1, "x.png", alpha_background="white").max() == 255
    with pytest.raises(UserError, match=r"x.tif: 32-bit float images \(mode F\) are not supported"):
        to_array(Image.new("F", (2, 2), 0.5), 1, "x.tif")
    with pytest.raises(UserError, match=r"outside 0..65535"):
        to_array(Image.fromarray(np.full((2, 2), 70000, np.int32)), 1, "x.tif")


def test_16_bit_png_on_disk_is_scaled_not_clipped(tmp_path):
    root = write_image_folder(tmp_path / "in", {"a": 3, "b": 3})
    ramp = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369)  # 0 .. 65535
    Image.fromarray(ramp).save(root / "a" / "deep.png")
    data = read_folder(folder(root))
    deep = data.images[data.origins.index(str(root / "a" / "deep.png"))]
    assert deep[0, 0, 0] == 0 and deep[-1, -1, 0] == 255 and len(np.unique(deep)) == 16


def test_exif_orientation_is_applied(tmp_path):
    root = write_image_folder(tmp_path / "in", {"a": 3, "b": 3})
    wide = Image.new("L", (6, 2), 0)
    wide.putpixel((0, 0), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    wide.save(root / "a" / "phone.jpg", exif=exif, quality=100)
    data = read_folder(folder(root, image_size=8))
    phone = data.images[data.origins.index(str(root / "a" / "phone.jpg"))]
    assert phone.shape[:2] == (6, 2)  # displayed upright: 2 wide, 6 tall


def test_decompression_bomb_is_refused_before_decoding(root):
    Image.new("L", (400, 300)).save(root / "a" / "huge.png")
    with pytest.raises(UserError, match=r"huge.png: 400x300 image has more than data.max_pixels=100000 pixels"):
        read_folder(folder(root, max_pixels=100_000))


def test_empty_class_folder_is_named(root):
    (root / "c").mkdir()
    (root / "c" / "readme.txt").write_text("todo")
    with pytest.raises(UserError, match=rf"^{root / 'c'}: class folder has no images"):
        read_folder(folder(root))


def test_symlinks_leaving_the_dataset_are_refused(root, tmp_path):
    outside = write_image_folder(tmp_path / "elsewhere", {"x": 1})
    (root / "a" / "link.png").symlink_to(outside / "x" / "000.png")
    with pytest.raises(UserError, match=r"link.png: symlink target .*elsewhere/x/000.png is outside"):
        read_folder(folder(root))
    assert len(read_folder(folder(root, on_bad_image="skip")).skipped) == 1
    (root / "a" / "link.png").unlink()
    (root / "a" / "inside.png").symlink_to(root / "b" / "000.png")  # a link within the dataset is fine...
    with pytest.raises(UserError, match=r"b/000.png: the same image as .*a/inside.png \(class 'a'\) but labelled 'b'"):
        read_source(folder(root))  # ...but it duplicates an image under another label
    (root / "a" / "inside.png").unlink()
    (root / "c").symlink_to(outside / "x", target_is_directory=True)
    with pytest.raises(UserError, match=r"/c: class folder is a link to .* outside the dataset"):
        read_folder(folder(root))


def test_exact_duplicates_are_dropped_and_conflicts_named(root):
    (root / "a" / "copy.png").write_bytes((root / "a" / "001.png").read_bytes())
    data = read_source(folder(root))
    assert len(data.images) == 10
    assert data.skipped == [{"origin": str(root / "a" / "copy.png"), "label": "a", "code": "duplicate",
                             "reason": f"exact duplicate of {root / 'a' / '001.png'}"}]
    # The same pixels in another format are the same image too.
    Image.open(root / "a" / "002.png").save(root / "b" / "same.bmp")
    with pytest.raises(UserError, match=r"same.bmp: the same image as .*a/002.png \(class 'a'\) but labelled 'b'; "
                                        r"fix the label or set data.on_bad_image: skip"):
        read_source(folder(root))
    data = read_source(folder(root, on_bad_image="skip"))
    assert len(data.images) == 9 and len(data.skipped) == 3  # both conflicting copies and the duplicate


def test_mixed_sizes_are_an_error_only_when_native_is_asked_for(tmp_path):
    """data.image_size native names an example file of each size; the default (auto) works."""
    root = write_image_folder(tmp_path / "in", {"a": 5, "b": 5})
    Image.new("L", (30, 20), 9).save(root / "b" / "big.png")
    base = ["data.source=folder", f"data.path={root}", "data.min_per_class=3"]
    with pytest.raises(UserError) as err:
        run_stage("ingest", load_config(None, [*base, "data.image_size=native"]), tmp_path / "run")
    assert str(err.value) == (f"{root}: data.image_size is native but the images differ in size: 12x10 (e.g. "
                              f"{root}/a/000.png), 20x30 (e.g. {root}/b/big.png); set data.image_size to auto "
                              "or a number")
    info = run_stage("ingest", load_config(None, base), tmp_path / "run")
    assert info["size"] == [10, 10] and "median shorter side" in info["size_note"]


def test_one_image_class_is_refused_with_the_key(tmp_path):
    root = write_image_folder(tmp_path / "in", {"a": 5, "b": 1})
    with pytest.raises(UserError, match=r"class 'b' has 1 image\(s\); at least 3 are needed \(data.min_per_class\)"):
        read_source(folder(root))


@pytest.fixture
def csv_dir(tmp_path):
    write_image_folder(tmp_path / "imgs", {"a": 4, "b": 4})
    return tmp_path


def csv_source(path, **kw) -> DataConfig:
    return DataConfig(source="csv", path=path, min_per_class=3, **kw)


def write_csv(csv_dir, extra: str) -> "os.PathLike":
    rows = "".join(f"imgs/{c}/{i:03d}.png,{c}\n" for c in "ab" for i in range(4))
    path = csv_dir / "labels.csv"
    path.write_text("path,label\n" + rows + extra)
    return path


@pytest.mark.parametrize("extra, message", [
    ("imgs/a/none.png,a\n", r"labels.csv:10: image file .*none.png not found"),
    ("imgs/a/000.png,\n", r"labels.csv:10: empty label"),
    (",a\n", r"labels.csv:10: empty path"),
    ("../escape.png,a\n", r"labels.csv:10: path .*escape.png is outside"),
    ("/etc/hostname,a\n", r"labels.csv:10: path /etc/hostname is outside"),
    ("imgs/a/000.png,../up\n", r"labels.csv:10: class name '../up' cannot be used as a folder name"),
    ("imgs/a/000.png,..\n", r"labels.csv:10: class name '..' cannot be used as a folder name"),
])
def test_csv_row_problems_name_the_row_or_are_skipped(csv_dir, extra, message):
    path = write_csv(csv_dir, extra)
    with pytest.raises(UserError, match=message):
        read_csv(csv_source(path))
    data = read_csv(csv_source(path, on_bad_image="skip"))
    assert len(data.images) == 8 and len(data.skipped) == 1 and data.skipped[0]["origin"] == f"{path}:10"


@pytest.mark.parametrize("content, message", [
    ("file,label\nx.png,a\n", r"missing column\(s\) \['path'\]"),
    ("path\nx.png\n", r"missing column\(s\) \['label'\]"),
    ("", r"not a readable CSV"),
    ('path,label\n"unterminated,a\n', r"not a readable CSV"),
])
def test_csv_structure_problems_are_errors_even_with_skip(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_csv(csv_source(path, on_bad_image="skip"))


def test_every_input_skipped_is_an_error_that_says_so(tmp_path):
    root = tmp_path / "in"
    for c in "ab":
        (root / c).mkdir(parents=True)
        (root / c / "x.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"no images found \(2 skipped\)"):
        read_source(folder(root, on_bad_image="skip"))


def test_unknown_on_bad_image_value_names_the_key():
    with pytest.raises(UserError, match=r"config key 'data.on_bad_image'"):
        load_config(None, ["data.on_bad_image=ignore"])


def test_a_split_too_small_for_every_class_names_the_key(tmp_path):
    """The seeded split keeps exact fractions, so too small a fraction is an error naming the key;
    the hash split gives every class one image there instead (recorded as hash_fill)."""
    root = write_image_folder(tmp_path / "in", {c: 5 for c in "abcde"})
    args = ["data.source=folder", f"data.path={root}", "data.min_per_class=3", "data.test_fraction=0.1"]
    with pytest.raises(UserError, match=r"config key 'data.test_fraction': 2 of 25 images for 5 classes"):
        run_stage("ingest", load_config(None, [*args, "data.split=seeded"]), tmp_path / "run")
    run_stage("ingest", load_config(None, args), tmp_path / "hash")
    frame = rundir.read_manifest(tmp_path / "hash")
    assert frame.loc[frame["split"] == "test", "label"].nunique() == 5 and "hash_fill" in set(frame["split_origin"])


def test_file_and_folder_names_that_are_not_utf8_are_read_and_stored_safely(tmp_path):
    """Linux file names are bytes: caf\\xe9.png (Latin-1) is read like any image; the manifest and every
    message hold a printable form (backslash escapes); a class folder with such a name is a class."""
    import os

    from augment.core.data.sources import safe_text
    from conftest import write_image_folder

    root = write_image_folder(tmp_path / "in", {"a": 6})
    write_image_folder(tmp_path / "in", {os.fsdecode(b"\xe9t\xe9"): 6}, seed=1)
    Image.fromarray(np.full((12, 10), 7, np.uint8)).save(root / "a" / os.fsdecode(b"caf\xe9.png"))
    (root / "a" / os.fsdecode(b"bad\xff.png")).write_bytes(b"not an image")
    cfg = load_config(None, ["data.source=folder", f"data.path={root}", "data.on_bad_image=skip"])
    info = run_stage("ingest", cfg, tmp_path / "run")
    assert info["classes"] == ["a", "\ufffdt\ufffd"] and info["skipped_inputs"] == 1
    frame = rundir.read_manifest(tmp_path / "run")
    assert f"{root}/a/caf\\xe9.png" in set(frame["generator"])
    bad = frame[frame["split"] == "excluded"].iloc[0]
    assert bad["generator"] == f"{root}/a/bad\\xff.png" and bad["reason_code"] == "bad_image"
    assert safe_text(os.fsdecode(b"caf\xe9")) == "caf\\xe9"
    assert run_stage("ingest", cfg, tmp_path / "run")["skipped"]  # its content hash is stable
    with pytest.raises(UserError, match=r"bad\\xff.png: not a readable image"):
        run_stage("ingest", load_config(None, ["data.source=folder", f"data.path={root}"]), tmp_path / "run2")
