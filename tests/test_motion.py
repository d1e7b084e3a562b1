"""Motion conventions, warping, masks and the latent prediction of Eq. 12 (issue 2)."""

from __future__ import annotations

import math

import pytest
import torch

import latentmotion as lm
from latentmotion.data import load_image
from latentmotion.motion import sample

from .conftest import model


def _peak(img: torch.Tensor) -> tuple[int, int]:
    idx = int(img.reshape(-1).argmax())
    return divmod(idx, img.shape[-1])  # (y, x)


# ----------------------------------------------------------------- conventions


def test_translation_moves_content_right_and_down():
    img = torch.zeros(1, 1, 16, 16)
    img[0, 0, 5, 4] = 1
    out, _ = lm.warp_image(img, lm.Affine(tx=3, ty=2), mode="bilinear")
    assert _peak(out[0, 0]) == (7, 7)


def test_positive_rotation_is_counter_clockwise_on_screen():
    img = torch.zeros(1, 1, 17, 17)  # centre (8, 8)
    img[0, 0, 8, 14] = 1  # right of the centre
    out, _ = lm.warp_image(img, lm.Affine(rot=90), mode="bilinear")
    assert _peak(out[0, 0]) == (2, 8)  # now above it: counter-clockwise with y down


def test_apply_to_points_agrees_with_warp():
    a = lm.Affine(tx=1.5, ty=-2, sx=1.1, sy=0.9, shx=4, shy=-3, rot=12)
    img = torch.zeros(1, 1, 41, 41)
    img[0, 0, 14, 25] = 1
    out, _ = lm.warp_image(img, a, mode="bilinear")
    x, y = a.apply_to_points(torch.tensor([25.0, 14.0]), (41, 41)).tolist()
    py, px = _peak(out[0, 0])
    assert abs(px - x) <= 0.5 and abs(py - y) <= 0.5


def test_flow_equals_affine():
    a = [lm.Affine(rot=7, tx=2), lm.Affine(sx=1.2, sy=0.8, shy=5)]
    img = torch.rand(1, 3, 20, 24)
    by_affine = lm.warp_image(img, a)
    by_flow = lm.warp_image(img, lm.flow_from_affine(a, (20, 24)))
    assert torch.allclose(by_affine.warped, by_flow.warped, atol=1e-5)
    assert torch.equal(by_affine.valid, by_flow.valid)


@pytest.mark.parametrize("bad", [dict(tx=float("nan")), dict(rot=float("inf")), dict(sx=0), dict(shx=90)])
def test_bad_motion_parameters(bad):
    with pytest.raises(lm.InputError):
        lm.Affine(**bad)


def test_bad_images():
    with pytest.raises(lm.InputError, match="3 \\(RGB\\)"):
        lm.render_pair(torch.rand(4, 300, 300), lm.Affine())
    with pytest.raises(lm.InputError, match="\\[0, 1\\]"):
        lm.render_pair(torch.rand(3, 300, 300) * 255, lm.Affine())
    with pytest.raises(lm.InputError, match="floating-point"):
        lm.warp_image(torch.zeros(3, 8, 8, dtype=torch.uint8), lm.Affine())
    with pytest.raises(lm.InputError, match="smaller"):
        lm.render_pair(torch.rand(3, 100, 100), lm.Affine())


def test_render_pair_brings_real_content_into_the_frame():
    src = load_image("chelsea")
    pair = lm.render_pair(src, [lm.Affine(), lm.Affine(tx=30)])
    assert torch.allclose(pair.current[0], pair.reference[0], atol=1e-6)
    cur = pair.current[1]
    assert torch.allclose(cur[:, :, 30:], pair.reference[0, :, :, :-30], atol=1e-6)  # integer shift: exact
    assert cur[:, :, :30].mean() > 0.1  # entering content is real, not black


# ----------------------------------------------------------------- brute-force references


def _bilinear_reference(img: torch.Tensor, x: float, y: float) -> tuple[float, float, bool]:
    """Value, warped-ones value and strict validity at (x, y), by explicit taps."""
    h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    val = ones = 0.0
    inside = True
    for dy in (0, 1):
        for dx in (0, 1):
            wt = (1 - abs(x - (x0 + dx))) * (1 - abs(y - (y0 + dy)))
            if wt == 0:
                continue
            xi, yi = x0 + dx, y0 + dy
            if 0 <= xi < w and 0 <= yi < h:
                val += wt * float(img[yi, xi])
                ones += wt
            else:
                inside = False
    return val, ones, inside


def test_warp_and_masks_against_brute_force():
    gen = torch.Generator().manual_seed(1)
    img = torch.rand(5, 6, generator=gen, dtype=torch.float64)
    src = (torch.rand(1, 4, 7, 2, generator=gen, dtype=torch.float64) * 9 - 1.5)
    got = sample(img[None, None], src, "bilinear", "paper")
    strict = sample(img[None, None], src, "bilinear", "strict").valid
    for i in range(4):
        for j in range(7):
            x, y = src[0, i, j].tolist()
            val, ones, inside = _bilinear_reference(img, x, y)
            assert abs(float(got.warped[0, 0, i, j]) - val) < 1e-9
            assert bool(got.valid[0, 0, i, j]) == (ones > 1e-6)
            exp_strict = 0 <= x <= 5 and 0 <= y <= 4
            assert bool(strict[0, 0, i, j]) == exp_strict
            assert not exp_strict or inside


# ----------------------------------------------------------------- Eq. 12 on real networks


SHARP_CASES = [
    ("resnet34", "layer2.0.add"),
    ("densenet121", "features.transition2.pool"),
    ("efficientnet_lite0", "_blocks.4.add"),
]


@pytest.mark.parametrize("name,layer", SHARP_CASES)
def test_translation_by_stride_multiples_is_exact(name, layer):
    """The paper's claim in its sharpest form.

    A 448x448 frame leaves room for elements whose receptive field avoids the
    border in both frames (DenseNet's theoretical field is 263 px).
    """
    check_translation_by_stride_is_exact(lm.split_model(model(name), layer))


def check_translation_by_stride_is_exact(s) -> None:
    """Whole-stride shifts of a 448x448 frame move the cut's tensor exactly where the receptive field stays inside."""
    st = s.stride[1]
    motions = [lm.Affine(tx=st), lm.Affine(tx=-2 * st, ty=st), lm.Affine(tx=st / 2)]
    pair = lm.render_pair(load_image("astronaut"), motions, size=448)
    with torch.no_grad():
        ref, cur = s.edge(pair.reference), s.edge(pair.current)
    pred, valid = lm.predict_features(ref, motions, s, mask="receptive")
    assert valid.sum(dim=(1, 2, 3)).min() >= 49  # a real region, not an empty one
    err = ((pred - cur).abs() * valid).amax(dim=(1, 2, 3)) / cur.abs().amax(dim=(1, 2, 3))
    assert err[0] < 1e-4 and err[1] < 1e-4
    assert err[2] > 100 * max(err[0], err[1])  # half a stride: clearly worse
    e = lm.nrmse(pred, cur, valid)
    assert e[2] > 20 * max(e[0], e[1])


def test_exact_alignment_not_worse_than_paper_on_sub_stride_translations():
    s = lm.split_model(model("efficientnet_lite0"), "_blocks.4.add")
    motions = [lm.Affine(tx=t, ty=-t / 2) for t in torch.linspace(-8, 8, 9).tolist()]
    pair = lm.render_pair(load_image("chelsea"), motions)
    with torch.no_grad():
        ref, cur = s.edge(pair.reference), s.edge(pair.current)
    err = {}
    for align in ("exact", "paper"):
        pred, valid = lm.predict_features(ref, motions, s, align=align)
        err[align] = lm.nrmse(pred, cur, valid)
    assert (err["exact"] <= err["paper"] + 1e-9).all()


@pytest.mark.parametrize("name,layer", [("densenet121", "features.transition2.pool"), ("efficientnet_lite0", "_blocks.4.add")])
def test_derived_offset_is_the_best_rotation_centre_for_random_weights(name, layer):
    """A measured check of the offset: moving the latent rotation centre by half
    a latent pixel either way makes the prediction worse (untrained weights,
    whose kernels have no learned asymmetry)."""
    m = model(name) if name != "efficientnet_lite0" else lm.load_model(name, weights="random", seed=0)
    s = lm.split_model(m, layer)
    pair = lm.render_pair(load_image("astronaut"), [lm.Affine(rot=10)], size=448)
    with torch.no_grad():
        ref, cur = s.edge(pair.reference), s.edge(pair.current)
    errs = []
    for d in (-0.5, 0.0, 0.5):
        shifted = type("G", (), {"stride": s.stride, "offset": (s.offset[0] + d * s.stride[0], s.offset[1] + d * s.stride[1])})()
        pred, valid = lm.predict_features(ref, lm.Affine(rot=10), shifted, mask="strict", input_size=(448, 448))
        errs.append(float(lm.nrmse(pred, cur, valid)))
    assert errs[1] < errs[0] and errs[1] < errs[2]


def test_affine_parse_round_trips_and_refuses_nonsense():
    a = lm.Affine(tx=8, ty=-2.5, rot=5, sx=1.1)
    text = ",".join(f"{k}={v!r}" for k, v in zip(("tx", "ty", "sx", "sy", "shx", "shy", "rot"), a.as_tuple(), strict=True))
    assert lm.Affine.parse(text) == a
    for bad, needle in (("tx=1e300", "at most"), ("sx=1e-9", "scale"), ("tx=1,tx=2", "distinct"), ("", "empty"), ("spin=3", "name=value"), ("tx=abc", "not a number")):
        with pytest.raises(lm.InputError, match=needle):
            lm.Affine.parse(bad)


def test_largest_accepted_translation_still_gives_finite_predictions():
    """At the bound, float32 sampling coordinates stay finite: an empty mask, never NaN."""
    from latentmotion.motion import MAX_TRANSLATION

    img = torch.rand(1, 3, 16, 16)
    out, valid = lm.warp_image(img, lm.Affine(tx=MAX_TRANSLATION, ty=-MAX_TRANSLATION))
    assert torch.isfinite(out).all() and not valid.any()
