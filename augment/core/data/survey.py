"""A first look at a user's image folder (`augment init`): classes, counts, modes and sizes, and a
starting config that `augment run` accepts; the same look at a path,label CSV (the plan's). Reads
image headers only."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image

from augment.core.data.idx import regular_file
from augment.core.data.sources import IMG_EXTENSIONS, class_files, csv_table, safe_text, split_folders, subfolders
from augment.errors import UserError


def survey_folder(root: Path) -> dict:
    """Classes (sub-folders with images), images per class, colour or grey, and the image sizes."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{safe_text(str(root))}: not a folder (expected FOLDER/<class>/<image>)")
    counts: Counter = Counter()
    sizes: Counter = Counter()
    colour = unreadable = 0
    class_dirs = [c for _, top in split_folders(root) for c in subfolders(top)]  # root/<class>, or root/<split>/<class>
    for class_dir in class_dirs:
        files, _ = class_files(class_dir)  # the files ingest reads; an empty class folder is an error here too
        counts[safe_text(class_dir.name)] += len(files)
        for f in files:
            if not regular_file(f):  # a FIFO would block Image.open: ingest names it, here it is only counted
                unreadable += 1
                continue
            try:
                with Image.open(f) as im:  # the header only
                    sizes[im.size[::-1]] += 1
                    colour += im.mode not in ("L", "LA", "1", "I", "I;16", "F")
            except Exception:  # noqa: BLE001  (ingest names each unreadable file; here they are only counted)
                unreadable += 1
    if len(counts) < 2:
        raise UserError(f"{safe_text(str(root))}: found {len(counts)} class folder(s) with images; at least two "
                        f"are needed (FOLDER/<class>/<image>, extensions {', '.join(IMG_EXTENSIONS)})")
    return {"path": str(root.resolve()), "classes": dict(sorted(counts.items())), "sizes": dict(sizes.most_common()),
            "channels": 3 if colour else 1, "unreadable": unreadable}


def survey_csv(path: Path) -> dict:
    """Classes, images per class and image sizes of a path,label CSV (data.source csv), from the image
    headers; rows ingest would refuse (empty, outside the CSV's folder, not a readable image) are
    left out here, ingest names each."""
    path = Path(path)
    table = csv_table(path)  # ingest's reading of it, and its one-line errors
    base = path.parent.resolve()
    counts: Counter = Counter()
    sizes: Counter = Counter()
    for rel, label in zip(table["path"], table["label"]):
        f = (path.parent / rel).resolve()
        if not rel.strip() or not label.strip() or not f.is_relative_to(base) or not regular_file(f):
            continue
        try:
            with Image.open(f) as im:  # the header only
                sizes[im.size[::-1]] += 1
        except Exception:  # noqa: BLE001  (ingest names each unreadable file)
            continue
        counts[label.strip()] += 1
    return {"classes": dict(counts), "sizes": dict(sizes.most_common())}


def starting_config(survey: dict) -> str:
    """A commented YAML config for the surveyed folder: every key it sets is explained."""
    counts = survey["classes"]
    smallest, largest = min(counts.values()), max(counts.values())
    sizes = survey["sizes"]
    shortest = min(min(hw) for hw in sizes)
    gan_size = 8 if shortest <= 8 else 16 if shortest < 24 else 32  # 8x8 images: the GAN at their own size
    size_note = (f"all {next(iter(sizes))[0]}x{next(iter(sizes))[1]}" if len(sizes) == 1
                 else f"{len(sizes)} sizes: auto picks one and pads each image to it")
    lines = [
        f"# Starting config written by `augment init` for {survey['path']}",
        f"# {len(counts)} classes, {smallest} to {largest} images per class; images {size_note}"
        + (f"; {survey['unreadable']} unreadable file(s): see data.on_bad_image" if survey["unreadable"] else ""),
        "# Run it: augment run THIS_FILE   (every key is in docs/config.md)",
        "seed: 0",
        "device: auto",
        "data:",
        "  source: folder",
        f"  path: {survey['path']}",
        f"  channels: {survey['channels']}            # {'colour' if survey['channels'] == 3 else 'greyscale'} images",
        "  image_size: auto       # the shared size, or a working size picked from yours",
        "  resize: pad            # keep each image's aspect (pad) or center-crop (crop)",
        "  on_bad_image: " + ("skip     # some files are unreadable: leave them out, recorded"
                              if survey["unreadable"] else "error    # stop on an unreadable file"),
        "classical:",
        "  preset: medium",
        "  multiplier: 4",
        "smote:",
        "  sampler: SMOTE",
        "gan:",
        "  mode: per_class+mix    # a per-class GAN and a generator that mixes two real images of a class",
        f"  image_size: {gan_size}         # GAN resolution; samples are resized to the working size",
        "  steps: 1500",
        "  checkpoint_selection: cas  # sample the snapshot whose kept samples teach best on val",
        "benchmark:",
        "  seeds: 5",
    ]
    if largest >= 2 * smallest:
        lines[lines.index("classical:") + 1: lines.index("classical:") + 1] = [
            "  balance: true          # imbalanced classes: copies go to the smallest classes first"]
    return "\n".join(lines) + "\n"
