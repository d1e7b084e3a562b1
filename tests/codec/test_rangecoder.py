"""The binary range coder alone: round trips of any bit sequence (carries included), compression near the entropy."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
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
@given(ITEMS, st.sampled_from([1, 31, rc.PROB_INIT, 2016, 2047]))
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
    start = np.full(N, 2047, np.int64)
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
    assert rc.dec_eg(d, np.full(N, 1, np.int64), 1) == -1  # probabilities that make every bit a 1
