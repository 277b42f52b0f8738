"""The fast path, one helper each, the same code on every device: precision, memory format, optimizer.

The caller chooses the device; these helpers only read its type. CUDA gets bf16 autocast,
channels_last by default; the CPU gets full precision and the contiguous layout, unless the config asks for more (gan.precision, gan.channels_last,
benchmark.precision): then the CPU runs exactly the code a GPU runs, which is how CI covers it.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def resolve_precision(setting: str, device: torch.device | str) -> str:
    """'auto' -> 'bf16' on CUDA, 'fp32' elsewhere; an explicit 'fp32' or 'bf16' as given."""
    if setting != "auto":
        return setting
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def autocast(device: torch.device | str, precision: str = "auto", cache: bool = True):
    """The one mixed-precision context: autocast to bf16 on the device's own backend, or nothing.
    cache=False recasts the weights at every use (what a CUDA graph's capture needs)."""
    device = torch.device(device)
    dtype = PRECISIONS[resolve_precision(precision, device)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


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
         decoupled: bool = False, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam (AdamW with decoupled=True), fused into one kernel (CUDA and, since torch 2.4, the CPU:
    measured 3% off a small classifier's step on 2 cores); capturable (CUDA only): its step can be
    captured in a CUDA graph (CapturedStep)."""
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True, capturable=capturable)


def use_cuda_graphs(setting: str, device: torch.device | str, key: str = "gan.cuda_graphs") -> bool:
    """gan.cuda_graphs or benchmark.cuda_graphs (`key`): 'auto' -> on CUDA only; 'on' -> CUDA or a
    one-line error naming the key; 'off' -> never."""
    cuda = torch.device(device).type == "cuda"
    if setting == "on" and not cuda:
        raise ValueError(f"'{key}': on needs a CUDA device (the device is {torch.device(device)}); set it to auto or off")
    return cuda and setting != "off"


class CapturedStep:
    """A training step replayed as one CUDA graph: the host launches one graph, not hundreds of kernels.

    The step (fn(), returning a tensor of metrics) must keep its shapes and tensors from call to call
    and draw its randomness from `generators` (registered with the graph, so each replay draws new
    numbers) and its optimizers must be capturable. The first `warmup` calls run eagerly on a side
    stream (PyTorch's recipe: lazy state such as the optimizers' is made before capture); the next
    captures one call and replays it, and every later call replays it. Each call does exactly one step
    and returns a copy of its metrics. `inputs`: the tensors fn reads; others on a later call recapture.
    """

    def __init__(self, generators: list[torch.Generator], warmup: int = 3):
        self.generators, self.warmup = generators, warmup
        self.calls, self.graph, self.out, self.inputs = 0, None, None, ()

    def __call__(self, fn, inputs: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        if self.graph is not None and not (len(inputs) == len(self.inputs)
                                           and all(a is b for a, b in zip(inputs, self.inputs))):
            self.graph, self.calls = None, 0  # other tensors: warm up and capture again
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*capturable=True")  # eager before capture, by design
                out = fn()
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            graph = torch.cuda.CUDAGraph()
            for gen in self.generators:
                graph.register_generator_state(gen)
            with torch.cuda.graph(graph):
                self.out = fn()
            self.graph, self.inputs = graph, tuple(inputs)
        self.graph.replay()
        return self.out.clone()
