"""The syntax: every integer a frame sends round-trips through the contexts, and the contexts pay."""

from __future__ import annotations

import numpy as np
import pytest

from latentmotion.codec import MAX_Q, syntax
from latentmotion.codec import rangecoder as rc
from latentmotion.codec.prediction import BI, compensate


def _encode(q, pred, dc, mv, block):
    probs = syntax.new_contexts(q.shape[0])
    e = rc.encoder(syntax.capacity(q, block, np.zeros((2, 0, 0)) if mv is None else mv))
    if mv is not None:
        syntax.encode_vectors(e, probs, mv)
    syntax.encode_offsets(e, probs, dc)
    syntax.encode_levels(e, probs, syntax.levels(q, pred, block), 0)
    return rc.finish(e), probs


@pytest.mark.parametrize("with_mv", [False, True])
def test_vectors_offsets_and_levels_round_trip(with_mv):
    rng = np.random.default_rng(0)
    q = rng.laplace(0, 1.5, (6, 9, 11)).round().astype(np.int64)
    q[2] = 0  # a channel with no coded tile
    q[3, 0, 0], q[3, 0, 1] = -MAX_Q, MAX_Q  # the binarisation's extremes
    mv = rng.integers(-40, 40, (5, 3, 4)).astype(np.int64)  # motion tiles of 3 (coded-tile flags: 4)
    mv[BI] = rng.integers(0, 2, (3, 4))  # some tiles average two references, the others send no second vector
    mv[3:] *= mv[BI]
    ref, ref2 = rng.integers(-50, 50, (2, *q.shape)).astype(np.int64)
    pred = compensate(ref, ref2, mv, 3, 4) if with_mv else np.zeros_like(q)
    dc = np.array([0, 5, -1, MAX_Q, -MAX_Q, 1], np.int64)  # channel offsets, extremes included
    data, probs = _encode(q, pred, dc, mv if with_mv else None, 4)
    d, probs2 = rc.decoder(data), syntax.new_contexts(6)
    if with_mv:
        mv2, bad = syntax.decode_vectors(d, probs2, 3, 4, 4096)
        assert bad == 0 and np.array_equal(mv2, mv)
    dc2, bad = syntax.decode_offsets(d, probs2, 6)
    assert bad == 0 and np.array_equal(dc2, dc)
    q2, bad = syntax.decode_levels(d, probs2, pred, 4, q.size)
    assert bad == 0 and np.array_equal(q2, q)
    assert np.array_equal(probs, probs2)  # both sides adapted their contexts alike


def test_a_vector_beyond_the_bound_is_corrupt():
    for mv in ([[[100]], [[0]], [[0]], [[0]], [[0]]], [[[40]], [[0]], [[1]], [[100]], [[0]]]):  # v, or w (= 2 v + 20)
        data, _ = _encode(np.zeros((1, 2, 2), np.int64), np.zeros((1, 2, 2), np.int64), np.zeros(1, np.int64), np.array(mv, np.int64), 2)
        _, bad = syntax.decode_vectors(rc.decoder(data), syntax.new_contexts(1), 1, 1, 99)
        assert bad == 1
    _, bad = syntax.decode_vectors(rc.decoder(data), syntax.new_contexts(1), 1, 1, 100)
    assert bad == 0


def test_activity_counts_what_every_channel_coded():
    """The cross-channel counts after a walk: per place, how many channels hold a non-zero level; per tile, how many
    coded it (count_activity reads only coded tiles: a skipped tile must hold no level)."""
    rng = np.random.default_rng(3)
    q = rng.laplace(0, 0.6, (7, 10, 9)).round().astype(np.int64)
    q[:, :5, :5] *= rng.random((7, 1, 1)) < 0.5  # whole tiles skipped in some channels
    f = syntax.levels(q, np.zeros_like(q), 5)
    syntax.encode_levels(rc.encoder(0), syntax.new_contexts(7), f, 2)
    assert np.array_equal(f.act, (q != 0).sum(0))
    tiles = (q.reshape(7, 2, 5, 9)[..., :5] != 0).any(axis=(2, 3)), (q.reshape(7, 2, 5, 9)[..., 5:] != 0).any(axis=(2, 3))
    assert np.array_equal(f.tact, np.stack(tiles, -1).sum(0))


def test_costing_adapts_exactly_as_coding():
    """The residual stage decides with sim=1 costs: they must leave the contexts as coding leaves them."""
    rng = np.random.default_rng(2)
    q = rng.laplace(0, 1.0, (3, 8, 8)).round().astype(np.int64)
    pred = rng.integers(-80, 80, q.shape).astype(np.int64)
    coded, costed = syntax.new_contexts(3), syntax.new_contexts(3)
    e = rc.encoder(syntax.capacity(q, 4, np.zeros((2, 0, 0))))
    syntax.encode_levels(e, coded, syntax.levels(q, pred, 4), 0)
    bits = syntax.encode_levels(e, costed, syntax.levels(q, pred, 4), 1)
    assert np.array_equal(coded, costed)
    assert abs(bits - 8 * len(rc.finish(e))) < 0.02 * bits + 16  # the costs are the coder's lengths


def test_levels_where_earlier_channels_have_levels_cost_less():
    """Cross-channel activity contexts: levels at the same places in every channel (where one motion fails
    it fails for all, Eq. 12) code in fewer bytes than the same channels each moved by whole tiles
    (identical statistics within every channel, only the alignment across channels differs)."""
    rng = np.random.default_rng(3)
    c, h, w = 24, 32, 32
    support = rng.random((h, w)) < 0.12
    shared = np.where(support, rng.integers(1, 3, (c, h, w)) * rng.choice([-1, 1], (c, h, w)), 0).astype(np.int64)
    moved = np.stack([np.roll(shared[k], (4 * rng.integers(8), 4 * rng.integers(8)), (0, 1)) for k in range(c)])

    def nbytes(q):
        return len(_encode(q, np.zeros_like(q), np.zeros(c, np.int64), None, 4)[0])

    assert nbytes(shared) < 0.85 * nbytes(moved)


def test_cheapest_is_below_what_a_bit_can_cost_after_any_adaptations():
    """``_cheapest`` bounds RDOQ's early stop: for any states of the contexts (young or settled) and any n bits coded
    in any of them, in any direction, ``bit`` must cost at least the bound in every context at every point."""
    rng = np.random.default_rng(7)
    for _ in range(1500):
        m, bit, n = int(rng.integers(2, 6)), int(rng.integers(0, 2)), int(rng.integers(1, 40))
        probs = (rng.integers(rc.P_MIN, rc.P_ONE - rc.P_MIN + 1, m) | rng.integers(0, rc.N_MAX + 1, m) << 16).astype(np.int64)
        bound = syntax._cheapest(probs, 0, m, bit, n)
        toward = rng.random() < 0.8  # mostly towards the bit: the direction that cheapens it
        for _ in range(n):
            assert min(rc.cost(bit, s) for s in probs) >= bound - 1e-12
            i = int(rng.integers(0, m))
            probs[i] = rc.adapted(probs[i], bit if toward or rng.random() < 0.5 else 1 - bit)
        assert min(rc.cost(bit, s) for s in probs) >= bound - 1e-12


def test_inheritance_matches_the_rule_written_out():
    """syntax.inherit against section 5's rule in plain Python, on tables of random states (young, settled, unused)."""
    rng = np.random.default_rng(3)
    C = 4
    probs = syntax.new_contexts(C)
    for i in range(138 * C):
        if rng.random() < 0.5:
            probs[i] = rc.state(int(rng.integers(rc.P_MIN, rc.P_ONE - rc.P_MIN)), int(rng.integers(0, rc.N_MAX + 1)))
    for c in range(C):
        want = probs.copy()
        if c > 0:
            for k in range(137):  # docs/codec.md's numbers: contexts 138c + k, k = 0..136 (not the offset flag, 137)
                own, prev = int(probs[138 * c + k]), int(probs[138 * (c - 1) + k])
                if rc.count(own) == 0 and rc.count(prev) > 0:
                    want[138 * c + k] = rc.state(rc.prob(prev), min(rc.count(prev), 8))
        syntax.inherit(probs, c)
        assert np.array_equal(probs, want)


def test_a_channel_like_the_one_before_it_costs_fewer_bits_with_inheritance():
    """Three identical sparse channels. Channels 1 and 2 see the same activity buckets (every earlier channel non-zero
    where they are), so without inheritance channel 2 would cost exactly what channel 1 costs; it starts from
    channel 1's learned states instead."""
    rng = np.random.default_rng(4)
    one = (rng.random((1, 16, 16)) < 0.05) * rng.integers(1, 3, (1, 16, 16))
    q = np.concatenate([one, one, one]).astype(np.int64)
    probs = syntax.new_contexts(3)
    f = syntax.levels(q, np.zeros_like(q), 4)
    e = rc.encoder(syntax.capacity(q, 4, np.zeros((2, 0, 0))))
    costs = []
    for c in range(3):
        syntax.inherit(probs, c)
        costs.append(sum(syntax.code_tile(e, probs, f, c, i, j, 1) for i in range(4) for j in range(4)))
        syntax.count_activity(f, c)
    assert costs[2] < 0.8 * costs[1]


def test_offset_bits_of_fresh_contexts_are_the_binarisation_length():
    """Every fresh context codes a bit at p = 1/2, one bit each: flag, sign, Exp-Golomb prefix and suffix."""
    probs = syntax.new_contexts(2)
    e = rc.encoder(64)
    got = [syntax.offset_bits(e, probs, 1, v) for v in (0, 1, -1, 2, -3, 4, 7)]
    assert got == pytest.approx([1, 3, 3, 5, 5, 7, 7], abs=0.01)  # |v| - 1 = 0: '0'; 1, 2: '10' + 1 bit; 3..6: '110' + 2 bits
    assert np.array_equal(probs, syntax.new_contexts(2))  # costed, not adapted
