"""The device (chosen once per run and passed down) and named, stable seeds."""

from __future__ import annotations

import hashlib
import json

from augment.errors import UserError


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


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for a named sub-stream, so stages never share random streams."""
    blob = json.dumps([seed, *[str(p) for p in parts]]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1
