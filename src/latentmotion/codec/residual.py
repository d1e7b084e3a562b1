"""The residual stage: offsets, dead-zone quantisation, rate-distortion-optimised levels, reconstruction.

Convention: the decoder state ``R`` is int64 in units of ``step / ONE``
(``ONE = 16``); a frame codes ``R = P + G q + o[c]`` with ``P`` the
prediction (zeros for intra), ``q`` the levels, ``G`` the frame's gain
(16 to 255, :data:`latentmotion.codec.bitstream.MAX_GAIN`: a level is ``G / ONE`` steps; ``G = ONE`` is the
stream's step, a larger ``G`` a coarser one, as x265's ``ipratio`` coarsens P
frames) and ``o`` one offset per channel (its mean residual, 1/ONE step, moved towards 0 where
that pays: :func:`shrink_offsets`). The decoder runs only
:func:`reconstruct`; everything else here is the encoder's choice, coded by the
syntax (:mod:`latentmotion.codec.syntax`; :func:`rdoq` codes each tile as it decides it). A transform of the
residual, or per-channel weights of its error, would go here: between
:func:`quantise` and the syntax on the encoder's side, in :func:`reconstruct`
on both.

Example:
    >>> import numpy as np
    >>> xs = np.array([[[0.2, 1.6], [-2.4, 0.1]]])  # (C, H, W), in steps
    >>> pred = np.zeros((1, 2, 2), np.int64)
    >>> dc = offsets(xs, pred)
    >>> d, q, _ = quantise(xs, pred, dc, 0.5, ONE)
    >>> q.tolist(), int(dc[0])
    ([[[0, 2], [-2, 0]]], -2)
    >>> quantise(xs, pred, dc, 0.5, 32)[1].tolist()  # a gain of 32: levels of two steps
    [[[0, 1], [-1, 0]]]
    >>> reconstruct(pred, q, dc, ONE).tolist()  # 1/16 steps
    [[[-2, 30], [-34, -2]]]
"""

from __future__ import annotations

from collections import namedtuple

import numba as nb
import numpy as np

from .prediction import ONE, tile_box
from .syntax import SNAPSHOT, any_level, code_tile, count_activity, flag_bits, inherit, level_bits, level_ctx, min_level_bits, offset_bits, restore, snapshot

__all__ = ["MAX_LEVEL", "MAX_Q", "ONE", "offsets", "quantise", "rdoq", "reconstruct", "shrink_offsets"]

MAX_LEVEL = 1 << 24  # |R| bound: exact in float32, and the decoder refuses more
MAX_Q = (1 << 16) - 1  # |q| bound of the Exp-Golomb binarisation

#: what rate-distortion-optimised quantisation weighs: the residual ``d`` (step units), the Lagrange
#: multiplier ``lam`` (squared error per bit), the extra weight ``wm`` of each tile's mean error, scratch
Rdo = namedtuple("Rdo", "d lam wm saved rest")


@nb.njit(cache=True)
def offsets(xs, pred):
    """Per channel, the mean of ``ONE xs - pred`` (units of 1/ONE step), rounded (encoder only).

    Clamped to ``|offset| <= MAX_Q`` and so that no residual ``ONE xs - pred - offset`` exceeds
    ``ONE MAX_Q`` (a level the coder can send); the interval holds 0 whenever every
    ``|xs - pred / ONE| <= MAX_Q``, which the encoder's input bound (``|xs| <= MAX_Q // 2``) keeps.
    """
    dc = np.zeros(xs.shape[0], np.int64)
    for c in range(xs.shape[0]):
        t, lo, hi = 0.0, -np.inf, np.inf
        xf, pf = xs[c].ravel(), pred[c].ravel()
        for i in range(xf.shape[0]):
            r = xf[i] * ONE - pf[i]
            t += r
            lo = max(lo, r - ONE * MAX_Q)
            hi = min(hi, r + ONE * MAX_Q)
        m = min(max(np.floor(t / xf.shape[0] + 0.5), np.ceil(lo), -MAX_Q), np.floor(hi), MAX_Q)
        dc[c] = int(m)
    return dc


@nb.njit(cache=True)
def shrink_offsets(e, probs, xs, pred, dc, lam, wm, gain):
    """Move each channel's offset ``dc[c]`` towards 0 (in place) where the bits saved outweigh the error of the channel's
    mean left behind (encoder only; rate-distortion, as RDOQ weighs levels).

    Cost in level units (``gain / ONE`` steps), as :func:`rdoq`'s: ``(1 + wm) N ((m - o) / gain)^2 + lam bits(o)``, ``m``
    the mean of ``ONE xs - pred`` over the channel's ``N`` elements (a mean error counts in RDOQ's squared error and in
    its tile-mean term alike), ``bits`` those of :func:`~latentmotion.codec.syntax.offset_bits` with the contexts as
    they are at the frame's start (the shared sign and Exp-Golomb contexts adapt between channels when coded: a small
    approximation). Candidates: ``0`` and the 32 values from ``dc[c]`` towards 0. At coarse steps a channel's mean
    moves by a fraction of a step from frame to frame, and offsets of 1-3 sixteenths cost more bits than their error
    is worth.

    Returns the energy (steps^2) the shrinking adds to the residual: its mean part, ``N ((m - o) / ONE)^2`` against
    ``N ((m - dc[c]) / ONE)^2`` (what the scene-cut test must leave out: it judges the prediction, not the offsets).
    """
    n = xs[0].size
    added = 0.0
    for c in range(xs.shape[0]):
        if dc[c] == 0:
            continue
        m = 0.0
        xf, pf = xs[c].ravel(), pred[c].ravel()
        for i in range(n):
            m += xf[i] * ONE - pf[i]
        m /= n
        sgn = 1 if dc[c] > 0 else -1
        best, best_cost = 0, (1 + wm) * n * (m / gain) ** 2 + lam * offset_bits(e, probs, c, 0)
        for k in range(min(abs(dc[c]), 32)):
            o = dc[c] - sgn * k
            cst = (1 + wm) * n * ((m - o) / gain) ** 2 + lam * offset_bits(e, probs, c, o)
            if cst < best_cost:
                best, best_cost = o, cst
        added += n * (((m - best) / ONE) ** 2 - ((m - dc[c]) / ONE) ** 2)
        dc[c] = best
    return added


@nb.njit(cache=True)
def quantise(xs, pred, dc, f, gain):
    """Residual ``d = (ONE xs - pred - dc) / gain`` (level units), its dead-zone levels ``q = sign(d) floor(|d| + f)``
    (|q| <= MAX_Q, and |pred + gain q + dc| <= MAX_LEVEL) and the residual's energy in steps^2, in one pass (encoder only)."""
    d = np.empty_like(xs)
    q = np.empty(xs.shape, np.int64)
    e = 0.0
    for c in range(xs.shape[0]):
        xf, pf, df, qf = xs[c].ravel(), pred[c].ravel(), d[c].ravel(), q[c].ravel()
        for i in range(xf.shape[0]):
            t = pf[i] + dc[c]
            r = xf[i] - t / ONE
            e += r * r
            r *= ONE / gain
            df[i] = r
            a = int(min(np.floor(abs(r) + f), MAX_Q))
            v = a if r > 0 else (-a if r < 0 else 0)
            if abs(t) + gain * a > MAX_LEVEL:  # only then can the level bound bite (integer divisions are slow)
                v = min(max(v, -((MAX_LEVEL + t) // gain)), (MAX_LEVEL - t) // gain)
            qf[i] = v
    return d, q, e


def reconstruct(pred: np.ndarray, q: np.ndarray, dc: np.ndarray, gain: int) -> np.ndarray:
    """The decoder state: ``R = P + gain * q + dc[c]`` (int64, units of step / ONE), built in ``pred``'s memory
    (``pred`` and ``q`` are used up: no whole-tensor temporaries, which the decoder's memory bound counts)."""
    q *= gain
    pred += q
    pred += dc[:, None, None]
    return pred


def rdoq(e, probs: np.ndarray, f, d: np.ndarray, lam: float, wm: float) -> None:
    """Rate-distortion-optimised levels, in place in ``f.q`` (``f``: :class:`latentmotion.codec.syntax.Levels`),
    each tile coded into the range encoder ``e`` as soon as it is decided (``probs`` adapts as coding does).

    ``d``, the squared errors and so ``lam`` are in level units (a frame's gain / ONE steps).
    Tiles are decided in coding order with the contexts as coding the tiles before them leaves them.
    Cost: squared error + ``lam`` * bits + ``wm`` * (sum of a tile's errors)^2 / its size (local means
    steer the task more than their share of the squared error). The same bytes as deciding every tile
    first and then :func:`~latentmotion.codec.syntax.encode_levels`, in one pass.
    """
    _rdoq(e, probs, f, Rdo(d, lam, wm, np.empty(SNAPSHOT, np.int64), np.empty(f.block * f.block + 1)))


@nb.njit(cache=True)
def _rdoq(e, probs, f, r):
    for c in range(f.q.shape[0]):
        inherit(probs, c)  # before the bound and any trial: they see the states coding starts from
        known = -1  # the tile size whose fewest level bits ``fewest`` holds for the channel's level contexts as they are
        fewest = 0.0
        for i in range(f.cbf.shape[0]):
            for j in range(f.cbf.shape[1]):
                y0, y1, x0, x1 = tile_box(f.q.shape[1], f.q.shape[2], f.block, i, j)
                if any_level(f.q, c, y0, y1, x0, x1):  # levels only move towards zero: else nothing to decide
                    n = (y1 - y0) * (x1 - x0)
                    if known != n:  # scanning the level contexts costs as much as a trial: once per change of them
                        known, fewest = n, min_level_bits(probs, c, n)
                    _tile(e, probs, f, r, c, i, j, fewest)  # trials only cost (they never write to e)
                code_tile(e, probs, f, c, i, j, 0)
                if f.cbf[i, j]:  # its levels adapted the level contexts (a skipped tile codes only its flag)
                    known = -1
        count_activity(f, c)


@nb.njit(cache=True, inline="always")
def _skip_bounds(f, r, c, i, j, fewest, j_skip):
    """The cost of skipping tile (i, j), given ``j_skip`` = its flag's cost (lam * bits), and in ``r.rest[k]`` a
    lower bound of what coding its levels k.. costs.

    Level k costs at least min(d^2, (|d| - a)^2 + lam * fewest), a >= 1 the nearest integer and ``fewest`` the
    fewest bits of any non-zero level (:func:`~latentmotion.codec.syntax.min_level_bits`); zeros cost at least
    nothing. Once the trial's cost so far plus ``rest`` reaches the skip cost, the tile is skipped whatever the
    remaining levels are.
    """
    y0, y1, x0, x1 = tile_box(f.q.shape[1], f.q.shape[2], f.block, i, j)
    n = (y1 - y0) * (x1 - x0)
    k = 0
    sr = 0.0
    for y in range(y0, y1):
        for x in range(x0, x1):
            sr += r.d[c, y, x]
            a = abs(r.d[c, y, x])
            j_skip += a * a
            t = max(1.0, np.floor(a + 0.5))
            r.rest[k] = min(a * a, (a - t) * (a - t) + r.lam * fewest)
            k += 1
    r.rest[n] = 0.0
    for k in range(n - 1, -1, -1):
        r.rest[k] += r.rest[k + 1]
    return j_skip + r.wm * sr * sr / n  # the mean term; not in the bounds, which stay lower bounds


@nb.njit(cache=True, inline="always")
def _tile(e, probs, f, r, c, i, j, fewest):
    """One tile's levels (greedy in coding order, each |q|, |q| - 1 or 0, bits from the live contexts),
    then the whole tile against skipping it; the contexts the trial adapts are restored after it.
    ``fewest``: :func:`~latentmotion.codec.syntax.min_level_bits` for the tile."""
    q = f.q
    y0, y1, x0, x1 = tile_box(q.shape[1], q.shape[2], f.block, i, j)
    j_skip = _skip_bounds(f, r, c, i, j, fewest, r.lam * flag_bits(probs, f, c, i, j, 0))
    nt = (y1 - y0) * (x1 - x0)
    se = 0.0  # the tile's error sum so far: its mean weighs wm extra
    margin = 1e-9 * (1.0 + j_skip)  # bounds summed in another order: decide early only when clear
    j_coded = r.lam * flag_bits(probs, f, c, i, j, 1)
    if j_coded + r.rest[0] > j_skip + margin:
        q[c, y0:y1, x0:x1] = 0
        return
    snapshot(probs, c, r.saved)
    coded = False
    k = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            if j_coded + r.rest[k] > j_skip + margin:  # skipping wins whatever follows
                coded = False
                break
            k += 1
            d = r.d[c, y, x]
            ctx = level_ctx(f, c, y, x)
            a0 = abs(q[c, y, x])
            sg = -1 if d < 0 else 1
            best, bv, bp = 1e300, 0, 0.0  # cost with and without the mean term, level
            for a in (a0, a0 - 1, 0):
                if a < 0 or (a == 0 and a0 > 2):
                    continue
                v = sg * a
                cost = (d - v) * (d - v) + r.lam * level_bits(e, probs, c, ctx, v, 2)
                cm = cost + r.wm * ((se + d - v) ** 2 - se * se) / nt
                if cm < best:
                    best, bv, bp = cm, v, cost
                if a == 0:
                    break
            q[c, y, x] = bv
            level_bits(e, probs, c, ctx, bv, 1)
            j_coded += bp  # without the mean term: with rest, a lower bound of the final cost
            se += d - bv
            coded = coded or bv != 0
        else:
            continue
        break
    restore(probs, c, r.saved)
    if not coded or j_skip <= j_coded + r.wm * se * se / nt:
        q[c, y0:y1, x0:x1] = 0
