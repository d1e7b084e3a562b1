"""Video -> edge features: the frame range and the memory a clip needs are checked before any work; the edge runs
a few frames at a time with the same answers as one pass."""

from __future__ import annotations

import pytest
import torch

from latentmotion import _memory, pipeline
from latentmotion.data import read_frames, video_path
from latentmotion.errors import InputError


def test_a_clip_larger_than_the_memory_budget_is_refused_before_decoding(monkeypatch):
    path = video_path("bikes.mp4")
    need = 100 * pipeline.FRAME_COPIES * 3 * 224 * 224 * 4
    monkeypatch.setattr(_memory, "memory_budget", lambda: need - 1)
    monkeypatch.setattr(pipeline, "read_frames", lambda *a, **k: pytest.fail("decoded before refusing"))
    with pytest.raises(InputError, match="100 frames of bikes.mp4 would take about .* ask for fewer frames"):
        pipeline.check_clip_range(path, 0, 100)
    with pytest.raises(InputError, match="fewer frames"):
        pipeline.edge_features("bikes.mp4", None, 0, 100)
    monkeypatch.setattr(_memory, "memory_budget", lambda: need)
    frames, fps, size = pipeline.check_clip_range(path, 0, 100)
    assert frames == 250 and size == (272, 640) and fps > 0


def test_the_edge_runs_in_batches_with_the_answers_of_one_pass(monkeypatch):
    import latentmotion as lm

    split = lm.split_model(lm.load_model("efficientnet_lite0"), "_blocks.4.add")
    monkeypatch.setattr(pipeline, "EDGE_BATCH", 3)  # 7 frames: two full batches and a short one
    clip = pipeline.edge_features("bikes.mp4", split, 5, 7)
    with torch.no_grad():  # other CPUs' kernels may pick other algorithms per batch size: equal up to rounding
        whole = split.edge(read_frames(video_path("bikes.mp4"), range(5, 12), size=224))
    assert torch.allclose(clip.features, whole, rtol=0, atol=1e-5)
    assert clip.features.shape[0] == 7 and clip.total == 250


def test_frames_asked_twice_or_out_of_order_come_back_in_the_order_asked():
    path = video_path("bikes.mp4")
    one = read_frames(path, [2, 0, 2], uint8=True)
    assert torch.equal(one[0], one[2]) and torch.equal(one[1], read_frames(path, [0], uint8=True)[0])
    with pytest.raises(InputError, match="no frames asked for"):
        read_frames(path, [])


def test_features_larger_than_their_frames_are_counted_before_decoding(monkeypatch):
    """The first gate counts frames only; once the cut is known, its features' size is counted too."""
    import latentmotion as lm

    split = lm.split_model(lm.load_model("efficientnet_lite0"), "_blocks.2.add")  # 24 x 56 x 56 floats a frame
    feature = 24 * 56 * 56 * 4
    monkeypatch.setattr(_memory, "memory_budget", lambda: 10 * pipeline.FRAME_COPIES * pipeline.frame_nbytes())  # the first gate passes
    monkeypatch.setattr(pipeline, "read_frames", lambda *a, **k: pytest.fail("decoded before refusing"))
    assert 10 * (pipeline.frame_nbytes() + 10 * feature) > 10 * pipeline.FRAME_COPIES * pipeline.frame_nbytes()
    with pytest.raises(InputError, match="10 frames of bikes.mp4 and their features would take"):
        pipeline.edge_features("bikes.mp4", split, 0, 10, feature_copies=10)
