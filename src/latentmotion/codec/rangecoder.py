"""The binary range coder alone: adaptive and bypass bits, Exp-Golomb, integers only.

It is LZMA's binary range coder: 32-bit range, ``PROB_BITS``-bit probabilities
``p`` (of the bit being 0) that adapt after every bit by ``p += (2048 - p) >> 5``
(a 0) or ``p -= p >> 5`` (a 1); bypass bits halve the range. The implicit
leading zero byte of LZMA's encoder is not written. Bytes past the end of the
data read as zero, so the encoder cuts trailing zero bytes.

Contract: the coder knows nothing of what the bits mean. A caller owns a
probability table (int64, one entry per context, :data:`PROB_INIT` to start)
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
    "COST", "MAX_PREFIX", "PROB_BITS", "PROB_INIT", "RangeDecoder", "RangeEncoder",
    "adapt", "adapted", "dec_bit", "dec_bypass", "dec_eg", "decoder", "eg_length", "enc_bit", "enc_bypass", "enc_eg", "encoder", "finish",
]

PROB_BITS = 11
PROB_INIT = 1 << (PROB_BITS - 1)
ADAPT = 5
TOP = 1 << 24
MAX_PREFIX = 16  # Exp-Golomb: at most MAX_PREFIX - 1 prefix ones, so values below 2 ** 16 - 1

#: encoder state ``st = [low, range, cache, cache_size, n_out, first]`` and the output buffer
RangeEncoder = namedtuple("RangeEncoder", "st out")
#: decoder state ``st = [code, range, pos, overread]`` and the data
RangeDecoder = namedtuple("RangeDecoder", "st data")

# Encoder-only bit costs (floats are fine: the decoder never sees them): -log2 P(bit) per probability.
_P = np.arange(1 << PROB_BITS, dtype=np.float64).clip(1, None) / (1 << PROB_BITS)
COST = np.stack([-np.log2(_P), -np.log2(np.maximum(1 - _P, 1e-9))])


def encoder(capacity: int) -> RangeEncoder:
    """A fresh encoder writing at most ``capacity`` bytes (the caller bounds what it codes)."""
    return RangeEncoder(np.array([0, 0xFFFFFFFF, 0, 1, 0, 1], np.int64), np.empty(capacity, np.uint8))


def decoder(data: np.ndarray | bytes) -> RangeDecoder:
    """A decoder positioned at the start of ``data`` (uint8)."""
    d = RangeDecoder(np.zeros(4, np.int64), np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data)
    _dec_init(d)
    return d


def finish(e: RangeEncoder) -> np.ndarray:
    """Flush and return the coded bytes (uint8), trailing zeros cut (they read back as zeros)."""
    return _finish(e)


@nb.njit(cache=True)
def _finish(e):
    for _ in range(5):
        _shift_low(e)
    n = e.st[4]
    while n > 0 and e.out[n - 1] == 0:
        n -= 1
    return e.out[:n].copy()


@nb.njit(cache=True)
def adapted(p, bit):
    """A probability ``p`` (of a 0) after coding ``bit``: the coder's one adaptation rule."""
    return p + (((1 << PROB_BITS) - p) >> ADAPT) if bit == 0 else p - (p >> ADAPT)


@nb.njit(cache=True)
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


@nb.njit(cache=True)
def enc_bit(e, probs, i, bit):
    """Code ``bit`` with context ``i`` of ``probs`` (adapted)."""
    st = e.st
    bound = (st[1] >> PROB_BITS) * probs[i]
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


@nb.njit(cache=True)
def dec_bit(d, probs, i):
    """Inverse of :func:`enc_bit`."""
    st = d.st
    bound = (st[1] >> PROB_BITS) * probs[i]
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
