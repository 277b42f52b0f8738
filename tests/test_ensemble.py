"""gan.mode per_class+mix: an ensemble of generators, each trained as alone, their samples pooled."""

import json
import shutil

import numpy as np
import pytest
import torch

from augment.config import Config, GanConfig
from augment.core.gan.adversarial import dcgan_init
from augment.core.gan.ensemble import member_dir
from augment.core.gan.kinds import GanSpec, kind
from augment.core.gan.mix import SELECT_DIMS
from augment.core.gan.sampling import EnsembleGenerator
from augment.core.gate.gate import selection_rule

NZ = SELECT_DIMS + 8


def test_each_row_comes_from_one_member_and_only_mix_rows_have_parents():
    torch.manual_seed(0)
    per_class = kind("per_class").networks(GanSpec("per_class", 3, NZ, 4, 4, 16, 1))[0]
    mix = kind("mix").networks(GanSpec("mix", 3, NZ, 4, 4, 16, 1, 5))[0]
    for net in (per_class, mix):
        dcgan_init(net, torch.Generator().manual_seed(0))
    mix.set_bank(torch.rand(3, 5, 1, 16, 16) * 2 - 1, torch.tensor([5, 2, 4]))
    G = EnsembleGenerator([per_class.eval(), mix.eval()]).eval()
    z = torch.randn(6, 3, NZ)
    with torch.no_grad():
        out = G(z)
        assert torch.equal(out[0::2], per_class(z[0::2])) and torch.equal(out[1::2], mix(z[1::2]))
    parents = G.parents(z)
    assert (parents[0::2] == -1).all() and torch.equal(parents[1::2], mix.parents(z[1::2]))
    assert EnsembleGenerator([per_class]).parents(z) is None


def test_config_checks_and_the_selection_rule():
    with pytest.raises(ValueError, match="gan.nz"):
        GanConfig(mode="per_class+mix", nz=32)
    with pytest.raises(ValueError, match="gan.shards"):
        GanConfig(mode="per_class+mix", nz=NZ, shards=2)
    with pytest.raises(ValueError, match="smote.features.*ensemble"):
        Config(gan=GanConfig(mode="per_class+mix"), smote={"features": "discriminator"})
    assert [selection_rule("auto", m) for m in ("per_class", "conditional", "mix")] == ["confidence", "confidence", "farthest"]
    assert selection_rule("random", "mix") == "random"


def test_the_ensemble_runs_in_the_pipeline_its_members_train_as_alone_and_share_the_kept_samples(smoke_run, tmp_path):
    """gan + synthesize with gan.mode per_class+mix on a copy of the smoke run: each member's weights
    equal its mode trained alone (same seed, same data), the checkpoint loads without the config, and
    every class keeps half its samples from each member; the mix rows name their parents."""
    from augment import rundir
    from augment.core.gan.sampling import load_generator
    from augment.graph import load_config, run_stage
    from conftest import SMOKE

    _, source, _ = smoke_run
    run_dir, alone = tmp_path / "run", tmp_path / "alone"
    shutil.copytree(source, run_dir)
    shutil.copytree(source, alone)
    cfg = load_config(SMOKE, ["gan.mode=per_class+mix", f"gan.nz={NZ}", "gan.samples_per_class=8",
                              "gate.min_confidence=0", "gate.min_novelty=0"])
    assert run_stage("gan", cfg, run_dir)["steps"] == 20
    run_stage("gan", load_config(SMOKE, ["gan.mode=mix", f"gan.nz={NZ}"]), alone)
    mine, theirs = (torch.load(p, weights_only=True)["ema"] for p in (member_dir(run_dir / "gan", "mix") / "checkpoint.pt",
                                                                     alone / rundir.GAN_CHECKPOINT))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    G = load_generator(run_dir / rundir.GAN_CHECKPOINT, "cpu")
    assert isinstance(G, EnsembleGenerator) and [type(m).__name__ for m in G.members] == ["Generator", "MixGenerator"]
    assert (run_dir / "gan" / "samples" / "interpolation.png").is_file()
    run_stage("synthesize", cfg, run_dir)
    frame = rundir.read_manifest(run_dir)
    kept = frame[(frame["source"] == "gan") & frame["kept"]]
    mixes = kept["params"].notna()
    assert kept.groupby("label").size().eq(8).all()
    assert kept[mixes].groupby("label").size().eq(4).all() and kept[~mixes].groupby("label").size().eq(4).all()
    real = frame[(frame["source"] == "real") & (frame["split"] == "train")]
    label_of = dict(zip(real["id"], real["label"]))
    for row in kept[mixes].itertuples():
        assert all(label_of[p] == row.label for p in json.loads(row.params)["parents"])
    assert kept.loc[~mixes, "parent_id"].isna().all()
    assert set(kept.loc[mixes, "generator"]) == {"mix"}
    assert set(kept.loc[~mixes, "generator"]) == {"per_class"}
    from augment.core.report.report_gan import quality_section

    text = quality_section(cfg, json.loads((run_dir / "gan" / "quality.json").read_text()), None, frame)
    assert "ensemble `gan.mode: per_class+mix`" in text and "distinct sets of parents" in text and "from two real train images" in text


@pytest.mark.slow  # two ensembles trained and a CAS selection: about a minute on 2 cores
def test_the_ensemble_resumes_and_selects_among_merged_snapshots(smoke_run, tmp_path, monkeypatch):
    """An interrupted ensemble (its members stepped together, stopped at step 10) resumes to the
    uninterrupted run's checkpoint, bit for bit; with gan.checkpoint_selection cas the merged
    snapshots hold both members and the synthesize stage chooses among them."""
    from augment import rundir
    from augment.core.gan import train as gan_train
    from augment.core.gan.sampling import load_generator
    from augment.graph import load_config, run_stage
    from conftest import SMOKE

    _, source, _ = smoke_run
    cfg = load_config(SMOKE, ["gan.mode=per_class+mix", f"gan.nz={NZ}", "gan.checkpoint_selection=cas"])
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    for d in (whole, resumed):
        shutil.copytree(source, d)
    run_stage("gan", cfg, whole)
    real_train = gan_train.train_members

    def interrupted(members, progress=None, stop_after=None, on_snapshot=None):
        assert len(members) == 2  # both members in one loop
        real_train(members, progress, 10, on_snapshot)
        raise RuntimeError("interrupted")

    monkeypatch.setattr(gan_train, "train_members", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_stage("gan", cfg, resumed)
    for mode in ("per_class", "mix"):
        member = resumed / "gan" / "members" / mode
        assert (member / "snapshots" / "step_000010.pt").exists()
        assert not (member / "snapshots" / "step_000020.pt").exists()
    monkeypatch.setattr(gan_train, "train_members", real_train)
    run_stage("gan", cfg, resumed)
    a, b = (torch.load(d / rundir.GAN_CHECKPOINT, weights_only=True) for d in (whole, resumed))
    assert len(a["members"]) == len(b["members"]) == 2
    for ea, eb in zip(a["members"], b["members"]):
        assert all(torch.equal(ea["ema"][k], eb["ema"][k]) for k in ea["ema"])
    snaps = sorted(p.name for p in (whole / "gan" / "snapshots").glob("*.pt"))
    assert snaps == ["step_000010.pt", "step_000020.pt"]
    assert isinstance(load_generator(whole / "gan" / "snapshots" / snaps[0], "cpu"), EnsembleGenerator)
    info = run_stage("synthesize", cfg, whole)
    assert info["generator_step"] in (10, 20) and np.isfinite(info["cas_accuracy_on_val"])
