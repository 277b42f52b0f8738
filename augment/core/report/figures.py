"""The report's figures (matplotlib, headless): each function takes data and writes one PNG."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from augment.atomic import write_bytes
from augment.safe_text import mpl

SOURCE_COLOURS = {"real": "#222222", "classical": "#1f77b4", "smote": "#2ca02c", "gan": "#d62728"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; never opens a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())
    return path


def gain_chart(gains: dict[str, dict], metric: str, path: Path) -> Path:
    """Horizontal bars: each arm's paired test gain over `real` (points) with its 95% CI, and each
    seed's gain as a dot (gains[arm]["per_seed"], when given)."""
    plt = _pyplot()
    names = list(gains)
    mean = np.array([100 * gains[n]["gain"] for n in names])
    lo = np.array([100 * gains[n]["ci_low"] for n in names])
    hi = np.array([100 * gains[n]["ci_high"] for n in names])
    err = np.nan_to_num(np.vstack([mean - lo, hi - mean]), nan=0.0)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    colours = ["#2ca02c" if low > 0 else ("#d62728" if high < 0 else "#7f7f7f") for low, high in zip(lo, hi)]
    ax.barh(names, mean, xerr=err, color=colours, capsize=4, alpha=0.8)
    for row, name in enumerate(names):
        seeds = 100 * np.asarray(gains[name].get("per_seed") or [], float)
        jitter = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else np.zeros(len(seeds))
        ax.scatter(seeds, row + jitter, s=12, color="black", zorder=3, label="one seed" if row == 0 else None)
    if any(gains[n].get("per_seed") for n in names):
        ax.legend(loc="lower right", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel(f"test {metric} gain over 'real' (points, 95% CI over seeds)")
    ax.set_title("Gain of each arm over real images alone")
    return _save(fig, path)


def confusion_pair(matrices: dict[str, np.ndarray], classes: list[str], path: Path) -> Path:
    """Test confusion matrices side by side (rows: true class, columns: predicted), each row as
    shares of its class, with the counts written in; e.g. real vs the recommended arm."""
    plt = _pyplot()
    k = len(classes)
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 0.32 * k + 2), squeeze=False)
    for ax, (name, m) in zip(axes[0], matrices.items()):
        m = np.asarray(m, float)
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if m[i, j]:
                        ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=6,
                                color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), [mpl(c) for c in classes], fontsize=7)
        ax.set_yticks(range(k), [mpl(c) for c in classes], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name} (test, all seeds)")
    return _save(fig, path)


def recall_chart(recall: pd.DataFrame, arm: str, path: Path) -> Path:
    """Per-class test recall of real vs `arm`, one pair of bars per class, top to bottom in the
    frame's order. `recall`: index = class, columns 'real' and `arm`, values in [0, 1].
    """
    plt = _pyplot()
    y = np.arange(len(recall))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(recall) + 1.2))
    ax.barh(y - 0.2, 100 * recall["real"], height=0.4, label="real", color="#7f7f7f")
    ax.barh(y + 0.2, 100 * recall[arm], height=0.4, label=arm, color="#1f77b4")
    ax.set_yticks(y, [mpl(c) for c in recall.index])
    ax.invert_yaxis()
    ax.set_xlabel("test recall (%)")
    ax.set_xlim(0, 100)
    ax.legend(loc="lower right")
    ax.set_title(f"Per-class test recall: real vs {arm} (minority, then weakest classes first)")
    return _save(fig, path)


def image_grid(rows: dict[str, dict[str, np.ndarray]], path: Path, notes: dict[str, dict[str, str]] | None = None) -> Path:
    """One row per class, one block per source: rows[label][source] = uint8 (N, H, W, C).

    notes[label][source]: words for a cell with no images (e.g. "gate kept 0 of 400: low confidence"),
    so an empty cell never looks like a rendering fault.
    """
    notes = notes or {}
    plt = _pyplot()
    labels = list(rows)
    sources = [s for s in SOURCE_COLOURS if any(s in rows[label] or s in notes.get(label, {}) for label in labels)]
    n = max((len(v) for r in rows.values() for v in r.values()), default=1)
    fig, axes = plt.subplots(len(labels), len(sources), figsize=(1.9 * len(sources) * max(n, 1) / 4 + 1, 0.6 * len(labels) + 0.6),
                             squeeze=False)
    for i, label in enumerate(labels):
        for j, source in enumerate(sources):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            images = rows[label].get(source)
            if images is not None and len(images):
                strip = np.concatenate(list(images), axis=1)
                ax.imshow(strip.squeeze(-1) if strip.shape[-1] == 1 else strip, cmap="gray", vmin=0, vmax=255)
            elif source in notes.get(label, {}):
                ax.text(0.5, 0.5, "\n".join(textwrap.wrap(notes[label][source], 28)), ha="center", va="center",
                        fontsize=7, transform=ax.transAxes, color=SOURCE_COLOURS[source])
            if i == 0:
                ax.set_title(source, color=SOURCE_COLOURS[source])
            if j == 0:
                ax.set_ylabel(mpl(label), rotation=0, ha="right", va="center")
    return _save(fig, path)


def training_curves(history: pd.DataFrame, path: Path) -> Path:
    """The generator's losses (every metric named loss*), D's mean outputs, and D's accuracy on train vs
    held-out real images, each where the generator records it (Kind.metrics, Kind.evaluate)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    smooth = history.set_index("step").rolling(max(1, len(history) // 50), min_periods=1).mean()
    smooth[[c for c in smooth.columns if c.startswith("loss")]].plot(ax=axes[0], title="losses (smoothed)")
    if {"d_real", "d_fake"} <= set(smooth.columns):
        smooth[["d_real", "d_fake"]].plot(ax=axes[1], title="D(real), D(fake) (smoothed)", ylim=(0, 1))
    else:
        axes[1].set_axis_off()
    acc = history.set_index("step")[[c for c in ("d_acc_train", "d_acc_val") if c in history]].dropna(how="all")
    if len(acc.columns) and len(acc):
        acc.plot(ax=axes[2], marker="o", ylim=(-0.05, 1.05), title="D calls real: train vs held-out")
    else:
        axes[2].set_axis_off()
    for ax in axes:
        ax.set_xlabel("step")
    return _save(fig, path)


def projection(feats: np.ndarray, sources: list[str], path: Path, seed: int = 0) -> Path:
    """2-D PCA of feature rows coloured by source (real vs classical vs SMOTE vs GAN)."""
    from sklearn.decomposition import PCA

    plt = _pyplot()
    xy = PCA(n_components=2, random_state=seed).fit_transform(feats)
    sources = np.asarray(sources)
    fig, ax = plt.subplots(figsize=(6, 5))
    for source, colour in SOURCE_COLOURS.items():
        sel = sources == source
        if sel.any():
            ax.scatter(*xy[sel].T, s=30 if source == "real" else 8, c=colour, label=f"{source} ({int(sel.sum())})",
                       alpha=1.0 if source == "real" else 0.5, zorder=3 if source == "real" else 2,
                       edgecolors="white" if source == "real" else "none", linewidths=0.5)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Train images in 2-D (PCA of pixel features)")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)
