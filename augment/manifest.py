"""The run's manifest (one row per image, real and synthetic) and PNG input/output."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from augment.runtime import atomic_path

COLUMNS = {
    "id": "string",
    "path": "string",  # PNG relative to the run directory (smote rows: the decoded feature row)
    "label": "string",
    "split": "string",  # train | val | test | excluded (an input ingest left out; see reason)
    "source": "string",  # real | classical | smote | gan
    "parent_id": "string",
    "seed": "Int64",
    "generator": "string",  # what made the row: the input file, the preset, the sampler, the GAN mode
    "sha256": "string",
    "height": "Int64",
    "width": "Int64",
    "channels": "Int64",
    "score": "Float64",  # gate score (classifier confidence) for gan rows
    "novelty": "Float64",  # gan rows: distance to the nearest real train image / typical real spacing
    "kept": "boolean",
    "reason": "string",  # why a row was not kept
    "params": "string",  # classical rows: the applied albumentations parameters, JSON
}
SOURCES = ("real", "classical", "smote", "gan")
MANIFEST = "manifest.parquet"


def empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


def normalise(rows: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """Give rows exactly the manifest's columns and dtypes (missing columns are null)."""
    frame = pd.DataFrame(rows)
    for col, dtype in COLUMNS.items():
        if col not in frame:
            frame[col] = pd.NA
        frame[col] = frame[col].astype(dtype)
    return frame[list(COLUMNS)].reset_index(drop=True)


def read(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return empty()
    return normalise(pd.read_parquet(path))


def write(run_dir: Path, frame: pd.DataFrame) -> None:
    with atomic_path(Path(run_dir) / MANIFEST) as tmp:
        normalise(frame).to_parquet(tmp, index=False)


def replace_source(run_dir: Path, source: str, rows: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """Swap every row of one source for `rows` (a stage re-run replaces its own rows only)."""
    current = read(run_dir)
    new = normalise(rows)
    if len(new) and (new["source"] != source).any():
        raise ValueError(f"rows for source {source!r} carry another source")
    parts = [f for f in (current[current["source"] != source], new) if len(f)]
    frame = pd.concat(parts, ignore_index=True) if parts else empty()
    write(run_dir, frame)
    return frame


# PNG input/output lives in augment.png (no pandas: cheap to import in worker processes).
from augment.png import encode_png, load_images, save_png, to_channels  # noqa: E402,F401
