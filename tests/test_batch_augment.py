"""Batched on-the-fly augmentation (augment.core.transforms.batch_augment, batch_classical) against its references:
torchvision's TrivialAugmentWide op by op, albumentations' transforms with the same parameters, and
the whole classical preset's output distribution."""

import numpy as np
import pytest
import torch
from scipy import stats

from augment.config import ClassicalConfig
from augment.core.transforms.augmentation import batched_specs, build_pipeline
from augment.core.transforms.copies import transforms_for
from augment.core.transforms.batch_augment import TA_OPS, TA_UNIFORMS, ta_params, ta_table, trivial_augment_batch, trivial_augment_wide
from augment.core.transforms.batch_classical import ClassicalBatch


def images(n=64, shape=(1, 8, 8), seed=0):
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    x[:, :, :2] = 0  # some flat black, as digits have
    return x


def digits(n=32, size=28):
    from sklearn.datasets import load_digits

    d = torch.from_numpy((load_digits().images[:n] * 16).clip(0, 255)).float()[:, None]
    return torch.nn.functional.interpolate(d, size=(size, size), mode="bilinear").round().to(torch.uint8)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 28, 28), (1, 16, 12)])
def test_every_trivialaugment_op_at_every_magnitude_is_torchvisions(shape):
    """Each op, at each of its signed magnitudes, gives torchvision's own op on each image: to the bit
    (RGB Sharpness to within one grey level on a few pixels: a fused multiply-add rounds once)."""
    from torchvision.transforms import v2

    ta = v2.TrivialAugmentWide()
    table, signed = ta_table(*shape[1:])
    for i, name in enumerate(TA_OPS):
        mags = torch.tensor([float(table[i, b]) * s for b in range(table.shape[1]) for s in ((1, -1) if signed[i] else (1,))],
                            dtype=torch.float64)
        x = images(len(mags), shape, seed=i)
        out = trivial_augment_wide(x, torch.full((len(mags),), i), mags)
        ref = torch.stack([ta._apply_image_or_video_transform(x[k], name, float(mags[k]), interpolation=ta.interpolation,
                                                              fill=ta._fill) for k in range(len(mags))])
        diff = (out.int() - ref.int()).abs()
        if name == "Sharpness" and shape[0] == 3:
            assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3
        else:
            assert torch.equal(out, ref), name


def test_trivialaugment_draws_every_op_and_magnitude_as_torchvision_does():
    """From uniforms: each op equally often, each of its 31 bins, a minus half the time on signed ops
    only; the magnitudes are torchvision's table (so its ranges: 0-135 degrees, 0-32 pixels, ...)."""
    u = torch.rand(200_000, TA_UNIFORMS, generator=torch.Generator().manual_seed(0))
    op, mag = ta_params(u, 8, 8)
    counts = torch.bincount(op, minlength=len(TA_OPS)).float() / len(op)
    assert torch.allclose(counts, torch.full_like(counts, 1 / len(TA_OPS)), atol=0.005)
    table, signed = ta_table(8, 8)
    for i in range(len(TA_OPS)):
        mine = mag[op == i]
        allowed = set(table[i].tolist()) | ({-v for v in table[i].tolist()} if signed[i] else set())
        assert set(mine.unique().tolist()) <= allowed and len(mine.unique()) == len(allowed)
        if signed[i]:
            assert abs(float((mine < 0).float().mean()) - 0.5 * (1 - 1 / 31)) < 0.02  # bin 0 is 0: never negative
    assert float(table[TA_OPS.index("Rotate")].max()) == 135.0 and float(table[TA_OPS.index("TranslateX")].max()) == 32.0


FIXED = [  # each transform with a one-point range, so albumentations draws what the batched op draws
    ("Affine", dict(rotate=[12, 12], scale=[1.1, 1.1], translate_percent=[0.1, 0.1], shear=[5, 5]), 0.01, 1),
    ("Affine", dict(rotate=[-20, -20], scale=[0.9, 0.9], translate_percent=[-0.07, -0.07], shear=[-8, -8]), 0.01, 1),
    ("CropAndPad", dict(percent=[0.08, 0.08], keep_size=True, sample_independently=True), 0.2, 1),
    ("CropAndPad", dict(percent=[-0.08, -0.08], keep_size=True, sample_independently=True), 0.2, 1),
    ("RandomBrightnessContrast", dict(brightness_limit=[0.15, 0.15], contrast_limit=[-0.1, -0.1]), 0.0, 0),
    ("ColorJitter", dict(brightness=[1.2, 1.2], contrast=[1, 1], saturation=[1, 1], hue=[0, 0]), 0.0, 0),
    ("ColorJitter", dict(brightness=[1, 1], contrast=[0.8, 0.8], saturation=[1, 1], hue=[0, 0]), 0.0, 0),
    ("ColorJitter", dict(brightness=[1, 1], contrast=[1, 1], saturation=[0.7, 0.7], hue=[0, 0]), 0.01, 1),
    ("ColorJitter", dict(brightness=[1, 1], contrast=[1, 1], saturation=[1, 1], hue=[0.05, 0.05]), 0.2, 2),
    ("Sharpen", dict(alpha=[0.3, 0.3], lightness=[1.0, 1.0]), 0.0, 0),
    ("GaussianBlur", dict(blur_limit=[3, 3], sigma_limit=[1.0, 1.0]), 0.0, 0),
    ("HorizontalFlip", dict(), 0.0, 0),
]


@pytest.mark.parametrize("name,kw,mean_tol,max_tol", FIXED)
@pytest.mark.parametrize("rgb", [False, True])
def test_each_classical_op_computes_what_albumentations_computes(name, kw, mean_tol, max_tol, rgb):
    x = digits(16) if not rgb else torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (16, 3, 20, 20)).astype(np.uint8))
    if rgb:
        x = torch.nn.functional.avg_pool2d(x.float(), 3, 1, 1).round().to(torch.uint8)  # smooth, as photos are
    t = [{"__class_fullname__": name, **kw, "p": 1.0}]
    pipe = build_pipeline(t, seed=0)
    ref = np.stack([pipe(image=im)["image"].reshape(im.shape) for im in x.permute(0, 2, 3, 1).numpy()])
    op = ClassicalBatch(batched_specs(t))
    out = op(x, torch.rand(len(x), op.uniforms, generator=torch.Generator().manual_seed(1)) * 0.999)
    diff = np.abs(out.permute(0, 2, 3, 1).numpy().astype(int) - ref.astype(int))
    assert diff.mean() <= mean_tol and diff.max() <= max_tol


def test_noise_ops_add_what_albumentations_adds():
    """GaussNoise: the added noise's spread is std x 255; SaltAndPepper: int(H*W*amount) pixels, white or black."""
    x = torch.full((64, 1, 32, 32), 128, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    noise = ClassicalBatch(batched_specs([{"__class_fullname__": "GaussNoise", "std_range": [0.1, 0.1], "p": 1.0}]))
    out = noise(x, torch.rand(64, noise.uniforms, generator=g) * 0.999, torch.randn(64, 1, 1, 32, 32, generator=g))
    assert abs(float((out.float() - 128).std()) - 25.5) < 1.0
    sp = ClassicalBatch(batched_specs([{"__class_fullname__": "SaltAndPepper", "amount": [0.05, 0.05],
                                        "salt_vs_pepper": [0.5, 0.5], "p": 1.0}]))
    out = sp(x, torch.rand(64, sp.uniforms, generator=g) * 0.999, torch.randn(64, 1, 1, 32, 32, generator=g))
    changed = (out != 128).flatten(1).sum(1)
    assert torch.all(changed == int(32 * 32 * 0.05)) and set(out[out != 128].unique().tolist()) == {0, 255}


@pytest.mark.parametrize("preset", ["light", "medium", "heavy"])
def test_a_preset_batched_draws_what_albumentations_draws(preset):
    """The whole preset on 400 copies of each of a few digits, batched vs albumentations' own seeded
    draws: the per-image mean intensity and the share of changed pixels have the same distribution
    (Kolmogorov-Smirnov), so the ops' probabilities and ranges are albumentations'."""
    transforms = transforms_for(ClassicalConfig(preset=preset), 1)
    pipe = build_pipeline(transforms, seed=0)
    batched = ClassicalBatch(batched_specs(transforms))
    g = torch.Generator().manual_seed(0)
    for digit in digits(3):
        x = digit.expand(400, -1, -1, -1).contiguous()
        ref = torch.from_numpy(np.stack([pipe(image=im)["image"].reshape(im.shape) for im in x.permute(0, 2, 3, 1).numpy()]))
        ref = ref.permute(0, 3, 1, 2)
        out = batched(x, torch.rand(400, batched.uniforms, generator=g),
                      torch.randn(400, batched.noise, 1, 28, 28, generator=g))
        for stat in (lambda t: t.float().mean((1, 2, 3)), lambda t: (t != x).float().mean((1, 2, 3))):
            assert stats.ks_2samp(stat(out).numpy(), stat(ref).numpy()).pvalue > 0.001


def test_a_transform_without_a_batched_op_falls_back_to_albumentations():
    assert batched_specs([{"__class_fullname__": "InvertImg", "p": 1.0}]) is None
    assert batched_specs([{"__class_fullname__": "Affine", "rotate": [-5, 5], "border_mode": 2, "p": 1.0}]) is None
    nested = {"__class_fullname__": "OneOf", "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 1.0}], "p": 1.0}
    assert batched_specs([nested]) is None
    assert [s["op"] for s in batched_specs(transforms_for(ClassicalConfig(preset="heavy", flips=True), 3))] == [
        "affine", "crop_and_pad", "brightness_contrast", "color_jitter", "gauss_noise", "salt_and_pepper", "sharpen",
        "gaussian_blur", "hflip"]


def test_batched_trivialaugment_is_a_pure_function_of_its_uniforms():
    x = images(32, (3, 16, 16))
    u = torch.rand(32, TA_UNIFORMS, generator=torch.Generator().manual_seed(3))
    a, b = trivial_augment_batch(x, u), trivial_augment_batch(x.clone(), u.clone())
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(trivial_augment_batch(x[:5], u[:5]), a[:5])  # an image's result does not depend on the others


@pytest.mark.parametrize("n", [6, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_without_host_syncs_the_batched_ops_give_the_same_images(channels, n, monkeypatch):
    """Under sync_free (a GPU, a captured step) every op runs on every image and torch.where picks:
    the same pixels as the CPU's way, each op run only on the images that take it (none: skipped).
    Six images, so that some ops are taken by none; 64, so that most are taken by some, not all."""
    import augment.core.transforms.batch_augment as batch_augment
    import augment.core.transforms.batch_classical as batch_classical

    x = images(n, (channels, 16, 16))
    g = torch.Generator().manual_seed(5)
    u = torch.rand(n, TA_UNIFORMS, generator=g)
    heavy = ClassicalBatch(batched_specs(transforms_for(ClassicalConfig(preset="heavy"), channels)))
    uc, z = torch.rand(n, heavy.uniforms, generator=g), torch.randn(n, heavy.noise, channels, 16, 16, generator=g)
    taken = []  # (images that take a branch, batch size), on the CPU's way
    where_taken = batch_augment.where_taken

    def spy(mask, fn, x, *args, **kw):
        taken.append((int(mask.sum()), len(x)))
        return where_taken(mask, fn, x, *args, **kw)

    for module in (batch_augment, batch_classical):
        monkeypatch.setattr(module, "where_taken", spy)
    plain = trivial_augment_batch(x, u), heavy(x, uc, z)
    assert any(k == 0 for k, _ in taken) if n == 6 else sum(0 < k < m for k, m in taken) >= 10
    with batch_augment.sync_free():
        free = trivial_augment_batch(x, u), heavy(x, uc, z)
    assert all(torch.equal(a, b) for a, b in zip(plain, free))
    medium = ClassicalBatch(batched_specs(transforms_for(ClassicalConfig(preset="medium"), channels)))
    assert medium.capturable and not heavy.capturable  # GaussianBlur's kernel size is drawn: no CUDA graph


def test_salt_and_pepper_ranks_each_pixel_by_its_noise():
    """The pixels salted or peppered are the `int(H*W*amount)` with the smallest noise of their image,
    the first `int(that * salt ratio)` of them white: each pixel's rank in its image's noise order."""
    from augment.core.transforms import batch_classical

    x = images(16, (1, 8, 8))
    g = torch.Generator().manual_seed(2)
    u, z = torch.rand(16, 2, generator=g), torch.randn(16, 1, 8, 8, generator=g)
    spec = {"amount": (0.1, 0.4), "salt_vs_pepper": (0.2, 0.8)}
    out = batch_classical._salt_and_pepper(x, u, z, spec)
    rank = torch.argsort(torch.argsort(z[:, 0].reshape(16, 64), dim=1), dim=1).view(16, 1, 8, 8)
    pixels = torch.trunc(64 * (0.1 + (0.4 - 0.1) * u[:, 0].double())).view(-1, 1, 1, 1)
    salt = torch.trunc(pixels.flatten() * (0.2 + (0.8 - 0.2) * u[:, 1].double())).view(-1, 1, 1, 1)
    expected = torch.where(rank < salt, 255, torch.where(rank < pixels, 0, x.long())).to(torch.uint8)
    assert torch.equal(out, expected) and (out != x).any()
