"""Prediction stage: integer motion compensation against its definition."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import latentmotion as lm
from latentmotion.codec.bitstream import Header
from latentmotion.codec.prediction import predict
from latentmotion.data import fit_frame, read_frames, video_path

from ..conftest import model


@pytest.fixture(scope="module")
def clip():
    split = lm.split_model(model("efficientnet_lite0"), "_blocks.4.add")
    frames = fit_frame(read_frames(video_path("bikes.mp4"), range(6)))
    with torch.no_grad():
        feats = split.edge(frames)
    return split, frames, feats


def _header(shape=(2, 4, 4), **kw) -> Header:
    f = dict(model="m", layer="l", weights="w", shape=shape, step=1.0, mode=0, block=4, mblock=2, search=4, subpel=1, intra_period=0, fps=25.0)
    f.update(kw)
    return Header(**f)




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


