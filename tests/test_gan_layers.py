"""augment.core.gan.layers: the CPU fast paths compute what nn.Conv2d / nn.ConvTranspose2d compute,
outputs and gradients (to the input, the weight and the bias), at the GAN's own layer shapes."""

import pytest
import torch
from torch import nn

from augment.core.gan import layers
from augment.core.gan.dcgan import Discriminator, Generator


def _same(fast: nn.Module, plain: nn.Module, x: torch.Tensor, input_grad: bool, takes_fast_path: bool) -> None:
    plain.load_state_dict(fast.state_dict())
    xa, xb = x.clone().requires_grad_(input_grad), x.clone().requires_grad_(input_grad)
    a, b = fast(xa), plain(xb)
    assert (a.grad_fn.name() != "ConvolutionBackward0") == takes_fast_path  # the path meant for this shape ran
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    for p, q in zip(fast.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4)
    if input_grad:
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)


CONVS = [  # (in, out, kernel, stride, padding, groups, bias, input H=W, fast path: always / with input grad / never)
    (40, 5, 4, 1, 0, 5, False, 4, "always"),  # per_class D's head (a valid kernel over the whole input)
    (8, 1, 4, 1, 0, 1, True, 4, "always"),  # the conditional D's head, with a bias
    (8, 2, 4, 2, 0, 2, False, 4, "always"),  # a head at any stride
    (5, 40, 4, 2, 1, 5, False, 16, "grad"),  # D's first layer, one image channel a group (unfolded when x needs grad)
    (6, 16, 3, 1, 1, 2, True, 8, "grad"),  # three channels a group, 3x3, with a bias
    (3, 8, 4, 2, 1, 1, True, 8, "never"),  # ungrouped RGB: the plain path
    (16, 32, 4, 2, 1, 2, False, 8, "never"),  # many channels a group: the plain path
]


@pytest.mark.parametrize("spec", CONVS)
@pytest.mark.parametrize("input_grad", [False, True])
def test_conv_fast_paths_equal_the_plain_convolution(spec, input_grad):
    cin, cout, k, s, p, g, bias, size, path = spec
    torch.manual_seed(0)
    fast = layers.Conv2d(cin, cout, k, s, p, bias=bias, groups=g)
    _same(fast, nn.Conv2d(cin, cout, k, s, p, bias=bias, groups=g), torch.randn(3, cin, size, size), input_grad,
          path == "always" or (path == "grad" and input_grad))


DECONVS = [  # (in, out, kernel, stride, padding, groups, bias, input H=W, takes a fast path)
    (40, 40, 4, 1, 0, 5, False, 1, True),  # per_class G's first layer: a 1x1 input projected to 4x4
    (8, 16, 4, 1, 0, 1, True, 1, True),  # the same, ungrouped, with a bias
    (40, 5, 4, 2, 1, 5, False, 8, True),  # per_class G's image layer, one image channel a group (folded)
    (16, 6, 4, 2, 1, 2, True, 4, True),  # three channels a group, with a bias (folded)
    (8, 3, 4, 2, 1, 1, True, 4, False),  # the mix decoder's image layer, ungrouped: the plain path
    (40, 20, 4, 2, 1, 5, False, 4, False),  # four channels a group: the plain path
]


@pytest.mark.parametrize("spec", DECONVS)
def test_transposed_fast_paths_equal_the_plain_transposed_convolution(spec):
    cin, cout, k, s, p, g, bias, size, fast_path = spec
    torch.manual_seed(0)
    fast = layers.ConvTranspose2d(cin, cout, k, s, p, bias=bias, groups=g)
    _same(fast, nn.ConvTranspose2d(cin, cout, k, s, p, bias=bias, groups=g), torch.randn(3, cin, size, size), True,
          fast_path)


@pytest.mark.parametrize("size", [8, 16])
@pytest.mark.parametrize("mode", ["per_class", "conditional"])
def test_networks_equal_their_plain_path(monkeypatch, mode, size):
    """Whole G and D, training mode, one loss: the same outputs and gradients with the fast paths off."""
    def run():
        torch.manual_seed(0)
        G, D = Generator(3, 8, 4, 1, size, mode), Discriminator(3, 4, 1, size, mode)
        loss = D(G(torch.randn(4, 3, 8))).square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in [*G.parameters(), *D.parameters()]]

    fast_loss, fast_grads = run()
    monkeypatch.setattr(layers, "_fast", lambda x: False)
    plain_loss, plain_grads = run()
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(fast_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # float rounding through batch norm


def test_the_plain_path_under_autocast_and_other_dtypes():
    conv = layers.Conv2d(4, 2, 4, 1, 0, groups=2)
    assert layers._fast(torch.zeros(1)) and not layers._fast(torch.zeros(1, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not layers._fast(torch.zeros(1))
        assert conv(torch.randn(2, 4, 4, 4)).dtype == torch.bfloat16  # nn.Conv2d's own autocast behaviour
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(conv.double()(x), nn.functional.conv2d(x, conv.weight, conv.bias, groups=2))


def test_empty_and_unusual_inputs_take_the_plain_path():
    """An ensemble gives a member no rows when a batch has fewer rows than members: the layers then
    return what nn.Conv2d returns (an empty batch), as do the other inputs only its own path handles."""
    from augment.core.gan.sampling import EnsembleGenerator

    torch.manual_seed(0)
    G = Generator(3, 8, 4, 1, 8, "per_class").eval()
    with torch.no_grad():
        assert EnsembleGenerator([G, G])(torch.randn(1, 3, 8)).shape == (1, 3, 1, 8, 8)
        assert G(torch.randn(0, 3, 8)).shape == (0, 3, 1, 8, 8)
    conv = layers.Conv2d(2, 8, 4, 2, 1, groups=2)
    x = torch.randn(0, 2, 8, 8, requires_grad=True)
    assert conv(x).shape == nn.Conv2d(2, 8, 4, 2, 1, groups=2)(x).shape == (0, 8, 4, 4)
    same = layers.Conv2d(2, 8, 3, padding="same", groups=2)
    assert same(torch.randn(2, 2, 8, 8, requires_grad=True)).shape == (2, 8, 8, 8)
    with pytest.raises(RuntimeError):  # a wrong channel count: nn.Conv2d's own error, not a silent result
        layers.ConvTranspose2d(4, 2, 4, 2, 1, groups=2)(torch.randn(2, 2, 8, 8))
