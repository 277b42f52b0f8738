"""gan.mode mix: the image-conditioned generator (augment.core.gan.mix) that mixes two real images of a class."""

import json

import numpy as np
import pytest
import torch

from augment.config import GanConfig
from augment.core.gan.adversarial import dcgan_init
from augment.core.gan.kinds import GanSpec, kind, prepare_real
from augment.core.gan.mix import PARENT_BITS, SELECT_DIMS, MixGenerator
from augment.core.gan.sampling import sample, sample_parents
from augment.registry import GENERATORS

NZ = SELECT_DIMS + 8


def mix_generator(counts=(4, 4, 4), size=16, channels=1, seed=0, mode="mix", nz=NZ) -> MixGenerator:
    """A small generator of `mode` (mix, or a subclass such as hydra) with a random bank, in eval mode."""
    torch.manual_seed(seed)
    k = len(counts)
    G = kind(mode).networks(GanSpec(mode, k, nz, 4, 4, size, channels, max(counts)))[0]
    dcgan_init(G, torch.Generator().manual_seed(seed))
    G.set_bank(torch.rand(k, max(counts), channels, size, size) * 2 - 1, torch.tensor(counts))
    return G.eval()


@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_the_projection_discriminator(size, channels):
    spec = GanSpec("mix", 3, NZ, 4, 4, size, channels, 5)
    G, D = kind("mix").networks(spec)
    x = G(torch.randn(2, 3, NZ))
    assert x.shape == (2, 3, channels, size, size) and x.abs().max() <= 1.0
    assert D.mode == "conditional" and D(x).shape == (2, 3)
    assert G.reconstruct(x).shape == x.shape


def test_class_k_output_depends_only_on_class_k_parents():
    """Changing class 1's real images changes class 1's samples and no other class's; the same for its noise."""
    from conftest import changes_only_its_own_class

    G = mix_generator()
    z, after = changes_only_its_own_class(G, NZ)
    z2 = z.clone()
    z2[:, 1, SELECT_DIMS:] += 3.0  # class 1's noise only
    moved = G(z2)
    assert not torch.allclose(after[:, 1], moved[:, 1]) and torch.equal(after[:, [0, 2]], moved[:, [0, 2]])


def test_parents_are_in_range_distinct_and_unchanged_by_the_latent_scale():
    G = mix_generator(counts=(1, 2, 7))
    z = torch.randn(500, 3, NZ)
    idx = G.parents(z)
    assert idx.shape == (500, 3, 2)
    assert (idx[:, 0] == 0).all()  # one image: it is both parents
    for c, n in ((1, 2), (2, 7)):
        assert idx[:, c].min() >= 0 and idx[:, c].max() < n and (idx[:, c, 0] != idx[:, c, 1]).all()
        assert set(idx[:, c, 0].tolist()) == set(range(n))  # every image gets to be a parent
    assert torch.equal(idx, G.parents(z * 0.5))  # signs pick the parents: a latent scale scales only the noise
    assert torch.equal(G.mask(z, 8), G.mask(z * 2.0, 8))


def test_a_mix_takes_each_mask_cell_from_one_parent():
    """With the noise weights zeroed, an all-ones mask gives the first parent's reconstruction, all-zeros the second's."""
    G = mix_generator()
    torch.nn.init.zeros_(G.noise.weight)
    torch.nn.init.zeros_(G.noise.bias)
    z = torch.randn(2, 3, NZ)
    z[..., 2 * PARENT_BITS:SELECT_DIMS] = 1.0
    idx = G.parents(z)
    first = G.bank[torch.arange(3), idx[..., 0]]  # (2, 3, C, S, S)
    torch.testing.assert_close(G(z), G.reconstruct(first))
    z[..., 2 * PARENT_BITS:SELECT_DIMS] = -1.0
    torch.testing.assert_close(G(z), G.reconstruct(G.bank[torch.arange(3), idx[..., 1]]))


@pytest.mark.parametrize("batch", [32, 1])
def test_the_bank_is_encoded_once_or_each_use_and_gives_what_one_pass_per_use_gives(batch):
    """The forward pass and the reconstruction loss's pass encode every bank image once and gather
    its features for every use when the bank holds fewer images than the uses, else each use: the
    same images as one pass per use (gradients summed over the uses: index_select, deterministic on
    the CPU), and the same shapes every step (no torch.unique)."""
    G = mix_generator(counts=(4, 2, 3)).train()
    z = torch.randn(batch, 3, NZ)
    encoded = []
    hook = G.encoder.register_forward_hook(lambda module, args, out: encoded.append(len(args[0])))
    out = G(z)
    G(torch.randn(batch, 3, NZ))
    idx = G.parents(z)
    cls = torch.arange(3)
    assert encoded == [min(4 + 2 + 3, 2 * 3 * batch)] * 2  # 9 bank images, or the uses
    pair = torch.stack([G.bank[cls, idx[..., 0]], G.bank[cls, idx[..., 1]]], dim=2).flatten(0, 2)
    feats = G.encoder(pair).unflatten(0, (batch * 3, 2))  # one pass per use
    m = G.mask(z, feats.shape[-1])
    noise = G.noise(z[..., SELECT_DIMS:].reshape(batch * 3, -1))[:, :, None, None]
    per_use = G.decoder(m * feats[:, 0] + (1 - m) * feats[:, 1] + noise).view_as(out)
    torch.testing.assert_close(out, per_use)
    rows = torch.randint(0, 2, (batch, 3))
    torch.testing.assert_close(G.reconstruct_bank(rows), G.reconstruct(G.bank[cls, rows]))
    hook.remove()
    with pytest.raises(ValueError, match="not 'per_class\\+mix'"):
        GanSpec("per_class+mix", 3, NZ, 4, 4, 16, 1)


def test_sample_parents_match_what_sample_draws():
    G = mix_generator()
    parents = sample_parents(G, 300, NZ, 3, seed=4, device="cpu", batch=128)  # three batches of noise
    assert parents.shape == (300, 3, 2)
    gen = torch.Generator().manual_seed(4)
    z = torch.cat([torch.randn(n, 3, NZ, generator=gen) for n in (128, 128, 44)])
    assert np.array_equal(parents, G.parents(z).numpy())
    assert torch.equal(sample(G, 300, NZ, 3, seed=4, device="cpu", batch=128), G(z))


def test_nz_too_small_for_the_parent_and_mask_bits_is_a_config_error():
    assert GENERATORS["mix"].min_nz == SELECT_DIMS + 1
    with pytest.raises(ValueError, match="gan.nz"):
        GanConfig(mode="mix", nz=16)
    with pytest.raises(ValueError, match="gan.nz"):
        MixGenerator(2, 16, 4, 1, 16, 3)
    with pytest.raises(ValueError, match="gan.shards"):
        GanConfig(mode="mix", shards=2)


def test_learning_from_classical_copies_needs_the_classical_stage_and_runs_after_it():
    from augment.config import Config
    from augment.graph import STAGES

    with pytest.raises(ValueError, match="gan.train_on.*classical.enabled"):
        Config(gan=GanConfig(train_on="real+classical"), classical={"enabled": False})
    gan = next(s for s in STAGES if s.name == "gan")
    assert gan.upstream(Config()) == ("ingest",)
    assert gan.upstream(Config(gan=GanConfig(train_on="real+classical"))) == ("ingest", "classical")
    from augment.graph import fingerprints

    for train_on, changes in (("real", False), ("real+classical", True)):  # other copies re-train only the GAN that learns from them
        light, heavy = (fingerprints(Config(gan=GanConfig(train_on=train_on), classical={"preset": p}))["gan"]
                        for p in ("light", "heavy"))
        assert (light != heavy) == changes


@pytest.mark.parametrize("train_on", ["real", "real+classical"])
def test_mix_runs_in_the_pipeline_and_the_manifest_names_both_parents(smoke_run, tmp_path, train_on):
    """gan + synthesize with gan.mode mix on a copy of the smoke run: every GAN row names two train
    images of its class as parents (parent_id the first, params both), and those ids are the images
    the generator holds, in its bank's order: the real ones, or with gan.train_on real+classical the
    real ones and their classical copies."""
    import shutil

    from augment import rundir
    from augment.core.gan.sampling import load_generator
    from augment.graph import load_config, run_stage
    from conftest import SMOKE

    _, source, _ = smoke_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    cfg = load_config(SMOKE, ["gan.mode=mix", "gan.nz=48", f"gan.train_on={train_on}"])
    assert cfg.gan.sources == tuple(train_on.split("+"))
    assert run_stage("gan", cfg, run_dir)["steps"] == 20
    run_stage("synthesize", cfg, run_dir)
    frame = rundir.read_manifest(run_dir)
    learned = frame[frame["source"].isin(cfg.gan.sources) & (frame["split"] == "train")]
    label_of, source_of = dict(zip(learned["id"], learned["label"])), dict(zip(learned["id"], learned["source"]))
    gan = frame[frame["source"] == "gan"]
    assert len(gan) and set(gan["generator"]) == {"mix"}
    used = set()
    for row in gan.itertuples():
        parents = json.loads(row.params)["parents"]
        assert len(parents) == 2 and row.parent_id == parents[0]
        assert all(label_of[p] == row.label for p in parents)
        used |= {source_of[p] for p in parents}
    assert used == set(cfg.gan.sources)  # the classical copies are parents too when the GAN learned from them
    x, y, _ = rundir.load_split(run_dir, "train", cfg.gan.sources)
    G = load_generator(run_dir / rundir.GAN_CHECKPOINT, "cpu")
    bank, counts = prepare_real(x, y, len(counts_of := np.bincount(y)), cfg.gan.image_size, "cpu")
    assert torch.equal(G.counts, counts) and torch.allclose(G.bank, bank) and counts.tolist() == counts_of.tolist()
    from augment.core.report.report_gan import quality_section

    text = quality_section(cfg, json.loads((run_dir / "gan" / "quality.json").read_text()), None, frame)
    assert "`gan.mode: mix`" in text and "distinct sets of parents" in text and "from two real train images" in text


def test_a_mix_step_runs_in_channels_last():
    """gan.channels_last: the mix generator's 5-d image bank stays as it is, its convolutions go channels_last."""
    from augment.core.gan.train import build_state, train_step

    cfg = GanConfig(mode="mix", image_size=16, nz=NZ, ngf=4, ndf=4, batch_size=4, channels_last=True)
    x, y = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1), dtype=np.uint8), np.arange(6) % 3
    bank = prepare_real(x, y, 3, 16, torch.device("cpu"))
    state = build_state(cfg, 3, 1, seed=0, device=torch.device("cpu"), bank=bank)
    conv = next(m for m in state.G.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and state.G.bank.dim() == 5
    assert bool(torch.isfinite(train_step(state, *bank, cfg)).all())
