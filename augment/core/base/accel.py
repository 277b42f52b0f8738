"""The fast path, one helper each, the same code on every device: precision, memory format, optimizer.

The caller chooses the device; these helpers only read its type. CUDA gets bf16 autocast,
channels_last by default; the CPU gets full precision and the contiguous layout, unless the config asks for more (gan.precision, gan.channels_last,
benchmark.precision): then the CPU runs exactly the code a GPU runs, which is how CI covers it.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def resolve_precision(setting: str, device: torch.device | str) -> str:
    """'auto' -> 'bf16' on CUDA, 'fp32' elsewhere; an explicit 'fp32' or 'bf16' as given."""
    if setting != "auto":
        return setting
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def autocast(device: torch.device | str, precision: str = "auto"):
    """The one mixed-precision context: autocast to bf16 on the device's own backend, or nothing."""
    device = torch.device(device)
    dtype = PRECISIONS[resolve_precision(precision, device)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def use_channels_last(setting: bool | None, device: torch.device | str) -> bool:
    """None -> channels_last on CUDA only (cuDNN's fast layout); True or False as given."""
    return torch.device(device).type == "cuda" if setting is None else setting


def to_memory_format(module: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """The module's 4-d weights and buffers in channels_last (Module.to refuses a module that also
    holds other ranks, such as the mix generator's 5-d image bank)."""
    if channels_last:
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                if t.dim() == 4:
                    t.data = t.data.contiguous(memory_format=torch.channels_last)
    return module


def adam(params, device: torch.device | str, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0,
         decoupled: bool = False) -> torch.optim.Optimizer:
    """Adam (AdamW with decoupled=True), fused into one kernel (CUDA and, since torch 2.4, the CPU:
    measured 3% off a small classifier's step on 2 cores)."""
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
