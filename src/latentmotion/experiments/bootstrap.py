"""How firm a mean over a clip's frames is: a circular block bootstrap over the frames.

A task measure averaged over 96 frames can hinge on a few of them: the mean KL divergence of the
cloud's softmax is dominated by the frames whose top classes nearly tie, and a 3 % change in the
bits moved it by 1-3 dB at one step (carphone, 48 frames). A BD-rate taken on such means carries
that noise. Resampling the frames, the same resample for every curve (the curves are compared on
the same frames), and recomputing the BD-rate shows how far it moves. Neighbouring frames are
alike, so frames are drawn in blocks of consecutive ones (circular, so every frame is drawn as
often); independent frames would understate the spread. The rates stay as measured: only the
distortion is resampled.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_BLOCKS", "block_resamples", "interval"]

#: fewer blocks than this in a clip give no interval: with one block every resample is a rotation of the same
#: frames (the mean never moves), with two or three the resamples are too few to spread as the frames do
MIN_BLOCKS = 4


def block_resamples(n: int, block: int, reps: int, seed: int) -> np.ndarray:
    """(reps, n) frame indices: each row ``ceil(n / block)`` runs of ``block`` consecutive frames (mod ``n``) at
    random starts, cut to ``n``.

    Example:
        >>> idx = block_resamples(10, 4, 3, seed=0)
        >>> idx.shape, bool(((idx[:, 1] - idx[:, 0]) % 10 == 1).all())  # runs of consecutive frames
        ((3, 10), True)
    """
    if n < 1 or block < 1 or reps < 1:
        raise ValueError(f"n, block and reps must be positive, got {n}, {block}, {reps}")
    block = min(block, n)
    starts = np.random.default_rng(seed).integers(0, n, (reps, -(-n // block)))
    runs = (starts[:, :, None] + np.arange(block)) % n
    return runs.reshape(reps, -1)[:, :n]


def interval(values: list[float | None], level: float = 0.9, max_missing: float = 0.1) -> list[float] | None:
    """The central ``level`` interval ``[low, high]`` of bootstrap values; None if more than ``max_missing`` of them
    are missing (a resample whose curves allowed no value), or none are given. Missing values are left out (up to
    ``max_missing`` of them: they could shift the percentiles that much).

    Example:
        >>> interval([float(v) for v in range(101)])
        [5.0, 95.0]
        >>> interval([1.0, None, None]) is None
        True
    """
    got = np.array([v for v in values if v is not None], float)
    if not len(values) or len(got) < (1 - max_missing) * len(values):
        return None
    tail = round(50 * (1 - level), 9)  # 5, not 4.999...: 1 - 0.9 is not 0.1 in floats
    return [float(np.percentile(got, tail)), float(np.percentile(got, 100 - tail))]
