"""The device (chosen once per run and passed down) and named, stable seeds."""

from __future__ import annotations

import hashlib
import json

from augment.errors import UserError


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
