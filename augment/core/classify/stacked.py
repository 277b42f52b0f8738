"""M SmallCNNs of one spec as one network, so a round of small classifiers trains as one model."""

from __future__ import annotations

import torch
from torch import nn


class StackedCNN(nn.Module):
    """M SmallCNNs of one spec as one network: model m reads channels [m*C, (m+1)*C) of the input,
    (B, M*C, H, W), through grouped convolutions and a batch norm over all M*width channels (its
    statistics per channel, so per model); a head per model. Returns (M, B, K) logits."""

    def __init__(self, nets: list[nn.Module]):
        super().__init__()
        m, first = len(nets), nets[0]
        self.m, self.spec = m, dict(first.spec)
        layers: list[nn.Module] = []
        convs = [[mod for mod in n.features if isinstance(mod, nn.Conv2d)] for n in nets]
        bns = [[mod for mod in n.features if isinstance(mod, nn.BatchNorm2d)] for n in nets]
        for i, conv in enumerate(convs[0]):
            # the members' own convolution class (augment.core.base.small_maps'), grouped
            c = type(conv)(m * conv.in_channels, m * conv.out_channels, 3, padding=1, bias=False, groups=m)
            b = nn.BatchNorm2d(m * conv.out_channels, eps=bns[0][i].eps, momentum=bns[0][i].momentum)
            with torch.no_grad():
                c.weight.copy_(torch.cat([n[i].weight for n in convs]))
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(b, name).copy_(torch.cat([getattr(n[i], name) for n in bns]))
            layers += [c, b, nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.width = first.head.in_features
        self.head_weight = nn.Parameter(torch.stack([n.head.weight.detach().t() for n in nets]).clone())  # (M, D, K)
        self.head_bias = nn.Parameter(torch.stack([n.head.bias.detach() for n in nets]).clone())  # (M, K)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M*C, H, W) -> penultimate features (M, B, D)."""
        return self.features(x).view(len(x), self.m, self.width).transpose(0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(x)
        if mask is not None:
            h = h * mask
        return torch.baddbmm(self.head_bias.unsqueeze(1), h, self.head_weight)

    def unstack(self, nets: list[nn.Module]) -> list[nn.Module]:
        """Copy model m's weights and batch-norm statistics into nets[m] (SmallCNNs of the spec)."""
        convs = [mod for mod in self.features if isinstance(mod, nn.Conv2d)]
        bns = [mod for mod in self.features if isinstance(mod, nn.BatchNorm2d)]
        with torch.no_grad():
            for j, net in enumerate(nets):
                mine = [mod for mod in net.features if isinstance(mod, nn.Conv2d)]
                their_bns = [mod for mod in net.features if isinstance(mod, nn.BatchNorm2d)]
                for c, b, c_j, b_j in zip(convs, bns, mine, their_bns):
                    n = c_j.out_channels
                    c_j.weight.copy_(c.weight[j * n : (j + 1) * n])
                    for name in ("weight", "bias", "running_mean", "running_var"):
                        getattr(b_j, name).copy_(getattr(b, name)[j * n : (j + 1) * n])
                    b_j.num_batches_tracked.copy_(b.num_batches_tracked)
                net.head.weight.copy_(self.head_weight[j].t())
                net.head.bias.copy_(self.head_bias[j])
        return nets
