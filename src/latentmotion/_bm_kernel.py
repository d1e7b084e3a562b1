"""CPU kernels of exhaustive block matching (numba); rules in :mod:`latentmotion.estimation`.

Both searches keep the data as (x, dx-lane): lane g holds dx = radius - g, so
inner loops run across the candidate dx of one dy and vectorise.

- :func:`match_int`, integer tensors: running sums (exact in integers),
  threads over bands of rows, every dy inside a band.
- :func:`match`, floats: prefix sums in float64, threads over dy. Besides the
  winner it returns the runner-up cost, so that the caller can redo near-ties
  with :func:`resolve`, which sums each candidate by the cost's definition.
- :func:`match_at`, direct summation at chosen centres only (the benchmark's brute-force reference).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, fastmath=True)
def _one_dy(refp, cur, block, radius, dy, best, second, best_dx, big):
    """Float search of one dy: per centre the best cost, its dx (first in dx order) and the second-best cost.

    Channel-last (H, W, C) inputs, so that the channel sum is a contiguous
    reduction. Lanes as in :func:`_band_int`: lane g holds dx = radius - g,
    and the prefix sums run across lanes. Column prefix sums go down the frame
    (a ring of the last block + 1 rows), then a prefix sum along x of the
    window columns; box sums are differences of prefix sums. fastmath may
    reorder the channel sum: the error bound of
    :func:`latentmotion.estimation._near_ties` holds for any order.
    """
    h, w, nc = cur.shape
    hv = h - block + 1
    wv = w - block + 1
    n = 2 * radius + 1
    wp = refp.shape[1]
    npad = wp - w - 2 * radius + n
    cur2 = cur.reshape((h, w * nc))  # one channel: 2-D rows give the lane loop a unit stride
    ref2 = refp.reshape((h, wp * nc))
    zero = big - big
    ring = np.zeros((block + 1, w, npad), dtype=best.dtype)
    d = np.zeros((w, npad), dtype=best.dtype)
    row = np.empty((w + 1, npad), dtype=best.dtype)
    s = np.empty(npad, dtype=best.dtype)
    best[:] = big
    second[:] = big
    best_dx[:] = 0
    i_lo = max(0, dy)  # rows whose reference block fits
    i_hi = min(hv, hv + dy)
    for y in range(h):
        pp = ring[y % (block + 1)]
        pn = ring[(y + 1) % (block + 1)]
        ys = y - dy
        if not 0 <= ys < h:
            pn[:] = pp
        else:
            if nc == 1:
                cr, rr = cur2[y], ref2[ys]
                for x in range(w):
                    a = cr[x]
                    dd = d[x]
                    for g in range(npad):
                        t = a - rr[x + g]
                        dd[g] = t * t
            else:
                for x in range(w):
                    cx = cur[y, x]
                    dd = d[x]
                    for g in range(n):
                        rx = refp[ys, x + g]
                        acc = zero
                        for ch in range(nc):
                            t = cx[ch] - rx[ch]
                            acc += t * t
                        dd[g] = acc
            for x in range(w):
                px, nx, dd = pp[x], pn[x], d[x]
                for g in range(npad):
                    nx[g] = px[g] + dd[g]
        i = y + 1 - block  # the window rows i .. y are summed
        if i < i_lo or i >= i_hi:
            continue
        pi = ring[i % (block + 1)]
        row[0] = zero
        for x in range(w):
            r0, r1, a_, b_ = row[x], row[x + 1], pn[x], pi[x]
            for g in range(npad):
                r1[g] = r0[g] + (a_[g] - b_[g])
        bi, si, bd = best[i], second[i], best_dx[i]
        for j in range(wv):
            ra, rb = row[j + block], row[j]
            for g in range(npad):
                s[g] = ra[g] - rb[g]
            g_lo = max(0, radius - j)  # the reference centre j - dx must lie in 0 .. wv - 1
            g_hi = min(n - 1, wv - 1 + radius - j)
            m = big
            m2 = big
            k = 0
            for g in range(g_hi, g_lo - 1, -1):  # dx ascending: strict < keeps the first
                v = s[g]
                better = v < m
                m2 = min(m2, m if better else v)
                m = v if better else m
                k = g if better else k
            bi[j] = m
            si[j] = m2
            bd[j] = radius - k


@numba.njit(cache=True, nogil=True)
def _merge_dy(costs, seconds, dxs, radius):
    """Merge per-dy results (n, hv, wv) in dy order: strict < keeps the earlier dy on ties."""
    n, hv, wv = costs.shape
    best = costs[0].copy()
    second = seconds[0].copy()
    bdx = dxs[0].copy()
    bdy = np.full((hv, wv), -radius, dtype=np.int64)
    for k in range(1, n):
        for i in range(hv):
            for j in range(wv):
                c = costs[k, i, j]
                better = c < best[i, j]
                second[i, j] = min(second[i, j], seconds[k, i, j], best[i, j] if better else c)
                if better:
                    best[i, j] = c
                    bdx[i, j] = dxs[k, i, j]
                    bdy[i, j] = k - radius
    return bdx, bdy, best, second


def _padded(ref, radius, lanes, axis=-1):
    """``ref`` zero-padded along x (``axis``) for the lane layouts: radius before; after, radius plus whole vectors of ``lanes`` (lanes past 2r+1 are never read back)."""
    n = 2 * radius + 1
    npad = -(-n // lanes) * lanes
    pad = [(0, 0)] * ref.ndim
    pad[axis] = (radius, radius + npad - n)
    return np.pad(ref, pad)


@numba.njit(cache=True)
def frame_total(ref, cur):
    """T = sum over (C, H, W) of (|cur| + max|ref| of the channel)^2: no window or prefix sum exceeds it."""
    t = 0.0
    for ch in range(cur.shape[0]):
        m = np.abs(ref[ch]).max()
        for v in cur[ch].ravel():
            u = abs(v) + m
            t += u * u
    return t


@numba.njit(cache=True, parallel=True)
def match(refp, cur, block, radius, big):
    """Float search, joint over channels, on channel-last (H, W, C) inputs; threads take one dy each.

    ``refp`` is :func:`_padded` ``ref`` (x is axis 1). Returns (dx, dy, best
    cost, second-best cost), (hv, wv) each; the second-best flags near-ties.
    """
    h, w = cur.shape[:2]
    hv, wv, n = h - block + 1, w - block + 1, 2 * radius + 1
    costs = np.empty((n, hv, wv), dtype=cur.dtype)
    seconds = np.empty((n, hv, wv), dtype=cur.dtype)
    dxs = np.zeros((n, hv, wv), dtype=np.int64)
    for k in numba.prange(n):
        _one_dy(refp, cur, block, radius, k - radius, costs[k], seconds[k], dxs[k], big)
    return _merge_dy(costs, seconds, dxs, radius)


@numba.njit(cache=True, parallel=True)
def match_each(refp, cur, block, radius, big):
    """:func:`match` per channel of (C, H, W) inputs: (C, hv, wv) arrays; threads take channels."""
    nc, h, w = cur.shape
    hv, wv, n = h - block + 1, w - block + 1, 2 * radius + 1
    bdx = np.zeros((nc, hv, wv), dtype=np.int64)
    bdy = np.zeros((nc, hv, wv), dtype=np.int64)
    best = np.empty((nc, hv, wv), dtype=cur.dtype)
    second = np.empty((nc, hv, wv), dtype=cur.dtype)
    for ch in numba.prange(nc):
        r1 = refp[ch].reshape((h, refp.shape[2], 1))
        c1 = cur[ch].reshape((h, w, 1))
        costs = np.empty((n, hv, wv), dtype=cur.dtype)
        seconds = np.empty((n, hv, wv), dtype=cur.dtype)
        dxs = np.zeros((n, hv, wv), dtype=np.int64)
        for k in range(n):
            _one_dy(r1, c1, block, radius, k - radius, costs[k], seconds[k], dxs[k], big)
        bdx[ch], bdy[ch], best[ch], second[ch] = _merge_dy(costs, seconds, dxs, radius)
    return bdx, bdy, best, second


@numba.njit(cache=True, parallel=True)
def resolve(ref, cur, ys, xs, block, radius):
    """Exhaustive search at the centres (ys[k], xs[k]) by the cost's definition.

    Each cost is the float64 sum of squared differences in (channel, row,
    column) order, summed one term at a time, exactly as
    :func:`latentmotion.estimation.block_match_reference` sums it; no
    fastmath, so no reassociation or fused multiply-add. A candidate stops
    once its partial sum reaches the best so far (terms are non-negative).
    Returns (dx, dy) per centre, (n, 2).
    """
    nc, h, w = cur.shape
    b = block // 2
    out = np.zeros((ys.shape[0], 2), dtype=np.int64)
    for k in numba.prange(ys.shape[0]):
        y, x = ys[k], xs[k]
        best = np.inf
        for dy in range(-radius, radius + 1):
            sy = y - dy
            if sy - b < 0 or sy + b > h - 1:
                continue
            for dx in range(-radius, radius + 1):
                sx = x - dx
                if sx - b < 0 or sx + b > w - 1:
                    continue
                s = 0.0
                for ch in range(nc):
                    for i in range(-b, b + 1):
                        for j in range(-b, b + 1):
                            t = cur[ch, y + i, x + j] - ref[ch, sy + i, sx + j]
                            s += t * t
                        if s >= best:
                            break
                    if s >= best:
                        break
                if s < best:
                    best = s
                    out[k, 0] = dx
                    out[k, 1] = dy
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def _ssd(ref, cur, y, x, sy, sx, b):
    h, w, c = cur.shape
    if sy - b < 0 or sy + b > h - 1 or sx - b < 0 or sx + b > w - 1:
        return np.inf
    s = 0.0
    for i in range(-b, b + 1):
        for j in range(-b, b + 1):
            for ch in range(c):
                t = cur[y + i, x + j, ch] - ref[sy + i, sx + j, ch]
                s += t * t
    return s


@numba.njit(cache=True, parallel=True, fastmath=True)
def match_at(ref, cur, ys, xs, block, radius):
    """Exhaustive search for the blocks centred on (ys[k], xs[k]) only.

    Same cost, candidate and tie rules as :func:`match`; channel-last float64
    inputs. Returns (dx, dy) per centre, and the costs at the best vector and
    at its four neighbours (x - 1, x + 1, y - 1, y + 1; inf outside) for
    sub-pixel refinement. A centre with no valid candidate gets (0, 0).
    """
    b = block // 2
    n = ys.shape[0]
    out = np.zeros((n, 2), dtype=np.int64)
    around = np.full((n, 5), np.inf)
    for k in numba.prange(n):
        y, x = ys[k], xs[k]
        best = np.inf
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                s = _ssd(ref, cur, y, x, y - dy, x - dx, b)
                if s < best:
                    best = s
                    out[k, 0] = dx
                    out[k, 1] = dy
        dx, dy = out[k, 0], out[k, 1]
        around[k, 0] = best
        around[k, 1] = _ssd(ref, cur, y, x, y - dy, x - dx + 1, b)
        around[k, 2] = _ssd(ref, cur, y, x, y - dy, x - dx - 1, b)
        around[k, 3] = _ssd(ref, cur, y, x, y - dy + 1, x - dx, b)
        around[k, 4] = _ssd(ref, cur, y, x, y - dy - 1, x - dx, b)
    return out, around


@numba.njit(cache=True, nogil=True)
def _band_int(refp, cur, block, radius, i0, i1, big, bdx, bdy):
    """Exact integer search for the rows ``i0 <= i < i1`` of valid centres.

    Layout (x, lane): lane g holds dx = radius - g, so for one x the lanes read
    ``refp[.., x : x + npad]`` contiguously and every inner loop runs over
    lanes (it vectorises). Per dy, ``col`` keeps the vertical window sums of
    each column, advanced row by row (add the entering row, subtract the
    leaving one); a running sum along x gives the box sums. Integer
    arithmetic makes both running sums exact. Each lane keeps its own best
    cost and first dy; the lanes are merged in (cost, dy, dx) order at the
    end of the row, so ties resolve as the row-major scan does.
    """
    nc, h, w = cur.shape
    hv = h - block + 1
    wv = w - block + 1
    n = 2 * radius + 1
    npad = refp.shape[2] - w - 2 * radius + n
    zero = big - big
    col = np.zeros((n, w, npad), dtype=cur.dtype)
    best = np.empty((wv, npad), dtype=cur.dtype)
    best_k = np.empty((wv, npad), dtype=np.int32)
    s = np.empty(npad, dtype=cur.dtype)
    for i in range(i0, i1):
        best[:] = big
        best_k[:] = 0
        for k in range(n):
            dy = k - radius
            if i - dy < 0 or i - dy >= hv:  # the reference block would leave the frame
                continue
            c = col[k]
            if i == i0 or i - 1 - dy < 0:  # first row of this dy: sum the window afresh
                c[:] = zero
                for ch in range(nc):
                    for y in range(i, i + block):
                        cr = cur[ch, y]
                        rr = refp[ch, y - dy]
                        for x in range(w):
                            a = cr[x]
                            cx = c[x]
                            for g in range(npad):
                                t = a - rr[x + g]
                                cx[g] += t * t
            else:
                for ch in range(nc):
                    ca = cur[ch, i + block - 1]
                    ra = refp[ch, i + block - 1 - dy]
                    cs = cur[ch, i - 1]
                    rs = refp[ch, i - 1 - dy]
                    for x in range(w):
                        a = ca[x]
                        b = cs[x]
                        cx = c[x]
                        for g in range(npad):
                            t = a - ra[x + g]
                            u = b - rs[x + g]
                            cx[g] += t * t - u * u
            s[:] = zero
            for x in range(block):
                cx = c[x]
                for g in range(npad):
                    s[g] += cx[g]
            for j in range(wv):
                bj = best[j]
                kj = best_k[j]
                cn = c[min(j + block, w - 1)]
                co = c[j]
                for g in range(npad):  # branch-free: strict < keeps the first dy
                    v = s[g]
                    better = v < bj[g]
                    bj[g] = v if better else bj[g]
                    kj[g] = k if better else kj[g]
                    s[g] = v + cn[g] - co[g]
        for j in range(wv):
            bc = big
            bx = 0
            bk = 0
            for g in range(n - 1, -1, -1):  # dx ascending
                dx = radius - g
                if j - dx < 0 or j - dx >= wv:
                    continue
                v = best[j, g]
                kk = best_k[j, g]
                if v < bc or (v == bc and kk < bk):
                    bc = v
                    bk = kk
                    bx = dx
            bdx[i, j] = bx
            bdy[i, j] = bk - radius


@numba.njit(cache=True, parallel=True)
def match_int(refp, cur, block, radius, big, bands):
    """Integer (C, H, W) search, joint over channels: exact. ``refp`` is :func:`_padded` ``ref``.

    Threads take contiguous bands of rows (``bands`` of them). Returns (dx, dy), (hv, wv) each.
    """
    h, w = cur.shape[1:]
    hv, wv = h - block + 1, w - block + 1
    bdx = np.zeros((hv, wv), dtype=np.int64)
    bdy = np.zeros((hv, wv), dtype=np.int64)
    for t in numba.prange(bands):
        _band_int(refp, cur, block, radius, t * hv // bands, (t + 1) * hv // bands, big, bdx, bdy)
    return bdx, bdy


@numba.njit(cache=True, parallel=True)
def match_int_each(refp, cur, block, radius, big):
    """:func:`match_int` per channel: (C, hv, wv) dx and dy; threads take channels."""
    nc, h, w = cur.shape
    hv, wv = h - block + 1, w - block + 1
    bdx = np.zeros((nc, hv, wv), dtype=np.int64)
    bdy = np.zeros((nc, hv, wv), dtype=np.int64)
    for ch in numba.prange(nc):
        _band_int(refp[ch : ch + 1], cur[ch : ch + 1], block, radius, 0, hv, big, bdx[ch], bdy[ch])
    return bdx, bdy
