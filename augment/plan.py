"""A plan before the work: which stages will run or be reused, the data, the device, and an estimate
of each stage's time from a short timed probe on this machine (`augment run --plan`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augment import graph, rundir
from augment.config import Config
from augment.core.base.parallel import auto_workers, single_threaded
from augment.core.bench.jobs import JobPlan, plan_jobs, round_parallel, rounds_of
from augment.registry import generator_modes, member_source, trained_as
from augment.runtime import resolve_device, tune_allocator

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
    levers: dict[str, list[str]] = field(default_factory=dict)  # per stage: keys to turn, with what each saves

    def record(self, cfg: Config) -> None:
        """run_dir/plan.json: the estimate per stage that will run, for this config's fingerprints."""
        from augment.atomic import write_json

        write_json(Path(self.run_dir) / rundir.PLAN, {"fingerprints": graph.fingerprints(cfg), "estimates": {
            s.name: None if s.seconds is None else max(round(s.seconds, 3), 0.001) for s in self.stages if not s.cached}})

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
            slow = sorted((s for s in self.stages if not s.cached and s.name in self.levers),
                          key=lambda s: -(s.seconds or 0))[:2]
            keys = "; ".join(f"{s.name}: {', '.join(self.levers[s.name])}" for s in slow)
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
    elif d.source in ("folder", "csv"):  # the image headers: classes, counts, and ingest's working size
        from augment.core.data.splits import auto_side
        from augment.core.data.survey import survey_csv, survey_folder

        survey = (survey_folder if d.source == "folder" else survey_csv)(Path(d.path))
        sizes = survey["sizes"]  # (H, W) -> images: ingest's working size, as data.image_size auto picks it
        k = len(survey["classes"])
        side = auto_side(np.repeat([min(hw) for hw in sizes], list(sizes.values()))) if len(sizes) > 1 else None
        size = next(iter(sizes), (32, 32)) if side is None else (side, side)  # none readable: ingest will say so
        total = sum(survey["classes"].values())
    else:  # idx: the files' own count and size (cheap: one small decompression)
        k, size, total = 10, (28, 28), 0
        if d.source == "idx":
            from augment.core.data.idx import read_idx_files

            images, labels, _ = read_idx_files(Path(d.path), d.channels)
            k, size, total = len(set(labels)), tuple(images.shape[1:3]), len(labels)
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
    """Seconds of one step of every member, stepped in turn as the stage steps them, on this machine's
    threads: 10 timed steps after 2 untimed ones (allocation, first-call costs)."""
    import torch

    from augment.core.gan.train import build_state, class_shards, train_step
    from augment.registry import generator_modes

    k = len(class_shards(k, cfg.gan.shards)[0])  # shards train side by side: one shard's step
    s = cfg.gan.image_size
    bank = torch.rand(k, 10, channels, s, s, device=device) * 2 - 1
    counts = torch.full((k,), 10, device=device)
    states = []
    for mode in generator_modes(cfg.gan.mode):
        member = cfg.gan.model_copy(update={"mode": mode})
        states.append((build_state(member, k, channels, seed=0, device=device, bank=(bank, counts)), member))

    def step():
        out = [train_step(state, bank, counts, member) for state, member in states]
        out[-1].cpu()  # wait for the device
    step()
    return _timed(step, 10)


def _classifier_step_seconds(cfg: Config, k: int, size: tuple[int, int], channels: int, device, augment=None,
                             models: int = 1, classical: list[dict] | None = None, threaded: bool = False,
                             rows: int | None = None) -> float:
    """Seconds of one training step of a round of `models` classifiers as the engine trains them (one
    thread per worker on a CPU, or this process's threads): the time of 25 steps less that of 5, over
    20 (no set-up in it), each the least of two timings. `rows`: the images a classifier has (it
    draws min(benchmark.batch_size, rows) a step); default a full batch."""
    from augment.core.classify.classifier import train_classifiers
    from augment.core.classify.engine import Task

    rows = rows or max(cfg.benchmark.batch_size, k)
    x = np.random.default_rng(0).integers(0, 256, (rows, *size, channels), dtype=np.uint8)
    tasks = [Task(x, np.arange(rows) % k, seed=i, augment=augment, classical=classical is not None) for i in range(models)]
    kw = {**cfg.benchmark.trainer_kwargs()}

    def run(steps: int) -> float:
        start = time.perf_counter()
        train_classifiers(tasks, k, **{**kw, "steps": steps}, device=device, stack=models, classical=classical)
        return time.perf_counter() - start

    with single_threaded() if str(device).startswith("cpu") and not threaded else _nothing():
        run(2)
        # the least of two timings each: a pause of a loaded machine in the short run could make the
        # difference nothing (or negative); then the long run's own mean per step stands
        long, short = min(run(25), run(25)), min(run(5), run(5))
        return (long - short) / 20 if long > short else long / 25


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def make_plan(cfg: Config, run_dir: Path) -> Plan:
    """Which stages will run, and about how long each takes here; runs no stage."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    tune_allocator()  # the probes time the steps as the stages will run them
    fps = graph.fingerprints(cfg)
    cached = {s.name: graph.is_current(s.name, cfg, run_dir, fps) for s in graph.STAGES}
    data, k, size, channels, n_train, val_per_class = _data(cfg, run_dir, cached["ingest"])
    plan = Plan(run_dir, str(device), data)
    b = cfg.benchmark
    steps = b.steps_for(n_train)
    needs = {n for n in ("judge", "synthesize", "benchmark", "gan", "smote") if not cached[n]}
    # one thread per worker (the benchmark's), and this process's threads (the judge, CAS classifiers)
    step = _classifier_step_seconds(cfg, k, size, channels, device) if needs else 0.0
    here = _classifier_step_seconds(cfg, k, size, channels, device, threaded=True) if needs - {"benchmark"} else 0.0
    cas = steps * here + 1.0  # one CAS classifier, with the sampling and gating before it
    for stage in graph.STAGES:
        name, seconds, how = stage.name, None, ""
        if not cached[name]:
            if name == "judge" and cfg.gan.enabled:
                seconds, how = steps * here, f"{steps} steps at {here:.3f} s"
            elif name == "gan" and cfg.gan.enabled:
                per = _gan_step_seconds(cfg, k, channels, device)
                snaps = (cfg.gan.steps // cfg.gan.sample_every) * len(cfg.gan.latent_scales) if cfg.gan.stops_early else 0
                seconds = per * cfg.gan.steps * 1.03 + snaps * cas
                how = f"{cfg.gan.steps} steps at {per:.3f} s" + (
                    f" and {snaps} CAS classifier(s); at most: it stops once gan.patience ({cfg.gan.patience}) snapshots "
                    "have not raised CAS" if snaps else "")
            elif name == "benchmark":
                seconds, how = _benchmark_estimate(cfg, k, size, channels, device, n_train, val_per_class, step)
            elif name == "synthesize" and cfg.gan.enabled:
                snaps = -(-cfg.gan.steps // cfg.gan.sample_every) if cfg.gan.checkpoint_selection == "cas" else 1
                n = len(cfg.gan.latent_scales) * (1 if cfg.gan.stops_early else snaps)  # scored while training: the last
                seconds = n * cas + 2.0
                how = f"{n} CAS classifier(s)" + (" (one per generator snapshot and latent scale)" if n > 1 else "") + (
                    ", the others scored while the GAN trained" if cfg.gan.stops_early else "")
            elif name == "smote" and cfg.smote.enabled and cfg.smote.features == "cnn":
                seconds, how = steps * here, "trains the cnn feature extractor"
            else:
                seconds = 1.0 if name != "classical" else max(1.0, 0.002 * k * 40 * cfg.classical.multiplier)
        plan.stages.append(StagePlan(name, cached[name], seconds, how))
    plan.levers = _levers(cfg, plan)
    return plan


def benchmark_jobs(cfg: Config, val_per_class: int, device, size: tuple[int, int]) -> JobPlan:
    """The benchmark's jobs as far as the config tells (augment.core.bench.jobs.plan_jobs, which the stage
    calls over the run directory): every enabled stage's images, class sizes from data's keys."""
    d = cfg.data
    sources = {"real"} | {s for s in ("classical", "smote", "gan") if getattr(cfg, s).enabled}
    sources |= {member_source(m) for m in generator_modes(cfg.gan.mode)} if cfg.gan.enabled else set()  # gan:<member>
    counts = list(d.class_counts.values()) if d.class_counts else None
    equal = (d.per_class is not None and d.imbalance_ratio == 1.0) or (counts is not None and len(set(counts)) == 1)
    ratio = d.imbalance_ratio if d.per_class is not None else (max(counts) / min(counts) if counts else 1.0)
    return plan_jobs(cfg.benchmark, cfg.seed, sources, equal, ratio, val_per_class, str(device).startswith("cuda"),
                     size[0] * size[1])


def _benchmark_estimate(cfg: Config, k: int, size, channels: int, device, n_train: int, val_per_class: int,
                        step: float) -> tuple[float, str]:
    from augment.core.transforms.copies import transforms_for

    b = cfg.benchmark
    steps = b.steps_for(n_train)
    jobs = benchmark_jobs(cfg, val_per_class, device, size)
    arms = jobs.arms
    costed = arms + max((jobs.added(r) for r in jobs.recipes), key=len, default=[])  # with step (b) at its most
    specs = {a: trained_as(a, b.classical_on_the_fly) for a in costed}
    select, main = jobs.count()
    total = select + main
    workers = auto_workers(total, b.workers, device, steps)
    augmented = [a for a in costed if specs[a].augment or specs[a].classical]
    classical = transforms_for(cfg.classical, channels) if augmented and b.classical_on_the_fly else None

    cuda = str(device).startswith("cuda")
    # benchmark.models_per_round: a round of m models costs a round's step; each model's share, m probed together
    # (m: the first round the stage cuts for the whole list, at most 8 on a GPU and 4 on a CPU to keep the probe short)
    first = rounds_of(list(range(total)), jobs.per_round, round_parallel(cuda))
    m = max(1, min(8 if cuda else 4, len(first[0]) if first else 1))
    probed: dict[int | None, float] = {}

    def probe(augment=None, rows: int | None = None) -> float:
        """One model's share of a round's step (one model alone when unstacked)."""
        return _classifier_step_seconds(cfg, k, size, channels, device, augment, classical=classical if augment else None,
                                        rows=rows, models=m) / m

    def per_step(arms: list[str], rows: int | None, plain: float) -> float:
        """One step of these arms' classifiers, the augmented ones probed (once a batch size) with the
        pipeline on the fly."""
        aug = [a for a in arms if a in augmented]
        if not aug:
            return plain
        if rows not in probed:
            probed[rows] = probe("trivialaugment", rows)
        return plain + (probed[rows] - plain) * len(aug) / len(arms)

    # An arm of the real images alone (no side stream) draws min(batch_size, their count) a step: on a
    # small folder fewer than a full batch (under k-fold its pool is train and val less one fold); an
    # arm with generated images or copies draws full batches. Each is probed at the batch it will draw.
    plain_arms = [a for a in jobs.plain if a in costed and specs[a].sources == ("real",)]
    plain_jobs = len(plain_arms) * b.seeds
    pool = n_train + (val_per_class * k if jobs.protocol == "kfold" else 0)
    folds = max(2, min(b.folds, pool // max(k, 1)))  # lowered to the smallest class's images, as the stage does
    rows = int(pool * (1 - 1 / folds)) if jobs.protocol == "kfold" else n_train
    small = min(b.batch_size, rows) < b.batch_size and plain_jobs > 0
    if jobs.per_round > 1 and cuda:  # a GPU's stacked rounds: the augmentation there costs little beside the models
        small = False
        per = shown = probe()
    else:
        shown = step if m == 1 else probe()  # `step`: make_plan's probe of one model at a full batch
        plain_step = probe(rows=max(rows, 1)) if small else shown
        per_plain = per_step(plain_arms, max(rows, 1) if small else None, plain_step)
        per_stream = per_step([a for a in costed if a not in plain_arms], None, shown)
        per = (per_plain * plain_jobs + per_stream * (total - plain_jobs)) / max(1, total)
    start = 6.0 * (workers > 1) + 0.3 * total / workers  # spawning the workers; each job's images
    seconds = steps * total * per / workers + start
    crossing = jobs.most_added  # step (b)'s arms, at their most
    extra = total - (len(arms) + crossing) * b.seeds  # the share choices' classifiers beyond one per arm and seed
    how = (f"{len(arms)} arms" + (f" + {crossing} crossing the recipe chosen on {'k-fold' if jobs.protocol == 'kfold' else 'val'}" if crossing else "")
           + f" x {b.seeds} seeds + {extra} share choices, {steps} steps at {shown:.3f} s"
           + (f" a model in rounds of up to {jobs.per_round}" if jobs.per_round > 1 else "")) + (
        f" ({probed[None]:.3f} s augmented on the fly)" if None in probed else "") + (
        f"; {plain_step:.3f} s{f' ({probed[rows]:.3f} s augmented)' if rows in probed else ''} at the {rows} images a "
        "step of the arms without a side stream" if small else "") + f" on {workers} worker(s)" + (
        ", choices by k-fold over train+val (val too small)" if jobs.protocol == "kfold" else "")
    return seconds, how


def _levers(cfg: Config, plan: Plan) -> dict[str, list[str]]:
    """Per slow stage, the keys that would bring it down, each with the time it would save here."""
    est = {s.name: s.seconds or 0.0 for s in plan.stages if not s.cached}
    out: dict[str, list[str]] = {}
    g, b = cfg.gan, cfg.benchmark
    if est.get("gan"):
        t = est["gan"]
        out["gan"] = [f"gan.steps: {g.steps // 2} (-{_duration(t / 2)[1:]})"]
        if g.image_size > 16:
            out["gan"].append(f"gan.image_size: {g.image_size // 2} (about -{_duration(t * 0.7)[1:]})")
        if not g.stops_early and g.shards == 1:
            out["gan"].append("gan.checkpoint_selection: cas with gan.patience (stops once CAS on val stops rising)")
        out["gan"] += ["gan.shards (with orchestration.task_runner: dask)", "device (a GPU)"]
    if est.get("benchmark"):
        t = est["benchmark"]
        if b.seeds > 3:
            out.setdefault("benchmark", []).append(f"benchmark.seeds: 3 (about -{_duration(t * (b.seeds - 3) / b.seeds)[1:]})")
        else:
            out.setdefault("benchmark", []).append("benchmark.seeds (fewer: wider confidence intervals)")
        if b.synthetic_share == "auto" and len(set(b.share_grid)) > 1:
            out.setdefault("benchmark", []).append("benchmark.share_grid: one share (fewer share choices)")
        out.setdefault("benchmark", []).extend(["benchmark.steps", "benchmark.arms", "device (a GPU)"])
    if est.get("synthesize"):
        out["synthesize"] = ["gan.samples_per_class", "gate.oversample", "gan.latent_scales (one scale)"]
    if est.get("classical"):
        out["classical"] = ["classical.multiplier", "classical.workers"]
    return out


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

