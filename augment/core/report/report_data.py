"""The report's data section: images per class and source, where the splits came from, inputs left out."""

from __future__ import annotations

import pandas as pd

from augment.safe_text import md
from augment.registry import SPLIT_ORIGINS
from augment.summary import Summary


def data_table(frame: pd.DataFrame) -> str:
    train = frame[frame["split"] == "train"]
    counts = pd.DataFrame({
        "real train": train[train["source"] == "real"].groupby("label").size(),
        "classical": train[train["source"] == "classical"].groupby("label").size(),
        "smote": train[train["source"] == "smote"].groupby("label").size(),
        "gan kept": train[(train["source"] == "gan") & train["kept"]].groupby("label").size(),
        "gan rejected": train[(train["source"] == "gan") & ~train["kept"]].groupby("label").size(),
        "val": frame[frame["split"] == "val"].groupby("label").size(),
        "test": frame[frame["split"] == "test"].groupby("label").size(),
    }).fillna(0).astype(int)
    header = "| class | " + " | ".join(counts.columns) + " |"
    lines = [header, "|---|" + "---:|" * len(counts.columns)]
    for label, row in counts.iterrows():
        lines.append(f"| {md(label)} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def split_text(ingest: dict, summary: Summary) -> str:
    """Where the splits came from, and the test set's digest (runs on another test set are not comparable)."""
    split = ingest.get("split")
    if not split:
        return ""
    given = "; ".join(f"{s} from {md(where)}" for s, where in sorted(split["given_by"].items()))
    origins = ", ".join(f"{n} {SPLIT_ORIGINS.get(k, k)}" for k, n in sorted(split["origins"].items()))
    test = summary.held_out.get("test")
    digest = (f" The test set is `{test.ids_sha256[:12]}` ({test.images} images): only runs with the same test set "
              "(`augment runs`, column test set) can be compared with this one." if test else "")
    return (f"Splits: {given + '; ' if given else ''}how each real image's split was decided: {origins} "
            f"(`data.split: {split['method']}`; the manifest's split_origin).{digest}\n\n")


def skipped_inputs(frame: pd.DataFrame, limit: int = 20) -> str:
    """The input files ingest left out (data.on_bad_image: skip, duplicates) and why."""
    skipped = frame[(frame["source"] == "real") & ~frame["kept"]]
    if skipped.empty:
        return "Every input image was used."
    lines = [f"Input images left out: {len(skipped)}.", "", "| input | class | reason |", "|---|---|---|"]
    for origin, label, reason in skipped[["generator", "label", "reason"]].head(limit).itertuples(index=False):
        lines.append(f"| {md(origin)} | {'' if pd.isna(label) else md(label)} | {md(reason)} |")
    if len(skipped) > limit:
        lines.append(f"| ... {len(skipped) - limit} more in manifest.parquet | | |")
    return "\n".join(lines)
