"""A 3x3 convolution (stride 1, padding 1) on feature maps of at most 2x2 pixels as one matrix product
per group, on the CPU.

On such a map every output pixel sees every input pixel through one of the kernel's taps, so the
layer is a dense linear map from the group's (pixel, channel) inputs to its (pixel, channel) outputs,
its matrix gathered from the kernel's taps: at 2x2, 4 x 4 pixel pairs where the convolution's
padded windows do 9 x 4 products (44% of the FLOPs). oneDNN's grouped kernels run these maps slowly,
above all the weight's gradient; one batched matrix product (bmm) per pass runs at BLAS speed. The
benchmark's SmallCNN reaches 2x2 in its third block on 8x8 images (the embedded default): that block's
forward and backward took 11.4 ms against 16.8 ms for a round of 11 classifiers (one thread;
benchmarks/engine_throughput.py times whole rounds).

Conv2d subclasses nn.Conv2d (the same parameters, state_dict keys, initialisation and checkpoints) and
takes this path only for CPU float32 inputs outside autocast; elsewhere (a GPU, larger maps) it is
nn.Conv2d. The same function to float rounding: outputs and both gradients are tested against
nn.Conv2d (tests/test_small_maps.py). The checks of where a convolution's CPU fast path may run are
here too, shared with the GAN's layers (augment.core.gan.layers).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

TAPS = 3  # the kernel size the dense form handles (padding 1, stride 1: every pair of pixels of a 2x2 map)


def cpu_float32(x: torch.Tensor) -> bool:
    """Where the CPU fast paths of a convolution run (here and augment.core.gan.layers): CPU float32, no autocast."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def plain_geometry(m: nn.Module, x: torch.Tensor) -> bool:
    """A batch of at least one image with the layer's channels, zero padding given in pixels, no
    dilation: anything else (an empty or unbatched input, padding='same', a wrong channel count)
    goes to nn.Conv2d's own path and its own errors."""
    return (x.dim() == 4 and x.shape[0] > 0 and x.shape[1] == m.in_channels and isinstance(m.padding, tuple)
            and m.padding_mode == "zeros" and tuple(m.dilation) == (1, 1))


def with_bias(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return out if bias is None else out + bias.view(1, -1, 1, 1)


@functools.lru_cache(maxsize=8)
def _pairs(h: int, w: int) -> torch.Tensor:
    """The kernel tap (0..8) joining input pixel p and output pixel q, flattened over (p, q)."""
    pixels = [(y, x) for y in range(h) for x in range(w)]
    return torch.tensor([(yi - yo + 1) * TAPS + (xi - xo + 1) for (yi, xi) in pixels for (yo, xo) in pixels])


class _Dense(torch.autograd.Function):
    """x (B, M*Ci, H, W), weight (M*Co, Ci, 3, 3), M groups -> (B, M*Co, H, W), channels-last in memory."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
        b, _, h, w = x.shape
        p, m = h * w, groups
        co, ci = weight.shape[0] // m, weight.shape[1]
        pairs = _pairs(h, w)
        taps = weight.reshape(m, co, ci, TAPS * TAPS).permute(0, 3, 2, 1).contiguous()  # (M, 9, Ci, Co)
        dense = taps.index_select(1, pairs).view(m, p, p, ci, co).transpose(2, 3).reshape(m, p * ci, p * co)
        xd = x.permute(0, 2, 3, 1).reshape(b, p, m, ci).permute(2, 0, 1, 3).reshape(m, b, p * ci)
        y = torch.bmm(xd, dense)  # (M, B, P*Co): output pixel, then channel
        ctx.save_for_backward(xd, dense)
        ctx.dims = (m, b, h, w, ci, co)
        return y.view(m, b, p, co).permute(1, 2, 0, 3).reshape(b, h, w, m * co).permute(0, 3, 1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable  # no gradient of this gradient (it would be silently wrong)
    def backward(ctx, grad: torch.Tensor):
        xd, dense = ctx.saved_tensors
        m, b, h, w, ci, co = ctx.dims
        p = h * w
        gd = grad.permute(0, 2, 3, 1).reshape(b, p, m, co).permute(2, 0, 1, 3).reshape(m, b, p * co)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.bmm(gd, dense.transpose(1, 2)).view(m, b, p, ci).permute(1, 2, 0, 3)
            gx = gx.reshape(b, h, w, m * ci).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            pairs = torch.bmm(xd.transpose(1, 2), gd).view(m, p, ci, p, co).transpose(2, 3).reshape(m, p * p, ci, co)
            taps = pairs.new_zeros(m, TAPS * TAPS, ci, co).index_add_(1, _pairs(h, w), pairs)  # a tap's pairs summed
            gw = taps.permute(0, 3, 2, 1).reshape(m * co, ci, TAPS, TAPS)
        return gx, gw, None


class Conv2d(nn.Conv2d):
    """nn.Conv2d; a 3x3, stride-1, padding-1 layer on a CPU float32 map of at most 2x2 pixels runs as
    one matrix product per group (above)."""

    def _dense(self, x: torch.Tensor) -> bool:
        return (cpu_float32(x) and plain_geometry(self, x) and x.shape[2] <= 2 and x.shape[3] <= 2
                and tuple(self.kernel_size) == (TAPS, TAPS) and tuple(self.stride) == (1, 1) and self.padding == (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._dense(x):
            return super().forward(x)
        return with_bias(_Dense.apply(x, self.weight, self.groups), self.bias)
