"""The block bootstrap of the frames, and the intervals it puts on the goal's KL BD-rates."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from latentmotion.experiments.bootstrap import block_resamples, interval
from latentmotion.experiments.codec_eval import _bd, _curve, kl_intervals


def test_resamples_are_circular_runs_that_draw_every_frame_alike():
    idx = block_resamples(30, 8, 4000, seed=1)
    assert idx.shape == (4000, 30) and idx.min() >= 0 and idx.max() < 30
    runs = idx[:, :24].reshape(4000, 3, 8)
    assert ((np.diff(runs, axis=2) % 30) == 1).all()  # each block is 8 consecutive frames, wrapping at the end
    counts = np.bincount(idx.ravel(), minlength=30) / idx.size
    assert np.abs(counts - 1 / 30).max() < 0.1 / 30  # circular: the last frames are drawn as often as the middle ones
    assert np.array_equal(block_resamples(30, 8, 5, seed=2), block_resamples(30, 8, 5, seed=2))
    assert not np.array_equal(block_resamples(30, 8, 5, seed=2), block_resamples(30, 8, 5, seed=3))
    with pytest.raises(ValueError):
        block_resamples(0, 8, 5, seed=0)


def test_interval_is_the_central_share_and_refuses_too_many_missing_values():
    assert interval([float(v) for v in range(101)], level=0.5) == [25.0, 75.0]
    assert interval([1.0] * 9 + [None]) == [1.0, 1.0]  # 10 % missing: still an interval
    assert interval([1.0] * 8 + [None] * 2) is None
    assert interval([]) is None


def _rows(frames_kl: dict, rates: dict, floor_db: float = 40.0):
    """A stand-in for the evaluation's row builder: configs' operating points and their KL per frame."""
    rows, kl = [], []
    for name, per_point in frames_kl.items():
        for r, k in zip(rates[name], per_point, strict=True):
            rows.append({"config": name, "kbps": r, "task_db": float(-10 * np.log10(k.mean()))})
            kl.append(k)
    return SimpleNamespace(rows=rows, kl_frames=kl), np.full(len(kl[0]), 10 ** (-floor_db / 10))


def test_kl_interval_of_a_curve_at_half_the_rate_is_minus_50_whatever_the_frames():
    rng = np.random.default_rng(0)
    per_point = [rng.gamma(1.0, s, 48) for s in (0.2, 0.1, 0.05, 0.02)]  # noisy frames, shared by both curves
    rows, floor = _rows({"x265_ldp": per_point, "kltw": per_point}, {"x265_ldp": [100, 200, 400, 800], "kltw": [50, 100, 200, 400]})
    goal = {"best_mode": "kltw", "best_vs_x265_ldp_kl": -50.0}
    iv = kl_intervals(rows, floor, goal, seed=0)["best_vs_x265_ldp_kl_interval"]
    assert iv == pytest.approx([-50.0, -50.0], abs=0.5)


def test_kl_interval_holds_the_estimate_and_widens_with_noisier_frames():
    rng = np.random.default_rng(1)
    rates = {"x265_ldp": [100, 200, 400, 800], "kltw": [60, 120, 240, 480]}

    def widths(spread):
        ref = [rng.gamma(1 / spread, s * spread, 96) for s in (0.2, 0.1, 0.05, 0.02)]
        ours = [rng.gamma(1 / spread, s * spread, 96) for s in (0.2, 0.1, 0.05, 0.02)]
        rows, floor = _rows({"x265_ldp": ref, "kltw": ours}, rates)
        est = _bd(*_curve(rows.rows, "x265_ldp", "task_db"), *_curve(rows.rows, "kltw", "task_db"))
        lo, hi = kl_intervals(rows, floor, {"best_mode": "kltw", "best_vs_x265_ldp_kl": est}, seed=0)["best_vs_x265_ldp_kl_interval"]
        assert lo <= est <= hi
        return hi - lo

    assert widths(0.1) < widths(4.0)  # gamma shape 10 (frames alike) against 0.25 (a few frames dominate the mean)


def test_kl_interval_against_remote_inference_takes_the_stronger_codec_in_each_resample():
    rng = np.random.default_rng(2)
    pts = [rng.gamma(1.0, s, 48) for s in (0.2, 0.1, 0.05, 0.02)]
    rates = {"x265_ldp": [100, 200, 400, 800], "remote_x265_net": [100, 200, 400, 800], "remote_svtav1_net": [50, 100, 200, 400], "kltw": [50, 100, 200, 400]}
    rows, floor = _rows({n: pts for n in rates}, rates)
    goal = {"best_mode": "kltw", "best_vs_x265_ldp_kl": -50.0, "best_vs_remote_net_kl": 0.0}
    iv = kl_intervals(rows, floor, goal, seed=0)
    assert iv["best_vs_remote_net_kl_interval"] == pytest.approx([0.0, 0.0], abs=0.5)  # not -50: SVT-AV1 ties with us


def test_a_clip_of_too_few_blocks_gets_no_interval():
    pts = [np.full(24, k) for k in (0.2, 0.1, 0.05, 0.02)]  # 3 blocks of 8 frames
    rows, floor = _rows({"x265_ldp": pts, "kltw": pts}, {"x265_ldp": [100, 200, 400, 800], "kltw": [50, 100, 200, 400]})
    assert kl_intervals(rows, floor, {"best_mode": "kltw", "best_vs_x265_ldp_kl": -50.0}, seed=0) == {}
