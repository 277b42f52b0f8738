"""The report's GAN section: what the quality gate kept and why, per-class quality, the generator chosen."""

from __future__ import annotations

import json

import pandas as pd

from augment.config import Config
from augment.core.report.numbers import num, pct
from augment.safe_text import md
from augment.registry import generator_modes


def _gate_summary(frame: pd.DataFrame) -> str:
    """How many generated images were kept, and why the others were not."""
    gan = frame[frame["source"] == "gan"]
    if gan.empty:
        return "No GAN samples were generated."
    counts = gan.loc[~gan["kept"], "reason_code"].fillna("other").value_counts()
    parts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
    return f"Generated {len(gan)} images, kept {int(gan['kept'].sum())}" + (f"; not kept: {parts}." if parts else ".")


KEPT_HOW = {"auto": "the most confident (a spread by farthest-point sampling for the mix and hydra generators)",
            "confidence": "the most confident", "random": "drawn at random",
            "farthest": "spread out by farthest-point sampling from the most confident"}


def _selection_lines(q: dict) -> list[str]:
    """Which generator (training step, latent scale) was sampled, and the CAS curve it was chosen on."""
    sel = q.get("selection")
    if not sel or len(sel["curve"]) < 2:
        return []
    return [f"The generator sampled is the EMA generator at step {sel['step']} with latent scale {sel['scale']:g}: the "
            "best classification accuracy score on val among the snapshots and scales tried (`gan.checkpoint_selection`, "
            "`gan.latent_scales`; never test):", "", "| step | latent scale | CAS on val |", "|---:|---:|---:|",
            *[f"| {r['step']} | {r['scale']:g} | {pct(r['cas_accuracy_on_val'])} |" for r in sel["curve"]], ""]


def _mix_lines(frame: pd.DataFrame, mode: str) -> list[str]:
    """A generator that makes samples from real images (the manifest records each sample's parents): how
    many of the kept are such mixes, of how many parents, and how many distinct parent sets they use."""
    kept = frame[(frame["source"] == "gan") & frame["kept"]]
    mixes = kept["params"].dropna() if "params" in kept else pd.Series([], dtype=object)
    if not len(mixes):
        return []
    sets = [tuple(sorted(json.loads(p)["parents"])) for p in mixes]
    sizes = " or ".join(NUMBERS.get(n, str(n)) for n in sorted({len(p) for p in sets}))
    if len(generator_modes(mode)) == 1:
        head = f"The generator is `gan.mode: {mode}`: every sample is a new image made from {sizes} real train images of its class"
    else:
        head = (f"The generator is the ensemble `gan.mode: {mode}`: each member trained on its own and gave its share of "
                f"every class's kept samples; {len(mixes)} of the {len(kept)} kept are mixes, new images made from {sizes} "
                "real train images of their class")
    return [f"{head}, their features mixed under a random mask (the parents are in manifest.parquet, `params`). The kept "
            f"mixes come from {len(set(sets))} distinct sets of parents.", ""]


NUMBERS = {2: "two", 3: "three", 4: "four"}


def quality_section(cfg: Config, q: dict | None, history: pd.DataFrame | None, frame: pd.DataFrame) -> str:
    """The gate's outcome and per-class quality (gan/quality.json), and D's overfitting signal."""
    if q is None:
        return "The GAN stage was disabled.\n"
    lines = [
        _gate_summary(frame), "",
        *_mix_lines(frame, cfg.gan.mode),
        f"Each sample was kept if the gate's judge gave its intended class at least {cfg.gate.min_confidence} and "
        f"its novelty (distance to the nearest real training image over the typical spacing of real images; 0 is "
        f"a copy) was at least {cfg.gate.min_novelty}; of those, {q['target_per_class']} per class out of "
        f"{q['generated_per_class']} generated: {KEPT_HOW[cfg.gate.select]} (`gate.select`). Metrics are in the "
        f"judge's feature space against the real train images of the class (k = {q['k']} for precision and recall); "
        f"CAS recall is the val recall of a classifier trained on kept samples only (overall "
        f"{pct(q['cas_accuracy_on_val'])}). Copying is the kept samples' median distance to their nearest real train "
        f"image over the same for held-out real (val) images: well below 1, the samples hug the training images.", "",
        *_selection_lines(q),
        "| class | kept | Frechet distance | precision | recall | diversity (all / kept) | median novelty | copying | CAS recall | alarm |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, c in q["classes"].items():
        k = c["kept"]
        lines.append(
            f"| {md(label)} | {k['n']} | {num(k['frechet_distance'])} | {num(k['precision'])} | {num(k['recall'])} "
            f"| {num(c['generated']['diversity'])} / {num(k['diversity'])} | {num(c['median_novelty'])} "
            f"| {num((c.get('copying') or {}).get('ratio'))} | {pct(c['cas_recall'])} | {c['alarm'] or ''} |"
        )
    if history is not None:
        h = history
        if {"d_acc_train", "d_acc_val"} <= set(h.columns) and h["d_acc_val"].notna().any():
            last = h[h["d_acc_val"].notna()].iloc[-1]
            lines += ["", (
                f"Discriminator overfitting signal at step {int(last['step'])}: D calls {pct(last['d_acc_train'])} of "
                f"the training images real and {pct(last['d_acc_val'])} of held-out real (val) images; a wide gap "
                f"means D memorised the training set (history in gan/history.csv).")]
    return "\n".join(lines) + "\n"
