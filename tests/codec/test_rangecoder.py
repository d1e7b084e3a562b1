"""The binary range coder alone: round trips of any bit sequence (carries included), compression near the entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from latentmotion.codec import rangecoder as rc

N = 1 + rc.MAX_PREFIX  # context 0 for adaptive bits, then an Exp-Golomb prefix's contexts

ITEMS = st.lists(st.one_of(
    st.tuples(st.just(0), st.integers(0, 1)),  # adaptive bit
    st.tuples(st.just(1), st.integers(0, 1)),  # bypass bit
    st.tuples(st.just(2), st.integers(0, (1 << (rc.MAX_PREFIX - 1)) - 2)),  # Exp-Golomb value
), max_size=300)


def _encode(items, start):
    e, probs = rc.encoder(64 + 8 * len(items)), start.copy()
    for kind, v in items:
        if kind == 0:
            rc.enc_bit(e, probs, 0, v)
        elif kind == 1:
            rc.enc_bypass(e, v)
        else:
            rc.enc_eg(e, probs, 1, v)
    return rc.finish(e), probs


def _decode(data, items, start):
    d, probs = rc.decoder(data), start.copy()
    out = [(k, rc.dec_bit(d, probs, 0) if k == 0 else rc.dec_bypass(d) if k == 1 else rc.dec_eg(d, probs, 1)) for k, _ in items]
    return out, probs


@settings(max_examples=80, deadline=None)
@given(ITEMS, st.sampled_from([rc.P_MIN, 1000, rc.PROB_INIT, 32000 | 5 << 16, (rc.P_ONE - rc.P_MIN) | rc.N_MAX << 16]))
def test_any_sequence_round_trips_from_any_probability(items, p0):
    """Extreme probabilities make long runs of 0xFF bytes and carries through them (LZMA's cache logic)."""
    start = np.full(N, p0, np.int64)
    data, probs = _encode(items, start)
    out, probs2 = _decode(data, items, start)
    assert out == items
    assert np.array_equal(probs, probs2)  # both sides adapted alike
    assert len(data) == 0 or data[-1] != 0  # trailing zeros are cut: they read back as zeros


def test_carries_through_runs_of_ff_bytes_are_decoded():
    rng = np.random.default_rng(5)
    items = [(0, int(b)) for b in rng.random(20000) < 0.999]  # nearly all ones at a probability that expects zeros
    start = np.full(N, (rc.P_ONE - rc.P_MIN) | rc.N_MAX << 16, np.int64)  # settled on zeros
    data, _ = _encode(items, start)
    assert (np.diff(np.flatnonzero(data == 0xFF)) == 1).any()  # the stream holds runs of 0xFF (carry territory)
    assert _decode(data, items, start)[0] == items


def test_adaptive_bits_approach_the_entropy_of_a_skewed_source():
    rng = np.random.default_rng(1)
    bits = (rng.random(4096) < 0.05).astype(int)  # 5 % ones
    data, _ = _encode([(0, int(b)) for b in bits], np.full(N, rc.PROB_INIT, np.int64))
    h = -(0.05 * np.log2(0.05) + 0.95 * np.log2(0.95)) * bits.size  # bits of an ideal coder knowing p
    assert h < 8 * len(data) < 1.3 * h


def test_a_prefix_longer_than_the_limit_is_reported_not_followed():
    d = rc.decoder(bytes([0xFF] * 16))
    assert rc.dec_eg(d, np.full(N, rc.P_MIN, np.int64), 1) == -1  # probabilities that make every bit a 1


def _reference_adapted(p: int, n: int, bit: int) -> tuple[int, int]:
    """docs/codec.md section 4's adaptation rule, transcribed from the text (independent of the coder's table)."""
    k = min(max(math.floor(math.log2(n + 2)), 2), 6)
    p = p + ((32768 - p) >> k) if bit == 0 else p - (p >> k)
    return min(max(p, 32), 32736), min(n + 1, 62)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 1), max_size=200), st.integers(32, 32736), st.integers(0, 62))
@example([0, 0], 32736, 0)  # the upper clamp
@example([1, 1], 32, 0)  # the lower clamp
@example([1, 0, 1], 1000, 61)  # the count saturates at 62
def test_adaptation_follows_the_documented_rule(bits, p0, n0):
    s, (p, n) = p0 | n0 << 16, (p0, n0)
    for b in bits:
        s, (p, n) = rc.adapted(s, b), _reference_adapted(p, n, b)
        assert (rc.prob(s), rc.count(s)) == (p, n)


def test_a_young_context_learns_a_skewed_source_faster_than_a_fixed_rate():
    """The counting state's point: on a short run (one channel's bits in one frame) it costs fewer bits than LZMA's k = 5."""
    rng = np.random.default_rng(2)
    ours = fixed = 0.0
    for _ in range(200):
        s, p = rc.PROB_INIT, 1024  # 15-bit counting state; LZMA's 11-bit one
        for b in (rng.random(24) < 0.08).astype(int):
            ours += -math.log2((rc.prob(s) if b == 0 else rc.P_ONE - rc.prob(s)) / rc.P_ONE)
            fixed += -math.log2((p if b == 0 else 2048 - p) / 2048)
            s, p = rc.adapted(s, b), p + ((2048 - p) >> 5) if b == 0 else p - (p >> 5)
    assert ours < 0.8 * fixed


class _Section4Decoder:
    """docs/codec.md section 4's decoding, transcribed from the page in plain Python integers."""

    def __init__(self, data: bytes, contexts: int):
        self.data, self.pos, self.range = data, 4, 0xFFFFFFFF
        self.code = int.from_bytes(data[:4].ljust(4, b"\0"), "big")
        self.p, self.n = [16384] * contexts, [0] * contexts

    def _byte(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def _normalise(self) -> None:
        while self.range < 1 << 24:
            self.range = (self.range << 8) & 0xFFFFFFFF
            self.code = ((self.code << 8) | self._byte()) & 0xFFFFFFFF

    def bit(self, i: int) -> int:
        bound = (self.range >> 15) * self.p[i]
        if self.code < bound:
            self.range, bit = bound, 0
        else:
            self.code, self.range, bit = self.code - bound, self.range - bound, 1
        k = min(max(math.floor(math.log2(self.n[i] + 2)), 2), 6)
        self.p[i] = self.p[i] + ((32768 - self.p[i]) >> k) if bit == 0 else self.p[i] - (self.p[i] >> k)
        self.p[i], self.n[i] = min(max(self.p[i], 32), 32736), min(self.n[i] + 1, 62)
        self._normalise()
        return bit

    def bypass(self) -> int:
        self.range >>= 1
        bit = int(self.code >= self.range)
        if bit:
            self.code -= self.range
        self._normalise()
        return bit


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.lists(st.integers(-1, 3), min_size=1, max_size=400))
def test_decoder_agrees_with_the_page_on_any_bytes(data, ops):
    """Any bytes, read as adaptive bits of 4 contexts (op 0..3) and bypass bits (-1): the coder and a decoder
    written from the page read the same bits and end in the same state (the bound formula included)."""
    ref, d, probs = _Section4Decoder(data, 4), rc.decoder(data), np.full(4, rc.PROB_INIT, np.int64)
    for op in ops:
        assert (rc.dec_bypass(d) if op < 0 else rc.dec_bit(d, probs, op)) == (ref.bypass() if op < 0 else ref.bit(op))
    assert (int(d.st[0]), int(d.st[1])) == (ref.code, ref.range)
    assert [(rc.prob(s), rc.count(s)) for s in probs] == list(zip(ref.p, ref.n, strict=True))


def test_output_past_the_capacity_is_refused_not_written():
    e = rc.encoder(4)
    for b in np.random.default_rng(3).integers(0, 2, 400):
        rc.enc_bypass(e, int(b))
    with pytest.raises(RuntimeError, match="exceeds its capacity"):
        rc.finish(e)
