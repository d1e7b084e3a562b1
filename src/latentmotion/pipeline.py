"""Video -> edge features: the one path every application takes from a clip to tensors.

Example:
    >>> import latentmotion as lm
    >>> from latentmotion.pipeline import edge_features
    >>> split = lm.split_model(lm.load_model("efficientnet_lite0"), "_blocks.4.add")
    >>> clip = edge_features("bikes.mp4", split, start=0, count=2)
    >>> tuple(clip.features.shape), clip.gray.dtype
    ((2, 40, 28, 28), torch.uint8)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import _memory
from .data import read_frames, to_gray, video_info, video_path
from .errors import InputError
from .models import Split

__all__ = ["Clip", "check_clip_range", "check_frame_range", "edge_features", "gray8"]

#: what a command holds per frame of a clip, in fitted float frames: the frame itself, its edge features and the
#: codec's copies of them (coordinates, reconstructions; cuts at stride 4 and deeper carry at most the input's values)
FRAME_COPIES = 4
EDGE_BATCH = 16  # frames per edge pass: the edge's activations stay those of a few frames however long the clip


@dataclass
class Clip:
    """Frames of a video and their edge features.

    Attributes:
        frames: (N, 3, S, S) RGB in [0, 1], centre-cropped and resized.
        gray: (N, S, S) uint8 luma of ``frames`` (for input-space motion).
        features: (N, C, h, w) edge sub-model outputs.
        fps: the video's frame rate.
        total: number of frames in the whole video.
    """

    frames: torch.Tensor
    gray: torch.Tensor
    features: torch.Tensor
    fps: float
    total: int


def gray8(frames: torch.Tensor) -> torch.Tensor:
    """RGB (N, 3, H, W) in [0, 1] -> uint8 BT.601 luma (N, H, W)."""
    return (to_gray(frames) * 255).round().clamp(0, 255).to(torch.uint8)


def check_frame_range(start: int, count: int, total: int, name: str) -> None:
    """Refuse a frame range before any decoding: ``start >= 0``, ``count >= 1``, inside the clip."""
    if start < 0 or count < 1:
        raise InputError(f"frames must start at 0 or later and number at least 1, got start {start}, count {count}")
    if start + count > total:
        raise InputError(f"frames {start}..{start + count - 1} out of range: {name} has {total} frames")


def check_clip_range(path: Path, start: int, count: int, size: int = 224) -> tuple[int, float, tuple[int, int]]:
    """Refuse, before any model loads, a frame range past the clip at ``path`` or more frames than this process can
    hold at ``size`` x ``size`` (:data:`FRAME_COPIES` float frames each); returns the clip's
    :func:`~latentmotion.data.video_info` ``(frames, fps, (H, W))``.

    The length is the clip's packets counted, nothing decoded; ``InputError`` also for a file that is no video or
    whose frames are too large. Check the numbers themselves with :func:`check_frame_range` before the video is opened.
    """
    info = video_info(path)
    check_frame_range(start, count, info[0], path.name)
    need, budget = count * FRAME_COPIES * 3 * size * size * 4, _memory.memory_budget()
    if need > budget:
        raise InputError(f"{count} frames of {path.name} would take about {need / 2**30:.1f} GiB; this process may hold "
                         f"{budget / 2**30:.1f} GiB: ask for fewer frames")
    return info


@torch.no_grad()
def edge_features(video: str, split: Split, start: int = 0, count: int = 24, size: int = 224) -> Clip:
    """Decode frames ``start .. start + count - 1`` of ``video`` and run the edge sub-model.

    ``video`` is a file path or the name of a bundled clip (``bikes.mp4``,
    ``carphone_pristine.mp4``). The range is checked against the clip's length
    and the memory the frames need (:func:`check_clip_range`) before any frame
    is decoded, so a huge ``count`` fails at once; the edge then runs
    :data:`EDGE_BATCH` frames at a time (the same values as one pass).
    """
    path = video_path(video)
    total, fps, _ = check_clip_range(path, start, count, size)
    frames = read_frames(path, range(start, start + count), size=size)
    features = torch.cat([split.edge(frames[i : i + EDGE_BATCH]) for i in range(0, count, EDGE_BATCH)])
    return Clip(frames, gray8(frames), features, fps, total)
