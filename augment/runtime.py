"""Device choice, seeding helpers, atomic writes and stage resume markers."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from augment.errors import UserError

log = logging.getLogger("augment")


def resolve_device(name: str):
    """Map the config's `device` (auto|cpu|cuda) to a torch.device, once per run."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("config key 'device' is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for a named sub-stream, so stages never share random streams."""
    blob = json.dumps([seed, *[str(p) for p in parts]]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


# --------------------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    The temporary name (`.<name>.<pid>-<thread>.tmp`) is unique to this writer, so no random
    name has to be probed for; files get ordinary permissions (0666 less the umask). A killed
    writer's temporary is removed by the next run (remove_stale_temporaries).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())


def _json_default(obj: object):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def remove_stale_temporaries(root: Path) -> int:
    """Delete temporary files an interrupted run left behind (`.<name>.<random>.tmp` from
    atomic_path). Only call it while holding the run lock: then no writer can be mid-way."""
    stale = [p for p in Path(root).rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink()
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted run", len(stale))
    return len(stale)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory for the whole run, or refuse at once.

    An OS file lock (flock): it is released when the process ends, however it ends (a killed
    run never leaves a stale lock), and a second `augment run` on the same directory gets a
    one-line error instead of interleaving its writes.
    """
    import fcntl

    path = Path(run_dir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"run directory {run_dir} is in use by another augment run (pid {holder}); "
                            "wait for it to finish or choose another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- stage resume


def _marker(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "stages" / f"{stage}.json"


def stage_fingerprint(run_dir: Path, stage: str) -> str | None:
    """The fingerprint a finished stage recorded, or None if it has not finished."""
    marker = _marker(run_dir, stage)
    if not marker.is_file():
        return None
    return json.loads(marker.read_text()).get("fingerprint")


def run_stage(run_dir: Path, stage: str, fingerprint: str, body: Callable[[], dict | None]) -> dict:
    """Run `body` unless this stage already finished with the same fingerprint (resume).

    The marker is written only after `body` returns, so an interrupted stage re-runs.
    Returns the stage's recorded info (with `skipped` telling whether it ran).
    """
    marker = _marker(run_dir, stage)
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("fingerprint") == fingerprint:
            log.info("stage %s: unchanged since the last run, skipped", stage)
            return {**info, "skipped": True}
        marker.unlink()
    start = time.perf_counter()
    log.info("stage %s: started", stage)
    info = dict(body() or {})
    info.update(fingerprint=fingerprint, seconds=round(time.perf_counter() - start, 3))
    write_json(marker, info)
    log.info("stage %s: done in %.1f s", stage, info["seconds"])
    return {**info, "skipped": False}


def combine(*parts: str | None) -> str:
    """Fingerprint from several parts (config-section hashes, upstream fingerprints)."""
    return hashlib.sha256("|".join(p or "-" for p in parts).encode()).hexdigest()[:16]
