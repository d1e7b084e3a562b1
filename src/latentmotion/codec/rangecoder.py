"""The binary range coder alone: adaptive and bypass bits, Exp-Golomb, integers only.

It is LZMA's binary range coder (32-bit range; bypass bits halve it; the implicit
leading zero byte of LZMA's encoder is not written; bytes past the end of the
data read as zero, so the encoder cuts trailing zero bytes) with a context state
of its own: a ``PROB_BITS``-bit probability ``p`` (of the bit being 0) and a count
``n`` of the bits the context has coded, packed as ``p | n << 16``. After every bit
``p`` moves by ``(32768 - p) >> k`` (a 0) or ``-(p >> k)`` (a 1), then is clamped to
``P_MIN .. 32768 - P_MIN``, with ``k = clamp(floor(log2(n + 2)), 2, 6)``: a young context
learns fast (a running mean of its first bits), an old one settles (LZMA's fixed
``k = 5`` left per-channel contexts, which see few bits per frame, near 1/2 for most of a
clip: priced on logged encodes, this rule codes the same decisions in 0.4-1.9 % fewer bits at
the finest step, 3-11 % at the middle ones and 12-31 % at the coarsest).

Contract: the coder knows nothing of what the bits mean. A caller owns a
table of context states (int64, one entry per context, :data:`PROB_INIT` to start)
and passes the index of the context of every adaptive bit; encoder and decoder
must pass the same indices in the same order. State travels in two small named
tuples of int64 arrays, :class:`RangeEncoder` and :class:`RangeDecoder`, which
numba kernels take as one argument.

Example:
    >>> import numpy as np
    >>> probs = np.full(1 + MAX_PREFIX, PROB_INIT, np.int64)  # context 0, then an Exp-Golomb prefix
    >>> e = encoder(64)
    >>> for bit in (0, 0, 1, 0):
    ...     enc_bit(e, probs, 0, bit)
    >>> enc_eg(e, probs, 1, 5)
    >>> data = finish(e)
    >>> probs = np.full(1 + MAX_PREFIX, PROB_INIT, np.int64)  # context 0, then an Exp-Golomb prefix
    >>> d = decoder(data)
    >>> [dec_bit(d, probs, 0) for _ in range(4)], dec_eg(d, probs, 1)
    ([0, 0, 1, 0], 5)
"""

from __future__ import annotations

from collections import namedtuple

import numba as nb
import numpy as np

__all__ = [
    "MAX_PREFIX",
    "PROB_BITS",
    "PROB_INIT",
    "RangeDecoder",
    "RangeEncoder",
    "adapt",
    "adapted",
    "cost",
    "count",
    "dec_bit",
    "dec_bypass",
    "dec_eg",
    "decoder",
    "eg_length",
    "enc_bit",
    "enc_bypass",
    "enc_eg",
    "encoder",
    "finish",
    "prob",
    "state",
]

PROB_BITS = 15
P_ONE = 1 << PROB_BITS
PROB_INIT = P_ONE >> 1  # p = 1/2, no bits coded yet
P_MIN = 32  # p stays within P_MIN .. P_ONE - P_MIN (from a fresh state, 63 .. P_ONE - 63: a surprise costs at most 9.02 bits)
K_MIN, K_MAX = 2, 6  # adaptation shifts, young to settled
N_MAX = (1 << K_MAX) - 2  # the count stops where the shift stops growing
#: the adaptation shift of a context that has coded n bits: clamp(floor(log2(n + 2)), K_MIN, K_MAX)
_SHIFT = np.array([min(max((n + 2).bit_length() - 1, K_MIN), K_MAX) for n in range(N_MAX + 1)], np.int64)
TOP = 1 << 24
MAX_PREFIX = 16  # Exp-Golomb: at most MAX_PREFIX - 1 prefix ones, so values below 2 ** 16 - 1

#: encoder state ``st = [low, range, cache, cache_size, n_out, first]`` and the output buffer
RangeEncoder = namedtuple("RangeEncoder", "st out")
#: decoder state ``st = [code, range, pos, overread]`` and the data
RangeDecoder = namedtuple("RangeDecoder", "st data")

# Encoder-only bit costs (floats are fine: the decoder never sees them): -log2 P(bit) per 16 probability steps.
_P = (16 * np.arange(P_ONE >> 4) + 8) / P_ONE
COST = np.stack([-np.log2(_P), -np.log2(1 - _P)])


def encoder(capacity: int) -> RangeEncoder:
    """A fresh encoder writing at most ``capacity`` bytes (the caller bounds what it codes)."""
    return RangeEncoder(np.array([0, 0xFFFFFFFF, 0, 1, 0, 1], np.int64), np.empty(capacity, np.uint8))


def decoder(data: np.ndarray | bytes) -> RangeDecoder:
    """A decoder positioned at the start of ``data`` (uint8)."""
    d = RangeDecoder(np.zeros(4, np.int64), np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data)
    _dec_init(d)
    return d


def finish(e: RangeEncoder) -> np.ndarray:
    """Flush and return the coded bytes (uint8), trailing zeros cut (they read back as zeros); RuntimeError if
    they outgrew the encoder's capacity (a caller's bound was wrong: never a silent write past the buffer)."""
    out = _finish(e)
    if e.st[4] > e.out.shape[0]:
        raise RuntimeError(f"range coder output of {e.st[4]} bytes exceeds its capacity of {e.out.shape[0]}")
    return out


@nb.njit(cache=True)
def _finish(e):
    for _ in range(5):
        _shift_low(e)
    n = e.st[4]
    if n > e.out.shape[0]:  # bytes were counted but not written: finish() reports it
        return e.out[:0].copy()
    while n > 0 and e.out[n - 1] == 0:
        n -= 1
    return e.out[:n].copy()


@nb.njit(cache=True, inline="always")
def state(p, n):
    """The context state of probability ``p`` (of a 0, in 1/P_ONE) and count ``n``: ``p | n << 16``."""
    return p | (n << 16)


@nb.njit(cache=True, inline="always")
def prob(s):
    """The probability of a 0 (in 1/P_ONE) that context state ``s`` holds."""
    return s & 0xFFFF


@nb.njit(cache=True, inline="always")
def count(s):
    """How many bits context state ``s`` has coded (saturating at N_MAX)."""
    return s >> 16


@nb.njit(cache=True, inline="always")
def adapted(s, bit):
    """A context state ``s`` after coding ``bit``: the coder's one adaptation rule."""
    p, n = prob(s), count(s)
    k = _SHIFT[n]
    p = p + ((P_ONE - p) >> k) if bit == 0 else p - (p >> k)
    return state(min(max(p, P_MIN), P_ONE - P_MIN), min(n + 1, N_MAX))


@nb.njit(cache=True, inline="always")
def cost(bit, s):
    """Bits that coding ``bit`` in context state ``s`` costs (encoder only: a float estimate)."""
    return COST[bit, prob(s) >> 4]


@nb.njit(cache=True, inline="always")
def adapt(probs, i, bit):
    """Move context i's probability towards the bit just coded."""
    probs[i] = adapted(probs[i], bit)


@nb.njit(cache=True)
def eg_length(v):
    """Exp-Golomb order 0 of v >= 0 has this many prefix ones (then a 0 and as many suffix bits)."""
    v1 = v + 1
    n = 0
    while (v1 >> (n + 1)) != 0:
        n += 1
    return n


@nb.njit(cache=True)
def _shift_low(e):
    st, out = e.st, e.out
    low = st[0]
    if (low & 0xFFFFFFFF) < 0xFF000000 or (low >> 32) != 0:
        carry = low >> 32
        temp = st[2]
        while True:
            if st[5]:  # LZMA's implicit leading byte (always 0) is not written
                st[5] = 0
            else:
                if st[4] < out.shape[0]:  # past the capacity only counted (finish raises)
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
def _enc_norm(e):
    """Renormalise the encoder: shift out bytes while the range is below TOP."""
    while e.st[1] < TOP:
        e.st[1] = (e.st[1] << 8) & 0xFFFFFFFF
        _shift_low(e)


@nb.njit(cache=True, inline="always")
def enc_bit(e, probs, i, bit):
    """Code ``bit`` with context ``i`` of ``probs`` (adapted)."""
    st = e.st
    bound = (st[1] >> PROB_BITS) * prob(probs[i])
    if bit == 0:
        st[1] = bound
    else:
        st[0] += bound
        st[1] -= bound
    adapt(probs, i, bit)
    _enc_norm(e)


@nb.njit(cache=True)
def enc_bypass(e, bit):
    """Code ``bit`` at probability 1/2."""
    e.st[1] >>= 1
    if bit:
        e.st[0] += e.st[1]
    _enc_norm(e)


@nb.njit(cache=True)
def enc_eg(e, probs, base, v):
    """Exp-Golomb order 0 of v >= 0: adaptive prefix (contexts base + k), bypass suffix."""
    v1 = v + 1
    nbits = eg_length(v)
    for k in range(nbits):
        enc_bit(e, probs, base + k, 1)
    enc_bit(e, probs, base + nbits, 0)
    for k in range(nbits - 1, -1, -1):
        enc_bypass(e, (v1 >> k) & 1)


@nb.njit(cache=True)
def _next_byte(d):
    st = d.st
    if st[2] < d.data.shape[0]:
        b = d.data[st[2]]
    else:
        b = 0
        st[3] += 1
    st[2] += 1
    return b


@nb.njit(cache=True)
def _dec_init(d):
    st = d.st
    st[0], st[1], st[2], st[3] = 0, 0xFFFFFFFF, 0, 0
    for _ in range(4):
        st[0] = ((st[0] << 8) | _next_byte(d)) & 0xFFFFFFFF


@nb.njit(cache=True)
def _dec_norm(d):
    """Renormalise the decoder: shift in bytes while the range is below TOP (mirror of _enc_norm)."""
    st = d.st
    while st[1] < TOP:
        st[1] = (st[1] << 8) & 0xFFFFFFFF
        st[0] = ((st[0] << 8) | _next_byte(d)) & 0xFFFFFFFF


@nb.njit(cache=True, inline="always")
def dec_bit(d, probs, i):
    """Inverse of :func:`enc_bit`."""
    st = d.st
    bound = (st[1] >> PROB_BITS) * prob(probs[i])
    if st[0] < bound:
        st[1] = bound
        bit = 0
    else:
        st[0] -= bound
        st[1] -= bound
        bit = 1
    adapt(probs, i, bit)
    _dec_norm(d)
    return bit


@nb.njit(cache=True)
def dec_bypass(d):
    """Inverse of :func:`enc_bypass`."""
    st = d.st
    st[1] >>= 1
    bit = 0
    if st[0] >= st[1]:
        st[0] -= st[1]
        bit = 1
    _dec_norm(d)
    return bit


@nb.njit(cache=True)
def dec_eg(d, probs, base):
    """Inverse of :func:`enc_eg`; -1 when the prefix is longer than MAX_PREFIX (corrupt data)."""
    nbits = 0
    while dec_bit(d, probs, base + nbits) == 1:
        nbits += 1
        if nbits > MAX_PREFIX - 1:
            return -1
    v1 = 1
    for _ in range(nbits):
        v1 = (v1 << 1) | dec_bypass(d)
    return v1 - 1
