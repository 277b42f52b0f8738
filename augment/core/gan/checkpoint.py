"""A generator's files: reading its checkpoints safely (tensors and plain containers only, never
arbitrary pickles) and where its snapshots lie in its training directory."""

from __future__ import annotations

from pathlib import Path

import torch

from augment.errors import UserError


def read_checkpoint(path: Path) -> dict:
    """torch.load with weights_only=True; anything else, or a damaged file, is a one-line error naming the file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (UnpicklingError, RuntimeError, EOFError, zip errors)
        raise UserError(f"{path}: not a checkpoint this tool wrote ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to train from scratch") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict) or len(payload) < 2:
        raise UserError(f"{path}: not a checkpoint this tool wrote (no generator state or model settings); "
                        "delete it to train from scratch")
    return payload


def snapshot_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / "snapshots" / f"step_{step:06d}.pt"


def snapshots(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the EMA generator snapshots in out_dir, by step."""
    return sorted((int(p.stem.split("_")[1]), p) for p in (Path(out_dir) / "snapshots").glob("step_*.pt"))
