"""Every cut of every torchvision classifier: a checked stride and offset, or a clear refusal (issue 10).

Each model is built with seeded random weights. Three properties, each able to fail:

* every listed stride agrees with the change of shape between 224x224 and
  448x448 inputs (a size the geometry's own probes never use);
* for a seeded sample of grid cuts, a translation by twice the stride is
  predicted by :func:`predict_features` with relative error < 1e-4 in the
  receptive interior of 448x448 frames (exact up to float rounding);
* cuts without a grid are refused by ``predict_features`` with their reason.

The default run covers a sample of architectures (each layout the geometry
handles: plain CNNs, torchvision blocks, squeeze-and-excitation, channels-last
ConvNeXt and Swin, tokens in ViT); ``-m slow`` covers every model.
"""

from __future__ import annotations

import random

import pytest
import torch
import torchvision

import latentmotion as lm
from latentmotion.data import load_image
from latentmotion.models.split import list_layers
from latentmotion.models.trace import probe, trace

from ..conftest import model

FRAME = 448
SAMPLE = 3  # translation-tested cuts per model
DEFAULT = ["mobilenet_v3_small", "regnet_y_400mf", "convnext_tiny", "swin_t", "vit_b_16", "shufflenet_v2_x0_5", "googlenet", "squeezenet1_1"]
ALL = torchvision.models.list_models(module=torchvision.models)


def _shapes_at(net: torch.nn.Module, side: int) -> dict[str, tuple[int, ...]]:
    """Node name -> output shape for a (1, 3, side, side) input (nodes the network refuses are absent)."""
    gm, names = trace(net)
    seen = probe(gm, 1, side)
    return {names.get(n, n.name): v[1] for n, v in seen.items() if isinstance(v, tuple) and v[0] == "tensor"}


def _strides_agree_with_shapes(m: lm.ImageNetModel, layers) -> int:
    small, large = _shapes_at(m.net, 224), _shapes_at(m.net, FRAME)
    checked = 0
    for li in layers:
        if li.stride is None or li.name not in large:
            continue
        a, b = small[li.name], large[li.name]  # raw node shapes: the grid may sit channels-last
        ok = any(
            tuple(a[i : i + 2]) == li.shape[-2:] and all(s * (b[j] - a[j]) == FRAME - 224 for s, j in zip(li.stride, (i, i + 1)))
            for i in range(len(a) - 1)
        )
        assert ok, f"{li.name}: stride {li.stride} but shape {a} at 224 and {b} at {FRAME}"
        checked += 1
    return checked


def _translation_error(m, layer: str) -> tuple[int, float]:
    s = lm.split_model(m, layer)
    motions = [lm.Affine(tx=2 * s.stride[1]), lm.Affine(tx=-2 * s.stride[1], ty=2 * s.stride[0])]
    pair = lm.render_pair(load_image("astronaut"), motions, size=FRAME)
    with torch.no_grad():
        ref, cur = s.edge(pair.reference), s.edge(pair.current)
    pred, valid = lm.predict_features(ref, motions, s, mask="receptive")
    err = ((pred - cur).abs() * valid).amax(dim=(1, 2, 3)) / cur.abs().amax(dim=(1, 2, 3))
    return int(valid.sum(dim=(1, 2, 3)).min()), float(err.max())


def _testable(li) -> bool:
    """A grid cut without whole-frame context whose receptive field leaves an interior after the motion."""
    return li.stride is not None and li.context is None and all(r + 4 * s < FRAME for r, s in zip(li.rf, li.stride))


def _check_model(name: str, cached: bool = True) -> None:
    m = model(name) if cached else lm.load_model(name, weights="random", seed=0)  # the slow run keeps no model alive
    layers = list_layers(m)
    assert layers, f"{name}: no cut points"
    grid = [li for li in layers if li.stride is not None]
    assert all(li.no_grid for li in layers if li.stride is None)  # every gridless cut says why
    if grid:
        assert _strides_agree_with_shapes(m, layers) >= 1
    candidates = [li for li in layers if _testable(li)]
    for li in random.Random(name).sample(candidates, min(SAMPLE, len(candidates))):
        n, err = _translation_error(m, li.name)
        assert n >= 1 and err < 1e-4, f"{name} {li.name}: {n} interior elements, relative error {err:.2e}"
    gridless = [li for li in layers if li.stride is None]
    if gridless:
        with pytest.raises(lm.InputError, match="no spatial grid"):
            lm.split_model(m, gridless[0].name)
        s = lm.split_model(m, gridless[0].name, require_grid=False)
        with pytest.raises(lm.InputError, match="no spatial grid"):
            lm.predict_features(torch.zeros(1, 4, 7, 7), lm.Affine(tx=8), s)


@pytest.mark.parametrize("name", DEFAULT)
def test_sampled_models(name):
    _check_model(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n not in DEFAULT])
def test_every_model(name):
    _check_model(name, cached=False)


def test_issue_cases():
    """The cases of issue 10: leaf blocks no longer hide strides; Swin's channels-last stem is a permuted grid."""
    by = {li.name: li for li in list_layers(model("mobilenet_v3_small"))}
    assert by["features.3.add"].shape == (24, 28, 28) and by["features.3.add"].stride == (8, 8)
    assert by["features.3.add"].context == "features.1.block.1.avgpool"  # squeeze-and-excitation sees the whole frame
    swin = {li.name: li for li in list_layers(model("swin_t"))}
    assert swin["features.0.2"].stride == (4, 4) and swin["features.0.2"].shape == (96, 56, 56)
    assert swin["features.0.2"].offset == (1.5, 1.5)  # a 4x4 patch centred at 4u + 1.5
    assert swin["features.1.0.add"].stride is None and "attention" in swin["features.1.0.add"].no_grid
    vit = {li.name: li for li in list_layers(model("vit_b_16"), all_nodes=True)}
    assert "tokens" in vit["reshape"].no_grid


def test_translation_check_catches_a_wrong_stride():
    """The property used above really fails when the stride is wrong (a stride-8 cut called stride 16)."""
    m = lm.load_model("resnet18", weights="random", seed=0)
    s = lm.split_model(m, "layer2.0.add")
    wrong = lm.Split(s.edge, s.cloud, s.layer, (16, 16), s.offset, s.rf)
    motions = [lm.Affine(tx=32)]
    pair = lm.render_pair(load_image("astronaut"), motions, size=FRAME)
    with torch.no_grad():
        ref, cur = s.edge(pair.reference), s.edge(pair.current)
    right = lm.predict_features(ref, motions, s, mask="receptive")
    bad = lm.predict_features(ref, motions, wrong, mask="receptive")
    e_right = ((right.warped - cur).abs() * right.valid).amax() / cur.abs().amax()
    e_bad = ((bad.warped - cur).abs() * bad.valid).amax() / cur.abs().amax()
    assert e_right < 1e-4 < e_bad


def test_a_failing_user_factory_is_one_line_error(tmp_path):
    """A user's factory that raises is the command's one-line error; one that raises KeyboardInterrupt exits 130."""
    import os
    import subprocess
    import sys

    (tmp_path / "userfactories.py").write_text("def raises():\n    raise ValueError('boom in factory')\n\ndef kbd():\n    raise KeyboardInterrupt\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    for spec, code, needle in (("userfactories:raises", 2, "boom in factory"), ("userfactories:kbd", 130, "interrupted")):
        r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "layers", spec], capture_output=True, text=True, env=env, timeout=300, check=False)
        assert r.returncode == code and r.stderr.strip().splitlines() == [r.stderr.strip()] and needle in r.stderr, (spec, r.returncode, r.stderr)
