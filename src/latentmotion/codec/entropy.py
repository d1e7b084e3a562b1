"""Context-adaptive binary range coding of a frame's motion vectors and levels (integers only).

The coder is LZMA's binary range coder: 32-bit range, 11-bit probabilities
``p`` (of the bit being 0) that adapt after every bit by ``p += (2048 - p) >> 5``
(a 0) or ``p -= p >> 5`` (a 1); bypass bits halve the range. The implicit
leading zero byte of LZMA's encoder is not written. Bytes past the end of the
data read as zero (so trailing bytes that would read back the same may be cut).

Binarisation (``docs/codec.md`` gives it in full). Motion vector differences
come first, then per channel ``c`` in order, with ``a(c, .)`` the cross-channel
activity: how many of the channels before ``c`` in this frame are non-zero at a
place (or coded a tile), bucketed as first channel / none / under 10 % / under
30 % / more (:func:`_ab`; all channels share one motion, so where one needs a
residual the others tend to):

* per ``block x block`` tile, in raster order: a coded-tile flag, context
  ``(c, left flag + top flag, a(c, tile))``;
* in a coded tile, per level ``q`` in raster order, with ``n = min(|left|, 2) +
  min(|top|, 2)`` the neighbours' magnitudes in the same channel and ``pb`` a
  bucket of the prediction's magnitude there: ``q != 0`` (context
  ``(c, n, pb, a(c, place))``), sign (context ``(c, signs of left and top)``),
  ``|q| > 1`` (context ``(c, min(n, 2), pb)``), ``|q| > 2`` (context ``c``), then
  ``|q| - 3`` as Exp-Golomb order 0: prefix bits adaptive (context = bit index),
  suffix bits bypass. A prefix of ``MAX_PREFIX`` ones or more is an error.
* motion-vector differences (per ``mblock x mblock`` tile, x then y, against
  :func:`latentmotion.codec.prediction.mv_pred`): ``!= 0`` (context by
  component), sign bypass, ``|d| - 1`` Exp-Golomb as above (own contexts).
* channel offsets (after the vectors, before the levels; units of 1/16 step),
  per channel: ``!= 0`` (context ``c``), sign (one context), ``|o| - 1``
  Exp-Golomb as above (own contexts).

All arithmetic is integer (numba, int64), so every machine decodes alike.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .prediction import FRAC, mv_pred, predict

PROB_BITS = 11
PROB_INIT = 1 << (PROB_BITS - 1)
ADAPT = 5
TOP = 1 << 24
MAX_PREFIX = 16  # Exp-Golomb: at most MAX_PREFIX - 1 prefix ones, so values below 2 ** 16 - 1

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


def n_contexts(channels: int) -> int:
    """Size of the probability table for ``channels`` channels (levels, Exp-Golomb, motion, offsets)."""
    return PER_CHANNEL * channels + N_EG + N_MV + N_DC


@nb.njit(cache=True)
def _shared(C):
    """Where the contexts shared by all channels start: level Exp-Golomb, vectors, offsets."""
    eg = PER_CHANNEL * C
    return eg, eg + N_EG, eg + N_EG + N_MV


def new_contexts(channels: int) -> np.ndarray:
    return np.full(n_contexts(channels), PROB_INIT, dtype=np.int64)


# --- range encoder: state st = [low, range, cache, cache_size, n_out, first] ---------------


@nb.njit(cache=True)
def _shift_low(st, out):
    low = st[0]
    if (low & 0xFFFFFFFF) < 0xFF000000 or (low >> 32) != 0:
        carry = low >> 32
        temp = st[2]
        while True:
            if st[5]:  # LZMA's implicit leading byte (always 0) is not written
                st[5] = 0
            else:
                out[st[4]] = (temp + carry) & 0xFF
                st[4] += 1
            temp = 0xFF
            st[3] -= 1
            if st[3] == 0:
                break
        st[2] = (low >> 24) & 0xFF
    st[3] += 1
    st[0] = (low & 0x00FFFFFF) << 8


@nb.njit(cache=True)
def _enc_norm(st, out):
    """Renormalise the encoder: shift out bytes while the range is below TOP."""
    while st[1] < TOP:
        st[1] = (st[1] << 8) & 0xFFFFFFFF
        _shift_low(st, out)


@nb.njit(cache=True)
def _adapt(probs, i, bit):
    """Move context i's probability towards the bit just coded."""
    p = probs[i]
    probs[i] = p + (((1 << PROB_BITS) - p) >> ADAPT) if bit == 0 else p - (p >> ADAPT)


@nb.njit(cache=True)
def _enc_bit(st, out, probs, i, bit):
    bound = (st[1] >> PROB_BITS) * probs[i]
    if bit == 0:
        st[1] = bound
    else:
        st[0] += bound
        st[1] -= bound
    _adapt(probs, i, bit)
    _enc_norm(st, out)


@nb.njit(cache=True)
def _enc_bypass(st, out, bit):
    st[1] >>= 1
    if bit:
        st[0] += st[1]
    _enc_norm(st, out)


@nb.njit(cache=True)
def _enc_flush(st, out):
    for _ in range(5):
        _shift_low(st, out)


@nb.njit(cache=True)
def _enc_eg(st, out, probs, base, v):
    """Exp-Golomb order 0 of v >= 0: adaptive prefix (contexts base + k), bypass suffix."""
    v1 = v + 1
    nbits = 0
    while (v1 >> (nbits + 1)) != 0:
        nbits += 1
    for k in range(nbits):
        _enc_bit(st, out, probs, base + k, 1)
    _enc_bit(st, out, probs, base + nbits, 0)
    for k in range(nbits - 1, -1, -1):
        _enc_bypass(st, out, (v1 >> k) & 1)


# --- range decoder: state st = [code, range, pos, overread] ---------------------------------


@nb.njit(cache=True)
def _next_byte(st, data):
    if st[2] < data.shape[0]:
        b = data[st[2]]
    else:
        b = 0
        st[3] += 1
    st[2] += 1
    return b


@nb.njit(cache=True)
def _dec_init(st, data):
    st[0] = 0
    st[1] = 0xFFFFFFFF
    st[2] = 0
    st[3] = 0
    for _ in range(4):
        st[0] = ((st[0] << 8) | _next_byte(st, data)) & 0xFFFFFFFF


@nb.njit(cache=True)
def _dec_norm(st, data):
    """Renormalise the decoder: shift in bytes while the range is below TOP (mirror of _enc_norm)."""
    while st[1] < TOP:
        st[1] = (st[1] << 8) & 0xFFFFFFFF
        st[0] = ((st[0] << 8) | _next_byte(st, data)) & 0xFFFFFFFF


@nb.njit(cache=True)
def _dec_bit(st, data, probs, i):
    bound = (st[1] >> PROB_BITS) * probs[i]
    if st[0] < bound:
        st[1] = bound
        bit = 0
    else:
        st[0] -= bound
        st[1] -= bound
        bit = 1
    _adapt(probs, i, bit)
    _dec_norm(st, data)
    return bit


@nb.njit(cache=True)
def _dec_bypass(st, data):
    st[1] >>= 1
    bit = 0
    if st[0] >= st[1]:
        st[0] -= st[1]
        bit = 1
    _dec_norm(st, data)
    return bit


@nb.njit(cache=True)
def _dec_eg(st, data, probs, base):
    """Inverse of _enc_eg; -1 when the prefix is longer than MAX_PREFIX (corrupt data)."""
    nbits = 0
    while _dec_bit(st, data, probs, base + nbits) == 1:
        nbits += 1
        if nbits > MAX_PREFIX - 1:
            return -1
    v1 = 1
    for _ in range(nbits):
        v1 = (v1 << 1) | _dec_bypass(st, data)
    return v1 - 1


# --- frame syntax -----------------------------------------------------------------------------


@nb.njit(cache=True)
def _enc_signed(st, out, probs, nz, sgn, eg, v):
    """A signed integer (vector difference, offset): ``v != 0`` (context nz), then its sign
    (context sgn; bypass if sgn < 0) and ``|v| - 1`` as Exp-Golomb (contexts eg..)."""
    _enc_bit(st, out, probs, nz, 1 if v != 0 else 0)
    if v != 0:
        if sgn < 0:
            _enc_bypass(st, out, 1 if v < 0 else 0)
        else:
            _enc_bit(st, out, probs, sgn, 1 if v < 0 else 0)
        _enc_eg(st, out, probs, eg, abs(v) - 1)


@nb.njit(cache=True)
def _dec_signed(st, data, probs, nz, sgn, eg):
    """Inverse of _enc_signed: (v, 0), or (0, 1) on a too long Exp-Golomb prefix."""
    if _dec_bit(st, data, probs, nz) == 0:
        return 0, 0
    neg = _dec_bypass(st, data) if sgn < 0 else _dec_bit(st, data, probs, sgn)
    m = _dec_eg(st, data, probs, eg)
    if m < 0:
        return 0, 1
    return (-(m + 1) if neg else m + 1), 0


@nb.njit(cache=True)
def _level_ctx(q, c, y, x):
    """Neighbour context n = min(|left|, 2) + min(|top|, 2) and the sign context 3 sl + st of the left and top levels."""
    n = 0
    s = 0
    if x > 0:
        a = abs(q[c, y, x - 1])
        n += min(a, 2)
        s = 1 if q[c, y, x - 1] > 0 else (2 if q[c, y, x - 1] < 0 else 0)
    if y > 0:
        n += min(abs(q[c, y - 1, x]), 2)
        s = 3 * s + (1 if q[c, y - 1, x] > 0 else (2 if q[c, y - 1, x] < 0 else 0))
    else:
        s = 3 * s
    return n, s


@nb.njit(cache=True)
def _ab(count, c):
    """Bucket of how many of the c earlier channels are non-zero at a place, or coded a tile (integers only)."""
    if c == 0:
        return 0
    if count == 0:
        return 1
    if 10 * count < c:
        return 2
    return 3 if 10 * count < 3 * c else 4


@nb.njit(cache=True)
def _pb(p):
    a = (abs(p) + (1 << (FRAC - 1))) >> FRAC  # |P| in whole steps, rounded
    return 0 if a == 0 else (1 if a == 1 else (2 if a < 4 else 3))


# Encoder-only bit costs (floats are fine: the decoder never sees them): -log2 P(bit) per probability.
_P = np.arange(1 << PROB_BITS, dtype=np.float64).clip(1, None) / (1 << PROB_BITS)
COST = np.stack([-np.log2(_P), -np.log2(np.maximum(1 - _P, 1e-9))])


@nb.njit(cache=True)
def _bit(st, out, probs, i, bit, sim):
    """sim 0: encode; 1: cost in bits and adapt as encoding would; 2: cost only."""
    if sim == 0:
        _enc_bit(st, out, probs, i, bit)
        return 0.0
    c = COST[bit, probs[i]]
    if sim == 1:
        _adapt(probs, i, bit)
    return c


@nb.njit(cache=True)
def _eg_bits(st, out, probs, base, v, sim):
    if sim == 0:
        _enc_eg(st, out, probs, base, v)
        return 0.0
    v1 = v + 1
    nbits = 0
    while (v1 >> (nbits + 1)) != 0:
        nbits += 1
    c = 0.0
    for k in range(nbits):
        c += _bit(st, out, probs, base + k, 1, sim)
    return c + _bit(st, out, probs, base + nbits, 0, sim) + nbits


@nb.njit(cache=True)
def _cbf_ctx(cbf, tact, i, j, c):
    """Coded-tile flag context: left + top flags of this channel (0 outside) and the tile's activity."""
    return (cbf[i, j - 1] if j > 0 else 0) + (cbf[i - 1, j] if i > 0 else 0) + 3 * _ab(tact[i, j], c)


@nb.njit(cache=True)
def _sig_ctx(n, pb, ab):
    return SIG + N_PB * (N_NB * ab + n) + pb


@nb.njit(cache=True)
def _gt1_ctx(n, pb):
    return GT1 + N_PB * min(n, 2) + pb


@nb.njit(cache=True)
def _level(st, out, probs, base, eg, n, s, pb, ab, v, sim):
    """Code (sim 0) or cost (sim 1, 2) one level with its contexts."""
    c = _bit(st, out, probs, base + _sig_ctx(n, pb, ab), 1 if v != 0 else 0, sim)
    if v == 0:
        return c
    c += _bit(st, out, probs, base + SIGN + s, 1 if v < 0 else 0, sim)
    a = abs(v)
    c += _bit(st, out, probs, base + _gt1_ctx(n, pb), 1 if a > 1 else 0, sim)
    if a > 1:
        c += _bit(st, out, probs, base + GT2, 1 if a > 2 else 0, sim)
        if a > 2:
            c += _eg_bits(st, out, probs, eg, a - 3, sim)
    return c


@nb.njit(cache=True)
def _dec_level(st, data, probs, base, eg, n, s, pb, ab):
    """Inverse of _level (sim 0): (level, 0), or (0, 1) on a too long Exp-Golomb prefix."""
    if _dec_bit(st, data, probs, base + _sig_ctx(n, pb, ab)) == 0:
        return 0, 0
    neg = _dec_bit(st, data, probs, base + SIGN + s)
    a = 1
    if _dec_bit(st, data, probs, base + _gt1_ctx(n, pb)):
        a = 2
        if _dec_bit(st, data, probs, base + GT2):
            m = _dec_eg(st, data, probs, eg)
            if m < 0:
                return 0, 1
            a = 3 + m
    return (-a if neg else a), 0


@nb.njit(cache=True)
def _cheapest(probs, lo, hi, bit, n):
    """Fewest bits that ``bit`` can cost in contexts lo..hi-1 after up to n adaptations towards it."""
    p = probs[lo]
    for i in range(lo + 1, hi):  # the most favourable context: cost falls as p moves away from the bit
        p = max(p, probs[i]) if bit == 0 else min(p, probs[i])
    for _ in range(n):
        p = p + (((1 << PROB_BITS) - p) >> ADAPT) if bit == 0 else p - (p >> ADAPT)
    return COST[bit, p]


@nb.njit(cache=True)
def _skip_bounds(probs, d, c, y0, y1, x0, x1, base, ncbf, lam, wm, rest):
    """The cost of skipping the tile, and in ``rest[k]`` a lower bound of what coding its levels k.. costs.

    Level k costs at least min(r^2, (|r| - a)^2 + lam * b), a >= 1 the nearest integer and b the
    fewest bits of any non-zero level (significance, sign and > 1 in their cheapest contexts, as
    adapted as the tile's levels could make them); zeros cost at least nothing. Once the trial's cost
    so far plus ``rest`` reaches the skip cost, the tile is skipped whatever the remaining levels are.
    """
    n = (y1 - y0) * (x1 - x0)
    b = _cheapest(probs, base + SIG, base + SIGN, 1, n)
    lo, hi = base + SIGN, base + GT1
    b += min(_cheapest(probs, lo, hi, 0, n), _cheapest(probs, lo, hi, 1, n))
    lo, hi = hi, hi + N_GT1
    b += min(_cheapest(probs, lo, hi, 0, n), _cheapest(probs, lo, hi, 1, n))
    j_skip = lam * COST[0, probs[base + ncbf]]
    k = 0
    sr = 0.0
    for y in range(y0, y1):
        for x in range(x0, x1):
            sr += d[c, y, x]
            r = abs(d[c, y, x])
            j_skip += r * r
            a = max(1.0, np.floor(r + 0.5))
            rest[k] = min(r * r, (r - a) * (r - a) + lam * b)
            k += 1
    rest[n] = 0.0
    for k in range(n - 1, -1, -1):
        rest[k] += rest[k + 1]
    return j_skip + wm * sr * sr / n  # the mean term (see _rdoq_tile); not in the bounds, which stay lower bounds


@nb.njit(cache=True)
def _rdoq_tile(st, out, probs, q, pred, d, act, c, y0, y1, x0, x1, base, eg, ncbf, lam, wm, saved, rest):
    """Rate-distortion-optimised levels of one tile, in place (greedy in coding order, each level
    |q|, |q| - 1 or 0, bit costs from the live contexts), then the whole tile against skipping it.
    Cost: squared error + ``lam`` * bits + ``wm`` * (sum of the tile's errors)^2 / its size.
    ``saved``, ``rest``: scratch (the contexts the trial adapts, restored after it; bounds)."""
    nz = False
    for y in range(y0, y1):
        for x in range(x0, x1):
            nz = nz or q[c, y, x] != 0
    if not nz:  # levels only move towards zero: nothing to decide
        return
    j_skip = _skip_bounds(probs, d, c, y0, y1, x0, x1, base, ncbf, lam, wm, rest)
    nt = (y1 - y0) * (x1 - x0)
    se = 0.0  # the tile's error sum so far: its mean weighs wm extra (it moves the task more than its share of MSE)
    margin = 1e-9 * (1.0 + j_skip)  # bounds summed in another order: decide early only when clear
    j_coded = lam * COST[1, probs[base + ncbf]]
    if j_coded + rest[0] > j_skip + margin:
        q[c, y0:y1, x0:x1] = 0
        return
    for k in range(PER_CHANNEL):
        saved[k] = probs[base + k]
    for k in range(N_EG):
        saved[PER_CHANNEL + k] = probs[eg + k]
    coded = False
    k = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            if j_coded + rest[k] > j_skip + margin:  # skipping wins whatever follows
                coded = False
                break
            k += 1
            r = d[c, y, x]
            n, s = _level_ctx(q, c, y, x)
            pb = _pb(pred[c, y, x])
            ab = _ab(act[y, x], c)
            a0 = abs(q[c, y, x])
            sg = -1 if r < 0 else 1
            best, bv, bp = 1e300, 0, 0.0  # cost with and without the mean term, level
            for a in (a0, a0 - 1, 0):
                if a < 0 or (a == 0 and a0 > 2):
                    continue
                v = sg * a
                e = (r - v) * (r - v) + lam * _level(st, out, probs, base, eg, n, s, pb, ab, v, 2)
                em = e + wm * ((se + r - v) ** 2 - se * se) / nt
                if em < best:
                    best, bv, bp = em, v, e
                if a == 0:
                    break
            q[c, y, x] = bv
            _level(st, out, probs, base, eg, n, s, pb, ab, bv, 1)
            j_coded += bp  # without the mean term: with rest, a lower bound of the final cost
            se += r - bv
            coded = coded or bv != 0
        else:
            continue
        break
    for k in range(PER_CHANNEL):
        probs[base + k] = saved[k]
    for k in range(N_EG):
        probs[eg + k] = saved[PER_CHANNEL + k]
    if not coded or j_skip <= j_coded + wm * se * se / nt:
        q[c, y0:y1, x0:x1] = 0


@nb.njit(cache=True)
def _count_activity(q, c, cbf, act, tact):
    """Add channel c's non-zero levels and coded tiles to the cross-channel counts."""
    for y in range(q.shape[1]):
        for x in range(q.shape[2]):
            if q[c, y, x] != 0:
                act[y, x] += 1
    for i in range(cbf.shape[0]):
        for j in range(cbf.shape[1]):
            tact[i, j] += cbf[i, j]


@nb.njit(cache=True)
def encode_frame(q, pred, d, mv, dc, block, probs, with_mv, lam, wm=0.0):
    """Code levels q (C, H, W) int64 (whole steps) given the prediction pred (same shape, 1/16 step; zeros
    for intra), the channels' offsets dc (C,) int64 (1/16 step) and, if with_mv, the motion field mv
    (2, ceil(H / mblock), ceil(W / mblock)) int64; returns (bytes (uint8), bytes written once the vectors were coded).

    With ``lam > 0`` the levels are first chosen in place by rate-distortion optimisation
    against the residual ``d`` (float, step units): ``(d - q)^2 + lam * bits`` plus ``wm`` times
    each tile's squared error sum over its size (:func:`_rdoq_tile`).
    """
    C, H, W = q.shape
    nh, nw = (H + block - 1) // block, (W + block - 1) // block
    # worst case: 24 bytes per level, 32 per vector and per offset, one per tile flag
    out = np.empty(64 + 24 * q.size + 32 * mv.shape[1] * mv.shape[2] + C * nh * nw + 32 * C, np.uint8)  # only written bytes are read
    st = np.array([0, 0xFFFFFFFF, 0, 1, 0, 1], np.int64)
    eg, mvb, dcb = _shared(C)
    if with_mv:
        for i in range(mv.shape[1]):
            for j in range(mv.shape[2]):
                pr = mv_pred(mv, i, j)
                for k in range(2):
                    _enc_signed(st, out, probs, mvb + k, -1, mvb + 2, mv[k, i, j] - pr[k])
    side = st[4]
    for c in range(C):
        _enc_signed(st, out, probs, PER_CHANNEL * c + OFF_NZ, dcb, dcb + 1, dc[c])
    cbf = np.zeros((nh, nw), np.int64)
    act = np.zeros((H, W), np.int64)  # earlier channels' non-zero levels per place
    tact = np.zeros((nh, nw), np.int64)  # earlier channels' coded tiles per tile
    saved = np.empty(PER_CHANNEL + N_EG, np.int64)
    rest = np.empty(block * block + 1)
    for c in range(C):
        base = PER_CHANNEL * c
        for i in range(nh):
            for j in range(nw):
                y0, x0 = i * block, j * block
                y1, x1 = min(y0 + block, H), min(x0 + block, W)
                n = _cbf_ctx(cbf, tact, i, j, c)
                if lam > 0:
                    _rdoq_tile(st, out, probs, q, pred, d, act, c, y0, y1, x0, x1, base, eg, n, lam, wm, saved, rest)
                f = 0
                for y in range(y0, y1):
                    for x in range(x0, x1):
                        if q[c, y, x] != 0:
                            f = 1
                cbf[i, j] = f
                _enc_bit(st, out, probs, base + n, f)
                if f == 0:
                    continue
                for y in range(y0, y1):
                    for x in range(x0, x1):
                        n2, s = _level_ctx(q, c, y, x)
                        _level(st, out, probs, base, eg, n2, s, _pb(pred[c, y, x]), _ab(act[y, x], c), q[c, y, x], 0)
        _count_activity(q, c, cbf, act, tact)
    _enc_flush(st, out)
    n_out = st[4]
    while n_out > 0 and out[n_out - 1] == 0:  # trailing zeros read back as zeros
        n_out -= 1
    return out[:n_out].copy(), side


@nb.njit(cache=True)
def decode_frame(data, C, H, W, block, mblock, probs, with_mv, max_mv, ref, subpel):
    """Inverse of encode_frame; the prediction is made from the previous reconstruction ``ref`` once the vectors are read (with_mv).

    Returns (q, pred, dc, status): status 0 ok, 1 corrupt (Exp-Golomb prefix or vector out of range).
    Reading past the end is not an error (the encoder cuts trailing zero bytes); work is bounded by
    the caller (elements per byte of the record).
    """
    nh, nw = (H + block - 1) // block, (W + block - 1) // block
    q = np.zeros((C, H, W), np.int64)
    mv = np.zeros((2, (H + mblock - 1) // mblock, (W + mblock - 1) // mblock), np.int64)
    pred = np.zeros((0, 0, 0), np.int64)
    dc = np.zeros(C, np.int64)
    st = np.zeros(4, np.int64)
    _dec_init(st, data)
    eg, mvb, dcb = _shared(C)
    if with_mv:
        for i in range(mv.shape[1]):
            for j in range(mv.shape[2]):
                pr = mv_pred(mv, i, j)
                for k in range(2):
                    d, bad = _dec_signed(st, data, probs, mvb + k, -1, mvb + 2)
                    v = pr[k] + d
                    if bad or abs(v) > max_mv:
                        return q, pred, dc, 1
                    mv[k, i, j] = v
        pred = predict(ref, mv, mblock, subpel)
    else:
        pred = np.zeros((C, H, W), np.int64)
    for c in range(C):
        dc[c], bad = _dec_signed(st, data, probs, PER_CHANNEL * c + OFF_NZ, dcb, dcb + 1)
        if bad:
            return q, pred, dc, 1
    cbf = np.zeros((nh, nw), np.int64)
    act = np.zeros((H, W), np.int64)
    tact = np.zeros((nh, nw), np.int64)
    for c in range(C):
        base = PER_CHANNEL * c
        for i in range(nh):
            for j in range(nw):
                y0, x0 = i * block, j * block
                y1, x1 = min(y0 + block, H), min(x0 + block, W)
                f = _dec_bit(st, data, probs, base + _cbf_ctx(cbf, tact, i, j, c))
                cbf[i, j] = f
                if f == 0:
                    continue
                for y in range(y0, y1):
                    for x in range(x0, x1):
                        n, s = _level_ctx(q, c, y, x)
                        v, bad = _dec_level(st, data, probs, base, eg, n, s, _pb(pred[c, y, x]), _ab(act[y, x], c))
                        if bad:
                            return q, pred, dc, 1
                        q[c, y, x] = v
        _count_activity(q, c, cbf, act, tact)
    return q, pred, dc, 0
