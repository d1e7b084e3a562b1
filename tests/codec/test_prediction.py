"""Prediction stage: integer motion compensation against its definition, and the encoder's vector choice."""

from __future__ import annotations

import numpy as np
import pytest

from latentmotion.codec.prediction import BI, ONE, choose_second, choose_vectors, compensate, predict


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
def test_two_reference_tiles_average_both_predictions_by_the_definition(s):
    """Tiles with bi = 1 are floor((P1 + P2 + 1) / 2) of the two references' own predictions (P1 from ref with v,
    P2 from ref2 with w), the others P1 alone; negative sums round as the arithmetic shift does."""
    rng = np.random.default_rng(3)
    ref, ref2 = rng.integers(-1000, 1000, (2, 3, 9, 10)).astype(np.int64)
    mv = rng.integers(-30, 30, (5, 3, 3)).astype(np.int64)
    mv[BI] = rng.integers(0, 2, (3, 3))
    p1, p2 = _mc_reference(ref, mv[:2], 4, s), _mc_reference(ref2, mv[3:], 4, s)
    flag = np.kron(mv[BI], np.ones((4, 4), np.int64))[:9, :10].astype(bool)
    want = np.where(flag, (p1 + p2 + 1) // 2, p1)
    assert np.array_equal(compensate(ref, ref2, mv, 4, s), want)
    mv[BI] = 0
    assert np.array_equal(compensate(ref, ref2, mv, 4, s), p1)


def test_a_second_reference_is_taken_where_averaging_removes_noise():
    """Two references, each the same content plus its own noise: the average of both predicts better than
    either, so (at no cost for bits) every tile takes it, with w = 2 v for content moving at constant speed."""
    rng = np.random.default_rng(8)
    clean = rng.normal(0, 50, (4, 24, 24))
    cur = np.roll(clean, (0, 2), (1, 2)) * ONE  # moved 2 right since ref, 4 since ref2
    ref = ((np.roll(clean, (0, 0), (1, 2)) + rng.normal(0, 10, clean.shape)) * ONE).round().astype(np.int64)
    ref2 = ((np.roll(clean, (0, -2), (1, 2)) + rng.normal(0, 10, clean.shape)) * ONE).round().astype(np.int64)
    mv = np.zeros((2, 6, 6), np.int64)
    mv[0] = 2 * 4  # the vector from ref, quarter pel
    field = choose_second(ref, ref2, np.ascontiguousarray(cur), mv, 4, 4, 0.0, 1)
    inner = np.s_[1:5, 1:5]  # tiles whose sources lie inside the planes
    assert field[BI][inner].all() and (field[3][inner] == 16).all() and (field[4][inner] == 0).all()
    err = lambda p: ((cur - p) ** 2)[:, 4:20, 4:20].sum()
    assert err(compensate(ref, ref2, field, 4, 4)) < 0.7 * err(predict(ref, field, 4, 4))
    assert not choose_second(ref, ref2, np.ascontiguousarray(cur), mv, 4, 4, 1e12, 1)[BI].any()  # bits at any price: never




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
