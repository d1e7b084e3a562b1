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
    with torch.no_grad():
        assert torch.equal(clip.features, split.edge(read_frames(video_path("bikes.mp4"), range(5, 12), size=224)))
    assert clip.features.shape[0] == 7 and clip.total == 250


def test_frames_asked_twice_or_out_of_order_come_back_in_the_order_asked():
    path = video_path("bikes.mp4")
    one = read_frames(path, [2, 0, 2], uint8=True)
    assert torch.equal(one[0], one[2]) and torch.equal(one[1], read_frames(path, [0], uint8=True)[0])
    with pytest.raises(InputError, match="at least one"):
        read_frames(path, [])
