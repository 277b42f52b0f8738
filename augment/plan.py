"""A plan before the work: which stages will run or be reused, the data, the device, and an estimate
of each stage's time from a short timed probe on this machine (`augment run --plan`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augment import graph, rundir
from augment.config import Config
from augment.core.parallel import auto_workers, single_threaded
from augment.core.selection import choose_protocol
from augment.registry import trained_as
from augment.runtime import resolve_device

# What a run over budget can change, and why it helps.
LEVERS = {
    "gan": ["gan.steps", "gan.image_size", "gan.shards (with orchestration.task_runner: dask)", "device (a GPU)"],
    "benchmark": ["benchmark.seeds", "benchmark.steps", "benchmark.arms", "device (a GPU)"],
    "classical": ["classical.multiplier", "classical.workers"],
    "synthesize": ["gan.samples_per_class", "gate.oversample", "benchmark.steps"],
}


@dataclass
class StagePlan:
    name: str
    cached: bool
    seconds: float | None  # estimate (None: not estimated, e.g. cached)
    how: str = ""  # how the estimate was made


@dataclass
class Plan:
    run_dir: Path
    device: str
    data: str
    stages: list[StagePlan] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s.seconds or 0.0 for s in self.stages if not s.cached)

    def text(self, max_minutes: float | None = None) -> str:
        lines = [f"Plan for {self.run_dir} on {self.device}", f"data: {self.data}",
                 f"{'stage':<11} {'action':<7} estimate"]
        for s in self.stages:
            est = "-" if s.cached else _duration(s.seconds) + (f"  ({s.how})" if s.how else "")
            lines.append(f"{s.name:<11} {'reuse' if s.cached else 'run':<7} {est}")
        lines.append(f"total: {_duration(self.seconds)}")
        if max_minutes is not None and self.seconds > 60 * max_minutes:
            slow = sorted((s for s in self.stages if not s.cached and s.name in LEVERS),
                          key=lambda s: -(s.seconds or 0))[:2]
            keys = "; ".join(f"{s.name}: {', '.join(LEVERS[s.name])}" for s in slow)
            lines.append(f"This is over --max-minutes {max_minutes:g}. To bring it down: {keys}.")
        return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"~{seconds:.0f} s" if seconds < 90 else f"~{seconds / 60:.1f} min"


def _data(cfg: Config, run_dir: Path, ingest_cached: bool) -> tuple[str, int, tuple[int, int], int, int, int]:
    """(description, classes, working size, channels, about how many real train images, about how
    many val images the smallest class has): ingest's record when it is reusable, else a look."""
    if ingest_cached:
        info = rundir.ingest_info(run_dir)
        counts = {s: sum(c.values()) for s, c in info["counts"].items()}
        split = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("train", "val", "test"))
        val = min((info["counts"].get("val") or {}).get(c, 0) for c in info["classes"])
        return (f"{len(info['classes'])} classes; {split} images; working size {info['size'][0]}x{info['size'][1]}",
                len(info["classes"]), tuple(info["size"]), info["channels"], counts.get("train", 0), val)
    d = cfg.data
    train_share = 1.0 - d.val_fraction - d.test_fraction
    if d.source == "digits":
        k, size, total = 10, (8, 8), 1797
    elif d.source == "folder":
        from augment.core.survey import survey_folder

        survey = survey_folder(Path(d.path))
        k, size = len(survey["classes"]), min(survey["sizes"], key=lambda hw: hw[0] * hw[1])
        total = sum(survey["classes"].values())
    else:
        k, size, total = 10, (28, 28), 0
    if isinstance(d.image_size, int):
        size = (d.image_size, d.image_size)
    per = f"{d.per_class} train images per class" if d.per_class else "all train images"
    n_train = d.per_class * k if d.per_class else sum(d.class_counts.values()) if d.class_counts else int(total * train_share)
    val = int(total * d.val_fraction / k) if k else 0
    return f"{d.source}, {k} classes, {per} (the split is made by ingest)", k, size, d.channels, n_train, val


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocation, first-call costs
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _gan_step_seconds(cfg: Config, k: int, channels: int, device) -> float:
    import torch

    from augment.core.ensemble import member_modes
    from augment.core.gan_train import build_state, class_shards, train_step

    k = len(class_shards(k, cfg.gan.shards)[0])  # shards train side by side: one shard's step
    s = cfg.gan.image_size
    bank = torch.rand(k, 8, channels, s, s, device=device) * 2 - 1
    counts = torch.full((k,), 8, device=device)
    total = 0.0
    for mode in member_modes(cfg.gan.mode):  # an ensemble's members train one after the other: their steps add up
        member = cfg.gan.model_copy(update={"mode": mode})
        state = build_state(member, k, channels, seed=0, device=device, bank=(bank, counts))
        total += _timed(lambda: train_step(state, bank, counts, member), 5)
    return total


def _classifier_step_seconds(cfg: Config, k: int, size: tuple[int, int], channels: int, device, augment=None) -> float:
    from augment.core.classifier import train_classifier

    x = np.random.default_rng(0).integers(0, 256, (64, *size, channels), dtype=np.uint8)
    y = np.arange(64) % k
    kw = {**cfg.benchmark.trainer_kwargs(), "steps": 8}
    with single_threaded():  # as the benchmark's workers train (augment.core.parallel)
        return _timed(lambda: train_classifier(x, y, k, **kw, augment=augment, seed=0, device=device), 1) / 8


def make_plan(cfg: Config, run_dir: Path) -> Plan:
    """Which stages will run, and about how long each takes here; runs no stage."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    fps = graph.fingerprints(cfg)
    cached = {s.name: graph.is_current(s.name, cfg, run_dir, fps) for s in graph.STAGES}
    data, k, size, channels, n_train, val_per_class = _data(cfg, run_dir, cached["ingest"])
    plan = Plan(run_dir, str(device), data)
    needs_classifier = not all(cached[n] for n in ("synthesize", "benchmark"))
    step = _classifier_step_seconds(cfg, k, size, channels, device) if needs_classifier else 0.0
    b = cfg.benchmark
    steps = b.steps_for(n_train)
    for stage in graph.STAGES:
        name, seconds, how = stage.name, None, ""
        if not cached[name]:
            if name == "gan" and cfg.gan.enabled:
                per = _gan_step_seconds(cfg, k, channels, device)
                seconds, how = per * cfg.gan.steps * 1.05, f"{cfg.gan.steps} steps at {per:.3f} s"
            elif name == "benchmark":
                specs = {a: trained_as(a, b.classical_on_the_fly) for a in b.arms}
                arms = [a for a in b.arms if not (not cfg.gan.enabled and "gan" in specs[a].sources)]
                augmented = sum(1 for a in arms if specs[a].augment or specs[a].classical)
                ta = _classifier_step_seconds(cfg, k, size, channels, device, "trivialaugment") if augmented else 0.0
                streams = [a for a in arms if specs[a].side_stream]
                select = len(streams) * len(set(b.share_grid)) if b.synthetic_share == "auto" else 0
                kfold = choose_protocol(b.selection, b.kfold_below, val_per_class)[0] == "kfold"
                if kfold and select:  # every seed at every share, on its fold; the chosen share's jobs are the results
                    select = select * b.seeds - len(streams) * b.seeds
                workers = auto_workers(len(arms) * b.seeds + select, b.workers, device, steps)
                per_seed = (len(arms) - augmented) * step + augmented * ta
                seconds = steps * (b.seeds * per_seed + select * step) / workers
                how = f"{len(arms)} arms x {b.seeds} seeds + {select} share choices, {steps} steps at {step:.3f} s" + (
                    f" ({ta:.3f} s augmented on the fly)" if augmented else "") + f" on {workers} worker(s)" + (
                    ", choices by k-fold over train+val (val too small)" if kfold else "")
            elif name == "synthesize" and cfg.gan.enabled:
                snapshots = -(-cfg.gan.steps // cfg.gan.sample_every) if cfg.gan.checkpoint_selection == "cas" else 1
                cas = snapshots * len(cfg.gan.latent_scales)
                seconds = (1 + cas) * steps * step + 2.0
                how = f"the gate's judge and {cas} CAS classifier(s)" + (
                    " (one per generator snapshot and latent scale)" if cas > 1 else "")
            elif name == "smote" and cfg.smote.enabled and cfg.smote.features == "cnn":
                seconds, how = steps * step, "trains the cnn feature extractor"
            else:
                seconds = 1.0 if name != "classical" else max(1.0, 0.002 * k * 40 * cfg.classical.multiplier)
        plan.stages.append(StagePlan(name, cached[name], seconds, how))
    return plan


def force(cfg: Config, run_dir: Path, name: str) -> list[str]:
    """Make `name` and every stage downstream of it run again (their records are removed)."""
    if name not in graph.BY_NAME:
        from augment.errors import UserError

        raise UserError(f"--force {name}: no such stage; stages are {', '.join(graph.BY_NAME)}")
    again = {name}
    for stage in graph.STAGES:
        if again & set(stage.upstream(cfg)):
            again.add(stage.name)
    for stage in again:
        rundir.clear_stage_record(run_dir, stage)
    return [s.name for s in graph.STAGES if s.name in again]


def default_budget_minutes(device) -> float | None:
    """The budget a plan warns past when the user gives none: 30 minutes on a CPU."""
    return 30.0 if str(device).startswith("cpu") else None

