"""Model registry and edge/cloud splitting (issue 2)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import latentmotion as lm
from latentmotion.data import load_image
from latentmotion.models.split import list_layers

from .conftest import model

PAPER_CUTS = {
    "resnet34": ["conv1", "layer2.0.add", "layer3.0.add"],
    "densenet121": ["features.transition2.pool", "features.transition3.pool"],
    "efficientnet_lite0": ["_blocks.0._bn2", "_blocks.4.add", "_blocks.10.add", "_blocks.14.add"],
}


# ----------------------------------------------------------------- weights


def test_missing_imagenet_weights_name_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(lm.WeightsUnavailableError) as exc:
        lm.load_model("resnet34")
    msg = str(exc.value)
    assert "resnet34-b627a593.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "random" in msg  # names the alternative


def test_imagenet_weights_load_from_torch_home(tmp_path, monkeypatch):
    """A file in $TORCH_HOME/hub/checkpoints is used by torchvision's machinery."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    donor = lm.load_model("resnet18", weights="random", seed=3)
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(donor.net.state_dict(), ckpt / "resnet18-f37072fd.pth")
    m = lm.load_model("resnet18")
    assert m.trained and "resnet18-f37072fd.pth" in m.weights
    assert torch.equal(m.net.conv1.weight, donor.net.conv1.weight)


def test_random_weights_are_seeded_and_labelled():
    a, b, c = (lm.load_model("resnet18", weights="random", seed=s) for s in (1, 1, 2))
    assert torch.equal(a.net.conv1.weight, b.net.conv1.weight)
    assert not torch.equal(a.net.conv1.weight, c.net.conv1.weight)
    assert a.weights == "random (seed 1)" and not a.trained


def test_weights_from_path_and_corrupt_file(tmp_path):
    donor = lm.load_model("resnet18", weights="random", seed=5)
    good = tmp_path / "w.pth"
    torch.save(donor.net.state_dict(), good)
    m = lm.load_model("resnet18", weights=str(good))
    assert torch.equal(m.net.fc.weight, donor.net.fc.weight)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(lm.WeightsUnavailableError, match="not a readable state_dict"):
        lm.load_model("resnet18", weights=str(bad))
    with pytest.raises(lm.WeightsUnavailableError, match="do not fit"):
        lm.load_model("resnet34", weights=str(good))


def test_bad_names():
    with pytest.raises(lm.UnknownNameError, match="resnet34"):
        lm.load_model("resnet43")
    with pytest.raises(lm.InputError, match="weights must be"):
        lm.load_model("resnet18", weights="imagenet21k")


def test_efficientnet_lite0_is_trained():
    """The embedded default really classifies: scikit-image's chelsea is a cat."""
    m = model("efficientnet_lite0")
    img = F.interpolate(load_image("chelsea")[None], size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top = m(img).argmax(1).item()
    assert 281 <= top <= 285  # ImageNet's domestic cats


# ----------------------------------------------------------------- splitting


def _check_split(m, layer, x):
    s = lm.split_model(m, layer)
    with torch.no_grad():
        ref = m(x)
        got = s.cloud(s.edge(x))
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
    return s


@pytest.mark.parametrize("name", list(PAPER_CUTS))
def test_cloud_of_edge_equals_model(name):
    m = model(name)
    x = torch.rand(2, 3, 224, 224)
    cuts = list(PAPER_CUTS[name])
    others = [li.name for li in list_layers(m) if li.name not in cuts]
    cuts += random.Random(0).sample(others, 4)  # and a seeded sample of other cut points
    for layer in cuts:
        _check_split(m, layer, x)


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


def test_multi_tensor_cut_is_refused_with_neighbours():
    with pytest.raises(lm.InputError) as exc:
        lm.split_model(model("densenet121"), "features.denseblock2.denselayer3.conv1")
    assert "features.transition1.pool" in str(exc.value) and "several tensors" in str(exc.value)


def test_unknown_and_global_layers():
    with pytest.raises(lm.UnknownNameError, match="layer2.0.add"):
        lm.split_model(model("resnet34"), "layer2.0.ad")
    with pytest.raises(lm.InputError, match="no spatial grid"):
        lm.split_model(model("resnet34"), "flatten")
