"""Block matching against its brute-force definition (issue 4)."""

from __future__ import annotations

import pytest
import torch

import latentmotion as lm
from latentmotion.data import fit_frame, load_image
from latentmotion.estimation import block_match, block_match_reference, block_match_torch
from latentmotion.experiments.flowcheck import video_pair
from latentmotion.pipeline import gray8

from .conftest import model


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.float(), b.float())


def test_equals_brute_force_with_many_ties():
    g = torch.Generator().manual_seed(0)
    ref = torch.randint(0, 3, (24, 26), generator=g, dtype=torch.uint8)  # flat, tie-rich
    cur = torch.roll(ref, (1, -2), (0, 1))
    assert _same(block_match(ref, cur, 5, 3), block_match_reference(ref, cur, 5, 3))
    z = torch.zeros(2, 15, 15)  # every candidate costs 0: first in row-major (dy, dx)
    v = block_match(z, z, 3, 2)
    assert v[:, 3:-3, 3:-3].eq(-2).all() and _same(v, block_match_reference(z, z, 3, 2))


def test_equals_brute_force_on_random_floats_with_relu_zeros():
    g = torch.Generator().manual_seed(1)
    a = torch.relu(torch.randn(5, 18, 20, generator=g))
    b = torch.relu(torch.randn(5, 18, 20, generator=g)) * 0.3 + torch.roll(a, (0, 1), (1, 2))
    assert _same(block_match(a, b, 3, 2), block_match_reference(a, b, 3, 2))


def test_equals_brute_force_on_real_frames_and_features():
    frames = video_pair("bikes.mp4", 60, 62)
    g = gray8(frames)[:, 90:134, 60:106]  # real 8-bit video crop
    assert _same(block_match(g[0], g[1], 7, 4), block_match_reference(g[0], g[1], 7, 4))
    split = lm.split_model(model("efficientnet_lite0"), "_blocks.4.add")
    with torch.no_grad():
        f = split.edge(frames)[:, :12, 4:20, 4:20]
    assert _same(block_match(f[0], f[1], 3, 2), block_match_reference(f[0], f[1], 3, 2))


def test_float_ties_follow_the_definition():
    """Exact ties of nonzero float costs: prefix sums round them apart; the near-tie pass restores the order."""
    ref = torch.full((20, 22), 0.5)
    cur = torch.full((20, 22), 0.7)  # every candidate in the flat part costs the same
    ref[5:9, 5:9] = 0.1
    want = block_match_reference(ref, cur, 5, 3)
    assert _same(block_match(ref, cur, 5, 3), want)
    assert _same(block_match_torch(ref[None], cur[None], 5, 3, False), want)
    g = torch.Generator().manual_seed(6)
    a = torch.relu(torch.randn(2, 14, 17, generator=g, dtype=torch.float64))  # block 1: cost = one square
    b = torch.relu(torch.randn(2, 14, 17, generator=g, dtype=torch.float64)) * 0.3 + a.roll(1, 2)
    for c in range(2):
        assert _same(block_match(a, b, 1, 3, channels="each")[c], block_match_reference(a[c], b[c], 1, 3))
    assert _same(block_match(a, b, 1, 3), block_match_reference(a, b, 1, 3))


def test_per_channel_fields_of_relu_features_equal_brute_force():
    """Real ReLU features (dead zones: many exactly tied candidates), one field per channel."""
    split = lm.split_model(model("resnet34"), "maxpool")
    with torch.no_grad():
        f = split.edge(video_pair("bikes.mp4", 60, 62))[:, :6, 4:22, 4:22]
    assert (f == 0).float().mean() > 0.2
    each = block_match(f[0], f[1], 3, 3, channels="each")
    for c in range(6):
        assert _same(each[c], block_match_reference(f[0, c], f[1, c], 3, 3)), c


@pytest.mark.parametrize("threads", [1, 2])
def test_integer_kernel_equals_brute_force_on_many_shapes(threads):
    """Exact integer path: joint channels, radius 0, radius past the frame, int64 sums, any band split."""
    import numba

    g = torch.Generator().manual_seed(5)
    cases = [(1, 13, 17, 1, 0), (1, 20, 23, 5, 9), (3, 19, 21, 3, 2), (2, 16, 30, 7, 3), (1, 9, 9, 9, 2)]
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        for c, h, w, blk, r in cases:
            a = torch.randint(0, 4, (c, h, w), generator=g, dtype=torch.uint8)
            b = torch.roll(a, (1, -1), (1, 2))
            b[:, : h // 3] = torch.randint(0, 4, (c, h // 3, w), generator=g, dtype=torch.uint8)
            assert _same(block_match(a, b, blk, r), block_match_reference(a, b, blk, r)), (c, h, w, blk, r)
        whole = torch.randint(0, 4, (2, 12, 14), generator=g).float()  # whole-number floats take this path
        assert _same(block_match(whole, whole.roll(1, 1), 3, 2), block_match_reference(whole, whole.roll(1, 1), 3, 2))
        wide = torch.randint(-(2**20), 2**20, (2, 14, 15), generator=g)  # int64 running sums (exact in the float64 reference too)
        assert _same(block_match(wide, wide.roll(1, 2), 5, 2), block_match_reference(wide, wide.roll(1, 2), 5, 2))
    finally:
        numba.set_num_threads(old)


@pytest.mark.parametrize("chunk", [2**25, 1])
def test_torch_backend_equals_cpu_kernel(chunk, monkeypatch):
    """The GPU path, run on the CPU: in one piece and one dy at a time (ties across chunks)."""
    from latentmotion import estimation

    monkeypatch.setattr(estimation, "_CHUNK", chunk)
    g = torch.Generator().manual_seed(2)
    t = torch.randint(0, 3, (2, 21, 23), generator=g, dtype=torch.uint8)
    assert _same(block_match_torch(t, t.roll(1, 1), 5, 3, False), block_match_reference(t, t.roll(1, 1), 5, 3))
    wide = torch.randint(-(2**20), 2**20, (1, 12, 13), generator=g)  # int64 sums (still exact in the float64 reference)
    assert _same(block_match_torch(wide, wide.roll(1, 2), 3, 2, False), block_match_reference(wide, wide.roll(1, 2), 3, 2))
    a = torch.randint(0, 256, (30, 33), generator=g, dtype=torch.uint8)
    b = torch.roll(a, (2, 3), (0, 1))
    b[10:14, 10:14] = 0
    assert _same(block_match(a, b, 9, 4), block_match_torch(a[None], b[None], 9, 4, False))
    f = torch.rand(3, 20, 21, generator=g)
    assert _same(block_match(f, f.roll(1, 2), 3, 3), block_match_torch(f, f.roll(1, 2), 3, 3, False))


def test_known_shift_borders_and_candidates():
    ref = torch.rand(40, 44, generator=torch.Generator().manual_seed(3))
    cur = torch.roll(ref, shifts=(2, -3), dims=(0, 1))  # content moves down 2, left 3
    v = lm.block_match(ref, cur, 7, 4)  # the top-level name the issue specifies
    b = 3
    assert v[:, :b].eq(0).all() and v[:, -b:].eq(0).all() and v[:, :, :b].eq(0).all() and v[:, :, -b:].eq(0).all()
    assert v[0, 10:30, 10:30].eq(-3).all() and v[1, 10:30, 10:30].eq(2).all()
    ys, xs = torch.meshgrid(torch.arange(40), torch.arange(44), indexing="ij")
    sy, sx = (ys - v[1].long())[b:-b, b:-b], (xs - v[0].long())[b:-b, b:-b]  # reference block centres: inside
    assert (sy >= b).all() and (sy <= 39 - b).all() and (sx >= b).all() and (sx <= 43 - b).all()


def test_each_channel_is_per_channel_joint():
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
    each = block_match(a, b, 3, 2, channels="each")
    assert each.shape == (3, 2, 16, 16)
    for c in range(3):
        assert _same(each[c], block_match(a[c], b[c], 3, 2))
    q = torch.randint(0, 3, (3, 17, 19), generator=g, dtype=torch.uint8)  # integer kernel, tie-rich
    each = block_match(q, q.roll(1, 2), 5, 3, channels="each")
    for c in range(3):
        assert _same(each[c], block_match_reference(q[c], q[c].roll(1, 1), 5, 3))


def test_subpixel_refinement_gets_closer_to_a_fractional_shift():
    img = fit_frame(load_image("astronaut"), 96)
    out, _ = lm.warp_image(img, lm.Affine(tx=2.3, ty=-1.4))
    g0, g1 = img.mean(0), out[0].mean(0)
    integer = block_match(g0, g1, 11, 4)[:, 30:66, 30:66]
    sub = block_match(g0, g1, 11, 4, subpixel=True)[:, 30:66, 30:66]
    truth = torch.tensor([2.3, -1.4])[:, None, None]
    err_int = (integer - truth).norm(dim=0).mean()
    err_sub = (sub - truth).norm(dim=0).mean()
    assert err_sub < 0.6 * err_int
    assert torch.equal(sub.round(), integer) or (sub - integer).abs().max() <= 0.5


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.rand(8, 8), torch.rand(8, 9), 3, 1), "differ in shape"),
        ((torch.rand(8, 8), torch.rand(8, 8), 4, 1), "odd"),
        ((torch.rand(8, 8), torch.rand(8, 8), 9, 1), "larger than the frame"),
        ((torch.rand(8, 8), torch.rand(8, 8), 3, -1), "non-negative"),
        ((torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8), 3, 1), "shape"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(lm.InputError, match=match):
        block_match(*args)


def test_flow_refuses_a_frame_past_the_clip_before_its_model_loads(tmp_path, monkeypatch):
    from latentmotion import models
    from latentmotion.errors import InputError
    from latentmotion.experiments.flowcheck import FlowSettings, flow_report, search_settings

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model loaded before the frames were checked"))
    with pytest.raises(InputError, match="out of range: bikes.mp4 has 250 frames"):
        flow_report(FlowSettings(frames=(0, 999), search=search_settings("code")), tmp_path / "f")
    assert not (tmp_path / "f").exists()
