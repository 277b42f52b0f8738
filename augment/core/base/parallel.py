"""Independent jobs (one classifier per benchmark arm and seed) on every core, each single-threaded.

Tiny CNNs gain nothing from torch's intra-op threads (one thread was faster than two on 2 cores),
so N processes with one thread each beat one process with N threads. Every job runs with one
thread wherever it runs, in a pool or in this process: the results do not depend on the number
of workers. A stop request (SIGTERM/SIGINT, augment.runtime) ends the pool within a poll interval.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
from contextlib import contextmanager
from typing import Callable, Iterator

from augment.errors import check_stop
from augment.runtime import cpu_cores, tune_allocator


@contextmanager
def single_threaded() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


POOL_MIN_STEPS = 5_000  # training steps (about 10 ms each on a CPU) that repay spawning workers (~5 s each)


def auto_workers(jobs: int, configured: int | None, device, steps_per_job: int = POOL_MIN_STEPS) -> int:
    """The configured count, else every core on the CPU (never more than the jobs) once there is
    enough work to repay starting the worker processes; one on a GPU."""
    if configured is not None:
        return max(1, min(configured, jobs))
    if str(device).startswith("cuda") or jobs * steps_per_job < POOL_MIN_STEPS:
        return 1
    return max(1, min(cpu_cores(), jobs))


# torch._dynamo: torch's optimizers import it at their first use (about 1.5 s on 2 cores), frozen here with the rest
WORKER_IMPORTS = ("torch", "torch._dynamo")


def _init_worker(preload: tuple[str, ...] = ()) -> None:
    """A worker's set-up: one thread, the tuned allocator, and `preload` (the jobs' modules) imported with the
    cyclic garbage collector off, then frozen (gc.freeze): no collection in the worker walks the ~400,000
    objects of its imports again (its start-up collections cost about 0.8 s, docs/figures.md)."""
    import gc
    import importlib
    import signal

    gc.disable()
    try:
        import torch

        for name in (*WORKER_IMPORTS, *preload):
            importlib.import_module(name)
    finally:
        gc.freeze()
        gc.enable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    torch.set_num_threads(1)
    tune_allocator()


def _call(item: tuple[Callable, int, object]) -> tuple[int, object]:
    fn, i, job = item
    return i, fn(job)


@contextmanager
def job_pool(workers: int, preload: tuple[str, ...] = ()) -> Iterator[multiprocessing.pool.Pool | None]:
    """Worker processes to pass to several run_jobs calls (spawned once); None for one worker.
    `preload`: the modules the jobs run from, imported as each worker starts (_init_worker)."""
    if workers <= 1:
        yield None
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(tuple(preload),))
    try:
        yield pool
    finally:  # every result is in (or none is wanted): end the workers rather than wait ~1.5 s for their teardown
        pool.terminate()


def run_jobs(fn: Callable, jobs: list, workers: int, poll: float = 0.2, pool=None) -> Iterator[tuple[int, object]]:
    """Yield (index, fn(job)) as each job finishes. `fn` must be a module-level function (workers are
    spawned, so it is imported there by name). `pool`: a job_pool to reuse (else one is started
    for these jobs when workers > 1)."""
    if pool is None and (workers <= 1 or len(jobs) <= 1):
        with single_threaded():
            for i, job in enumerate(jobs):
                check_stop()
                yield i, fn(job)
        return
    if pool is None:
        with job_pool(workers) as own:
            yield from run_jobs(fn, jobs, workers, poll, own)
        return
    results = pool.imap_unordered(_call, [(fn, i, job) for i, job in enumerate(jobs)])
    for _ in jobs:
        while True:
            check_stop()  # a stop request ends the pool now (the pool's owner terminates it), not after the job
            try:
                yield results.next(timeout=poll)
                break
            except multiprocessing.TimeoutError:
                continue
