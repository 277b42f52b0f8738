"""augment.core.base.small_maps: a 3x3 convolution on a map of at most 2x2 pixels, as one matrix product
per group on the CPU, computes what nn.Conv2d computes (outputs, gradients to the input, weight and
bias), in either memory format; other shapes and inputs take nn.Conv2d's own path."""

import pytest
import torch
from torch import nn

from augment.core.base import small_maps
from augment.core.classify.networks import build_network, network_spec
from augment.core.classify.stacked import StackedCNN


def _pair(cin, cout, groups, bias):
    torch.manual_seed(0)
    fast = small_maps.Conv2d(cin, cout, 3, padding=1, bias=bias, groups=groups)
    plain = nn.Conv2d(cin, cout, 3, padding=1, bias=bias, groups=groups)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


@pytest.mark.parametrize("groups,bias", [(1, False), (3, False), (2, True)])
@pytest.mark.parametrize("size", [(2, 2), (1, 1), (1, 2), (2, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_dense_form_equals_the_convolution(groups, bias, size, channels_last):
    fast, plain = _pair(4 * groups, 6 * groups, groups, bias)
    x = torch.randn(5, 4 * groups, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        fast, plain = fast.to(memory_format=torch.channels_last), plain.to(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert fast._dense(xa)  # the dense form runs
    a, b = fast(xa), plain(xb)
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(b)
    (a * g).sum().backward()
    (b * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    for p, q in zip(fast.parameters(), plain.parameters()):
        assert p.grad.shape == q.grad.shape
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # evaluation: the same, nothing kept for a backward pass
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


def test_only_the_weight_gradient_when_the_input_needs_none():
    fast, plain = _pair(8, 16, 2, False)
    x = torch.randn(3, 8, 2, 2)
    a, b = fast(x), plain(x)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["3x3 map", "stride 2", "5x5 kernel", "bf16 autocast"])
def test_other_layers_and_inputs_take_the_plain_path(case):
    kwargs = {"stride 2": dict(stride=2), "5x5 kernel": dict(kernel_size=5, padding=2)}.get(case, {})
    layer = small_maps.Conv2d(4, 6, **{"kernel_size": 3, "padding": 1, **kwargs})
    x = torch.randn(2, 4, *((3, 3) if case == "3x3 map" else (2, 2)))
    if case == "bf16 autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x.requires_grad_())
    else:
        out = layer(x.requires_grad_())
    assert out.grad_fn.name() == "ConvolutionBackward0"


def test_a_small_cnn_on_8x8_images_uses_it_and_loads_plain_weights():
    """SmallCNN and StackedCNN build their convolutions from it: at 8x8 the third block's input is 2x2.
    The parameters and state_dict keys are nn.Conv2d's (checkpoints load either way)."""
    net = build_network(network_spec(1, 10), torch.Generator().manual_seed(1))
    x = torch.randn(4, 1, 8, 8)
    names = []
    for m in net.features:
        if isinstance(m, small_maps.Conv2d):
            m.register_forward_hook(lambda mod, inp, out: names.append((inp[0].shape[-1], mod._dense(inp[0]))))
    out = net(x)
    assert names == [(8, False), (4, False), (2, True)]
    stacked = StackedCNN([net, net])
    assert sum(isinstance(m, small_maps.Conv2d) for m in stacked.modules()) == 3
    plain = nn.Sequential(*[nn.Conv2d(m.in_channels, m.out_channels, 3, padding=1, bias=False)
                            if isinstance(m, nn.Conv2d) else m for m in net.features])
    plain.load_state_dict(net.features.state_dict())
    net.eval()
    plain.eval()
    torch.testing.assert_close(net.head(plain(x)), net(x), rtol=1e-5, atol=1e-5)
    assert out.shape == (4, 10)


def test_no_gradient_of_its_gradient():
    """The hand-written backward is not itself differentiable: asking for a second derivative is an
    error, never a silently wrong number."""
    fast, _ = _pair(4, 6, 1, False)
    x = torch.randn(2, 4, 2, 2, requires_grad=True)
    (gx,) = torch.autograd.grad(fast(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()
