"""Prediction stage: integer motion compensation against its definition, and the encoder's vector choice."""

from __future__ import annotations

import numpy as np
import pytest

from latentmotion.codec.prediction import ONE, choose_vectors, predict


def _mc_reference(ref: np.ndarray, mv: np.ndarray, block: int, s: int) -> np.ndarray:
    """Bilinear interpolation by its definition with Python integers: floor(sum / s^2 + 1/2), border replicate."""
    c, h, w = ref.shape
    out = np.zeros_like(ref)
    for y in range(h):
        for x in range(w):
            vx, vy = (int(v) for v in mv[:, y // block, x // block])
            sy, sx = s * y - vy, s * x - vx
            iy, ix = sy // s, sx // s  # Python floor division
            fy, fx = sy - s * iy, sx - s * ix
            cy = lambda k: min(max(k, 0), h - 1)  # noqa: E731
            cx = lambda k: min(max(k, 0), w - 1)  # noqa: E731
            for ch in range(c):
                acc = (s - fx) * (s - fy) * int(ref[ch, cy(iy), cx(ix)]) + fx * (s - fy) * int(ref[ch, cy(iy), cx(ix + 1)])
                acc += (s - fx) * fy * int(ref[ch, cy(iy + 1), cx(ix)]) + fx * fy * int(ref[ch, cy(iy + 1), cx(ix + 1)])
                out[ch, y, x] = (2 * acc + s * s) // (2 * s * s)  # round half up
    return out


@pytest.mark.parametrize("s", [1, 4])
def test_integer_motion_compensation_matches_its_definition(s):
    rng = np.random.default_rng(2)
    ref = rng.integers(-1000, 1000, (3, 9, 10)).astype(np.int64)
    mv = rng.integers(-30, 30, (2, 3, 3)).astype(np.int64)
    assert np.array_equal(predict(ref, mv, 4, s), _mc_reference(ref, mv, 4, s))
    whole = np.zeros((2, 3, 3), np.int64)
    whole[0] = 2 * s  # two pixels right, integer: a pure shift inside the frame
    assert np.array_equal(predict(ref, whole, 4, s)[:, :, 2:], ref[:, :, :-2])




@pytest.mark.parametrize("s", [1, 4])
def test_chosen_vectors_are_never_worse_than_the_candidates_and_find_a_shift(s):
    """A plane moved by a whole shift: choose_vectors recovers it from the true candidate; and no tile's chosen
    vector predicts worse (plus its bits) than zero motion, by brute force over the tile's error."""
    rng = np.random.default_rng(6)
    ref = (rng.normal(0, 50, (3, 16, 16)) * ONE).round().astype(np.int64)
    cur = np.roll(ref, (2, -1), (1, 2)).astype(np.float64)  # content moved down 2, left 1
    block = 4
    cand = np.zeros((2, 4, 4), np.int64)
    cand[0], cand[1] = -1 * s, 2 * s  # (vx, vy) in 1/s units
    mv = choose_vectors(ref, cur, cand, block, s, 0.0, 1)
    inner = mv[:, 1:3, 1:3]  # tiles whose source lies inside the plane (borders replicate)
    assert (inner[0] == -s).all() and (inner[1] == 2 * s).all()
    pred = predict(ref, mv, block, s)
    zero = predict(ref, np.zeros_like(mv), block, s)
    for i in range(4):
        for j in range(4):
            t = np.s_[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
            assert ((cur[t] - pred[t]) ** 2).sum() <= ((cur[t] - zero[t]) ** 2).sum() + 1e-6
