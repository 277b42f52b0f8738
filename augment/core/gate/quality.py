"""Sample-quality metrics on feature vectors (N, D): nothing is downloaded, every function takes arrays.

The features come from the pipeline's own classifier (see `augment.synthesis`), so the
numbers are comparable within a run, not across datasets or with published FID values.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist, pdist
from sklearn.neighbors import NearestNeighbors


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (the formula behind FID):
    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2).

    tr((S_a S_b)^1/2) is computed as the trace of (S_a^1/2 S_b S_a^1/2)^1/2, which is symmetric
    positive semi-definite, so it stays real and stable when covariances are singular (fewer
    samples than dimensions is the normal case with 10 images per class). Needs 2+ rows each.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set, got {len(a)} and {len(b)}")
    s_a, s_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    s_a, s_b = np.atleast_2d(s_a), np.atleast_2d(s_b)
    root_a = _sqrt_psd(s_a)
    cross = np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0.0, None)
    dist = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * np.sqrt(cross).sum()
    return float(max(dist, 0.0))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row."""
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return dist[:, k]


def _covered(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Fraction of points inside at least one ball (centre, radius)."""
    return float((cdist(points, centres) <= radii[None, :]).any(axis=1).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds.

    precision: fraction of fake samples inside the real manifold (the union of balls around
    each real sample reaching its k-th nearest real neighbour): are samples realistic?
    recall: fraction of real samples inside the fake manifold: is the real variety covered?
    A collapsed generator (many near-identical samples) has tiny fake radii and low recall.
    Needs more than k rows in each set.
    """
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"need more than k={k} samples per set, got {len(real)} real and {len(fake)} fake")
    precision = _covered(fake, real, _knn_radii(real, k))
    recall = _covered(real, fake, _knn_radii(fake, k))
    return precision, recall


def nearest(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query row's nearest reference row."""
    dist, idx = NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(query)
    return dist[:, 0], idx[:, 0]


def spacing(reference: np.ndarray) -> float:
    """Median distance from a reference row to its nearest *other* reference row: the scale
    novelty is measured in (a held-out real image typically sits about this far from the set)."""
    if len(reference) < 2:
        raise ValueError("need at least 2 reference samples to measure their spacing")
    dist, _ = NearestNeighbors(n_neighbors=2).fit(reference).kneighbors(reference)
    scale = float(np.median(dist[:, 1]))
    return scale if scale > 0 else float(dist[:, 1].max()) or 1.0


def diversity(fake: np.ndarray, real: np.ndarray) -> float:
    """Mean pairwise distance among fake samples over that among real ones (1 = as varied as real)."""
    if len(fake) < 2 or len(real) < 2:
        raise ValueError("need at least 2 samples per set")
    ref = pdist(real).mean()
    return float(pdist(fake).mean() / ref) if ref > 0 else float("nan")
