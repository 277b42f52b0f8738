"""The classical (albumentations) pipeline's ops on a whole batch, with per-image parameters.

albumentations stays the definition: augment.core.transforms.augmentation reads a transform list's arguments
as albumentations normalises them and hands plain specs here (or says an op has no batched
equivalent: then albumentations runs image by image). Each op draws its parameters from the
uniforms it is given, with albumentations' ranges and integer truncations, and computes what
albumentations computes to float rounding (tests/test_batch_augment.py compares them with the same
parameters). Images are uint8 (N, C, H, W) in and out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from augment.core.transforms.batch_augment import per_image as _per_image, sample_grid as _sample_grid, to_uint8 as _uint8, where as _where, where_taken

def _range(u: torch.Tensor, bounds) -> torch.Tensor:
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * u.double()


def _affine(x: torch.Tensor, u: torch.Tensor, spec: dict) -> torch.Tensor:
    """albumentations' Affine (no fit_output, constant zero border): translate_percent -> whole pixels
    (int()), shear negated, independent x/y scales, rotation about the centre (w/2 - 0.5, h/2 - 0.5)."""
    n, _, h, w = x.shape
    tx = torch.trunc(_range(u[:, 0], spec["translate_x"]) * w)
    ty = torch.trunc(_range(u[:, 1], spec["translate_y"]) * h)
    shx = torch.deg2rad(-_range(u[:, 2], spec["shear_x"]))
    shy = torch.deg2rad(-_range(u[:, 3], spec["shear_y"]))
    sx, sy = _range(u[:, 4], spec["scale_x"]), _range(u[:, 5], spec["scale_y"])
    rot = torch.deg2rad(torch.remainder(_range(u[:, 6], spec["rotate"]), 360.0))
    cx, cy = w / 2 - 0.5, h / 2 - 0.5
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)

    def mat(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    shift_tl = mat([[one, zero, -cx * one], [zero, one, -cy * one], [zero, zero, one]])
    scale = mat([[sx, zero, zero], [zero, sy, zero], [zero, zero, one]])
    rotate = mat([[torch.cos(rot), torch.sin(rot), zero], [-torch.sin(rot), torch.cos(rot), zero], [zero, zero, one]])
    shear = mat([[one, torch.tan(shx), zero], [torch.tan(shy), one, zero], [zero, zero, one]])
    translate = mat([[one, zero, tx], [zero, one, ty], [zero, zero, one]])
    shift_c = mat([[one, zero, cx * one], [zero, one, cy * one], [zero, zero, one]])
    forward = shift_c @ translate @ shear @ rotate @ scale @ shift_tl  # source pixel -> destination pixel
    inverse = torch.linalg.inv_ex(forward).inverse[:, :2]  # inv_ex: no check of the result on the host (a sync)
    out = _sample_grid(x.float(), inverse, spec["interpolation"])
    return _uint8(out, "round")


def _crop_and_pad(x: torch.Tensor, u: torch.Tensor, spec: dict) -> torch.Tensor:
    """albumentations' CropAndPad(percent range, sample_independently, keep_size, zero border): each
    side moves by int(percent x size) pixels (out: pad, in: crop), then the result is resized back
    to the input size as cv2.resize does (bilinear, half-pixel centres, its edge pixels repeated)."""
    n, _, h, w = x.shape
    top, right, bottom, left = (torch.trunc(_range(u[:, i], spec["percent"]) * (h if i % 2 == 0 else w)) for i in range(4))

    def source(size: int, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """(N, size): the input coordinate output pixel i samples along one axis."""
        inner = size + before + after  # the cropped-and-padded image's size
        i = torch.arange(size, dtype=torch.float64, device=x.device).view(1, -1)
        at = ((i + 0.5) * (inner / size).view(-1, 1) - 0.5).clamp(min=0).minimum((inner - 1).view(-1, 1))
        return at - before.view(-1, 1)

    xs, ys = source(w, left, right), source(h, top, bottom)
    grid = torch.stack([((xs + 0.5) * 2.0 / w - 1.0).view(n, 1, w).expand(n, h, w),
                        ((ys + 0.5) * 2.0 / h - 1.0).view(n, h, 1).expand(n, h, w)], dim=-1).to(torch.float32)
    out = _uint8(F.grid_sample(x.float(), grid, mode=spec["interpolation"], padding_mode="zeros", align_corners=False), "round")
    moved = (top != 0) | (right != 0) | (bottom != 0) | (left != 0)
    return _where(moved, out, x)


def _brightness_contrast(x: torch.Tensor, u: torch.Tensor, spec: dict) -> torch.Tensor:
    """albumentations' RandomBrightnessContrast (brightness by max): trunc(clip(x * alpha + beta * 255))."""
    alpha = (1.0 + _range(u[:, 0], spec["contrast"])).to(torch.float32)
    beta = (_range(u[:, 1], spec["brightness"]) * 255.0).to(torch.float32)
    return _uint8(x.float() * _per_image(alpha) + _per_image(beta), "trunc")


def _cv2_grey(x: torch.Tensor) -> torch.Tensor:
    """cv2.COLOR_RGB2GRAY of uint8 RGB (N, 3, H, W), rounded: (N, 1, H, W) float."""
    r, g, b = x.float().unbind(dim=-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).round().unsqueeze(-3)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """Float RGB in [0, 1] (N, 3, H, W) -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(dim=-3)
    v, _ = x.max(dim=-3)
    mn, _ = x.min(dim=-3)
    delta = v - mn
    s = torch.where(v > 0, delta / v.clamp(min=1e-12), torch.zeros_like(v))
    safe = delta.clamp(min=1e-12)
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return torch.stack([h, s, v], dim=-3)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(dim=-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    choices = [torch.stack(c, dim=-3) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    out = choices[0]
    for k in range(1, 6):
        out = torch.where((i == k).unsqueeze(-3), choices[k], out)
    return out


def _jitter_one(x: torch.Tensor, which: int, factor: torch.Tensor) -> torch.Tensor:
    """One of ColorJitter's four ops (brightness, contrast, saturation, hue) at a per-image factor."""
    c = x.shape[1]
    f = _per_image(factor.to(torch.float32))
    if which == 0:  # multiply, through a truncating LUT
        return _uint8(x.float() * f, "trunc")
    if which == 1:  # blend with the mean grey level
        mean = (x.float() if c == 1 else _cv2_grey(x)).mean(dim=(-3, -2, -1), keepdim=True)
        return _uint8(x.float() * f + mean * (1 - f), "trunc")
    if c == 1:  # saturation and hue leave grey images alone
        return x
    if which == 2:  # cv2.addWeighted with the grey image, rounded
        return _uint8(x.float() * f + _cv2_grey(x) * (1 - f), "round")
    hsv = _rgb_to_hsv(x.float() / 255.0)
    hsv = torch.stack([torch.remainder(hsv[:, 0] + f[:, 0], 1.0), hsv[:, 1], hsv[:, 2]], dim=1)
    return _uint8(_hsv_to_rgb(hsv) * 255.0, "round")


def _color_jitter(x: torch.Tensor, u: torch.Tensor, spec: dict) -> torch.Tensor:
    """albumentations' ColorJitter: four factors drawn from their ranges, applied in a random order per image."""
    factors = [_range(u[:, i], spec[k]) for i, k in enumerate(("brightness", "contrast", "saturation", "hue"))]
    order = torch.argsort(u[:, 4:8], dim=1)  # a uniformly random permutation of the four ops per image
    out = x
    for position in range(4):
        step = out
        for which in range(4):
            step = where_taken(order[:, position] == which, lambda x, f, which=which: _jitter_one(x, which, f), out,
                               factors[which], into=step)
        out = step
    return out


def _gauss_noise(x: torch.Tensor, u: torch.Tensor, z: torch.Tensor, spec: dict) -> torch.Tensor:
    """albumentations' GaussNoise (per channel): + N(mean, std) x 255 per pixel, clipped and truncated."""
    std = _per_image(_range(u[:, 0], spec["std"]).to(torch.float32))
    mean = _per_image(_range(u[:, 1], spec["mean"]).to(torch.float32))
    return _uint8(x.float() + (z * std + mean) * 255.0, "trunc")


def _salt_and_pepper(x: torch.Tensor, u: torch.Tensor, z: torch.Tensor, spec: dict) -> torch.Tensor:
    """albumentations' SaltAndPepper: int(H*W*amount) pixels chosen without replacement (the first
    int(that * salt ratio) of them white in every channel, the rest black)."""
    n, c, h, w = x.shape
    pixels = torch.trunc(h * w * _range(u[:, 0], spec["amount"]))
    salt = torch.trunc(pixels * _range(u[:, 1], spec["salt_vs_pepper"]))
    order = torch.argsort(z[:, 0].reshape(n, h * w), dim=1)  # a random order of the pixels; each pixel's place in it:
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=x.device).expand(n, -1)).view(n, 1, h, w)
    noisy, white = rank < _per_image(pixels), rank < _per_image(salt)
    return torch.where(noisy & white, torch.full_like(x, 255), torch.where(noisy, torch.zeros_like(x), x))


def _filter(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """cv2.filter2D (reflect-101 border) with one (k, k) kernel per image: float (N, C, H, W)."""
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    padded = F.pad(x.float().reshape(1, n * c, h, w), (k // 2,) * 4, mode="reflect")
    weight = kernels.to(torch.float32).repeat_interleave(c, dim=0).unsqueeze(1)  # (N*C, 1, k, k)
    return F.conv2d(padded, weight, groups=n * c).view(n, c, h, w)


def _sharpen(x: torch.Tensor, u: torch.Tensor, spec: dict) -> torch.Tensor:
    """albumentations' Sharpen (method kernel): (1 - alpha) I + alpha [[-1..], [-1, 8 + lightness, -1], [..-1]]."""
    alpha, lightness = _range(u[:, 0], spec["alpha"]), _range(u[:, 1], spec["lightness"])
    effect = -torch.ones(len(x), 3, 3, dtype=torch.float64, device=x.device)
    effect[:, 1, 1] = 8.0 + lightness
    identity = torch.zeros_like(effect)
    identity[:, 1, 1] = 1.0
    a = alpha.view(-1, 1, 1)
    return _uint8(_filter(x, (1 - a) * identity + a * effect), "round")


def _gaussian_blur(x: torch.Tensor, u: torch.Tensor, spec: dict) -> torch.Tensor:
    """albumentations' GaussianBlur: sigma from its range, an odd kernel size from blur_limit (0: from sigma)."""
    sigma = _range(u[:, 0], spec["sigma"])
    lo, hi = spec["blur_limit"]
    ksize = (lo + (u[:, 1].double() * (hi - lo + 1)).floor().clamp(max=hi - lo)).long()
    ksize = torch.where(ksize == 0, (sigma * 3.5).long() * 2 + 1, ksize)
    ksize = ksize + (ksize % 2 == 0).long()
    kmax = int(ksize.max())
    offsets = torch.arange(kmax, dtype=torch.float64, device=x.device) - kmax // 2
    inside = offsets.abs().view(1, -1) <= (ksize // 2).view(-1, 1)
    k1 = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.view(-1, 1)) ** 2) * inside
    k1 = k1 / k1.sum(dim=1, keepdim=True)
    return _uint8(_filter(x, k1.unsqueeze(2) * k1.unsqueeze(1)), "round")


@dataclass(frozen=True)
class _Op:
    uniforms: int  # after the one that decides whether it applies (p)
    noise: int  # normal fields (C, H, W) per image
    fn: object
    capturable: bool = True  # False: its shapes depend on its draws (it asks the device), no CUDA graph


_OPS = {
    "affine": _Op(7, 0, lambda x, u, z, s: _affine(x, u, s)),
    "crop_and_pad": _Op(4, 0, lambda x, u, z, s: _crop_and_pad(x, u, s)),
    "brightness_contrast": _Op(2, 0, lambda x, u, z, s: _brightness_contrast(x, u, s)),
    "color_jitter": _Op(8, 0, lambda x, u, z, s: _color_jitter(x, u, s)),
    "gauss_noise": _Op(2, 1, lambda x, u, z, s: _gauss_noise(x, u, z, s)),
    "salt_and_pepper": _Op(2, 1, lambda x, u, z, s: _salt_and_pepper(x, u, z, s)),
    "sharpen": _Op(2, 0, lambda x, u, z, s: _sharpen(x, u, s)),
    "gaussian_blur": _Op(2, 0, lambda x, u, z, s: _gaussian_blur(x, u, s), capturable=False),  # kernel size
    "hflip": _Op(0, 0, lambda x, u, z, s: x.flip(-1)),
    "vflip": _Op(0, 0, lambda x, u, z, s: x.flip(-2)),
}
BATCHED_OPS = tuple(_OPS)


class ClassicalBatch:
    """A classical pipeline (plain specs from augment.core.transforms.augmentation.batched_specs) applied in
    order to a batch: each op applies to an image with its probability p, with its own draws."""

    def __init__(self, specs: list[dict]):
        unknown = [s["op"] for s in specs if s["op"] not in _OPS]
        if unknown:
            raise ValueError(f"no batched op for {unknown}")
        self.specs = list(specs)
        self.uniforms = sum(1 + _OPS[s["op"]].uniforms for s in specs)
        self.noise = sum(_OPS[s["op"]].noise for s in specs)
        self.capturable = all(_OPS[s["op"]].capturable for s in specs)  # augment.core.classify.engine._capturable

    def __call__(self, x: torch.Tensor, u: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (N, C, H, W) -> uint8, with uniforms u (N, self.uniforms) and normals z (N, self.noise, C, H, W)."""
        if u.shape != (len(x), self.uniforms):
            raise ValueError(f"need uniforms of shape {(len(x), self.uniforms)}, got {tuple(u.shape)}")
        i = j = 0
        for spec in self.specs:
            op = _OPS[spec["op"]]
            apply, params = u[:, i] < spec["p"], u[:, i + 1 : i + 1 + op.uniforms]
            noise = None if op.noise == 0 else z[:, j]
            i, j = i + 1 + op.uniforms, j + op.noise
            x = where_taken(apply, lambda x, u, z, op=op, spec=spec: op.fn(x, u, z, spec), x, params, noise)
        return x
