"""CPU kernels of exhaustive block matching (numba); rules in :mod:`latentmotion.estimation`.

- :func:`match_int`, integer tensors: running sums (exact in integers),
  vectorised across the dx of one dy, threads over bands of rows.
- :func:`match`, floats: per displacement, squared differences summed over
  channels, then box sums by separable prefix sums (down the columns, then
  along each row), all in one cache-resident pass. Adding exact zeros leaves a
  prefix unchanged, so a window of zero differences costs exactly 0 (no
  running-sum residue). Compiled with fastmath for the channel reduction:
  inputs are checked finite and ``big`` is the dtype's largest finite value,
  so no NaN or inf ever occurs, and adding exact zeros stays exact under
  reassociation. Threads take one dy each; their per-dy winners are merged in
  (dy, dx) order so that ties resolve exactly as a serial row-major scan would.
- :func:`match_at`, the codec's search at chosen block centres only.
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
    row = np.zeros((4, w + 1), dtype=best.dtype)  # row prefix sums, four rows at a time
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
        for i0 in range(i_lo, i_hi, 4):
            m = min(4, i_hi - i0)
            if m == 4:  # four independent prefix chains hide the float add latency
                a0 = a1 = a2 = a3 = zero
                for x in range(w):
                    a0 += col[i0 + block, x] - col[i0, x]
                    a1 += col[i0 + 1 + block, x] - col[i0 + 1, x]
                    a2 += col[i0 + 2 + block, x] - col[i0 + 2, x]
                    a3 += col[i0 + 3 + block, x] - col[i0 + 3, x]
                    row[0, x + 1] = a0
                    row[1, x + 1] = a1
                    row[2, x + 1] = a2
                    row[3, x + 1] = a3
            else:
                for k in range(m):
                    a0 = zero
                    for x in range(w):
                        a0 += col[i0 + k + block, x] - col[i0 + k, x]
                        row[k, x + 1] = a0
            for k in range(m):
                rk = row[k]
                bi = best[i0 + k]
                bd = best_dx[i0 + k]
                for j in range(j_lo, j_hi):  # branch-free running minimum (vectorises)
                    s = rk[j + block] - rk[j]
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


@numba.njit(cache=True, parallel=True)
def match_each(ref, cur, block, radius, big):
    """:func:`match` per channel of (C, H, W) float tensors: (C, hv, wv) dx and dy; threads take channels."""
    nc, h, w = cur.shape
    hv = h - block + 1
    wv = w - block + 1
    n = 2 * radius + 1
    bdx = np.zeros((nc, hv, wv), dtype=np.int64)
    bdy = np.zeros((nc, hv, wv), dtype=np.int64)
    for ch in numba.prange(nc):
        r1 = ref[ch].reshape((h, w, 1))
        c1 = cur[ch].reshape((h, w, 1))
        costs = np.empty((n, hv, wv), dtype=ref.dtype)
        dxs = np.zeros((n, hv, wv), dtype=np.int64)
        for k in range(n):
            _one_dy(r1, c1, block, radius, k - radius, costs[k], dxs[k], big)
        bdx[ch], bdy[ch], _ = _merge_dy(costs, dxs, radius)
    return bdx, bdy


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
def match_int(ref, cur, block, radius, big, bands):
    """:func:`match` for integer (C, H, W) tensors: same rules and result, exact and faster.

    Threads take contiguous bands of rows (``bands`` of them). Returns (dx, dy).
    """
    nc, h, w = cur.shape
    hv = h - block + 1
    wv = w - block + 1
    n = 2 * radius + 1
    npad = -(-n // 8) * 8  # whole 8-lane vectors; lanes past n are never read back
    refp = np.zeros((nc, h, w + 2 * radius + npad - n), dtype=cur.dtype)
    refp[:, :, radius : radius + w] = ref
    bdx = np.zeros((hv, wv), dtype=np.int64)
    bdy = np.zeros((hv, wv), dtype=np.int64)
    for t in numba.prange(bands):
        _band_int(refp, cur, block, radius, t * hv // bands, (t + 1) * hv // bands, big, bdx, bdy)
    return bdx, bdy


@numba.njit(cache=True, parallel=True)
def match_int_each(ref, cur, block, radius, big):
    """:func:`match_int` per channel: (C, hv, wv) dx and dy; threads take channels."""
    nc, h, w = cur.shape
    hv = h - block + 1
    wv = w - block + 1
    n = 2 * radius + 1
    npad = -(-n // 8) * 8
    refp = np.zeros((nc, h, w + 2 * radius + npad - n), dtype=cur.dtype)
    refp[:, :, radius : radius + w] = ref
    bdx = np.zeros((nc, hv, wv), dtype=np.int64)
    bdy = np.zeros((nc, hv, wv), dtype=np.int64)
    for ch in numba.prange(nc):
        _band_int(refp[ch : ch + 1], cur[ch : ch + 1], block, radius, 0, hv, big, bdx[ch], bdy[ch])
    return bdx, bdy
