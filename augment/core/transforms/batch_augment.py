"""On-the-fly augmentation of a whole batch at once, on the training device, with per-image parameters.

The per-image references stay the definitions: torchvision's v2.TrivialAugmentWide, and the
albumentations pipeline of the classical stage (augment.core.transforms.augmentation, which alone imports
albumentations and translates a transform list into the plain specs read here, or says it has no
batched equivalent). Here every op is a pure function of the images and of random numbers drawn
by the caller: `u` (N, n_uniform) uniforms in [0, 1) and `z` (N, n_noise, C, H, W) standard
normals per image, so the draws come from each classifier's own seeded stream (augment.core.classify.engine)
and a batch's result does not depend on which other images share it. Parameters follow the
reference's distributions (the same ranges, the same integer truncations); the pixels are the
reference's to float rounding (TrivialAugmentWide's ops are tested against torchvision's own
functional ops). The classical ops are in augment.core.transforms.batch_classical.

Images are uint8 (N, C, H, W) in and out, as the references take them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------- ops without the host

_SYNC_FREE = contextvars.ContextVar("augment_sync_free", default=False)


@contextlib.contextmanager
def sync_free(on: bool = True):
    """Within: needed() answers True without asking the device, so batched ops never wait for it (a
    CUDA graph's capture allows no wait; on a GPU the wait costs more than computing an unused op)."""
    token = _SYNC_FREE.set(on)
    try:
        yield
    finally:
        _SYNC_FREE.reset(token)


def needed(mask: torch.Tensor) -> bool:
    """Whether any image of a batch takes a branch (mask (N,)): skipping one no image takes saves its
    work on the CPU; under sync_free() every branch is computed and torch.where picks, the same images."""
    return True if _SYNC_FREE.get() else bool(mask.any())


@functools.lru_cache(maxsize=256)
def _constant(values: tuple, dtype: torch.dtype, device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def constant(values, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A small constant tensor on `device`, made once and kept (read it, never write it): no
    host-to-device copy at every call, which a CUDA graph's capture would refuse."""
    key = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in values)
    return _constant(key, dtype, str(torch.device(device)))


# --------------------------------------------------------------------------- shared kernels


def to_uint8(x: torch.Tensor, rounding: str) -> torch.Tensor:
    """Float pixels to uint8 as the reference does: "round" (OpenCV's saturate_cast, torchvision's
    grid transforms) or "trunc" (numpy's astype after a clip, albumentations' LUTs)."""
    x = x.clamp(0, 255)
    return (x.round() if rounding == "round" else x.floor()).to(torch.uint8)


def per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def sample_grid(x: torch.Tensor, inverse: torch.Tensor, mode: str) -> torch.Tensor:
    """Resample float images (N, C, H, W) through per-image inverse maps (N, 2, 3) that take an output
    pixel's (x, y) (pixel centres at integers) to the input pixel it samples; zeros outside."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=inverse.dtype, device=x.device),
                            torch.arange(w, dtype=inverse.dtype, device=x.device), indexing="ij")
    ones = torch.ones_like(xs)
    base = torch.stack([xs, ys, ones], dim=-1).view(1, h * w, 3)
    src = base.expand(n, -1, -1).bmm(inverse.transpose(1, 2))  # (N, H*W, 2) input pixel coordinates
    scale = constant([2.0 / w, 2.0 / h], inverse.dtype, x.device)
    grid = ((src + 0.5) * scale - 1.0).view(n, h, w, 2).to(x.dtype)  # align_corners=False normalisation
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(per_image(mask), a, b)


def where_taken(mask: torch.Tensor, fn, x: torch.Tensor, *per_image_args, into: torch.Tensor | None = None) -> torch.Tensor:
    """fn(x, *per_image_args) on the images that take a branch (mask (N,)), `into` (default x) elsewhere.
    Every op here is per image (an image's pixels depend on its own pixels and draws alone), so on a
    CPU fn runs only on those images, its arguments' rows picked alike (None passes through): an op
    that a tenth of the batch takes costs a tenth. Under sync_free() fn runs on every image and
    torch.where picks (no host-sized index): the same pixels (tests/test_batch_augment.py)."""
    into = x if into is None else into
    if _SYNC_FREE.get():
        return where(mask, fn(x, *per_image_args), into)
    rows = mask.nonzero().squeeze(1)
    if len(rows) == 0:
        return into
    if len(rows) == len(x):
        return fn(x, *per_image_args)
    out = into.clone()
    out[rows] = fn(x[rows], *(None if a is None else a[rows] for a in per_image_args))
    return out


# --------------------------------------------------------------------------- TrivialAugmentWide


@functools.lru_cache(maxsize=1)
def _trivial_augment():
    from torchvision.transforms import v2

    return v2.TrivialAugmentWide()


TA_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
          "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
TA_UNIFORMS = 3  # op, magnitude bin, sign


@functools.lru_cache(maxsize=8)
def ta_table(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(magnitudes (ops, bins) float64, signed (ops,) bool): torchvision's own TrivialAugmentWide
    augmentation space, in TA_OPS order (0 where an op has no magnitude)."""
    ta = _trivial_augment()
    space, bins = ta._AUGMENTATION_SPACE, ta.num_magnitude_bins
    if tuple(space) != TA_OPS:
        raise RuntimeError(f"torchvision's TrivialAugmentWide ops changed: {tuple(space)}")
    rows, signed = [], []
    for op in TA_OPS:
        fn, is_signed = space[op]
        values = fn(bins, height, width)
        rows.append(torch.zeros(bins, dtype=torch.float64) if values is None else values.to(torch.float64))
        signed.append(is_signed)
    return torch.stack(rows), torch.tensor(signed)


@functools.lru_cache(maxsize=16)
def _ta_table_on(height: int, width: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(t.to(device) for t in ta_table(height, width))


def ta_params(u: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(op index (N,), signed magnitude (N,) float64) from uniforms (N, 3), as TrivialAugmentWide
    draws them: an op uniformly, a magnitude bin uniformly, and for signed ops a minus half the time."""
    table, signed = _ta_table_on(height, width, str(u.device))
    ops, bins = table.shape
    op = (u[:, 0] * ops).long().clamp_(max=ops - 1)
    b = (u[:, 1] * bins).long().clamp_(max=bins - 1)
    magnitude = table[op, b]
    flip = signed[op] & (u[:, 2].double() <= 0.5)
    return op, torch.where(flip, -magnitude, magnitude)


def _tv_inverse_affine(center_x, center_y, angle, tx, ty, shear_x, shear_y) -> torch.Tensor:
    """torchvision's _get_inverse_affine_matrix (scale 1), per image, in float64: (N, 2, 3) in
    torchvision's centred coordinates."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    cos_sy, tan_sx = torch.cos(sy), torch.tan(sx)
    a = torch.cos(rot - sy) / cos_sy
    b = -(a * tan_sx + torch.sin(rot))
    c = torch.sin(rot - sy) / cos_sy
    d = torch.cos(rot) - c * tan_sx
    m0, m1, m3, m4 = d, -b, -c, a
    cx_tx, cy_ty = center_x + tx, center_y + ty
    m2 = center_x - m0 * cx_tx - m1 * cy_ty
    m5 = center_y - m3 * cx_tx - m4 * cy_ty
    return torch.stack([torch.stack([m0, m1, m2], -1), torch.stack([m3, m4, m5], -1)], -2)


def _tv_grid_transform(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """torchvision's _affine_grid + _apply_grid_transform (nearest, no fill) with one theta per image."""
    n, _, h, w = x.shape
    theta = theta.to(torch.float32)
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=x.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=x.device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=x.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    rescaled = theta.transpose(1, 2).div(constant([0.5 * w, 0.5 * h], torch.float32, x.device))
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(rescaled).view(n, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(x.dtype)


def _ta_geometry(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ShearX/Y, TranslateX/Y and Rotate for the images whose op is one of them (others unchanged)."""
    n, _, h, w = x.shape
    zero = torch.zeros_like(magnitude)
    index = {name: i for i, name in enumerate(TA_OPS)}
    shear = torch.rad2deg(torch.atan(magnitude))
    is_ = {name: op == index[name] for name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")}
    # shears turn about the top-left corner (center=[0, 0]); translations are whole pixels (int())
    corner = torch.full_like(magnitude, 1.0)
    cx = torch.where(is_["ShearX"] | is_["ShearY"], corner * (-w * 0.5), zero)
    cy = torch.where(is_["ShearX"] | is_["ShearY"], corner * (-h * 0.5), zero)
    theta = _tv_inverse_affine(
        cx, cy, torch.where(is_["Rotate"], -torch.remainder(magnitude, 360.0), zero),
        torch.where(is_["TranslateX"], torch.trunc(magnitude), zero), torch.where(is_["TranslateY"], torch.trunc(magnitude), zero),
        torch.where(is_["ShearX"], shear, zero), torch.where(is_["ShearY"], shear, zero))
    geometric = is_["ShearX"] | is_["ShearY"] | is_["TranslateX"] | is_["TranslateY"] | is_["Rotate"]
    out = where_taken(geometric, _tv_grid_transform, x, theta)
    if h == w:  # torchvision rotates by multiples of 90 degrees with rot90 (exact), not the grid
        angle = torch.remainder(magnitude, 360.0)
        for quarter, k in ((90.0, 1), (180.0, 2), (270.0, 3)):
            exact = is_["Rotate"] & (angle == quarter)
            if needed(exact):
                out = where(exact, torch.rot90(x, k=k, dims=(-2, -1)), out)
    return out


def _grey(x: torch.Tensor) -> torch.Tensor:
    """torchvision's _rgb_to_grayscale_image (float, floored) of uint8 RGB (N, 3, H, W): (N, 1, H, W)."""
    r, g, b = x.float().unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def _blend(image: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend with a per-image ratio (float64, as torchvision computes 1 - ratio)."""
    r = per_image(ratio.to(torch.float32))
    alpha = per_image((1.0 - ratio).to(torch.float32))
    return torch.addcmul(image.float().mul(r), other.float().expand_as(image), alpha).clamp_(0, 255).to(image.dtype)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness_image with a per-image factor."""
    n, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = constant([[a, a, a], [a, b, a], [a, a, a]], torch.float32, x.device).expand(c, 1, 3, 3)
    out = x.to(torch.float32, copy=True)
    blurred = F.conv2d(out, kernel, groups=c).round_()
    view = out[..., 1:-1, 1:-1]
    view.add_(blurred.sub_(view).mul_(per_image((1.0 - factor).to(torch.float32))))
    return out.clamp_(0, 255).to(x.dtype)


def trivial_augment_wide(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """TrivialAugmentWide's op `op[i]` at `magnitude[i]` on image i of uint8 (N, C, H, W)."""
    from torchvision.transforms.v2 import functional as TF

    index = {name: i for i, name in enumerate(TA_OPS)}
    out = _ta_geometry(x, op, magnitude)
    c = x.shape[1]
    cases = {  # each op of images x at their magnitudes m (the factor: 1 + m)
        "Brightness": lambda x, m: x.float().mul(per_image((1.0 + m).to(torch.float32))).clamp_(0, 255).to(x.dtype),
        "Color": lambda x, m: x if c == 1 else _blend(x, _grey(x), 1.0 + m),
        "Contrast": lambda x, m: _blend(x, (_grey(x) if c == 3 else x.float()).mean(dim=(-3, -2, -1), keepdim=True), 1.0 + m),
        "Sharpness": lambda x, m: _sharpness(x, 1.0 + m),
        "Posterize": lambda x, m: x & per_image(((255 << (8 - m.to(torch.int64).clamp(0, 8))) & 255).to(torch.uint8)),
        "Solarize": lambda x, m: torch.where(x >= per_image((255.0 * m).to(torch.float32)), 255 - x, x),
        "AutoContrast": lambda x, m: TF.autocontrast(x),
        "Equalize": lambda x, m: TF.equalize(x),
    }
    for name, fn in cases.items():
        out = where_taken(op == index[name], fn, x, magnitude, into=out)
    return out


def trivial_augment_batch(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """TrivialAugmentWide on uint8 (N, C, H, W), its draws from uniforms u (N, TA_UNIFORMS)."""
    op, magnitude = ta_params(u, x.shape[-2], x.shape[-1])
    return trivial_augment_wide(x, op, magnitude)


def magnitude_ranges(height: int, width: int) -> dict[str, tuple[float, float]]:
    """Per TrivialAugmentWide op the (min, max) signed magnitude it can draw (for tests and docs)."""
    table, signed = ta_table(height, width)
    return {op: ((-float(table[i].max()) if signed[i] else float(table[i].min())), float(table[i].max()))
            for i, op in enumerate(TA_OPS)}


# --------------------------------------------------------------------------- the per-image references


def trivial_augment(batch: torch.Tensor, seed: int) -> torch.Tensor:
    """torchvision's TrivialAugmentWide on uint8 (B, C, H, W), one draw per image, from an explicit seed
    (the reference, image by image: benchmark.augment_on cpu).

    The same random draws, in the same order, as calling v2.TrivialAugmentWide on each image
    (tested to the bit), without the transform's per-call input flattening. torchvision draws from
    torch's global RNG; fork_rng confines that draw to this call.
    """
    ta = _trivial_augment()
    space, bins = ta._AUGMENTATION_SPACE, ta.num_magnitude_bins
    ops = tuple(space)
    table = {op: fn(bins, *batch.shape[-2:]) for op, (fn, _) in space.items()}
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only: what fork_rng restores
        for image in batch:
            op = ops[int(torch.randint(len(ops), ()))]
            values, magnitude = table[op], 0.0
            if values is not None:
                magnitude = float(values[int(torch.randint(bins, ()))])
                if space[op][1] and torch.rand(()) <= 0.5:
                    magnitude *= -1
            out.append(ta._apply_image_or_video_transform(image, op, magnitude, interpolation=ta.interpolation, fill=ta._fill))
    return torch.stack(out)
