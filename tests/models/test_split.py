"""Edge/cloud splitting (latentmotion.models.split): exact cuts, refusals, users' own modules (issue 2)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import latentmotion as lm
from latentmotion.models.split import list_layers

from ..conftest import model

PAPER_CUTS = {
    "resnet34": ["conv1", "layer2.0.add", "layer3.0.add"],
    "densenet121": ["features.transition2.pool", "features.transition3.pool"],
    "efficientnet_lite0": ["_blocks.0._bn2", "_blocks.4.add", "_blocks.10.add", "_blocks.14.add"],
}


# ----------------------------------------------------------------- splitting


def _check_split(m, layer, x):
    s = lm.split_model(m, layer, require_grid=False)
    with torch.no_grad():
        ref = m(x)
        got = s.cloud(s.edge(x))
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
    return s


@pytest.mark.parametrize("name", list(PAPER_CUTS))
def test_cloud_of_edge_equals_model(name):
    m = model(name)
    x = torch.rand(2, 3, 160, 192)  # not a probe size, and not square
    cuts = list(PAPER_CUTS[name])
    others = [li.name for li in list_layers(m) if li.name not in cuts]
    cuts += random.Random(0).sample(others, 4)  # and a seeded sample of other cut points
    for layer in cuts:
        _check_split(m, layer, x)


def test_feature_shape_is_the_edges_output_for_one_frame_and_follows_the_stride():
    s = lm.split_model(model("efficientnet_lite0"), "_blocks.4.add")
    with torch.no_grad():
        assert s.feature_shape(160) == tuple(s.edge(torch.rand(3, 3, 160, 160)).shape[1:])
    assert s.feature_shape() == (40, 224 // s.stride[0], 224 // s.stride[1])


def test_multi_tensor_cut_is_refused_with_neighbours():
    with pytest.raises(lm.InputError) as exc:
        lm.split_model(model("densenet121"), "features.denseblock2.denselayer3.conv1")
    assert "features.transition1.pool" in str(exc.value) and "several tensors" in str(exc.value)


def test_unknown_and_global_layers():
    with pytest.raises(lm.UnknownNameError, match="layer2.0.add"):
        lm.split_model(model("resnet34"), "layer2.0.ad")
    with pytest.raises(lm.InputError, match="no spatial grid"):
        lm.split_model(model("resnet34"), "flatten")
    s = lm.split_model(model("resnet34"), "flatten", require_grid=False)  # fine for inference, but motion needs a grid
    assert s.stride is None and "global pooling" in s.no_grid
    with pytest.raises(lm.InputError, match="no spatial grid"):
        lm.predict_features(torch.zeros(1, 512, 1, 1), lm.Affine(tx=8), s)


# ----------------------------------------------------------------- users' own modules


class ShapeReader(nn.Module):
    """A user network whose forward reads shapes, as real models do (issue 10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        bs = x.size(0)
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(y)) + y
        y = F.adaptive_avg_pool2d(torch.relu(self.conv3(y)), 4)
        y = y.view(y.size(0), -1)
        return self.head(y.view(bs, -1))


def test_user_module_reading_shapes_splits_everywhere_exactly():
    torch.manual_seed(1)
    net = ShapeReader().eval()
    x = torch.rand(3, 3, 40, 48)  # neither the batch nor the size of the probes
    cuts = [li.name for li in list_layers(net)]
    assert {"conv1", "add", "conv3", "adaptive_avg_pool2d", "view"} <= set(cuts)
    with torch.no_grad():
        ref = net(x)
        for layer in cuts:
            s = lm.split_model(net, layer, require_grid=False)
            assert torch.equal(s.cloud(s.edge(x)), ref), layer
    assert lm.split_model(net, "conv3").stride == (4, 4)


class InputSkip(nn.Module):
    """A real tensor (the input) and a spatial size of it are needed at the end."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x):
        h = x.shape[2]
        y = self.conv2(torch.relu(self.conv1(x)))
        return y.mean((2, 3)) * h + x.mean((1, 2, 3))[:, None]


def test_cut_refused_only_when_a_real_tensor_crosses():
    net = InputSkip().eval()
    with pytest.raises(lm.InputError, match="tensor 'x' is also needed after the cut"):
        lm.split_model(net, "conv2")
    assert all(li.name not in ("conv1", "conv2") for li in list_layers(net))

    class SizeOnly(InputSkip):
        def forward(self, x):
            h = x.shape[2]
            y = self.conv2(torch.relu(self.conv1(x)))
            return y.mean((2, 3)) * h

    net = SizeOnly().eval()
    s = lm.split_model(net, "conv1")  # same height as the input: the cloud reads it from the cut tensor
    x = torch.rand(2, 3, 30, 20)
    with torch.no_grad():
        assert torch.equal(s.cloud(s.edge(x)), net(x))
    with pytest.raises(lm.InputError, match="does not follow from the cut tensor"):
        lm.split_model(net, "conv2")  # half the height: the input's height cannot be recovered


def test_split_does_not_touch_the_callers_model():
    torch.manual_seed(2)
    net = ShapeReader().eval()
    before = lm.models.weights_fingerprint(net)
    s = lm.split_model(net, "add")
    s.edge.double()
    s.cloud.to(torch.float16)
    with torch.no_grad():
        for p in s.edge.parameters():
            p.add_(1)
    assert lm.models.weights_fingerprint(net) == before and net.conv1.weight.dtype == torch.float32
    assert not {id(p) for p in net.parameters()} & {id(p) for p in [*s.edge.parameters(), *s.cloud.parameters()]}


@pytest.mark.parametrize("sample", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["sampled-blocks", "every-block"])
def test_efficientnet_lite_pytorch_splits_at_any_block(sample):
    """Upstream's EfficientNet reads inputs.size(0) at the top and uses it at the end."""
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    net = EfficientNet.from_name("efficientnet-lite1").eval()
    cuts = {}
    for li in list_layers(net):
        if li.name.startswith("_blocks."):
            cuts[int(li.name.split(".")[1])] = li.name  # the last single-tensor cut inside each block
    assert sorted(cuts) == list(range(len(net._blocks)))
    chosen = sorted(random.Random(0).sample(sorted(cuts), 4)) if sample else sorted(cuts)
    x = torch.rand(2, 3, 240, 240)
    with torch.no_grad():
        ref = net(x)
        for b in chosen:
            s = lm.split_model(net, cuts[b])
            assert torch.equal(s.cloud(s.edge(x)), ref), cuts[b]


def test_edge_multi_equals_each_single_cut_despite_in_place_ops():
    """ResNet's ReLU(inplace=True) follows `layer2.0.add`: a multi-output extractor must keep the raw sum."""
    from latentmotion.models import edge_multi

    m = lm.load_model("resnet34", "random")
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    layers = ["conv1", "layer2.0.add", "layer3.0.add"]
    with torch.no_grad():
        out = edge_multi(m, layers)(x)
        for layer in layers:
            assert torch.equal(out[layer], lm.split_model(m, layer).edge(x)), layer
        assert (out["layer2.0.add"] < 0).any()  # the raw residual sum, before its ReLU


def test_cloud_leaves_its_input_and_split_leaves_a_training_model_untouched():
    """The cloud's in-place ReLU must not change the caller's features; probing must not touch BatchNorm statistics."""
    m = lm.load_model("resnet34", "random").train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    s = lm.split_model(m, "layer2.0.add")
    assert m.training and all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = s.edge.eval()(x)
        kept = f.clone()
        s.cloud.eval()(f)
    assert (kept < 0).any() and torch.equal(f, kept)
