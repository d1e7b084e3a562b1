"""The served cloud sub-model: same answers as the eager one, fallback when tracing would change them."""

from __future__ import annotations

import copy

import torch
from torch import nn

from latentmotion.service.backends import ServedModel

from .conftest import features, split


def test_served_model_matches_the_eager_cloud_on_real_features():
    eager = split().cloud.eval()
    x = features()[:6]
    served = ServedModel(copy.deepcopy(eager), tuple(x.shape[1:]))
    assert served.graph is not None  # the nominal shape takes the frozen graph
    with torch.no_grad():
        ref, out = eager(x), served(x)
        assert torch.allclose(out, ref, atol=1e-4)
        assert (out.topk(5).indices == ref.topk(5).indices).all()
        # another grid size runs the eager path, with the same answers as the eager module
        small = x[:, :, :20, :20]
        assert torch.allclose(served(small), eager(small), atol=1e-5)


class _BatchBaked(nn.Module):
    """Multiplies by the batch size read as a Python int: a trace bakes in the traced batch."""

    def forward(self, x):
        return x.flatten(1) * int(x.shape[0])


def test_served_model_falls_back_when_tracing_changes_the_output():
    served = ServedModel(_BatchBaked(), (2, 3, 3))
    assert served.graph is None
    x = torch.randn(4, 2, 3, 3)
    assert torch.equal(served(x), x.flatten(1) * 4)
