"""The frame syntax: how levels, vectors and offsets become context-coded bits (integers only).

Given the integers a frame sends (motion vectors, channel offsets, levels), the
syntax fixes their binarisation and the context of every adaptive bit; the
bits go through :mod:`latentmotion.codec.rangecoder`. It decides nothing: the
residual stage (:mod:`latentmotion.codec.residual`) chooses the levels and the
prediction stage (:mod:`latentmotion.codec.prediction`) the vectors and the
prediction, which the decoder makes between :func:`decode_vectors` and
:func:`decode_levels`. ``docs/codec.md`` gives the syntax in full; in short,
motion vector differences come first, then the offsets, then per channel ``c``
in order, with ``a(c, .)`` the cross-channel activity (how many of the channels
before ``c`` are non-zero at a place, or coded a tile, bucketed by :func:`_ab`):

* per ``block x block`` tile, in raster order: a coded-tile flag, context
  ``(c, left flag + top flag, a(c, tile))``;
* in a coded tile, per level ``q`` in raster order, with ``n = min(|left|, 2) +
  min(|top|, 2)`` and ``pb`` a bucket of the prediction's magnitude there:
  ``q != 0`` (context ``(c, n, pb, a(c, place))``), sign (context ``(c, signs of
  left and top)``), ``|q| > 1`` (context ``(c, min(n, 2), pb)``), ``|q| > 2``
  (context ``c``), then ``|q| - 3`` as Exp-Golomb order 0 (shared contexts);
* motion-vector differences (per ``mblock x mblock`` tile, x then y, against
  :func:`latentmotion.codec.prediction.mv_pred`): ``!= 0`` (context by
  component), sign bypass, ``|d| - 1`` Exp-Golomb (own contexts); then the
  tile's two-reference flag ``bi`` (context: left + top flags) and, if set, the
  second vector ``w`` as differences from ``2 v`` in the same way (own contexts);
* channel offsets (units of 1/16 step), per channel: ``!= 0`` (context ``c``),
  sign (one context), ``|o| - 1`` Exp-Golomb (own contexts).

A new context goes into the layout below (and into :func:`snapshot` if the
residual stage's trials touch it); the stream version changes with it.

Example:
    >>> import numpy as np
    >>> from latentmotion.codec import rangecoder as rc
    >>> q = np.array([[[0, 2], [-1, 0]]], np.int64)
    >>> pred, dc, mv = np.zeros_like(q), np.array([3], np.int64), np.zeros((5, 1, 1), np.int64)
    >>> e = rc.encoder(capacity(q, 2, mv))
    >>> probs = new_contexts(1)
    >>> encode_vectors(e, probs, mv); encode_offsets(e, probs, dc)
    >>> bits = encode_levels(e, probs, levels(q, pred, 2), 0)  # sim 0: coded (costed with sim 1, 2)
    >>> d, probs = rc.decoder(rc.finish(e)), new_contexts(1)
    >>> mv2, bad = decode_vectors(d, probs, 1, 1, 64)
    >>> dc2, bad = decode_offsets(d, probs, 1)
    >>> q2, bad = decode_levels(d, probs, pred, 2, q.size)  # at most q.size levels in coded tiles
    >>> bool((q2 == q).all()), int(dc2[0]), bad
    (True, 3, 0)
"""

from __future__ import annotations

from collections import namedtuple

import numba as nb
import numpy as np

from .prediction import BI, FIELD_ROWS, FRAC, mv_pred, tile_box
from .rangecoder import (
    MAX_PREFIX,
    PROB_INIT,
    adapt,
    adapted,
    cost,
    count,
    dec_bit,
    dec_bypass,
    dec_eg,
    eg_length,
    enc_bit,
    enc_bypass,
    enc_eg,
    prob,
    state,
)

__all__ = [
    "SNAPSHOT", "Levels", "any_level", "capacity", "code_tile", "coded_levels", "count_activity", "decode_levels", "decode_offsets", "decode_vectors",
    "encode_levels", "encode_offsets", "encode_vectors", "flag_bits", "inherit", "level_bits", "level_ctx", "levels", "min_level_bits", "n_contexts", "offset_bits",
    "new_contexts", "restore", "snapshot",
]

# Context layout (per channel c, C channels): offsets into one probability table.
N_PB = 4  # buckets of the prediction's magnitude |P|: 0, 1, 2..3, 4+
N_NB = 5  # neighbour magnitudes n = min(|left|, 2) + min(|top|, 2): 0..4
N_AB = 5  # cross-channel activity: first channel; none, under 10 %, under 30 %, more of the earlier channels non-zero
N_CBF = 3 * N_AB
N_SIG, N_SIGN, N_GT1 = N_NB * N_PB * N_AB, 9, 3 * N_PB
# per channel: coded-tile flags, significance, sign, |q| > 1, |q| > 2, offset != 0
SIG = N_CBF
SIGN = SIG + N_SIG
GT1 = SIGN + N_SIGN
GT2 = GT1 + N_GT1
OFF_NZ = GT2 + 1
PER_CHANNEL = OFF_NZ + 1
N_EG = MAX_PREFIX + 1
N_MV = 2 + N_EG
N_DC = 1 + N_EG  # offsets: sign, Exp-Golomb prefix
N_BI = 3 + 2 + N_EG  # two-reference flag (left + top flags), second vector: != 0 per component, Exp-Golomb prefix
INHERIT_CAP = 8  # an inherited context adapts as one that has coded 8 bits (shift 3): it keeps what it inherited, but not for long

#: one frame's levels as the syntax walks them: levels ``q`` (C, H, W), prediction ``pred`` (1/16 step),
#: the cross-channel counts ``act`` (H, W) and ``tact`` (tiles), this channel's tile flags ``cbf``, tile side
Levels = namedtuple("Levels", "q pred act tact cbf block")


def n_contexts(channels: int) -> int:
    """Size of the probability table for ``channels`` channels (levels, Exp-Golomb, motion, offsets)."""
    return PER_CHANNEL * channels + N_EG + N_MV + N_DC + N_BI


def new_contexts(channels: int) -> np.ndarray:
    return np.full(n_contexts(channels), PROB_INIT, dtype=np.int64)


def capacity(q: np.ndarray, block: int, mv: np.ndarray) -> int:
    """Bytes a frame's code can take at most: 24 per level, 64 per motion tile (two vectors), 32 per offset, one per tile flag."""
    c, h, w = q.shape
    return 64 + 24 * q.size + 64 * mv.shape[1] * mv.shape[2] + c * -(-h // block) * -(-w // block) + 32 * c


def levels(q: np.ndarray, pred: np.ndarray, block: int) -> Levels:
    """The walk state of a frame's levels, before its first channel."""
    _, h, w = q.shape
    nh, nw = -(-h // block), -(-w // block)
    return Levels(q, pred, np.zeros((h, w), np.int64), np.zeros((nh, nw), np.int64), np.zeros((nh, nw), np.int64), block)


@nb.njit(cache=True, inline="always")
def _shared(probs):
    """Where the contexts shared by all channels start in the table: level Exp-Golomb, vectors, offsets, second vectors."""
    eg = probs.shape[0] - N_EG - N_MV - N_DC - N_BI
    return eg, eg + N_EG, eg + N_EG + N_MV, eg + N_EG + N_MV + N_DC


# --- contexts ----------------------------------------------------------------------------------
# The per-level and per-tile helpers are inlined (inline="always"): a call that passes the walk state's arrays
# cost more than their work (RDOQ took 1.8x as long with them as calls).


@nb.njit(cache=True, inline="always")
def _ab(count, c):
    """Bucket of how many of the c earlier channels are non-zero at a place, or coded a tile (integers only)."""
    if c == 0:
        return 0
    if count == 0:
        return 1
    if 10 * count < c:
        return 2
    return 3 if 10 * count < 3 * c else 4


@nb.njit(cache=True, inline="always")
def _pb(p):
    a = (abs(p) + (1 << (FRAC - 1))) >> FRAC  # |P| in whole steps, rounded
    return 0 if a == 0 else (1 if a == 1 else (2 if a < 4 else 3))


@nb.njit(cache=True, inline="always")
def level_ctx(f, c, y, x):
    """Contexts of the level at (c, y, x): (n, sign context 3 sl + st of left and top, pb, ab)."""
    q = f.q
    n = 0
    s = 0
    if x > 0:
        n += min(abs(q[c, y, x - 1]), 2)
        s = 1 if q[c, y, x - 1] > 0 else (2 if q[c, y, x - 1] < 0 else 0)
    if y > 0:
        n += min(abs(q[c, y - 1, x]), 2)
        s = 3 * s + (1 if q[c, y - 1, x] > 0 else (2 if q[c, y - 1, x] < 0 else 0))
    else:
        s = 3 * s
    return n, s, _pb(f.pred[c, y, x]), _ab(f.act[y, x], c)


@nb.njit(cache=True, inline="always")
def cbf_ctx(f, c, i, j):
    """Coded-tile flag context (index into the table): left + top flags of this channel (0 outside) and the tile's activity."""
    cbf = f.cbf
    return PER_CHANNEL * c + (cbf[i, j - 1] if j > 0 else 0) + (cbf[i - 1, j] if i > 0 else 0) + 3 * _ab(f.tact[i, j], c)


# --- bits, coded (sim 0) or costed (sim 1: adapting as coding would; sim 2: not adapting) ----------


@nb.njit(cache=True, inline="always")
def _bit(e, probs, i, bit, sim):
    if sim == 0:
        enc_bit(e, probs, i, bit)
        return 0.0
    c = cost(bit, probs[i])
    if sim == 1:
        adapt(probs, i, bit)
    return c


@nb.njit(cache=True, inline="always")
def _eg_bits(e, probs, base, v, sim):
    if sim == 0:
        enc_eg(e, probs, base, v)
        return 0.0
    nbits = eg_length(v)
    c = 0.0
    for k in range(nbits):
        c += _bit(e, probs, base + k, 1, sim)
    return c + _bit(e, probs, base + nbits, 0, sim) + nbits


@nb.njit(cache=True, inline="always")
def level_bits(e, probs, c, ctx, v, sim):
    """Code (sim 0) or cost (sim 1, 2) level ``v`` of channel ``c`` with contexts ``ctx`` (:func:`level_ctx`)."""
    n, s, pb, ab = ctx
    base = PER_CHANNEL * c
    cost = _bit(e, probs, base + SIG + N_PB * (N_NB * ab + n) + pb, 1 if v != 0 else 0, sim)
    if v == 0:
        return cost
    cost += _bit(e, probs, base + SIGN + s, 1 if v < 0 else 0, sim)
    a = abs(v)
    cost += _bit(e, probs, base + GT1 + N_PB * min(n, 2) + pb, 1 if a > 1 else 0, sim)
    if a > 1:
        cost += _bit(e, probs, base + GT2, 1 if a > 2 else 0, sim)
        if a > 2:
            cost += _eg_bits(e, probs, _shared(probs)[0], a - 3, sim)
    return cost


@nb.njit(cache=True, inline="always")
def _dec_level(d, probs, c, ctx):
    """Inverse of level_bits (sim 0): (level, 0), or (0, 1) on a too long Exp-Golomb prefix."""
    n, s, pb, ab = ctx
    base = PER_CHANNEL * c
    if dec_bit(d, probs, base + SIG + N_PB * (N_NB * ab + n) + pb) == 0:
        return 0, 0
    neg = dec_bit(d, probs, base + SIGN + s)
    a = 1
    if dec_bit(d, probs, base + GT1 + N_PB * min(n, 2) + pb):
        a = 2
        if dec_bit(d, probs, base + GT2):
            m = dec_eg(d, probs, _shared(probs)[0])
            if m < 0:
                return 0, 1
            a = 3 + m
    return (-a if neg else a), 0


@nb.njit(cache=True)
def _enc_signed(e, probs, nz, sgn, eg, v):
    """A signed integer (vector difference, offset): ``v != 0`` (context nz), then its sign
    (context sgn; bypass if sgn < 0) and ``|v| - 1`` as Exp-Golomb (contexts eg..)."""
    enc_bit(e, probs, nz, 1 if v != 0 else 0)
    if v != 0:
        if sgn < 0:
            enc_bypass(e, 1 if v < 0 else 0)
        else:
            enc_bit(e, probs, sgn, 1 if v < 0 else 0)
        enc_eg(e, probs, eg, abs(v) - 1)


@nb.njit(cache=True)
def _dec_signed(d, probs, nz, sgn, eg):
    """Inverse of _enc_signed: (v, 0), or (0, 1) on a too long Exp-Golomb prefix."""
    if dec_bit(d, probs, nz) == 0:
        return 0, 0
    neg = dec_bypass(d) if sgn < 0 else dec_bit(d, probs, sgn)
    m = dec_eg(d, probs, eg)
    if m < 0:
        return 0, 1
    return (-(m + 1) if neg else m + 1), 0


# --- a frame: vectors, offsets, levels ----------------------------------------------------------


@nb.njit(cache=True)
def _bi_ctx(mv, i, j):
    """Context of tile (i, j)'s two-reference flag: how many of its left and top tiles have it set."""
    return (mv[BI, i, j - 1] if j > 0 else 0) + (mv[BI, i - 1, j] if i > 0 else 0)


@nb.njit(cache=True)
def encode_vectors(e, probs, mv):
    """The motion field mv (5, rows, cols) int64 (:mod:`latentmotion.codec.prediction`): per tile ``v`` as
    differences from :func:`mv_pred`, the flag ``bi`` and, if set, ``w`` as differences from ``2 v``."""
    _, mvb, _, bib = _shared(probs)
    for i in range(mv.shape[1]):
        for j in range(mv.shape[2]):
            pr = mv_pred(mv, i, j)
            for k in range(2):
                _enc_signed(e, probs, mvb + k, -1, mvb + 2, mv[k, i, j] - pr[k])
            enc_bit(e, probs, bib + _bi_ctx(mv, i, j), mv[BI, i, j])
            if mv[BI, i, j]:
                for k in range(2):
                    _enc_signed(e, probs, bib + 3 + k, -1, bib + 5, mv[3 + k, i, j] - 2 * mv[k, i, j])


@nb.njit(cache=True)
def decode_vectors(d, probs, rows, cols, max_mv):
    """Inverse of :func:`encode_vectors`: (mv, 0), or (mv, 1) on corrupt data or a component beyond ``max_mv``."""
    mv = np.zeros((FIELD_ROWS, rows, cols), np.int64)
    _, mvb, _, bib = _shared(probs)
    for i in range(rows):
        for j in range(cols):
            pr = mv_pred(mv, i, j)
            for k in range(2):
                v, bad = _dec_signed(d, probs, mvb + k, -1, mvb + 2)
                v += pr[k]
                if bad or abs(v) > max_mv:
                    return mv, 1
                mv[k, i, j] = v
            mv[BI, i, j] = dec_bit(d, probs, bib + _bi_ctx(mv, i, j))
            if mv[BI, i, j]:
                for k in range(2):
                    v, bad = _dec_signed(d, probs, bib + 3 + k, -1, bib + 5)
                    v += 2 * mv[k, i, j]
                    if bad or abs(v) > max_mv:
                        return mv, 1
                    mv[3 + k, i, j] = v
    return mv, 0


@nb.njit(cache=True)
def encode_offsets(e, probs, dc):
    """The channels' offsets dc (C,) int64."""
    dcb = _shared(probs)[2]
    for c in range(dc.shape[0]):
        _enc_signed(e, probs, PER_CHANNEL * c + OFF_NZ, dcb, dcb + 1, dc[c])


@nb.njit(cache=True)
def offset_bits(e, probs, c, v):
    """Bits offset ``v`` of channel ``c`` would cost with the contexts as they are (costed, not adapted; ``e`` untouched)."""
    dcb = _shared(probs)[2]
    b = _bit(e, probs, PER_CHANNEL * c + OFF_NZ, 1 if v != 0 else 0, 2)
    if v == 0:
        return b
    return b + _bit(e, probs, dcb, 1 if v < 0 else 0, 2) + _eg_bits(e, probs, dcb + 1, abs(v) - 1, 2)


@nb.njit(cache=True)
def decode_offsets(d, probs, C):
    """Inverse of :func:`encode_offsets`: (dc, 0), or (dc, 1) on corrupt data."""
    dc = np.zeros(C, np.int64)
    dcb = _shared(probs)[2]
    for c in range(C):
        dc[c], bad = _dec_signed(d, probs, PER_CHANNEL * c + OFF_NZ, dcb, dcb + 1)
        if bad:
            return dc, 1
    return dc, 0


@nb.njit(cache=True)
def inherit(probs, c):
    """Before channel c's first tile in a frame: each of its level contexts (coded-tile flags to ``|q| > 2``) that
    has coded no bit yet takes the state of the same context of channel c - 1, its count capped at INHERIT_CAP.

    Neighbouring channels' statistics are alike (KLT coordinates of similar variance; features of one layer), and
    a context starting from 1/2 pays for learning what the channel before already knows: at coarse steps most of a
    channel's contexts see only a few bits per frame.

    Example:
        >>> from latentmotion.codec.rangecoder import count, prob, state
        >>> probs = new_contexts(2)
        >>> probs[SIG] = state(30000, 20)  # channel 0 learned: significance is rare
        >>> inherit(probs, 1)
        >>> prob(probs[PER_CHANNEL + SIG]), count(probs[PER_CHANNEL + SIG]), count(probs[PER_CHANNEL + SIG + 1])
        (30000, 8, 0)
    """
    if c == 0:
        return
    base = PER_CHANNEL * c
    for k in range(OFF_NZ):  # not the offset flag: offsets are coded before any channel's levels
        prev = probs[base - PER_CHANNEL + k]
        if count(probs[base + k]) == 0 and count(prev) > 0:
            probs[base + k] = state(prob(prev), min(count(prev), INHERIT_CAP))


@nb.njit(cache=True, inline="always")
def any_level(q, c, y0, y1, x0, x1):
    """Whether channel c of q has a non-zero level in rows y0..y1-1, columns x0..x1-1."""
    for y in range(y0, y1):
        for x in range(x0, x1):
            if q[c, y, x] != 0:
                return True
    return False


@nb.njit(cache=True, inline="always")
def code_tile(e, probs, f, c, i, j, sim):
    """Code (sim 0) or cost (sim 1, 2) tile (i, j) of channel c: its flag, and its levels if any is non-zero."""
    y0, y1, x0, x1 = tile_box(f.q.shape[1], f.q.shape[2], f.block, i, j)
    flag = 1 if any_level(f.q, c, y0, y1, x0, x1) else 0
    cost = _bit(e, probs, cbf_ctx(f, c, i, j), flag, sim)
    f.cbf[i, j] = flag
    if flag:
        for y in range(y0, y1):
            for x in range(x0, x1):
                cost += level_bits(e, probs, c, level_ctx(f, c, y, x), f.q[c, y, x], sim)
    return cost


@nb.njit(cache=True)
def coded_levels(f):
    """How many levels the coded tiles of a coded frame's walk state ``f`` hold: each tile's count of coded
    channels (``f.tact``, which coding the levels leaves) times its size."""
    n = 0
    for i in range(f.tact.shape[0]):
        for j in range(f.tact.shape[1]):
            y0, y1, x0, x1 = tile_box(f.q.shape[1], f.q.shape[2], f.block, i, j)
            n += f.tact[i, j] * (y1 - y0) * (x1 - x0)
    return n


@nb.njit(cache=True)
def count_activity(f, c):
    """Add channel c's non-zero levels and coded tiles to the cross-channel counts, after its last tile: ``f.cbf``
    must hold channel c's flags as coding set them (a tile's levels are read only where its flag is 1, which coding
    sets exactly where the tile holds a non-zero level; the decoder's skipped tiles stay zero)."""
    for i in range(f.cbf.shape[0]):
        for j in range(f.cbf.shape[1]):
            if f.cbf[i, j]:  # a skipped tile's levels are all zero: most tiles of a predicted frame
                f.tact[i, j] += 1
                y0, y1, x0, x1 = tile_box(f.q.shape[1], f.q.shape[2], f.block, i, j)
                for y in range(y0, y1):
                    for x in range(x0, x1):
                        if f.q[c, y, x] != 0:
                            f.act[y, x] += 1


@nb.njit(cache=True)
def encode_levels(e, probs, f, sim):
    """Every channel's tiles in order (sim as :func:`code_tile`); the bits, when costed. Each channel's
    :func:`inherit` changes ``probs`` in every sim, sim 2 too (it is part of coding, not an adaptation to bits)."""
    cost = 0.0
    for c in range(f.q.shape[0]):
        inherit(probs, c)
        for i in range(f.cbf.shape[0]):
            for j in range(f.cbf.shape[1]):
                cost += code_tile(e, probs, f, c, i, j, sim)
        count_activity(f, c)
    return cost


@nb.njit(cache=True)
def decode_levels(d, probs, pred, block, max_coded):
    """Inverse of :func:`encode_levels` given the prediction: (q, 0), or (q, 1) on corrupt data, (q, 2) once the
    coded tiles hold more than ``max_coded`` levels.

    Reading past the end is not an error (the encoder cuts trailing zero bytes); work is bounded by
    the caller (elements and coded levels per byte of the record).
    """
    C, H, W = pred.shape
    f = Levels(np.zeros((C, H, W), np.int64), pred, np.zeros((H, W), np.int64), np.zeros(((H + block - 1) // block, (W + block - 1) // block), np.int64),
               np.zeros(((H + block - 1) // block, (W + block - 1) // block), np.int64), block)
    for c in range(C):
        inherit(probs, c)
        for i in range(f.cbf.shape[0]):
            for j in range(f.cbf.shape[1]):
                flag = dec_bit(d, probs, cbf_ctx(f, c, i, j))
                f.cbf[i, j] = flag
                if flag == 0:
                    continue
                y0, y1, x0, x1 = tile_box(H, W, block, i, j)
                max_coded -= (y1 - y0) * (x1 - x0)
                if max_coded < 0:
                    return f.q, 2
                for y in range(y0, y1):
                    for x in range(x0, x1):
                        v, bad = _dec_level(d, probs, c, level_ctx(f, c, y, x))
                        if bad:
                            return f.q, 1
                        f.q[c, y, x] = v
        count_activity(f, c)
    return f.q, 0


# --- what the residual stage's rate-distortion decisions need to know of the syntax ------------------


@nb.njit(cache=True)
def _cheapest(probs, lo, hi, bit, n):
    """Fewest bits that ``bit`` can cost in contexts lo..hi-1 after up to n adaptations of them (states within the
    coder's clamp, as every real state is)."""
    p, k = prob(probs[lo]), count(probs[lo])
    for i in range(lo + 1, hi):  # the most favourable probability (cost falls as p moves away from the bit),
        p = max(p, prob(probs[i])) if bit == 0 else min(p, prob(probs[i]))
        k = min(k, count(probs[i]))  # adapting as fast as the youngest context: adaptation is monotone in p
    s = state(p, k)
    for _ in range(n):
        s = adapted(s, bit)
    return cost(bit, s)


@nb.njit(cache=True)
def min_level_bits(probs, c, n):
    """Fewest bits any non-zero level of channel c can cost within a tile of n levels (significance,
    sign and > 1 in their cheapest contexts, as adapted as the tile's levels could make them)."""
    base = PER_CHANNEL * c
    b = _cheapest(probs, base + SIG, base + SIGN, 1, n)
    lo, hi = base + SIGN, base + GT1
    b += min(_cheapest(probs, lo, hi, 0, n), _cheapest(probs, lo, hi, 1, n))
    lo, hi = hi, hi + N_GT1
    return b + min(_cheapest(probs, lo, hi, 0, n), _cheapest(probs, lo, hi, 1, n))


@nb.njit(cache=True, inline="always")
def flag_bits(probs, f, c, i, j, flag):
    """Bits of tile (i, j)'s coded-tile flag set to ``flag``."""
    return cost(flag, probs[cbf_ctx(f, c, i, j)])


@nb.njit(cache=True)
def snapshot(probs, c, saved):
    """Copy the contexts a trial coding of channel c's levels adapts into ``saved`` (PER_CHANNEL + N_EG)."""
    base, eg = PER_CHANNEL * c, _shared(probs)[0]
    for k in range(PER_CHANNEL):
        saved[k] = probs[base + k]
    for k in range(N_EG):
        saved[PER_CHANNEL + k] = probs[eg + k]


@nb.njit(cache=True)
def restore(probs, c, saved):
    """Undo a trial: the inverse of :func:`snapshot`."""
    base, eg = PER_CHANNEL * c, _shared(probs)[0]
    for k in range(PER_CHANNEL):
        probs[base + k] = saved[k]
    for k in range(N_EG):
        probs[eg + k] = saved[PER_CHANNEL + k]


SNAPSHOT = PER_CHANNEL + N_EG  # size of snapshot's buffer
