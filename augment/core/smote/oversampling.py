"""SMOTE-family over-sampling (imbalanced-learn) on feature rows, and the provenance of each new row."""

from __future__ import annotations

import difflib
import importlib
import logging

import numpy as np

from augment.errors import UserError
from augment.registry import COMBINED_SAMPLERS, SAMPLERS

log = logging.getLogger("augment")

_NEIGHBOUR_PARAMS = ("k_neighbors", "n_neighbors")
_SET_BY_US = ("sampling_strategy", "random_state", "smote")  # from smote.fill_ratio, seed, and the inner SMOTE


def _sampler_class(name: str):
    module, cls_name = SAMPLERS[name].split(":")
    return getattr(importlib.import_module(module), cls_name)


def sampler_parameters(name: str) -> list[str]:
    """The parameters smote.params may set for this sampler (a combined one: its own plus k_neighbors)."""
    accepted = set(_sampler_class(name)().get_params(deep=False)) - set(_SET_BY_US)
    return sorted(accepted | ({"k_neighbors"} if name in COMBINED_SAMPLERS else set()))


def check_params(name: str, params: dict) -> None:
    """smote.params checked as imbalanced-learn checks them at fit time, but now: an unknown name
    (with the nearest known one) or a bad value is a one-line error naming the key."""
    accepted = sampler_parameters(name)
    for key in params:
        if key not in accepted:
            near = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            why = "; it is set by the tool" if key in _SET_BY_US else ""
            raise UserError(f"config key 'smote.params': {name} has no parameter {key!r}{hint}{why}; "
                            f"it takes {', '.join(accepted)}")
    sampler = make_sampler(name, params, {0: 2}, smallest=2**31, seed=0)
    for part in (sampler, getattr(sampler, "smote", None)):
        try:
            if part is not None:
                part._validate_params()  # scikit-learn's parameter constraints, as fit() applies them
        except (ValueError, TypeError) as exc:
            raise UserError(f"config key 'smote.params': {' '.join(str(exc).split())}") from None


def make_sampler(name: str, params: dict, targets: dict[int, int], smallest: int, seed: int):
    """Build the named sampler with a per-class target; neighbour counts clamped to smallest-1.

    Combined samplers get their inner SMOTE built here (the target and the clamped k_neighbors
    go to it); their other parameters go to the combined sampler.
    """
    cls = _sampler_class(name)
    params = dict(params)
    if name in COMBINED_SAMPLERS:
        inner = {k: params.pop(k) for k in list(params) if k == "k_neighbors"}
        smote = make_sampler("SMOTE", inner, targets, smallest, seed)
        try:
            return cls(smote=smote, random_state=seed % 2**32, **params)
        except TypeError as exc:
            raise UserError(f"config key 'smote.params': {name} does not accept these parameters ({exc})") from None
    for key in _NEIGHBOUR_PARAMS:
        default = cls().get_params().get(key)
        if isinstance(default, int):
            wanted = params.get(key, default)
            if isinstance(wanted, int) and wanted > smallest - 1:  # else check_params names the bad value
                log.info("%s: %s clamped from %d to %d (smallest class has %d rows)", name, key, wanted, smallest - 1, smallest)
                params[key] = smallest - 1
    try:
        return cls(sampling_strategy=targets, random_state=seed % 2**32, **params)
    except TypeError as exc:
        raise UserError(f"config key 'smote.params': {name} does not accept these parameters ({exc})") from None


def oversample(
    x: np.ndarray, y: np.ndarray, targets: dict[int, int], sampler: str = "SMOTE",
    params: dict | None = None, seed: int = 0, class_names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """New feature rows so class c reaches targets[c] rows; returns (x_new, y_new) only.

    A class with a single row cannot be interpolated: it is over-sampled at random, with a warning.
    """
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"expected x (N, D) and y (N,), got {x.shape} and {y.shape}")
    names = class_names or [str(c) for c in range(int(y.max()) + 1)]
    counts = {int(c): int((y == c).sum()) for c in np.unique(y)}
    wanted = {c: max(targets.get(c, n), n) for c, n in counts.items()}
    singles = [c for c, n in counts.items() if n < 2 and wanted[c] > n]
    interp = {c: t for c, t in wanted.items() if c not in singles}
    new_x, new_y = [np.zeros((0, x.shape[1]))], [np.zeros(0, np.int64)]
    rng = np.random.default_rng(seed)
    for c in singles:
        log.warning("class %r has one image: %s cannot interpolate, duplicating it instead", names[c], sampler)
        new_x.append(np.repeat(x[y == c], wanted[c] - 1, axis=0))
        new_y.append(np.full(wanted[c] - 1, c, np.int64))
    if any(t > counts[c] for c, t in interp.items()):
        mask = np.isin(y, list(interp))
        smallest = min(counts[c] for c in interp)
        s = make_sampler(sampler, params or {}, interp, smallest, int(rng.integers(2**31)))
        try:
            x_res, y_res = s.fit_resample(x[mask], y[mask])
        except (ValueError, RuntimeError) as exc:
            growing = [names[c] for c, t in interp.items() if t > counts[c]]
            raise UserError(f"smote.sampler {sampler} failed to over-sample class(es) {growing}: "
                            f"{' '.join(str(exc).split())}") from None
        n = int(mask.sum())
        if sampler in COMBINED_SAMPLERS:  # cleaning reorders and removes rows: new rows are those not in the input
            seen = {row.tobytes() for row in np.ascontiguousarray(x[mask])}
            fresh = np.array([row.tobytes() not in seen for row in np.ascontiguousarray(x_res)], dtype=bool)
            kept = len(x_res) - int(fresh.sum())
            if kept < n:
                log.info("%s: its cleaning step would drop %d real row(s); real images are never dropped, "
                         "only its new rows are used", sampler, n - kept)
            x_res, y_res = np.concatenate([x[mask], x_res[fresh]]), np.concatenate([y[mask], np.asarray(y_res)[fresh]])
        elif not np.array_equal(x_res[:n], x[mask]):  # imblearn appends new rows after the originals
            raise RuntimeError(f"{sampler} reordered its input; cannot tell new rows from real ones")
        new_x.append(x_res[n:])
        new_y.append(np.asarray(y_res[n:], np.int64))
        made = np.bincount(new_y[-1], minlength=len(names))
        short = [f"{names[c]!r} ({counts[c] + made[c]} of {t})" for c, t in interp.items() if counts[c] + made[c] < t]
        if short:  # e.g. BorderlineSMOTE only samples near a class border, and may find none
            log.warning("%s fell short of the target for class(es) %s", sampler, ", ".join(short))
    return np.concatenate(new_x), np.concatenate(new_y)


def interpolation_parents(x_new: np.ndarray, y_new: np.ndarray, x: np.ndarray, y: np.ndarray,
                          candidates: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Provenance of SMOTE-style rows, which imbalanced-learn does not expose: for each new row s,
    the pair of real rows (a, b) of its class and the weight t with s = a + t (b - a) that fit
    best, searched among its `candidates` nearest real rows. Returns (a, b, t, residual), indices
    into x; the residual is ~0 where s really is such an interpolation (SMOTE, Borderline-,
    SVM-, KMeans-SMOTE, ADASYN; a random over-sampler's copy has a == b, t = 0).
    """
    a_idx = np.zeros(len(x_new), np.int64)
    b_idx = np.zeros(len(x_new), np.int64)
    weight = np.zeros(len(x_new))
    residual = np.zeros(len(x_new))
    for c in np.unique(y_new):
        members = np.flatnonzero(y == c)
        pts = x[members]
        for r in np.flatnonzero(y_new == c):
            s = x_new[r]
            near = np.argsort(((pts - s) ** 2).sum(1))[: min(candidates, len(pts))]
            i, j = np.meshgrid(near, near, indexing="ij")
            i, j = i.ravel(), j.ravel()
            d = pts[j] - pts[i]  # (P, D)
            norm = (d * d).sum(1)
            t = np.where(norm > 0, ((s - pts[i]) * d).sum(1) / np.where(norm > 0, norm, 1), 0.0).clip(0, 1)
            err = np.linalg.norm(s - pts[i] - t[:, None] * d, axis=1)
            best = int(np.argmin(err))
            a_idx[r], b_idx[r], weight[r], residual[r] = members[i[best]], members[j[best]], t[best], err[best]
    return a_idx, b_idx, weight, residual
