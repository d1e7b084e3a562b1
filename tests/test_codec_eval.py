"""Codec evaluation (experiments.codec_eval) and its standard-codec anchors (experiments.codec_anchors)."""

from __future__ import annotations

import pytest
import torch

from latentmotion.experiments.codec_anchors import ANCHORS, SIDE_BITS, code_anchor, tile, untile
from latentmotion.experiments.codec_eval import _bd, _envelope


def test_tiling_pads_to_multiples_of_8_and_inverts():
    x = torch.arange(5 * 3 * 10, dtype=torch.float32).reshape(5, 3, 10)
    p = tile(x)
    assert p.shape == (2 * 8, 3 * 16)  # 3 columns of 16 x 8 channel tiles, 2 rows
    assert torch.equal(untile(p, x.shape), x)
    assert p[0, 10] == x[0, 0, 9] and p[7, 0] == x[0, 2, 0]  # edge replicate padding


@pytest.mark.parametrize("name", ANCHORS)
def test_anchor_is_nearly_lossless_at_high_quality_and_counts_side_bits(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 12, 12, generator=g).cumsum(-1)
    dec, bits = code_anchor(x, name, 4)
    span = float(x.max() - x.min())
    err = (dec - x).abs()
    # 10-bit and a near-lossless QP: the key frame is close everywhere; SVT-AV1's low-delay
    # structure raises the QP of later frames, so those are only close on average
    assert dec.shape == x.shape and float(err[0].max()) < 0.02 * span and float(err.mean()) < 0.03 * span
    _, bits_low = code_anchor(x, name, 45)
    assert bits_low < bits and bits_low > SIDE_BITS * len(x)


def test_bd_rate_of_a_curve_at_half_the_rate_is_minus_50_percent():
    r = [100.0, 200.0, 400.0, 800.0]
    d = [30.0, 33.0, 36.0, 39.0]
    assert _bd(r, d, [v / 2 for v in r], d) == pytest.approx(-50.0, abs=0.5)
    assert _bd(r, d, r, d) == pytest.approx(0.0, abs=1e-6)
    assert _envelope([1, 2, 3], [5, 4, 6]) == ([1, 3], [5, 6])  # a costlier point of lower quality is never picked
    assert _bd(r[:1], d[:1], r, d) is None
