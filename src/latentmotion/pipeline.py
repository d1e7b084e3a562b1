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

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import _memory
from .data import read_frames, to_gray, video_info, video_path
from .errors import InputError
from .models import Split

__all__ = ["Clip", "check_clip_range", "check_frame_range", "check_memory", "edge_features", "frame_nbytes", "gray8", "in_batches"]

#: the first gate, before any model loads: fitted float frames a command holds per frame of a clip (the frame, and
#: room for its features at the default cuts); :func:`edge_features` checks again once the features' size is known
FRAME_COPIES = 4
#: what encoding holds of each frame's features: the features, their coordinates in a channel transform, the
#: codec's reconstructions
FEATURE_COPIES = 3
EDGE_BATCH = 16  # frames per network pass: the activations stay those of a few frames however long the clip


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


def frame_nbytes(size: int = 224) -> int:
    """Bytes of one fitted float frame (3 x size x size float32)."""
    return 3 * size * size * 4


def check_memory(need: int, what: str) -> None:
    """Refuse work that would hold ``need`` bytes where this process may hold less (:func:`latentmotion._memory.memory_budget`)."""
    budget = _memory.memory_budget()
    if need > budget:
        raise InputError(f"{what} would take about {need / 2**30:.1f} GiB; this process may hold {budget / 2**30:.1f} GiB: ask for fewer frames")


def check_clip_range(path: Path, start: int, count: int, per_frame: Callable[[int, int], int] | None = None) -> tuple[int, float, tuple[int, int]]:
    """Refuse, before any model loads, a frame range past the clip at ``path`` or more frames than this process can
    hold, ``per_frame(H, W)`` bytes each (default :data:`FRAME_COPIES` fitted float frames); returns the clip's
    :func:`~latentmotion.data.video_info` ``(frames, fps, (H, W))``.

    The length is the clip's packets counted, nothing decoded; ``InputError`` also for a file that is no video or
    whose frames are too large. Check the numbers themselves with :func:`check_frame_range` before the video is opened.
    """
    info = video_info(path)
    check_frame_range(start, count, info[0], path.name)
    each = FRAME_COPIES * frame_nbytes() if per_frame is None else per_frame(*info[2])
    check_memory(count * each, f"{count} frames of {path.name}")
    return info


def in_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """``fn(x)`` computed :data:`EDGE_BATCH` (or ``n``) frames at a time: a network's activations stay those of a few
    frames however long the clip (the same values as one pass for per-frame networks in eval mode)."""
    n = n or EDGE_BATCH
    return torch.cat([fn(x[i : i + n]) for i in range(0, len(x), n)])


@torch.no_grad()
def edge_features(video: str, split: Split, start: int = 0, count: int = 24, size: int = 224, feature_copies: int = FEATURE_COPIES,
                  extra_per_frame: int = 0) -> Clip:
    """Decode frames ``start .. start + count - 1`` of ``video`` and run the edge sub-model.

    ``video`` is a file path or the name of a bundled clip (``bikes.mp4``,
    ``carphone_pristine.mp4``). The range is checked against the clip's length
    and, before any frame is decoded, against the memory the frames and
    ``feature_copies`` copies of their features need (a cut's features may
    hold several times the input's values), with ``extra_per_frame`` bytes of
    the caller's own per frame, so a huge ``count`` fails at once;
    the edge then runs :data:`EDGE_BATCH` frames at a time.
    """
    path = video_path(video)
    total, fps, _ = check_clip_range(path, start, count)
    feature = math.prod(split.feature_shape(size)) * 4  # one frame's features, in bytes
    check_memory(count * (frame_nbytes(size) + feature_copies * feature + extra_per_frame), f"{count} frames of {path.name} and their features")
    frames = read_frames(path, range(start, start + count), size=size)
    return Clip(frames, gray8(frames), in_batches(split.edge, frames), fps, total)
