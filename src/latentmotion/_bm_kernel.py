"""Fused CPU kernel of exhaustive block matching (numba).

Per displacement: squared differences summed over channels, then box sums by
separable prefix sums (down the columns, then along each row), all in one
cache-resident pass. Prefix sums are exact where it matters: adding exact
zeros leaves a prefix unchanged, so a window of zero differences costs exactly
0 (no running-sum residue), and integer inputs are summed exactly.
Compiled with fastmath for the channel reduction: inputs are checked finite
and ``big`` is the dtype's largest finite value, so no NaN or inf ever occurs,
and adding exact zeros stays exact under reassociation. Threads take one dy each; their per-dy winners are merged in (dy, dx) order so
that ties resolve exactly as a serial row-major scan would.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, fastmath=True)
def _one_dy(ref, cur, block, radius, dy, best, best_dx, big):
    h, w, c = cur.shape  # channel-last: the channel sum is a contiguous reduction
    # for one channel, 2-D views give the row loop a compile-time unit stride (it vectorises)
    cur2 = cur.reshape((h, w * c))
    ref2 = ref.reshape((h, w * c))
    b = block // 2
    hv = h - block + 1
    wv = w - block + 1
    zero = big - big  # typed zero (best is still uninitialised here)
    d = np.zeros(w, dtype=best.dtype)
    col = np.zeros((h + 1, w), dtype=best.dtype)  # column prefix sums
    row = np.zeros(w + 1, dtype=best.dtype)
    for i in range(hv):
        for j in range(wv):
            best[i, j] = big
            best_dx[i, j] = 0
    # rows of the current frame whose centre's reference block fits
    i_lo = max(0, b + dy - b)
    i_hi = min(hv, h - b + dy - b)
    for dx in range(-radius, radius + 1):
        j_lo = max(0, dx)
        j_hi = min(wv, w - block + 1 + dx)
        if i_lo >= i_hi or j_lo >= j_hi:
            continue
        x0 = max(0, dx)
        x1 = min(w, w + dx)
        for y in range(h):
            ys = y - dy
            for x in range(w):
                d[x] = zero
            if 0 <= ys < h and c == 1:
                for x in range(x0, x1):
                    t = cur2[y, x] - ref2[ys, x - dx]
                    d[x] = t * t
            elif 0 <= ys < h:
                for x in range(x0, x1):
                    acc = zero
                    for ch in range(c):
                        t = cur[y, x, ch] - ref[ys, x - dx, ch]
                        acc += t * t
                    d[x] = acc
            for x in range(w):
                col[y + 1, x] = col[y, x] + d[x]
        for i in range(i_lo, i_hi):
            row[0] = zero
            for x in range(w):
                row[x + 1] = row[x] + (col[i + block, x] - col[i, x])
            bi = best[i]
            bd = best_dx[i]
            for j in range(j_lo, j_hi):  # branch-free running minimum (vectorises)
                s = row[j + block] - row[j]
                keep = bi[j]
                better = s < keep
                bi[j] = s if better else keep
                bd[j] = dx if better else bd[j]


@numba.njit(cache=True, nogil=True)
def _merge_dy(costs, dxs, radius):
    """Merge per-dy winners (n, hv, wv) in dy order: strict < keeps the earlier dy on ties."""
    n, hv, wv = costs.shape
    best = costs[0].copy()
    bdx = dxs[0].astype(np.int64)
    bdy = np.full((hv, wv), -radius, dtype=np.int64)
    for k in range(1, n):
        for i in range(hv):
            for j in range(wv):
                if costs[k, i, j] < best[i, j]:
                    best[i, j] = costs[k, i, j]
                    bdx[i, j] = dxs[k, i, j]
                    bdy[i, j] = k - radius
    return bdx, bdy, best


@numba.njit(cache=True, parallel=True)
def match(ref, cur, block, radius, big):
    """Best (dx, dy) and cost for every pixel whose block fits: (hv, wv) arrays each.

    ``ref`` and ``cur`` are channel-last (H, W, C), finite.
    """
    h, w, c = cur.shape
    hv = h - block + 1
    wv = w - block + 1
    n = 2 * radius + 1
    costs = np.empty((n, hv, wv), dtype=ref.dtype)
    dxs = np.zeros((n, hv, wv), dtype=np.int64)
    for k in numba.prange(n):
        _one_dy(ref, cur, block, radius, k - radius, costs[k], dxs[k], big)
    return _merge_dy(costs, dxs, radius)


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
def _one_dy_int(refp, cur, block, radius, dy, best, best_dx, big):
    """Integer single-channel variant of :func:`_one_dy` (exact: no rounding).

    All dx of one dy advance together row by row: a prefix sum along the row
    per dx, window sums of those, and a running vertical window sum kept with
    a ring of the last ``block`` rows. Integer arithmetic makes the running
    (add new, subtract old) sums exact. ``refp`` is ``ref`` zero-padded by
    ``radius``; padded values only reach candidates that are never chosen.
    """
    h, w = cur.shape
    hv = h - block + 1
    wv = w - block + 1
    n = 2 * radius + 1
    zero = big - big
    for i in range(hv):
        for j in range(wv):
            best[i, j] = big
            best_dx[i, j] = 0
    p = np.zeros((n, w + 1), dtype=best.dtype)
    ring = np.zeros((block, n, wv), dtype=best.dtype)
    v = np.zeros((n, wv), dtype=best.dtype)
    for y in range(h):
        crow = cur[y]
        rrow = refp[y - dy + radius]
        g = 0
        while g + 4 <= n:  # four independent prefix chains at once (instruction-level parallelism)
            o0, o1, o2, o3 = 2 * radius - g, 2 * radius - g - 1, 2 * radius - g - 2, 2 * radius - g - 3
            p0, p1, p2, p3 = p[g], p[g + 1], p[g + 2], p[g + 3]
            a0 = a1 = a2 = a3 = zero
            for x in range(w):
                c = crow[x]
                t0 = c - rrow[x + o0]
                t1 = c - rrow[x + o1]
                t2 = c - rrow[x + o2]
                t3 = c - rrow[x + o3]
                a0 += t0 * t0
                a1 += t1 * t1
                a2 += t2 * t2
                a3 += t3 * t3
                p0[x + 1] = a0
                p1[x + 1] = a1
                p2[x + 1] = a2
                p3[x + 1] = a3
            g += 4
        while g < n:
            off = 2 * radius - g  # padded column of x - dx, dx = g - radius
            pg = p[g]
            acc = zero
            for x in range(w):
                t = crow[x] - rrow[x + off]
                acc += t * t
                pg[x + 1] = acc
            g += 1
        rs = ring[y % block]
        for g in range(n):
            pg, vg, rg = p[g], v[g], rs[g]
            for j in range(wv):
                new = pg[j + block] - pg[j]
                vg[j] += new - rg[j]
                rg[j] = new
        i = y - block + 1  # the window now covers rows i .. y
        if i >= 0 and i >= dy and i < hv + dy:
            bi, bd = best[i], best_dx[i]
            for g in range(n):  # in dx order: strict < keeps the first minimum
                dx = g - radius
                vg = v[g]
                for j in range(max(0, dx), min(wv, wv + dx)):
                    sc = vg[j]
                    keep = bi[j]
                    better = sc < keep
                    bi[j] = sc if better else keep
                    bd[j] = dx if better else bd[j]


@numba.njit(cache=True, parallel=True)
def match_int(ref, cur, block, radius, big):
    """:func:`match` for integer (H, W) frames: same rules and result, faster."""
    h, w = cur.shape
    hv = h - block + 1
    wv = w - block + 1
    n = 2 * radius + 1
    refp = np.zeros((h + 2 * radius, w + 2 * radius), dtype=ref.dtype)
    refp[radius : radius + h, radius : radius + w] = ref
    costs = np.empty((n, hv, wv), dtype=ref.dtype)
    dxs = np.zeros((n, hv, wv), dtype=np.int32)
    for k in numba.prange(n):
        _one_dy_int(refp, cur, block, radius, k - radius, costs[k], dxs[k], big)
    return _merge_dy(costs, dxs, radius)
