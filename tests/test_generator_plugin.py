"""A generator added from outside: a toy defined only here, registered in augment.registry.GENERATORS,
runs through the training loop, resume, the gan stage, the gate, the benchmark, the report and an
ensemble without a line of augment/ knowing its name (augment.core.gan.kinds is the whole contract).

The toy is not a GAN: one learned mean image per class plus a shared linear map of the noise, trained
to match each class's per-pixel mean and spread (moment matching). It has no discriminator, no batch
norm and no EMA, so every place that assumed a DCGAN would trip on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from augment.config import Config, GanConfig
from augment.core.gan.kinds import GanSpec, Kind, balanced_indices
from augment.registry import GENERATORS, GeneratorEntry


class ToyNet(nn.Module):
    def __init__(self, k: int, nz: int, nc: int, size: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(k, nc, size, size))
        self.spread = nn.Linear(nz, nc * size * size, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, k, _ = z.shape
        return torch.tanh(self.mean + self.spread(z).view(b, k, *self.mean.shape[1:]))


@dataclass
class ToyState:
    spec: GanSpec
    net: ToyNet
    opt: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0


class Toy(Kind):
    metrics = ("loss_moments",)
    sampler_keys = ("net",)

    def _net(self, spec: GanSpec) -> ToyNet:
        return ToyNet(spec.n_classes, spec.nz, spec.channels, spec.image_size)

    def build(self, spec, cfg, seed, device, bank):
        net = self._net(spec)
        nn.init.normal_(net.spread.weight, 0.0, 0.02, generator=torch.Generator().manual_seed(seed))
        net = net.to(device)
        return ToyState(spec, net, torch.optim.Adam(net.parameters(), lr=0.05),
                        torch.Generator(device=device).manual_seed(seed + 1))

    def step(self, state, bank, counts, cfg):
        idx = balanced_indices(counts, cfg.batch_size, state.gen)
        real = bank[torch.arange(bank.shape[0], device=bank.device), idx]
        fake = state.net(torch.randn(cfg.batch_size, bank.shape[0], cfg.nz, generator=state.gen, device=bank.device))
        loss = (fake.mean(0) - real.mean(0)).square().mean() + (fake.std(0) - real.std(0)).square().mean()
        state.opt.zero_grad(set_to_none=True)
        loss.backward()
        state.opt.step()
        state.step += 1
        return loss.detach().view(1)

    def payload(self, state):
        return {"net": state.net.state_dict(), "opt": state.opt.state_dict(), "gen": state.gen.get_state()}

    def restore(self, state, payload):
        state.net.load_state_dict(payload["net"])
        state.opt.load_state_dict(payload["opt"])
        state.gen.set_state(payload["gen"])

    def sampler_state(self, state):
        return {"net": state.net.state_dict()}

    def sampler(self, spec, sampler_state, device, seed):
        net = self._net(spec)
        net.load_state_dict(sampler_state["net"])
        return net.to(device).eval()


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(GENERATORS, "toy", GeneratorEntry(f"{__name__}:Toy", "a test's moment-matching toy",
                                                          discriminator=False))
    return "toy"


def test_the_toy_is_a_gan_mode_and_the_config_knows_what_it_lacks(toy):
    assert GanConfig(mode="toy").mode == "toy" and GanConfig(mode="per_class+toy").mode == "per_class+toy"
    with pytest.raises(ValueError, match="gan.shards"):
        GanConfig(mode="toy", shards=2)
    with pytest.raises(ValueError, match="smote.features 'discriminator'.*gan.mode 'toy'"):
        Config(gan=GanConfig(mode="toy"), smote={"features": "discriminator"})
    with pytest.raises(ValueError, match="gan.mode 'tyo': choose one of per_class, conditional, mix, hydra, toy"):
        GanConfig(mode="tyo")


def test_the_toy_trains_and_resumes_exactly_through_the_loop(toy, tmp_path):
    from augment.core.gan.sampling import load_generator
    from augment.core.gan.train import train_gan

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8), np.arange(12) % 3
    cfg = GanConfig(mode="toy", steps=6, image_size=16, batch_size=4, nz=8, sample_every=2, checkpoint_every=2,
                    checkpoint_selection="cas")
    kw = dict(seed=3, device=torch.device("cpu"), fingerprint="f", val=(x[:3], y[:3]))
    straight = train_gan(x, y, 3, cfg, out_dir=tmp_path / "a", **kw)
    train_gan(x, y, 3, cfg, out_dir=tmp_path / "b", stop_after=3, **kw)
    resumed = train_gan(x, y, 3, cfg, out_dir=tmp_path / "b", **kw)
    assert straight.step == resumed.step == 6
    for key, value in straight.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
    history = pd.read_csv(tmp_path / "b" / "history.csv")
    assert list(history.columns) == ["step", "loss_moments", "step_seconds"] and len(history) == 6
    G = load_generator(tmp_path / "b" / "snapshots" / "step_000004.pt", "cpu")
    assert G(torch.randn(2, 3, 8)).shape == (2, 3, 1, 16, 16) and G.nz == 8


@pytest.mark.slow
def test_the_toy_runs_the_pipeline_alone_and_in_an_ensemble(toy, tmp_path):
    """The whole smoke pipeline in-process with gan.mode toy: its samples are gated, named `toy` in the
    manifest, trained on by the GAN arms and reported; then per_class+toy trains both as an ensemble."""
    from augment.graph import load_config, run_pipeline
    from conftest import SMOKE

    cfg = load_config(SMOKE, ["gan.mode=toy", "gan.checkpoint_selection=cas", "gate.min_confidence=0"])
    run_pipeline(cfg, tmp_path / "run")
    frame = pd.read_parquet(tmp_path / "run" / "manifest.parquet")
    gan = frame[frame["source"] == "gan"]
    assert len(gan) and set(gan["generator"]) == {"toy"} and gan["kept"].any()
    arms = json.loads((tmp_path / "run" / "benchmark" / "summary.json").read_text())["arms"]
    real_gan = arms["real+gan"]
    assert real_gan["train_images"] > arms["real"]["train_images"]  # the kept toy samples were trained on
    assert np.isfinite(real_gan["val"]["metrics"]["accuracy"]["mean"])
    assert "Discriminator overfitting" not in (tmp_path / "run" / "report" / "report.md").read_text()
    both = load_config(SMOKE, ["gan.mode=per_class+toy", "gate.min_confidence=0", "benchmark.arms=[real,real+gan]"])
    run_pipeline(both, tmp_path / "both")
    rows = pd.read_parquet(tmp_path / "both" / "manifest.parquet")
    kept = rows[(rows["source"] == "gan") & rows["kept"]]
    assert set(kept["generator"]) == {"per_class", "toy"}
    assert (kept.groupby("label")["generator"].value_counts() == 4).all()  # half of the 8 kept per class from each
