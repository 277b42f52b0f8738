"""The fast path (bf16 autocast, channels_last, the optimizer helper) runs the same code on the CPU, and
the device is chosen and recorded explicitly."""

import json

import numpy as np
import pytest
import torch

from augment.config import GanConfig
from augment.core.base.accel import adam, autocast, resolve_precision, use_channels_last, use_cuda_graphs
from augment.core.classify.classifier import train_classifier
from augment.core.gan.train import build_state, train_step
from augment.errors import UserError
from augment.graph import load_config
from augment.runtime import resolve_device

TINY = dict(mode="per_class", steps=1, image_size=16, batch_size=4, nz=8, ngf=4, ndf=4)


def conv_output_dtypes(module: torch.nn.Module) -> set:
    """A forward hook on every convolution that records its output dtype; returns the set it fills."""
    seen: set = set()
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


def bank(k=3, n=6, size=16):
    gen = torch.Generator().manual_seed(0)
    return torch.rand(k, n, 1, size, size, generator=gen) * 2 - 1, torch.full((k,), n)


def test_precision_and_layout_defaults_follow_the_device():
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cuda") == "fp32"
    assert not use_channels_last(None, "cpu") and use_channels_last(None, "cuda") and use_channels_last(True, "cpu")
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_one_gan_step_on_the_cpu_through_the_gpu_path():
    """bf16 autocast and channels_last on the CPU: the convolutions really run in bf16, the weights are
    channels_last, the step learns (finite losses, weights move) and is seeded (two runs agree)."""
    cfg = GanConfig(**TINY, precision="bf16", channels_last=True)

    def one_step():
        state = build_state(cfg, 3, 1, seed=0, device=torch.device("cpu"))
        dtypes = conv_output_dtypes(state.D)
        before = [p.detach().clone() for p in state.G.parameters()]
        stats = train_step(state, *bank(), cfg)
        return state, dtypes, before, stats

    state, dtypes, before, stats = one_step()
    assert dtypes == {torch.bfloat16}
    conv = next(m for m in state.G.modules() if isinstance(m, torch.nn.ConvTranspose2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.shape[-1] > 1
    assert stats.shape == (4,) and bool(torch.isfinite(stats).all())  # METRICS, kept on the device
    assert any(not torch.equal(a, b) for a, b in zip(before, state.G.parameters()))
    again = one_step()
    assert torch.equal(stats, again[3])
    fp32 = build_state(GanConfig(**TINY), 3, 1, seed=0, device=torch.device("cpu"))
    fp32_dtypes = conv_output_dtypes(fp32.D)
    train_step(fp32, *bank(), GanConfig(**TINY))
    assert fp32_dtypes == {torch.float32}  # the CPU default stays full precision


def test_one_classifier_step_on_the_cpu_in_bf16(monkeypatch):
    """The classifier's forward pass runs in bf16 under benchmark.precision: bf16, seeded as in fp32."""
    import augment.core.classify.networks as classifier

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8), np.repeat(np.arange(3), 4)
    dtypes: list[set] = []
    build = classifier._small_cnn

    def spy(*args, **kwargs):
        net = build(*args, **kwargs)
        dtypes.append(conv_output_dtypes(net))
        return net

    monkeypatch.setattr(classifier, "_small_cnn", spy)
    a = train_classifier(x, y, 3, steps=2, batch_size=6, width=4, seed=1, precision="bf16")
    b = train_classifier(x, y, 3, steps=2, batch_size=6, width=4, seed=1, precision="bf16")
    assert dtypes[0] == {torch.bfloat16}
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert all(p.dtype == torch.float32 for p in a.parameters())  # autocast: the weights stay fp32
    train_classifier(x, y, 3, steps=1, batch_size=6, width=4, seed=1)
    assert dtypes[2] == {torch.float32}  # the default stays full precision


def test_the_optimizer_helper_fuses_on_every_device():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert adam(params, "cpu", lr=1e-3).defaults["fused"] is True
    opt = adam(params, "cpu", lr=1e-3, weight_decay=0.1, decoupled=True)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["weight_decay"] == 0.1


@pytest.mark.gpu
def test_the_optimizer_helper_fuses_on_cuda():
    params = [torch.nn.Parameter(torch.zeros(2, device="cuda"))]
    assert adam(params, "cuda", lr=1e-3).defaults["fused"] is True


def test_cuda_graphs_are_for_cuda_only():
    """gan.cuda_graphs: auto captures on CUDA only, off never, on without CUDA is a one-line config error."""
    assert use_cuda_graphs("auto", "cuda") and not use_cuda_graphs("auto", "cpu") and not use_cuda_graphs("off", "cuda")
    with pytest.raises(ValueError, match="gan.cuda_graphs"):
        use_cuda_graphs("on", "cpu")
    with pytest.raises(UserError, match="'gan.cuda_graphs': on needs a CUDA device"):
        load_config(None, ["device=cpu", "gan.cuda_graphs=on"])
    state = build_state(GanConfig(**TINY), 3, 1, seed=0, device=torch.device("cpu"))
    assert state.captured is None and not state.opt_g.defaults["capturable"]


def test_lecam_anchors_take_the_step_as_a_device_tensor():
    """The step's number comes from the device (the EMA's counter) so a captured step needs no host
    value: the same anchors as from a Python int."""
    from augment.core.gan.adversarial import update_anchors

    real, fake = torch.randn(4, 3), torch.randn(4, 3)
    a = update_anchors(torch.zeros(2, 3), real, fake, 0.9, 3)
    b = update_anchors(torch.zeros(2, 3), real, fake, 0.9, torch.tensor(3))
    assert all(torch.allclose(x, y, rtol=1e-6) for x, y in zip(a, b))


@pytest.mark.gpu
@pytest.mark.parametrize("mode,extra", [("per_class", {"lecam": 0.1}), ("mix", {"nz": 48})])
def test_a_captured_gan_step_trains_as_the_eager_step(mode, extra):
    """gan.cuda_graphs: the step replayed as a CUDA graph (after 3 eager steps and the capture) gives the
    eager steps' metrics and random stream, in fp32 to float tolerance (H200, 2026-12-04: the metrics of 7
    steps agreed to 1e-4). Weights are not compared one by one: a bias right before a norm layer has no
    gradient but float noise, which Adam scales up to a whole step, in both runs alike."""
    device = torch.device("cuda")
    x, counts = bank()
    x, counts = x.to(device), counts.to(device)
    runs = {}
    for graphs in ("on", "off"):
        cfg = GanConfig(**{**TINY, "mode": mode, **extra}, precision="fp32", cuda_graphs=graphs)
        state = build_state(cfg, 3, 1, seed=0, device=device, bank=(x, counts))
        metrics = torch.stack([train_step(state, x, counts, cfg) for _ in range(12)])
        runs[graphs] = state, metrics
    (graphed, m1), (eager, m2) = runs["on"], runs["off"]
    assert graphed.captured.graph is not None and eager.captured is None and graphed.step == eager.step == 12
    assert torch.allclose(m1, m2, rtol=1e-3, atol=1e-4), (m1 - m2).abs().max()
    assert torch.equal(graphed.gen.get_state(), eager.gen.get_state()), "a checkpoint would resume another stream"


def test_device_names_a_gpu_by_index_or_fails_in_one_line(monkeypatch):
    from augment.config_file import load_config as parse_config

    assert parse_config(None, ["device=cuda:1"]).device == "cuda:1"
    with pytest.raises(UserError, match=r"config key 'device': expected auto, cpu, cuda or cuda:N"):
        load_config(None, ["device=gpu0"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"'device' is 'cuda:1' but no CUDA device"):
        load_config(None, ["device=cuda:1"])  # at load, before any work
    with pytest.raises(UserError, match=r"'device' is 'cuda:1' but no CUDA device is available"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match=r"config key 'device': cuda:2 does not exist \(this machine has 2 CUDA "
                                        r"device\(s\): cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_the_run_records_its_device_and_precision(smoke_run):
    _, run_dir, info = smoke_run
    device = json.loads((run_dir / "device.json").read_text())
    assert device["device"] == "cpu" and device["gpu"] is None and device["torch"] == torch.__version__
    assert device["gan_precision"] == "fp32" and device["classifier_precision"] == "fp32"
    assert info["gan"]["precision"] == "fp32"
    assert "Computed on cpu: GAN fp32, classifier fp32." in (run_dir / "report" / "report.md").read_text()


# --------------------------------------------------------------------------- the allocator (augment.runtime.tune_allocator)

_STEPS = r'''
import hashlib, json, resource, sys
import torch
from augment.config import GanConfig
from augment.core.gan.train import build_state, train_step
from augment.runtime import tune_allocator
tuned = tune_allocator() if sys.argv[1] == "tune" else None
cfg = GanConfig(mode="per_class", image_size=16)  # the embedded default's GAN member: 10 classes, batch 32
bank, counts = torch.rand(10, 10, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1, torch.full((10,), 10)
state = build_state(cfg, 10, 1, seed=0, device=torch.device("cpu"))
for _ in range(4):  # first-call costs, the heap growing to its size, glibc's dynamic threshold adapting to the first frees
    train_step(state, bank, counts, cfg)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    train_step(state, bank, counts, cfg)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8
weights = hashlib.sha256(b"".join(t.numpy().tobytes() for t in state.G.state_dict().values())).hexdigest()
print(json.dumps({"tuned": tuned, "faults": faults, "weights": weights}))
'''


def _glibc() -> bool:
    import ctypes
    import sys

    try:
        return sys.platform == "linux" and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except OSError:
        return False


def _huge_pages_always() -> bool:
    from pathlib import Path

    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.is_file() and "[always]" in path.read_text()


def _steps(mode: str) -> dict:
    """Twelve steps of the default GAN member in a fresh process, the allocator as glibc leaves it or tuned."""
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True, env=clean)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _glibc(), reason="tune_allocator sets glibc's malloc; elsewhere it does nothing")
@pytest.mark.skipif(_huge_pages_always(), reason="transparent huge pages on for every allocation: few faults either way")
def test_the_tuned_allocator_reuses_freed_memory_and_trains_the_same_weights():
    """Untuned, a step's large tensors go back to the kernel and are faulted in again in the next step
    (thousands of page faults); tuned, they come from the heap (a few dozen). Where memory comes from
    changes no number: the same seed trains bit-identical weights."""
    plain, tuned = _steps("plain"), _steps("tune")
    assert tuned["tuned"] is True
    assert tuned["faults"] < plain["faults"] / 4, (plain, tuned)
    assert tuned["weights"] == plain["weights"]


def test_the_allocator_is_left_as_the_user_chose(monkeypatch):
    """A MALLOC_* variable, a glibc.malloc tunable or a preloaded allocator: nothing is set."""
    from augment import runtime

    for key, value in [("MALLOC_MMAP_THRESHOLD_", "131072"), ("MALLOC_TRIM_THRESHOLD_", "131072"),
                       ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072"), ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")]:
        with monkeypatch.context() as m:
            m.setattr(runtime, "_tuned", None)
            m.setenv(key, value)
            m.setattr(runtime.ctypes, "CDLL", lambda *a: pytest.fail("mallopt called although the user chose"))
            assert runtime.tune_allocator() is False
