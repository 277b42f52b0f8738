"""The device (chosen once per run and passed down), named stable seeds, the allocator's settings, and the
signal handlers that ask a run to stop (the request itself, which loops check, is augment.errors')."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from augment.errors import UserError, request_stop, stop_requested

log = logging.getLogger("augment")


def resolve_device(name: str):
    """Map the config's `device` (auto|cpu|cuda|cuda:N) to a torch.device, once per run."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"config key 'device' is {name!r} but no CUDA device is available; use 'auto' or 'cpu'")
        index = int(name.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise UserError(f"config key 'device': {name} does not exist (this machine has {count} CUDA "
                            f"device(s): cuda:0 to cuda:{count - 1})")
    return torch.device(name)


def describe_device(device) -> dict:
    """What a run computed on, for the run directory and the report: device, GPU name, torch version."""
    import torch

    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "gpu": gpu, "torch": torch.__version__}


def cpu_cores() -> int:
    """The processors this process may run on (its CPU affinity: taskset, a container's cpuset), else
    the machine's count: what the worker pools and the benchmark's rounds are sized by."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for a named sub-stream, so stages never share random streams."""
    blob = json.dumps([seed, *[str(p) for p in parts]]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


# --------------------------------------------------------------------------- the allocator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks up to 32 MiB come from the heap and are reused
TRIM_THRESHOLD = 2**30  # the heap keeps up to 1 GiB free at its top instead of returning it at once
_tuned: bool | None = None


def tune_allocator() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default each large tensor (above about 128 KiB, glibc's dynamic threshold) is mmap'ed when
    allocated and unmapped when freed, or the heap's free top handed back, so every training step
    faults its pages in again, the kernel zeroing each one: about 10,000 page faults a step of the
    default GAN as it was (both members, 16 px; a tenth to a fifth of its time alone) and of a benchmark round
    at 8 px. With these two settings (what the MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_
    environment variables set at a process's start) the steps reuse the heap: under 100 a step
    (docs/figures.md). Nothing is computed differently (tests/test_accel.py). Called by every process
    that trains (the flow's stages, the plan's probes, the worker processes); once per process. Left
    alone where the user chose: either variable, a glibc.malloc tunable in GLIBC_TUNABLES, or another
    allocator preloaded (LD_PRELOAD naming a malloc); and where the C library is not glibc. True
    when both settings are in place (should glibc refuse the second, the first stays). The stages of
    `augment run` run in the main thread, whose heap this governs; a stage run in another thread
    (a thread-based Dask worker) allocates from that thread's own arena, which glibc still shrinks
    when it empties: there it saved a quarter of the faults, not all (measured once).
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    chosen = (any(f"MALLOC_{k}_" in os.environ for k in ("MMAP_THRESHOLD", "TRIM_THRESHOLD"))
              or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or "malloc" in os.environ.get("LD_PRELOAD", ""))
    if sys.platform != "linux" or chosen:
        return _tuned
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc's; musl has none
    except (OSError, AttributeError):
        return _tuned
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _tuned


# --------------------------------------------------------------------------- stopping on a signal

def _children(pid: int) -> list[int]:
    """Child processes of pid (Linux /proc), e.g. the temporary Prefect server."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _on_signal(signum: int, frame) -> None:
    if stop_requested() is None:
        request_stop(signum)
        log.warning("%s: stopping at the next step boundary (send it again to stop at once)",
                    signal.Signals(signum).name)
        return
    for child in _children(os.getpid()):  # a second signal: stop now, and leave no server behind
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGTERM)
    os._exit(128 + signum)


@contextlib.contextmanager
def graceful_stop(signals=(signal.SIGTERM, signal.SIGINT)):
    """While inside: the first SIGTERM/SIGINT asks the run to stop at the next step boundary (loops
    call check_stop; the GAN writes its checkpoint first), a second one exits at once. The previous
    handlers come back afterwards. Outside the main thread it does nothing (signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
