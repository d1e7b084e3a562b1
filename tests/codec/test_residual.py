"""The residual stage: quantisation, reconstruction, and the bounds that let RDOQ stop early."""

from __future__ import annotations

import numpy as np

from latentmotion.codec import rangecoder as rc
from latentmotion.codec import residual, syntax
from latentmotion.codec.prediction import ONE


def test_reconstruction_is_prediction_plus_levels_plus_offset_and_quantisation_rounds():
    rng = np.random.default_rng(0)
    xs = rng.normal(0, 3, (3, 5, 7))
    pred = rng.integers(-60, 60, xs.shape).astype(np.int64)
    dc = residual.offsets(xs, pred)
    d, q, e = residual.quantise(xs, pred, dc, 0.5, residual.ONE)
    assert np.allclose(d, xs - (pred + dc[:, None, None]) / ONE) and np.isclose(e, (d * d).sum())
    assert np.array_equal(q, np.sign(d) * np.floor(np.abs(d) + 0.5))
    expect = pred + ONE * q + dc[:, None, None]
    assert np.array_equal(residual.reconstruct(pred.copy(), q.copy(), dc, residual.ONE), expect)
    assert np.abs(expect / ONE - xs).max() <= 0.5 + 1 / ONE  # within half a step (and the offset's rounding)


def test_rdoq_only_moves_levels_towards_zero_and_never_costs_more():
    rng = np.random.default_rng(1)
    xs = rng.laplace(0, 1.2, (4, 12, 12))
    pred = np.zeros(xs.shape, np.int64)
    dc = residual.offsets(xs, pred)
    d, q, _ = residual.quantise(xs, pred, dc, 0.5, residual.ONE)
    q0, lam = q.copy(), 2.0
    residual.rdoq(rc.encoder(syntax.capacity(q, 4, np.zeros((2, 0, 0)))), syntax.new_contexts(4), syntax.levels(q, pred, 4), d, lam, 0.0)
    assert np.all(np.abs(q) <= np.abs(q0)) and np.all(q * q0 >= 0)

    def cost(levels):
        e = rc.encoder(syntax.capacity(levels, 4, np.zeros((2, 0, 0))))
        return ((d - levels) ** 2).sum() + lam * syntax.encode_levels(e, syntax.new_contexts(4), syntax.levels(levels, pred, 4), 1)

    assert cost(q) < cost(q0)


def _states(rng, n: int) -> np.ndarray:
    """Any context states: probabilities within the coder's clamp, any counts (young and settled)."""
    return (rng.integers(rc.P_MIN, rc.P_ONE - rc.P_MIN + 1, n) | rng.integers(0, rc.N_MAX + 1, n) << 16).astype(np.int64)


def test_rdoq_early_stop_bound_is_below_every_coding_of_the_tile():
    """The RDOQ trial stops on ``_skip_bounds``: rest[k] must not exceed what coding levels k.. costs, for any levels
    (here random ones, costed one by one with adapting contexts as the coder does) and any context state."""
    rng = np.random.default_rng(0)
    block, c, lam = 4, 0, 0.5
    e = rc.encoder(0)
    for _ in range(200):
        d = rng.normal(0, rng.uniform(0.3, 4), (1, block, block))
        probs = _states(rng, syntax.n_contexts(1))
        q = np.rint(d).astype(np.int64) + rng.integers(-1, 2, d.shape) * (rng.random(d.shape) < 0.3)
        f = syntax.levels(q, np.zeros_like(q), block)
        r = residual.Rdo(d, lam, 0.5, np.empty(syntax.SNAPSHOT, np.int64), np.empty(block * block + 1))
        residual._skip_bounds(f, r, c, 0, 0, syntax.min_level_bits(probs, c, block * block), 0.0)  # the mean term (wm) is not in the bounds
        p, costs = probs.copy(), []
        for y in range(block):
            for x in range(block):
                n, s, _, _ = syntax.level_ctx(f, c, y, x)
                ctx = (n, s, int(rng.integers(0, syntax.N_PB)), int(rng.integers(0, syntax.N_AB)))  # any |P| and activity bucket
                costs.append((d[c, y, x] - q[c, y, x]) ** 2 + lam * syntax.level_bits(e, p, c, ctx, q[c, y, x], 1))
        tail = np.cumsum(costs[::-1])[::-1]
        assert np.all(r.rest[:-1] <= tail + 1e-9), (r.rest[:-1] - tail).max()


def test_a_skipped_tile_leaves_the_early_stop_bound_as_it_was():
    """RDOQ keeps a channel's fewest level bits (its early-stop bound) until a tile codes levels: coding a skipped
    tile, as RDOQ codes it (sim 0), must adapt nothing but that tile's flag context, so the bound stays exact."""
    rng = np.random.default_rng(5)
    q = rng.integers(-2, 3, (2, 12, 12)).astype(np.int64)
    for i, j in ((0, 1), (1, 0), (1, 1), (2, 2)):
        q[1, 4 * i:4 * i + 4, 4 * j:4 * j + 4] = 0  # channel 1 skips these tiles
    f = syntax.levels(q, np.zeros_like(q), 4)
    probs = _states(rng, syntax.n_contexts(2))
    e = rc.encoder(syntax.capacity(q, 4, np.zeros((2, 0, 0))))
    for i in range(3):  # channel 0 first, as the walk codes it
        for j in range(3):
            syntax.code_tile(e, probs, f, 0, i, j, 0)
    syntax.count_activity(f, 0)
    skipped = 0
    for i in range(3):
        for j in range(3):
            before, bound = probs.copy(), syntax.min_level_bits(probs, 1, 16)
            syntax.code_tile(e, probs, f, 1, i, j, 0)
            if not f.cbf[i, j]:
                skipped += 1
                assert set(np.flatnonzero(probs != before).tolist()) <= {syntax.cbf_ctx(f, 1, i, j)}
                assert syntax.min_level_bits(probs, 1, 16) == bound
    assert skipped == 4


def test_rdoq_codes_what_coding_its_levels_afterwards_would():
    """RDOQ decides tile by tile with the contexts the coder has there and codes each tile at once: its bytes and
    final contexts must equal those of coding the chosen levels in a separate pass."""
    rng = np.random.default_rng(4)
    xs = rng.laplace(0, 1.5, (5, 10, 10))
    pred = rng.integers(-40, 40, xs.shape).astype(np.int64)
    dc = residual.offsets(xs, pred)
    d, q, _ = residual.quantise(xs, pred, dc, 0.5, residual.ONE)
    q0 = q.copy()
    start = _states(rng, syntax.n_contexts(5))  # any context state
    decided, e1 = start.copy(), rc.encoder(syntax.capacity(q, 4, np.zeros((2, 0, 0))))
    residual.rdoq(e1, decided, syntax.levels(q, pred, 4), d, 0.6, 0.5)
    assert not np.array_equal(q, q0)  # RDOQ changed some levels: the comparison below means something
    coded, e2 = start.copy(), rc.encoder(syntax.capacity(q, 4, np.zeros((2, 0, 0))))
    syntax.encode_levels(e2, coded, syntax.levels(q, pred, 4), 0)
    assert np.array_equal(decided, coded)
    assert np.array_equal(rc.finish(e1), rc.finish(e2))


def _offset_cost(xs, pred, c, o, lam, wm, gain, probs, e):
    m = (xs[c] * ONE - pred[c]).mean()
    return (1 + wm) * xs[c].size * ((m - o) / gain) ** 2 + lam * syntax.offset_bits(e, probs, c, o)


def test_shrunk_offsets_are_the_cheapest_between_zero_and_the_mean():
    """Brute force over every offset from 0 to the rounded mean: the shrunk one costs least, and lam 0 keeps the mean."""
    rng = np.random.default_rng(5)
    C, gain, wm = 24, 22, 0.5
    xs = rng.normal(0, 0.05, (C, 6, 6)) + rng.normal(0, 0.3, (C, 1, 1))  # channel means of a few sixteenths of a step
    pred = rng.integers(-8, 8, xs.shape).astype(np.int64)
    probs = syntax.new_contexts(C)
    e = rc.encoder(syntax.capacity(xs, 4, np.zeros((2, 0, 0))))
    for lam in (0.0, 0.3, 3.0):
        dc = residual.offsets(xs, pred)
        got = dc.copy()
        residual.shrink_offsets(e, probs, xs, pred, got, lam, wm, gain)
        if lam == 0:
            assert np.array_equal(got, dc)
        for c in range(C):
            cands = range(min(0, dc[c]), max(0, dc[c]) + 1)
            best = min(_offset_cost(xs, pred, c, o, lam, wm, gain, probs, e) for o in cands)
            assert got[c] * dc[c] >= 0 and abs(got[c]) <= abs(dc[c])  # towards 0, never past it
            assert _offset_cost(xs, pred, c, got[c], lam, wm, gain, probs, e) <= best + 1e-9
    assert (got == 0).sum() > (dc == 0).sum()  # a heavy lam zeroes offsets the mean alone would send
