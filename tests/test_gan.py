import numpy as np
import pandas as pd
import pytest
import torch

from augment.config import GanConfig
from augment.core.gan.diffaugment import diff_augment
from augment.core.gan.adversarial import d_real_accuracy, dcgan_init
from augment.core.gan.dcgan import Discriminator, Generator
from augment.core.gan.kinds import prepare_real
from augment.core.gan.train import build_state, load_checkpoint, train_gan
from augment.registry import GENERATORS
from augment.core.gan.sampling import sample
from augment.core.base.tensors import to_uint8

TINY = dict(mode="per_class", steps=6, image_size=16, batch_size=4, nz=8, ngf=4, ndf=4, checkpoint_every=100, sample_every=100)


def toy_data(k=3, n=5, size=8, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (k * n, size, size, channels), dtype=np.uint8)
    return x, np.repeat(np.arange(k), n)


@pytest.mark.parametrize("mode", ["per_class", "conditional"])
@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(mode, size, channels):
    G, D = Generator(4, 8, 4, channels, size, mode), Discriminator(4, 4, channels, size, mode)
    x = G(torch.randn(2, 4, 8))
    assert x.shape == (2, 4, channels, size, size)
    assert x.abs().max() <= 1.0  # tanh output
    assert D(x).shape == (2, 4)


def test_bad_image_size():
    with pytest.raises(ValueError, match="power of two"):
        Generator(2, 8, 4, 1, 24, "per_class")


def test_per_class_networks_are_independent():
    """Grouped convolutions: class 0's latent never reaches class 1's image or D's class-1 logit."""
    torch.manual_seed(0)
    G, D = Generator(3, 8, 4, 1, 16, "per_class").eval(), Discriminator(3, 4, 1, 16, "per_class").eval()
    z = torch.randn(2, 3, 8)
    z2 = z.clone()
    z2[:, 0] += 5.0
    a, b = G(z), G(z2)
    assert not torch.allclose(a[:, 0], b[:, 0])
    assert torch.equal(a[:, 1:], b[:, 1:])
    da, db = D(a), D(b)
    assert torch.equal(da[:, 1:], db[:, 1:])


def test_shards_concatenate_into_the_one_k_class_network():
    """Per_class shards of 2 and 3 classes merge, weights concatenated, into a 5-class network whose
    outputs for each class are exactly its shard's (G and D, batch norm in eval mode)."""
    from augment.core.gan.dcgan import merge_grouped
    from augment.core.gan.train import class_shards

    assert [list(s) for s in class_shards(5, 2)] == [[0, 1, 2], [3, 4]]
    assert len(class_shards(3, 8)) == 3  # never an empty shard
    g = torch.Generator().manual_seed(0)
    parts = []
    for k in (2, 3):
        G, D = Generator(k, 8, 4, 1, 16, "per_class"), Discriminator(k, 4, 1, 16, "per_class")
        dcgan_init(G, g), dcgan_init(D, g)
        for m in (*G.modules(), *D.modules()):  # non-trivial running statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(generator=g), m.running_var.uniform_(0.5, 2.0, generator=g)
        parts.append((G.eval(), D.eval()))
    G5, D5 = Generator(5, 8, 4, 1, 16, "per_class"), Discriminator(5, 4, 1, 16, "per_class")
    G5.load_state_dict(merge_grouped([G.state_dict() for G, _ in parts]))
    D5.load_state_dict(merge_grouped([D.state_dict() for _, D in parts]))
    G5.eval(), D5.eval()
    z = torch.randn(4, 5, 8, generator=g)
    x = G5(z)
    torch.testing.assert_close(x[:, :2], parts[0][0](z[:, :2]), rtol=0, atol=1e-6)
    torch.testing.assert_close(x[:, 2:], parts[1][0](z[:, 2:]), rtol=0, atol=1e-6)
    logits = D5(x)
    torch.testing.assert_close(logits[:, :2], parts[0][1](x[:, :2]), rtol=0, atol=1e-5)
    torch.testing.assert_close(logits[:, 2:], parts[1][1](x[:, 2:]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [16, 32])
def test_grouped_network_equals_k_independent_dcgans_in_outputs_and_gradients(size):
    """With the same weights, the per_class network's outputs and gradients for class k equal those
    of class k's own one-class DCGAN (training mode: batch norm on batch statistics)."""
    from augment.core.gan.dcgan import merge_grouped

    k, nz, g = 3, 8, torch.Generator().manual_seed(1)
    singles = []
    for _ in range(k):
        G, D = Generator(1, nz, 4, 2, size, "per_class"), Discriminator(1, 4, 2, size, "per_class")
        dcgan_init(G, g), dcgan_init(D, g)
        singles.append((G, D))
    G_k, D_k = Generator(k, nz, 4, 2, size, "per_class"), Discriminator(k, 4, 2, size, "per_class")
    G_k.load_state_dict(merge_grouped([G.state_dict() for G, _ in singles]))
    D_k.load_state_dict(merge_grouped([D.state_dict() for _, D in singles]))
    z = torch.randn(5, k, nz, generator=g)
    w = torch.randn(5, k, 2, size, size, generator=g)  # a different loss for every class and pixel
    x = G_k(z)
    logits = D_k(x)
    ((x * w).sum() + logits.square().sum()).backward()
    for c, (G, D) in enumerate(singles):
        xc = G(z[:, c:c + 1])
        lc = D(xc)
        ((xc * w[:, c:c + 1]).sum() + lc.square().sum()).backward()
        torch.testing.assert_close(x[:, c:c + 1], xc, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits[:, c:c + 1], lc, rtol=1e-4, atol=1e-4)
        for grouped, single in ((G_k, G), (D_k, D)):
            for (name, pk), (_, p1) in zip(grouped.named_parameters(), single.named_parameters()):
                block = pk.grad.shape[0] // k
                torch.testing.assert_close(pk.grad[c * block:(c + 1) * block], p1.grad, rtol=1e-4, atol=1e-5,
                                           msg=lambda m, name=name: f"class {c}, {name}: {m}")


def test_conditional_generator_depends_on_the_label():
    torch.manual_seed(0)
    G = Generator(3, 8, 4, 1, 16, "conditional").eval()
    z = torch.randn(1, 1, 8).expand(1, 3, 8).contiguous()  # the same noise for every class
    out = G(z)
    assert not torch.allclose(out[:, 0], out[:, 1])


def test_dcgan_init_is_seeded_and_follows_the_paper():
    G1, G2 = Generator(2, 8, 4, 1, 16, "per_class"), Generator(2, 8, 4, 1, 16, "per_class")
    dcgan_init(G1, torch.Generator().manual_seed(3))
    dcgan_init(G2, torch.Generator().manual_seed(3))
    for p1, p2 in zip(G1.parameters(), G2.parameters()):
        assert torch.equal(p1, p2)
    w = G1.net[0].weight
    assert abs(w.mean().item()) < 0.01 and 0.015 < w.std().item() < 0.025


def test_diff_augment_is_seeded_and_keeps_shape():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    policy = ["color", "translation", "cutout"]
    a = diff_augment(x, policy, torch.Generator().manual_seed(0))
    b = diff_augment(x, policy, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, diff_augment(x, policy, torch.Generator().manual_seed(1)))


def test_cutout_zeroes_a_quarter_and_translation_moves_pixels():
    x = torch.ones(64, 1, 16, 16)
    cut = diff_augment(x, ["cutout"], torch.Generator().manual_seed(0))
    zero_share = (cut == 0).float().mean().item()
    assert 0.12 < zero_share <= 0.25  # an 8x8 square, sometimes hanging over the border
    moved = diff_augment(x, ["translation"], torch.Generator().manual_seed(0))
    assert (moved == 0).any() and set(moved.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("mode,regularise", [*[(m, {"nz": max(8, e.min_nz)}) for m, e in GENERATORS.items()],
                                             ("per_class", {"lecam": 0.3, "r1": 1.0})])
def test_training_is_deterministic_and_resume_matches(tmp_path, mode, regularise):
    """Stopping at step 3 and resuming gives the same weights as training 6 steps straight (with
    LeCam's moving averages and R1 too), for every generator of the registry through the one loop (the
    mix mode's encoder-decoder and its image bank included)."""
    x, y = toy_data()
    cfg = GanConfig(**{**TINY, "mode": mode, **regularise})
    device = torch.device("cpu")
    val = toy_data(n=2, seed=1)
    kw = dict(seed=7, device=device, fingerprint="f", val=val)
    straight = train_gan(x, y, 3, cfg, out_dir=tmp_path / "a", **kw)
    train_gan(x, y, 3, cfg, out_dir=tmp_path / "b", stop_after=3, **kw)
    resumed = train_gan(x, y, 3, cfg, out_dir=tmp_path / "b", **kw)
    assert straight.step == resumed.step == 6
    for name in ("G", "D", "ema"):
        sa, sb = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), (name, key)
    history = (tmp_path / "b" / "history.csv").read_text().splitlines()
    assert len(history) == 7 and history[0].startswith("step,loss_d,loss_g,d_real,d_fake")
    a, b = pd.read_csv(tmp_path / "a" / "history.csv"), pd.read_csv(tmp_path / "b" / "history.csv")
    pd.testing.assert_frame_equal(a.drop(columns="step_seconds"), b.drop(columns="step_seconds"))
    assert a["d_acc_train"].notna().sum() == 1 and a["d_acc_val"].between(0, 1).sum() == 1  # at the last step


class Memoriser(torch.nn.Module):
    """A discriminator that has memorised its training images: real (+1) if seen, fake (-1) otherwise."""

    def __init__(self, bank: torch.Tensor):
        super().__init__()
        self.register_buffer("seen", bank.flatten(0, 1).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (B, K, C*S*S)
        hit = (torch.cdist(flat.flatten(0, 1), self.seen) < 1e-4).any(dim=1).view(x.shape[:2])
        return hit.float() * 2 - 1


def test_discriminator_overfitting_signal_separates_train_from_held_out_real():
    x, y = toy_data()
    x_val, y_val = toy_data(n=3, seed=1)
    bank, counts = prepare_real(x, y, 3, 16, "cpu")
    val_bank, val_counts = prepare_real(x_val, y_val, 3, 16, "cpu")
    D = Memoriser(bank)
    assert d_real_accuracy(D, bank, counts, batch=8, seed=0) == 1.0
    assert d_real_accuracy(D, val_bank, val_counts, batch=8, seed=0) == 0.0


def test_checkpoint_from_another_config_is_ignored(tmp_path):
    x, y = toy_data()
    cfg = GanConfig(**TINY)
    train_gan(x, y, 3, cfg, seed=0, device=torch.device("cpu"), out_dir=tmp_path, fingerprint="old")
    state = build_state(cfg, 3, 1, 0, torch.device("cpu"))
    assert not load_checkpoint(tmp_path / "checkpoint.pt", state, "new")
    assert load_checkpoint(tmp_path / "checkpoint.pt", state, "old") and state.step == 6


def test_samples_are_seeded_and_resized_to_the_dataset_size():
    G = Generator(3, 8, 4, 1, 16, "per_class")
    a = sample(G, 5, 8, 3, seed=1, device="cpu")
    assert a.shape == (5, 3, 1, 16, 16) and torch.equal(a, sample(G, 5, 8, 3, seed=1, device="cpu"))
    images = to_uint8(a[:, 0], (8, 8))
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8


def test_training_writes_grids_and_history(tmp_path):
    x, y = toy_data(channels=3)
    cfg = GanConfig(**{**TINY, "sample_every": 3, "checkpoint_every": 3})
    train_gan(x, y, 3, cfg, seed=0, device=torch.device("cpu"), out_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "history.csv").is_file()


@pytest.mark.gpu
def test_cuda_step_runs_in_bf16(tmp_path):
    x, y = toy_data()
    state = train_gan(x, y, 3, GanConfig(**TINY), seed=0, device=torch.device("cuda"), out_dir=tmp_path)
    assert next(state.G.parameters()).is_cuda


def test_ema_warms_up_so_initial_weights_fade():
    from torch.optim.swa_utils import AveragedModel

    from augment.core.gan.adversarial import ema_with_warmup

    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = AveragedModel(net, multi_avg_fn=ema_with_warmup(0.999))
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(1000):
        ema.update_parameters(net)
    # a fixed 0.999 would still hold 0.999**999 = 37% of the initial 0.0
    assert ema.module.weight.item() > 0.99
    upd = ema_with_warmup(0.5)
    a, c = [torch.zeros(1)], [torch.ones(1)]
    upd(a, c, torch.tensor(100))  # past the ramp: the configured decay
    assert a[0].item() == 0.5


def test_sharded_gan_stage_trains_each_shard_and_merges_them(tmp_path):
    """gan.shards: 3 trains three smaller grouped networks into gan/shards/<i>/ and merges them into
    gan/checkpoint.pt whose weights are the shards' weights, concatenated in class order."""
    from augment.graph import load_config
    from augment.core.gan.checkpoint import read_checkpoint
    from augment.core.gan.sampling import load_generator
    from augment.graph import run_stage
    from augment.stages.gan import shard_dir
    from conftest import SMOKE

    cfg = load_config(SMOKE, ["gan.shards=3", "gan.steps=4", "gan.checkpoint_every=2", "gan.sample_every=2",
                              "gan.checkpoint_selection=cas"])
    run = tmp_path / "run"
    run_stage("ingest", cfg, run)
    info = run_stage("gan", cfg, run)
    assert info["shards"] == 3 and info["steps"] == 4 and 0 <= info["d_acc_val"] <= 1
    payload = read_checkpoint(run / "gan" / "checkpoint.pt")
    assert payload["step"] == 4 and payload["shards"] == 3
    history = pd.read_csv(run / "gan" / "history.csv")
    assert history["step"].tolist() == [1, 2, 3, 4] and history["loss_d"].notna().all()
    G = load_generator(run / "gan" / "checkpoint.pt", "cpu")
    shards = [read_checkpoint(shard_dir(run, i) / "checkpoint.pt") for i in range(3)]
    assert [p["G"]["net.0.weight"].shape[0] // cfg.gan.nz for p in shards] == [4, 3, 3]
    for part, key in (("ema", "module.net.0.weight"), ("D", "head.weight"), ("G", "net.1.running_var")):
        assert torch.equal(payload[part][key], torch.cat([p[part][key] for p in shards])), (part, key)
    assert G(torch.randn(2, 10, cfg.gan.nz)).shape == (2, 10, 1, 16, 16)
    snap = read_checkpoint(run / "gan" / "snapshots" / "step_000002.pt")  # the snapshots merge the same way
    parts = [read_checkpoint(shard_dir(run, i) / "snapshots" / "step_000002.pt") for i in range(3)]
    assert snap["model"]["n_classes"] == 10 and torch.equal(
        snap["ema"]["module.net.0.weight"], torch.cat([p["ema"]["module.net.0.weight"] for p in parts]))
    assert load_generator(run / "gan" / "snapshots" / "step_000004.pt", "cpu")(torch.randn(2, 10, cfg.gan.nz)).shape == (2, 10, 1, 16, 16)
    assert run_stage("gan", cfg, run)["skipped"]


def test_lecam_matches_its_formula_on_fixed_numbers():
    from augment.core.gan.adversarial import lecam_loss, update_anchors

    real = torch.tensor([[1.0, -2.0], [3.0, 0.5]])  # (B=2, K=2) logits
    fake = torch.tensor([[-1.0, 0.0], [2.0, -3.0]])
    # relu(real - a_fake)^2: 1, 9, 0, 2.25; relu(a_real - fake)^2: 2.25, 0, 1, 16
    value = lecam_loss(real, fake, torch.tensor([0.5, 1.0]), torch.tensor([0.0, -1.0]))
    assert value.item() == pytest.approx(12.25 / 4 + 19.25 / 4)
    ema = torch.zeros(2, 2)
    a_real, a_fake = update_anchors(ema, real, fake, 0.9, step=1)  # one update, bias-corrected: the batch means
    assert torch.allclose(a_real, real.mean(0)) and torch.allclose(a_fake, fake.mean(0))
    a_real, _ = update_anchors(ema, real * 0, fake, 0.9, step=2)
    assert torch.allclose(a_real, real.mean(0) * 0.09 / 0.19)  # (0.9 * 0.1 m + 0.1 * 0) / (1 - 0.81)


def test_r1_is_the_squared_input_gradient_of_d():
    from augment.core.gan.adversarial import r1_penalty

    w = torch.randn(1, 2, 1, 3, 3)
    x = torch.randn(4, 2, 1, 3, 3, requires_grad=True)
    logits = (x * w).flatten(2).sum(2)  # a linear D per class: the gradient at any image is w
    assert r1_penalty(logits, x).item() == pytest.approx(float(w.pow(2).flatten(2).sum(2).mean()), rel=1e-5)


def test_lecam_and_r1_change_training_only_when_on(tmp_path):
    x, y = toy_data()
    kw = dict(seed=7, device=torch.device("cpu"), fingerprint="f")
    runs = {name: train_gan(x, y, 3, GanConfig(**TINY, **extra), out_dir=tmp_path / name, **kw).G.state_dict()
            for name, extra in (("off", {}), ("off again", {"lecam_decay": 0.5}), ("lecam", {"lecam": 0.3}), ("r1", {"r1": 1.0}))}
    same = lambda a, b: all(torch.equal(runs[a][k], runs[b][k]) for k in runs[a])  # noqa: E731
    assert same("off", "off again") and not same("off", "lecam") and not same("off", "r1")


def test_resizing_by_an_integer_factor_is_exact_and_the_round_trip_keeps_the_real_images():
    """The real images' way to the GAN's size and back (8 -> 16 -> 8 px on digits) is the identity, so
    the GAN neither learns nor gives back a blur; other ratios are antialiased bilinear."""
    import torch.nn.functional as F

    from augment.core.base.tensors import resize, to_tensor, to_uint8

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    up = resize(x, (16, 16))
    assert torch.equal(up[..., ::2, ::2], x) and torch.equal(up[..., 1::2, 1::2], x)  # each pixel a 2x2 block
    assert torch.equal(resize(up, (8, 8)), x)
    big = torch.rand(2, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(resize(big, (8, 8)), big.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)))
    odd = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(resize(odd, (32, 32)), F.interpolate(odd, size=(32, 32), mode="bilinear",
                                                                     antialias=True, align_corners=False))
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    assert np.array_equal(to_uint8(resize(to_tensor(images), (16, 16)), (8, 8)), images)
