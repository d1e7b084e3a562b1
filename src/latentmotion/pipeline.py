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

from .data import read_frames, to_gray, video_info, video_path
from .errors import InputError
from .models import Split

__all__ = ["Clip", "check_clip_range", "check_frame_range", "edge_features", "gray8"]


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


def check_clip_range(path: Path, start: int, count: int) -> None:
    """Refuse a frame range past the clip at ``path`` before any model loads: its length is its packets counted,
    nothing decoded (check the numbers themselves with :func:`check_frame_range` before the video is opened)."""
    check_frame_range(start, count, video_info(path)[0], path.name)


@torch.no_grad()
def edge_features(video: str, split: Split, start: int = 0, count: int = 24, size: int = 224) -> Clip:
    """Decode frames ``start .. start + count - 1`` of ``video`` and run the edge sub-model.

    ``video`` is a file path or the name of a bundled clip (``bikes.mp4``,
    ``carphone_pristine.mp4``). The range is checked against the clip's length
    before any frame is decoded, so a huge ``count`` fails at once.
    """
    path = video_path(video)
    total, fps, _ = video_info(path)
    check_frame_range(start, count, total, path.name)
    frames = read_frames(path, range(start, start + count), size=size)
    return Clip(frames, gray8(frames), split.edge(frames), fps, total)
