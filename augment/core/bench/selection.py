"""Where the benchmark makes its choices: on the val split, or by repeated stratified k-fold over
the real train+val images when val is too small to choose on (issue 21's tiny-val protocol).

The choices are the recipe that step (b) crosses with every synthetic source, the synthetic share per
arm and the recommended arm. Under k-fold, seed s trains
on the real train+val images outside fold s (fold s % k of repeat s // k) and is scored on the
images inside it, in place of val; synthetic images derived from a held-out image (classical
copies, SMOTE interpolations: their parents) are left out of that seed's training. Test is never
read by either protocol: it only scores what was chosen.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.model_selection import RepeatedStratifiedKFold


def choose_protocol(selection: str, kfold_below: int, val_per_class: int) -> tuple[str, str]:
    """The protocol ("val" or "kfold") and why, for benchmark.selection and the smallest class's
    real val count."""
    if selection != "auto":
        return selection, f"benchmark.selection: {selection}"
    if val_per_class < kfold_below:
        return "kfold", (f"the smallest class has {val_per_class} val image(s), fewer than benchmark.kfold_below "
                         f"({kfold_below})")
    return "val", f"every class has at least {kfold_below} val images (benchmark.kfold_below)"


def choose_recipe(val: dict[str, float]) -> str:
    """Step (a): the recipe arm with the best val score (under k-fold: the mean over the seeds' held-out
    folds), from `val` (recipe arm -> score, in the registry's order); a tie goes to the earlier, plainer one."""
    order = list(val)
    return max(order, key=lambda a: (val[a], -order.index(a)))


def fold_count(folds: int, labels: np.ndarray) -> int:
    """benchmark.folds, lowered to the smallest class's image count so every fold is stratified."""
    counts = np.unique(labels, return_counts=True)[1]
    return int(min(folds, counts.min())) if len(counts) else folds


def fold_indices(labels: np.ndarray, folds: int, seeds: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) positions for seeds 0..seeds-1: seed s gets fold s % folds of repeat s // folds
    of a repeated stratified k-fold, so every `folds` consecutive seeds hold out each image once."""
    present = np.unique(labels)  # classes absent from the pool play no part in the stratification
    codes = np.searchsorted(present, labels)
    if folds < 2:
        raise ValueError(f"k-fold selection needs every class to have at least 2 train+val images (got {folds})")
    rskf = RepeatedStratifiedKFold(n_splits=folds, n_repeats=-(-seeds // folds), random_state=random_state % 2**32)
    out = []
    for fit, held in rskf.split(np.zeros(len(codes)), codes):
        out.append((fit, held))
        if len(out) == seeds:
            break
    return out


def parents(rows: pd.DataFrame) -> list[set[str]]:
    """Every manifest row's parent ids: parent_id, plus params["parents"] where a row records
    several (a SMOTE image interpolates two real images)."""
    out = []
    for parent, params in zip(rows["parent_id"], rows["params"]):
        mine = {parent} if isinstance(parent, str) else set()
        if isinstance(params, str) and params.startswith("{"):
            try:
                listed = json.loads(params).get("parents", [])
            except json.JSONDecodeError:
                listed = []
            mine |= {p for p in listed if isinstance(p, str)}
        out.append(mine)
    return out


def without_held_out(rows: pd.DataFrame, held_out_ids) -> np.ndarray:
    """A mask of the synthetic rows none of whose parents is held out (a mix or hydra sample lists its
    parents; the DCGANs' samples have none, yet the generator saw every real train image, a leak the report states)."""
    held = set(held_out_ids)
    return np.array([not (p & held) for p in parents(rows)], dtype=bool)
