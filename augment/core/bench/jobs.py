"""The benchmark's job list, one pure function for the stage and for `--plan`: which arms train, on which
protocol the choices are made, which classifiers choose the synthetic shares, which give the results,
and how many train in one round. The stage feeds it what the run directory holds; the plan, what the
config says the data will be; both then count, train or estimate exactly these jobs.

The list has two steps (issue 33): (a) the configured arms, among whose recipes (registry.RECIPES) one is
chosen on val or by k-fold; (b) that recipe crossed with every synthetic source (benchmark.cross_sources)
whose arm is not configured already. Which arms step (b) adds is known once (a) has chosen; the plan
counts the most it can add.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from augment.config import BenchmarkConfig
from augment.core.bench.selection import choose_protocol, choose_recipe
from augment.core.bench.stats import PRIMARY
from augment.registry import RECIPES, crossed, trained_as
from augment.runtime import cpu_cores, derive_seed

BALANCE_RATIO = 1.5  # benchmark.balanced_sampling auto: every arm balances classes beyond this size ratio
# benchmark.models_per_round auto: up to 64 SmallCNNs a round on a GPU; on a CPU up to 16 in each worker's
# round for images of at most 16x16 pixels (one thread's grouped convolutions there cost about what the models'
# plain ones do, and the batched augmentation and the optimizer's calls are shared: 16 classifiers took 0.77x
# the time at 8x8 and 0.97x at 16x16, benchmarks/engine_throughput.py; at 32x32 a one-off timing gave 1.25-1.55x
# per model, so larger images train one at a time)
PER_ROUND_GPU, PER_ROUND_CPU, STACK_CPU_PIXELS = 64, 16, 16 * 16


def round_parallel(cuda: bool) -> int:
    """What rounds_of cuts a stage's jobs for: the machine's cores on a CPU (not benchmark.workers, which
    then changes no number), one on a GPU. The plan and the stage both ask here."""
    return 1 if cuda else cpu_cores()


def auto_per_round(b: BenchmarkConfig, cuda: bool, pixels: int) -> int:
    """benchmark.models_per_round: as configured, or auto (above) for images of `pixels` (H x W)."""
    if b.models_per_round != "auto":
        return b.models_per_round
    if cuda:
        return PER_ROUND_GPU
    return PER_ROUND_CPU if b.classifier == "cnn" and pixels <= STACK_CPU_PIXELS else 1


@dataclass(frozen=True)
class Job:
    """One classifier: its arm, seed (an int: a reported seed; a string: a share choice's own seed),
    the seed's value, its side stream's share (None: none, or the share chosen later) and its key."""

    arm: str
    seed: int | str
    seed_value: int
    share: float | None
    key: str


@dataclass
class JobPlan:
    arms: list[str]  # the arms trained, in the config's order
    no_images: list[str]  # arms left out: a source of theirs has no images
    same: list[str]  # arms left out: they would equal their unbalanced arm
    balanced: bool  # every arm samples classes equally (benchmark.balanced_sampling)
    streams: list[str]  # the arms with a synthetic side stream, whose share is chosen
    protocol: str  # "val" or "kfold": where the choices are made
    reason: str
    grid: list[float]  # the shares to choose from (empty: none to choose)
    select: list[Job]  # the classifiers that choose the shares
    select_seeds: list[str]  # the seeds a share choice averages over
    per_round: int  # classifiers trained as one stacked model
    seeds: int
    val_per_class: int  # real val images of the smallest class (what the protocol was chosen on)
    seed: int = 0
    recipes: list[str] = field(default_factory=list)  # the trained arms step (a) chooses the recipe among
    cross: list[str] = field(default_factory=list)  # the sources step (b) crosses the chosen recipe with

    def crossed(self, recipe: str) -> list[str]:
        """Step (b)'s arms for `recipe`, one per source; those configured already train in step (a)."""
        return [crossed(recipe, s) for s in self.cross]

    def added(self, recipe: str) -> list[str]:
        """The arms step (b) trains besides the configured ones, for `recipe`."""
        return [a for a in self.crossed(recipe) if a not in self.arms]

    def select_for(self, arms: list[str]) -> list[Job]:
        """The classifiers that choose the share of each of `arms` (all side-stream arms) over the grid."""
        if self.protocol == "val":  # a seed of its own per share: no reported seed sees the choice
            return [Job(a, f"share={g}", derive_seed(self.seed, "share"), g, share_key(a, g, "select"))
                    for a in arms for g in self.grid]
        return [Job(a, s, derive_seed(self.seed, "benchmark", s), g, share_key(a, g, str(s)))  # every seed at every share
                for a in arms for g in self.grid for s in range(self.seeds)]

    @property
    def foreseen(self) -> list[Job]:
        """Step (b)'s share choices for the recipe it most likely crosses, trained in step (a)'s first
        rounds, before the choice (speculatively): the last trained recipe in the registry's order, each
        adding to the ones before it (what val chose in 4 of the 5 measured cases, docs/figures.md). When
        val chooses it, step (b)'s arms train in the same rounds as the plain source arms, one round
        fewer; when not, these classifiers were spent for nothing and the choices train as before. Jobs
        are keyed by what they train, never by when: the same classifiers and choices either way. None
        under k-fold, where every seed trains at every share and the choices are the results."""
        if self.protocol != "val" or not self.grid or not self.recipes:
            return []
        return self.select_for(self.added(self.recipes[-1]))

    @property
    def most_added(self) -> int:
        """The most arms step (b) can add, whichever recipe (a) chooses."""
        return max((len(self.added(r)) for r in self.recipes), default=0)

    @property
    def plain(self) -> list[str]:
        """The arms without a side stream."""
        return [a for a in self.arms if a not in self.streams]

    @property
    def skipped(self) -> list[str]:
        return sorted(self.no_images + self.same)

    @property
    def shares_from_select(self) -> bool:
        """Under k-fold every seed trains at every share: the chosen share's jobs are the arm's results."""
        return bool(self.grid) and self.protocol == "kfold"

    def main(self, arms: list[str], shares: dict[str, dict] | None = None) -> list[Job]:
        """The result jobs of `arms` (the same seeds for every arm: paired runs), at their chosen shares."""
        shares = shares or {}
        return [Job(a, s, derive_seed(self.seed, "benchmark", s), shares.get(a, {}).get("share"), f"{a}/{s}")
                for a in arms for s in range(self.seeds)]

    @property
    def main_keys(self) -> list[str]:
        """The keys of the jobs trained for results (besides the share choices)."""
        return [j.key for j in self.main(self.plain if self.shares_from_select else self.arms)]

    def val_score(self, keys: list[str], finished: dict) -> float:
        """The primary metric's mean on val (k-fold: the held-out folds) over the finished jobs `keys`."""
        return float(np.mean([r["value"] for k in keys for r in finished[k]["records"]
                              if r["split"] == "val" and r["metric"] == PRIMARY]))

    def choose_share(self, arm: str, finished: dict) -> dict:
        """The share of the grid with the best val score for `arm` (under k-fold the mean over the seeds'
        held-out folds); a tie goes to the smaller share."""
        val = {str(g): self.val_score([share_key(arm, g, s) for s in self.select_seeds], finished) for g in self.grid}
        best = max(self.grid, key=lambda g: (val[str(g)], -g))
        return {"share": best, "chosen_on": self.protocol, "val": val}

    def choose_shares(self, arms: list[str], finished: dict, fixed: float | str) -> dict[str, dict]:
        """The share of each of `arms`: chosen (choose_share) over the grid, else `fixed` (benchmark.synthetic_share).
        Under k-fold the chosen share's jobs become the arm's result jobs in `finished`."""
        if not self.grid:
            return {a: {"share": fixed, "chosen_on": "config", "val": {}} for a in arms}
        shares = {a: self.choose_share(a, finished) for a in arms}
        if self.shares_from_select:
            finished.update({f"{a}/{s}": finished[share_key(a, shares[a]["share"], str(s))]
                             for a in arms for s in range(self.seeds)})
        return shares

    def recipe(self, finished: dict) -> str | None:
        """Step (a): the trained recipe arm with the best val score once its jobs are finished (None: no step b)."""
        if not self.recipes:
            return None
        return choose_recipe({a: self.val_score([f"{a}/{s}" for s in range(self.seeds)], finished) for a in self.recipes})

    def count(self) -> tuple[int, int]:
        """(classifiers that choose the shares, classifiers trained for results), step (b) at its most."""
        extra = self.most_added
        per_arm = len(self.grid) * len(self.select_seeds)  # a side-stream arm's share choices
        results = 0 if self.shares_from_select else self.seeds  # under k-fold the chosen share's jobs are its results
        return len(self.select) + extra * per_arm, len(self.main_keys) + extra * results


def rounds_of(todo: list, per_round: int, parallel: int) -> list[list]:
    """`todo` in contiguous rounds of at most `per_round` jobs, sizes differing by one at most, their number
    a multiple of `parallel` where there are enough jobs, so that `parallel` workers get the same work.
    The stage passes the machine's core count, not benchmark.workers: which models share a round (and
    so the results, to float rounding) never depends on how many workers train the rounds."""
    if not todo:
        return []
    parallel = max(1, parallel)
    n = min(len(todo), -(-len(todo) // per_round // parallel) * parallel)  # per_round 1: every job its own round
    size, extra = divmod(len(todo), n)
    bounds = np.cumsum([0] + [size + (i < extra) for i in range(n)])
    return [todo[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def share_key(arm: str, share: float, seed: str) -> str:
    """The key of the job that tries `share` for `arm` at `seed` ("select": a choice on val, its own seed)."""
    return f"{arm}/share={share}" + (f"/{seed}" if seed != "select" else "")


def plan_jobs(b: BenchmarkConfig, seed: int, sources: set[str], equal_classes: bool, ratio: float,
              val_per_class: int, cuda: bool, pixels: int) -> JobPlan:
    """The job list of benchmark config `b` when the run has images of `sources`, its real train classes
    are all of one size (`equal_classes`) or differ by `ratio` (largest over smallest), its smallest
    class has `val_per_class` real val images, and its images `pixels` (H x W) pixels."""
    spec = {a: trained_as(a, b.classical_on_the_fly) for a in b.arms}
    arms = [a for a in b.arms if set(spec[a].sources) <= sources]
    no_images = [a for a in b.arms if a not in arms]
    balanced = b.balanced_sampling == "all" or (b.balanced_sampling == "auto" and ratio > BALANCE_RATIO)
    same = []
    if equal_classes or balanced:  # then real+balanced would equal real
        same = [a for a in arms if spec[a].balanced and spec[a].sources == ("real",) and not spec[a].classical]
        arms = [a for a in arms if a not in same]
    protocol, reason = choose_protocol(b.selection, b.kfold_below, val_per_class)
    streams = [a for a in arms if spec[a].side_stream]
    cross = [s for s in b.cross_sources if s in sources]
    grid = sorted(set(b.share_grid)) if b.synthetic_share == "auto" and (streams or cross) else []
    select_seeds = ["select"] if protocol == "val" else [str(s) for s in range(b.seeds)]
    per_round = auto_per_round(b, cuda, pixels)
    recipes = [r for r in RECIPES if r in arms and spec[r].recipe == r] if cross else []  # the registry's order
    plan = JobPlan(arms, no_images, same, balanced, streams, protocol, reason, grid, [], select_seeds, per_round,
                   b.seeds, val_per_class, seed, recipes, cross)
    plan.select = plan.select_for(streams)
    return plan
