"""Integer motion compensation of reconstruction levels, and the encoder's motion search.

Convention: one vector ``v = (vx, vy)`` per ``mblock x mblock`` tile, in units of
``1 / subpel`` latent pixel, shared by all channels (Eq. 12: one motion for
every channel of a layer). The prediction of level ``R`` at ``(c, y, x)`` in
a tile with vector ``v`` is the reference at ``(y, x) - v``::

    sy = subpel * y - vy,  iy = floor(sy / subpel),  fy = sy - subpel * iy   (same for x)
    A, B, C, D = R[c, clampy(iy), clampx(ix)], R[.., ix + 1], R[iy + 1, ix], R[iy + 1, ix + 1]
    P = ((s - fx)(s - fy) A + fx (s - fy) B + (s - fx) fy C + fx fy D + s*s/2) >> (2 log2 s)

with ``s = subpel`` (1 or 4), coordinates clamped to the tensor (border
replicate) and ``>>`` an arithmetic shift (floor). Integers only: every
machine computes the same prediction.

Two references: a frame's motion field is ``mv`` (5, nh, nw) int64, rows
``(vx, vy, bi, wx, wy)``. A tile with ``bi = 1`` averages the prediction
from the last reconstruction (vector ``v``) with the one from the
reconstruction before it (vector ``w``): ``(P1 + P2 + 1) >> 1``. Both
references carry quantisation noise of their own, and the average halves
its power where the content is the same (:func:`compensate`).

Motion modes (index = the header's mode byte): ``zero`` (no vectors),
``block`` (joint block matching of the levels, :func:`latentmotion.estimation.block_match`,
then a per-tile choice and quarter-pel refinement by prediction error),
``input`` (vectors measured on the input frames, divided by the stride, as
the candidates).
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import numba as nb
import numpy as np
import torch

from ..estimation import block_match
from .bitstream import MODE_NAMES, MODES

__all__ = [
    "BI", "FIELD_ROWS", "FRAC", "MAX_MV", "MODES", "MODE_NAMES", "ONE", "Context", "block_candidates", "choose_second", "choose_vectors", "compensate",
    "input_candidates", "mv_pred", "predict", "tile_box",
]

FRAC = 4  # the decoder state holds levels in units of step / 2**FRAC (fixed point)
ONE = 1 << FRAC
MAX_MV = 4 * 1024  # |vector component| bound, 1/subpel units (the decoder refuses more)
BI, FIELD_ROWS = 2, 5  # a motion field's rows: vx, vy (last reference), bi flag, wx, wy (the reference before)


@dataclass
class Context:
    """What the encoder knows besides the tensors."""

    block: int  # the motion tile side (the header's mblock)
    search: int
    subpel: int  # 1 or 4
    stride: tuple[int, int] = (1, 1)
    offset: tuple[float, float] = (0.0, 0.0)
    frames: tuple[torch.Tensor, torch.Tensor] | None = None  # (reference, current) uint8 gray, for "input"


#: the sampler of one motion tile: its pixels' 4 clamped source offsets ``(y * W + x)`` and own offset (``idx``,
#: block^2 x 5), the bilinear weights, the same for every pixel of a tile (``wt``, 4), the plane's size, the tile
#: side, the precision
Taps = namedtuple("Taps", "idx wt H W block s")


@nb.njit(cache=True, inline="always")
def tile_box(H, W, block, i, j):
    """Rows y0..y1-1 and columns x0..x1-1 of tile (i, j) of an H x W plane cut into ``block`` x ``block`` tiles
    (the last row and column of tiles cut short): ``(y0, y1, x0, x1)``.

    Example:
        >>> tile_box(10, 9, 4, 2, 2)
        (8, 10, 8, 9)
    """
    y0, x0 = i * block, j * block
    return y0, min(y0 + block, H), x0, min(x0 + block, W)


@nb.njit(cache=True)
def _sampler(H, W, block, s):
    return Taps(np.empty((block * block, 5), np.int64), np.empty(4, np.int64), H, W, block, s)


@nb.njit(cache=True)
def _taps(t, i, j, vx, vy):
    """Fill ``t`` for tile (i, j) and vector (vx, vy); returns the tile's pixel count.

    The whole-pel offsets and the fractions ``fx = -vx mod s``, ``fy = -vy mod s`` are the same at every pixel of
    the tile, and so are the weights.
    """
    H, W, block, s, idx = t.H, t.W, t.block, t.s, t.idx
    oy, ox = (-vy) // s, (-vx) // s  # floor(sy / s) = y + oy for sy = s y - vy (Python's floor division)
    fy, fx = -vy - s * oy, -vx - s * ox
    t.wt[0], t.wt[1], t.wt[2], t.wt[3] = (s - fx) * (s - fy), fx * (s - fy), (s - fx) * fy, fx * fy
    k = 0
    ty0, ty1, tx0, tx1 = tile_box(H, W, block, i, j)
    for y in range(ty0, ty1):
        y0, y1 = min(max(y + oy, 0), H - 1), min(max(y + oy + 1, 0), H - 1)
        for x in range(tx0, tx1):
            x0, x1 = min(max(x + ox, 0), W - 1), min(max(x + ox + 1, 0), W - 1)
            idx[k, 0], idx[k, 1], idx[k, 2], idx[k, 3] = y0 * W + x0, y0 * W + x1, y1 * W + x0, y1 * W + x1
            idx[k, 4] = y * W + x
            k += 1
    return k


@nb.njit(cache=True, inline="always")
def _tap_sum(rc, idx, k, wt):
    """``wt0 A + wt1 B + wt2 C + wt3 D`` at pixel k, summed in that order, leaving out the taps of zero weight
    (whole-pel vectors, and fractions along one axis only, are common). ``wt`` must be bilinear weights as
    :func:`_taps` sets them (``wt0 > 0``; ``wt3 = 0`` with ``wt2 != 0`` means ``wt1 = 0``). The same value in
    integers; in floats too for finite planes, up to the sign of a zero sum."""
    if wt[3] != 0:
        return wt[0] * rc[idx[k, 0]] + wt[1] * rc[idx[k, 1]] + wt[2] * rc[idx[k, 2]] + wt[3] * rc[idx[k, 3]]
    if wt[2] != 0:
        return wt[0] * rc[idx[k, 0]] + wt[2] * rc[idx[k, 2]]
    if wt[1] != 0:
        return wt[0] * rc[idx[k, 0]] + wt[1] * rc[idx[k, 1]]
    return wt[0] * rc[idx[k, 0]]


@nb.njit(cache=True)
def _tile_into(t, n, src, o2, avg):
    """The bilinear prediction of the tile whose ``n`` taps ``t`` holds, from planes src (C, H * W) into o2;
    with ``avg``, the average ``(o2 + P + 1) >> 1`` with what o2 holds there."""
    sh = 0 if t.s == 1 else 4
    half = (t.s * t.s) // 2
    idx, wt = t.idx, t.wt
    for c in range(src.shape[0]):
        rc, oc = src[c], o2[c]
        for k in range(n):
            p = (_tap_sum(rc, idx, k, wt) + half) >> sh
            oc[idx[k, 4]] = (oc[idx[k, 4]] + p + 1) >> 1 if avg else p


@nb.njit(cache=True)
def compensate(ref, ref2, mv, block, s):
    """The prediction (C, H, W) int64 of a motion field mv (2 or 5, nh, nw): per tile the bilinear prediction from
    ``ref`` with ``v``, and on tiles with ``bi = 1`` its average with the prediction from ``ref2`` with ``w``."""
    C, H, W = ref.shape
    if mv.shape[1] != -(-H // block) or mv.shape[2] != -(-W // block):  # every pixel must be predicted
        raise ValueError("the motion field does not tile the reference")
    if mv.shape[0] != 2 and mv.shape[0] != FIELD_ROWS:  # no row read past the field (numba checks no bounds)
        raise ValueError("a motion field has 2 or 5 rows")
    out = np.empty_like(ref)
    r1, r2, o2 = ref.reshape(C, H * W), ref2.reshape(C, H * W), out.reshape(C, H * W)
    t = _sampler(H, W, block, s)  # one tile's taps at a time: no per-pixel tables (a one-channel frame would pay for them)
    for i in range(mv.shape[1]):
        for j in range(mv.shape[2]):
            _tile_into(t, _taps(t, i, j, mv[0, i, j], mv[1, i, j]), r1, o2, False)
            if mv.shape[0] > BI and mv[BI, i, j]:
                _tile_into(t, _taps(t, i, j, mv[3, i, j], mv[4, i, j]), r2, o2, True)
    return out


@nb.njit(cache=True)
def predict(ref, mv, block, s):
    """Motion-compensated prediction (C, H, W) int64 from the fixed-point reconstruction ref and tile vectors mv (2+, nh, nw), one reference."""
    return compensate(ref, ref, mv[:2], block, s)


#: what the motion search compares: reference and current planes (C, H * W) and the channel stride of the sum
Match = namedtuple("Match", "ref cur cstep")


@nb.njit(cache=True)
def _tile_sse(t, m, i, j, v, extra, best):
    """Prediction error of tile (i, j) with vector v = (vx, vy) over every m.cstep-th channel, plus ``extra`` (encoder only).

    Stops early once the partial sum reaches ``best``: terms are non-negative and rounding is monotone, so
    the full sum could not be below ``best`` either (the caller keeps only a strictly smaller cost).
    """
    n = _taps(t, i, j, v[0], v[1])
    idx, wt = t.idx, t.wt
    inv = 1.0 / (t.s * t.s)
    e = 0.0
    for c in range(0, m.ref.shape[0], m.cstep):
        rc, cc = m.ref[c], m.cur[c]
        for k in range(n):
            p = _tap_sum(rc, idx, k, wt) * inv
            d = cc[idx[k, 4]] - p
            e += d * d
        if e * m.cstep + extra >= best:
            break
    return e * m.cstep + extra


@nb.njit(cache=True)
def _mv_bits(vx, vy, px, py):
    b = 0.0
    for d in (vx - px, vy - py):
        a = abs(d)
        b += 1.0
        if a:
            n = 0
            while (a >> (n + 1)) != 0:
                n += 1
            b += 2.0 * n + 2.0
    return b


@nb.njit(cache=True)
def mv_pred(mv, i, j):
    """Median of left, top and top-right vectors (zero outside), per component, H.264-style (the coder codes vectors against it)."""
    nw = mv.shape[2]
    out = np.zeros(2, np.int64)
    for k in range(2):
        a = mv[k, i, j - 1] if j > 0 else 0
        b = mv[k, i - 1, j] if i > 0 else 0
        c = mv[k, i - 1, j + 1] if (i > 0 and j + 1 < nw) else 0
        out[k] = max(min(a, b), min(max(a, b), c))
    return out


@nb.njit(cache=True)
def _try(t, m, i, j, v, pr, lam, best):
    """(cost, vector): ``v`` if its error + lam * bits beats ``best`` = (cost, vector), else ``best`` (and for a ``v``
    beyond :data:`MAX_MV`, which the decoder refuses: neighbours' vectors plus refinement could drift there)."""
    if abs(v[0]) > MAX_MV or abs(v[1]) > MAX_MV:
        return best
    e = _tile_sse(t, m, i, j, v, lam * _mv_bits(v[0], v[1], pr[0], pr[1]), best[0])
    return (e, v) if e < best[0] else best


@nb.njit(cache=True)
def _tile_vector(t, m, i, j, mv, cand, lam):
    """The vector of tile (i, j): the best candidate, then refined at half and quarter pel around it."""
    pr = mv_pred(mv, i, j)  # the predictor the coder codes this tile's vector against
    left = (mv[0, i, j - 1], mv[1, i, j - 1]) if j > 0 else (0, 0)  # left and top choices are candidates too
    top = (mv[0, i - 1, j], mv[1, i - 1, j]) if i > 0 else (0, 0)
    cands = ((0, 0), (pr[0], pr[1]), (cand[0, i, j], cand[1, i, j]), left, top)
    best = (1e300, (0, 0))
    for k in range(len(cands)):
        dup = False
        for q in range(k):  # an equal earlier candidate costs the same and keeps its place
            dup = dup or cands[q] == cands[k]
        if not dup:
            best = _try(t, m, i, j, cands[k], pr, lam, best)
    if t.s > 1:
        for r in (t.s // 2, 1):
            o = best[1]
            for dy in (-r, 0, r):
                for dx in (-r, 0, r):
                    if dx != 0 or dy != 0:
                        best = _try(t, m, i, j, (o[0] + dx, o[1] + dy), pr, lam, best)
    return best[1]


def choose_vectors(ref: np.ndarray, cur: np.ndarray, cand: np.ndarray, block: int, s: int, lam: float, cstep: int) -> np.ndarray:
    """Per tile in raster order, the vector of least ``SSE + lam * bits`` (encoder only; floats are fine here).

    Candidates: zero, the median predictor, the tile's own candidate and its
    left/top neighbours' choices; then the 8 neighbours at half and at quarter
    pel around the best. The error is summed over every ``cstep``-th channel
    (all channels share the motion; a sample of them finds it at a fraction of the cost).
    """
    C, H, W = ref.shape
    return _choose(_sampler(H, W, block, s), Match(ref.reshape(C, H * W), cur.reshape(C, H * W), cstep), cand, lam)


@nb.njit(cache=True)
def _choose(t, m, cand, lam):
    mv = np.zeros((2, cand.shape[1], cand.shape[2]), np.int64)
    for i in range(mv.shape[1]):
        for j in range(mv.shape[2]):
            v = _tile_vector(t, m, i, j, mv, cand, lam)
            mv[0, i, j], mv[1, i, j] = v[0], v[1]
    return mv


@nb.njit(cache=True)
def _tile_pred(t, m, i, j, v, buf):
    """The float prediction of tile (i, j) with vector v over every m.cstep-th channel, into buf (channels x pixels)."""
    n = _taps(t, i, j, v[0], v[1])
    idx, wt = t.idx, t.wt
    inv = 1.0 / (t.s * t.s)
    for k, c in enumerate(range(0, m.ref.shape[0], m.cstep)):
        rc = m.ref[c]
        for p in range(n):
            buf[k, p] = _tap_sum(rc, idx, p, wt) * inv
    return n


@nb.njit(cache=True)
def _pair_sse(t, m, i, j, w, p1, extra, best):
    """Error of the average of p1 (:func:`_tile_pred`) and tile (i, j)'s prediction from m.ref with w, plus ``extra``;
    stops early at ``best`` as :func:`_tile_sse` does."""
    n = _taps(t, i, j, w[0], w[1])
    idx, wt = t.idx, t.wt
    inv = 0.5 / (t.s * t.s)
    e = 0.0
    for k, c in enumerate(range(0, m.ref.shape[0], m.cstep)):
        rc, cc = m.ref[c], m.cur[c]
        for p in range(n):
            d = cc[idx[p, 4]] - 0.5 * p1[k, p] - _tap_sum(rc, idx, p, wt) * inv
            e += d * d
        if e * m.cstep + extra >= best:
            break
    return e * m.cstep + extra


@nb.njit(cache=True)
def _try_pair(t, m, i, j, w, p1, pr, lam, best):
    """:func:`_try` for a second vector ``w`` averaged with the tile's first prediction ``p1``."""
    if abs(w[0]) > MAX_MV or abs(w[1]) > MAX_MV:
        return best
    e = _pair_sse(t, m, i, j, w, p1, lam * _mv_bits(w[0], w[1], pr[0], pr[1]), best[0])
    return (e, w) if e < best[0] else best


@nb.njit(cache=True)
def _second(t, m1, m2, i, j, mv, lam, p1):
    """Tile (i, j)'s choice between its one-reference prediction and the average with a second: (bi, w)."""
    v = (mv[0, i, j], mv[1, i, j])
    n = _tile_pred(t, m1, i, j, v, p1)
    e1 = 0.0
    for k, c in enumerate(range(0, m1.ref.shape[0], m1.cstep)):
        for p in range(n):
            d = m1.cur[c, t.idx[p, 4]] - p1[k, p]
            e1 += d * d
    pr = (2 * v[0], 2 * v[1])  # constant motion: twice as far back; the coder codes w against it
    left = (mv[3, i, j - 1], mv[4, i, j - 1]) if j > 0 and mv[BI, i, j - 1] else pr
    top = (mv[3, i - 1, j], mv[4, i - 1, j]) if i > 0 and mv[BI, i - 1, j] else pr
    cands = (pr, v, left, top)
    single = e1 * m1.cstep
    if single <= lam * _mv_bits(0, 0, 0, 0):  # every second vector costs at least these bits: none can beat the one reference
        return 0, (0, 0)
    best = (single, (0, 0))
    for k in range(len(cands)):
        best = _try_pair(t, m2, i, j, cands[k], p1, pr, lam, best)
    if not best[0] < single:  # no second vector beats the one reference
        return 0, (0, 0)
    r = t.s
    while r >= 1:  # whole, half, quarter pel
        o = best[1]
        for dy in (-r, 0, r):
            for dx in (-r, 0, r):
                if dx != 0 or dy != 0:
                    best = _try_pair(t, m2, i, j, (o[0] + dx, o[1] + dy), p1, pr, lam, best)
        r //= 2
    return 1, best[1]


def choose_second(ref: np.ndarray, ref2: np.ndarray, cur: np.ndarray, mv: np.ndarray, block: int, s: int, lam: float, cstep: int) -> np.ndarray:
    """The motion field (5, nh, nw) for the vectors mv (2, nh, nw) chosen by :func:`choose_vectors`: per tile, the
    average with a prediction from ``ref2`` where it costs less (``SSE + lam * bits`` of ``w``, against ``2 v``).

    Candidates for ``w``: ``2 v`` (constant motion), ``v``, and the left/top tiles' ``w``; then the 8 neighbours
    at whole, half and quarter pel around the best (encoder only; floats are fine here).
    """
    C, H, W = ref.shape
    t = _sampler(H, W, block, s)
    cur2 = cur.reshape(C, H * W)
    return _choose_second(t, Match(ref.reshape(C, H * W), cur2, cstep), Match(ref2.reshape(C, H * W), cur2, cstep), mv, lam)


@nb.njit(cache=True)
def _choose_second(t, m1, m2, mv, lam):
    out = np.zeros((FIELD_ROWS, mv.shape[1], mv.shape[2]), np.int64)
    out[:2] = mv
    p1 = np.empty((-(-m1.ref.shape[0] // m1.cstep), t.block * t.block))
    for i in range(mv.shape[1]):
        for j in range(mv.shape[2]):
            bi, w = _second(t, m1, m2, i, j, out, lam, p1)
            out[BI, i, j], out[3, i, j], out[4, i, j] = bi, w[0], w[1]
    return out


def block_candidates(ref: np.ndarray, cur_levels: np.ndarray, ctx: Context) -> np.ndarray:
    """Integer vectors (2, nh, nw) in 1/subpel units: the joint block-matching field at each tile's centre."""
    _, h, w = ref.shape
    b = ctx.block
    win = b + 1 if b % 2 == 0 else b
    side = min(h, w)
    win = min(win, side if side % 2 else side - 1)  # an odd window that fits the frame
    threads = nb.get_num_threads()
    nb.set_num_threads(1)  # latent frames are small: worker threads cost more (spinning) than they save
    try:
        field = block_match(torch.from_numpy(ref), torch.from_numpy(cur_levels), win, ctx.search)
    finally:
        nb.set_num_threads(threads)
    cy = np.minimum(np.arange(0, h, b) + b // 2, h - 1)
    cx = np.minimum(np.arange(0, w, b) + b // 2, w - 1)
    f = field.numpy()[:, cy][:, :, cx]
    return (np.round(f) * ctx.subpel).astype(np.int64)


def input_candidates(shape: tuple[int, int, int], ctx: Context) -> np.ndarray:
    """Vectors (2, nh, nw) in 1/subpel units from input-space motion divided by the stride (Eq. 12)."""
    g0, g1 = ctx.frames
    field = block_match(g0, g1, 31, min(11, ctx.search * ctx.stride[0]))
    b = ctx.block
    _, h, w = shape
    sy, sx = ctx.stride
    vec = np.zeros((2, -(-h // b), -(-w // b)))
    H, W = field.shape[-2:]
    for i, v0 in enumerate(range(0, h, b)):
        for j, u0 in enumerate(range(0, w, b)):
            y0 = int(max(0, sy * v0 + ctx.offset[0] - sy / 2))
            y1 = int(min(H, sy * min(v0 + b, h) + ctx.offset[0] - sy / 2))
            x0 = int(max(0, sx * u0 + ctx.offset[1] - sx / 2))
            x1 = int(min(W, sx * min(u0 + b, w) + ctx.offset[1] - sx / 2))
            if y1 > y0 and x1 > x0:
                region = field[:, y0:y1, x0:x1]
                vec[0, i, j] = float(region[0].median()) / sx
                vec[1, i, j] = float(region[1].median()) / sy
    return np.round(vec * ctx.subpel).astype(np.int64)
