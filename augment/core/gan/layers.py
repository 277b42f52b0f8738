"""Convolutions of the GAN networks with matrix-product fast paths on the CPU.

At small sizes and grey images, several DCGAN layers are shapes oneDNN's CPU kernels handle slowly:
D's 4x4 head (a valid convolution whose kernel covers the whole input), G's first layer (a 1x1 input
projected to 4x4), and the grouped layers with one image channel a group (per_class D's first
convolution, its gradient to the input in G's update, and per_class G's last transposed
convolution). Each is a matrix product per group, with F.unfold / F.fold where windows overlap;
torch.einsum runs them at BLAS speed. They pay most where these layers are most of the network: the
embedded default's GAN at 8x8 (per_class's step 0.64x); at 16x16 and 32x32 the wide middle layers
take the time (both members' step 0.93x and 0.97x; benchmarks/gan_layers.py).

The modules subclass nn.Conv2d and nn.ConvTranspose2d: the same parameters, state_dict keys,
initialisation and checkpoints. The fast paths compute the same function (to float rounding; tested
against the plain modules, outputs and gradients) and run only on CPU float32 tensors without
autocast; on a GPU, cuDNN's kernels and the CUDA graphs run exactly as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augment.core.base.small_maps import cpu_float32 as _fast
from augment.core.base.small_maps import plain_geometry as _plain_geometry, with_bias as _with_bias

# one fast path per layer kind; channels a group on the image side at most this (grey or RGB)
IMAGE_CHANNELS = 3


class Conv2d(nn.Conv2d):
    """nn.Conv2d; on the CPU a head (the kernel covers the whole unpadded input) is one product per
    group, and a grouped layer with at most IMAGE_CHANNELS input channels a group unfolds its input
    when the input's gradient is needed (oneDNN's grouped backward to the input is slow there; its
    ungrouped kernels are not, and im2col's loop over the images costs more at the mix's batch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_fast(x) and _plain_geometry(self, x)):
            return super().forward(x)
        g, (kh, kw) = self.groups, self.kernel_size
        b, c, h, w = x.shape
        per_out = self.out_channels // g
        if (h, w) == (kh, kw) and tuple(self.padding) == (0, 0):  # any stride: one output position
            out = torch.einsum("bgi,goi->bgo", x.reshape(b, g, -1), self.weight.reshape(g, per_out, -1))
            return _with_bias(out.reshape(b, self.out_channels, 1, 1), self.bias)
        if g > 1 and c // g <= IMAGE_CHANNELS and x.requires_grad:
            (sh, sw), (ph, pw) = self.stride, self.padding
            oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw)).view(b, g, -1, oh * ow)
            out = torch.einsum("bgkl,gok->bgol", cols, self.weight.reshape(g, per_out, -1))
            return _with_bias(out.reshape(b, self.out_channels, oh, ow), self.bias)
        return super().forward(x)


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d; on the CPU a 1x1 input (G's first layer) is one product per group, and a
    grouped layer with at most IMAGE_CHANNELS output channels a group (per_class G's image layer) is a
    product folded back onto the image (the transposed convolution's own definition)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if not (_fast(x) and _plain_geometry(self, x)) or output_size is not None or any(self.output_padding):
            return super().forward(x, output_size)
        g, (kh, kw) = self.groups, self.kernel_size
        b, c, h, w = x.shape
        per_out = self.out_channels // g
        weight = self.weight.reshape(g, c // g, -1)  # (in, out/g, kh, kw) -> (g, in/g, out/g*kh*kw)
        (sh, sw), (ph, pw) = self.stride, self.padding
        if (h, w) == (1, 1) and (ph, pw) == (0, 0):
            out = torch.einsum("bgc,gck->bgk", x.reshape(b, g, c // g), weight)
            return _with_bias(out.reshape(b, self.out_channels, kh, kw), self.bias)
        if g > 1 and per_out <= IMAGE_CHANNELS:
            cols = torch.einsum("bgcl,gck->bgkl", x.reshape(b, g, c // g, h * w), weight)
            size = ((h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw)
            out = F.fold(cols.reshape(b, -1, h * w), size, (kh, kw), padding=(ph, pw), stride=(sh, sw))
            return _with_bias(out, self.bias)
        return super().forward(x, output_size)
