"""Stride, offset and receptive field of cut points (latentmotion.models.geometry, through split_model and list_layers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import latentmotion as lm
from latentmotion.models.split import list_layers

from ..conftest import model


def test_geometry_matches_hand_derivation():
    """Strides and offsets worked out by hand from the architectures.

    ResNet-34: conv 7/2 pad 3 and maxpool 3/2 pad 1 keep centres at 2u, 4u; a
    3x3/2 pad 1 conv keeps 2u: offset 0 at every stride. DenseNet-121: the 2x2
    average pools of transitions 1 and 2 add 0.5 * 4 and 0.5 * 8: offset 6 at
    stride 16. EfficientNet-Lite0 (TF 'same' padding, pad only right/bottom for
    stride-2 3x3 convs): the stem centre is 2u + 1, the 3x3/2 depthwise at
    stride 2 adds 2, the 5x5/2 (pad 1 left) at stride 4 adds 4: offset 7 at 8.
    """
    cases = {
        ("resnet34", "layer2.0.add"): ((8, 8), (0.0, 0.0), (83, 83)),
        ("densenet121", "features.transition2.pool"): ((16, 16), (6.0, 6.0), None),
        ("efficientnet_lite0", "_blocks.4.add"): ((8, 8), (7.0, 7.0), None),
        ("efficientnet_lite0", "_blocks.0._bn2"): ((2, 2), (1.0, 1.0), (7, 7)),
    }
    for (name, layer), (stride, offset, rf) in cases.items():
        s = lm.split_model(model(name), layer)
        assert s.stride == stride and s.offset == offset
        if rf:
            assert s.rf == rf


def test_geometry_of_functional_and_padded_network():
    """F.conv2d, explicit padding and an even kernel: offset from the rules."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pad = nn.ZeroPad2d((0, 1, 0, 1))
            self.w = nn.Parameter(torch.randn(4, 3, 3, 3))
            self.conv = nn.Conv2d(4, 4, 4, stride=2, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = F.conv2d(self.pad(x), self.w, stride=2)  # centre 2u + 1
            x = torch.relu(self.conv(x))  # kernel 4 pad 1: centre 2u + 0.5 -> 4u + 2
            return self.head(x.mean((2, 3)))

    s = lm.split_model(Net().eval(), "conv")
    assert s.stride == (4, 4) and s.offset == (2.0, 2.0) and s.rf == (9, 9)


class ChannelsLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = self.mlp(self.norm(self.conv(x).permute(0, 2, 3, 1)))  # (N, H, W, C)
        return self.head(y.mean((1, 2)))


def test_channels_last_grid_is_permuted_at_the_cut():
    net = ChannelsLast().eval()
    s = lm.split_model(net, "mlp")
    assert s.stride == (4, 4) and s.offset == (1.5, 1.5)
    x = torch.rand(2, 3, 32, 24)
    with torch.no_grad():
        assert s.edge(x).shape == (2, 8, 8, 6)  # (N, C, H, W) on the wire
        assert torch.equal(s.cloud(s.edge(x)), net(x))


class Rolled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        ramp = torch.arange(x.shape[-1], dtype=x.dtype)  # a position-dependent constant
        return (y + ramp).mean((2, 3)) + torch.roll(y, 1, dims=3).mean((2, 3))


def test_unsupported_layouts_give_a_reason_not_a_number():
    by = {li.name: li for li in list_layers(Rolled().eval(), all_nodes=True)}
    assert by["conv"].stride == (1, 1)
    assert by["roll"].stride is None and "cyclic shift" in by["roll"].no_grid
    assert by["add"].stride is None and "position-dependent constant" in by["add"].no_grid
