"""Motion estimation by exhaustive block matching (the paper's Fig. 2).

Conventions: fields are (2, H, W) tensors of forward motion (dx, dy) on the
current frame's grid (see :mod:`latentmotion.motion`): the block centred on
pixel ``p`` of ``cur`` is compared with the block centred on ``p - d`` of
``ref``; the vector ``d`` with the smallest sum of squared differences (SSD)
wins. Rules (docs/protocol.md, "Block matching"): pixels whose block does not fit in the frame keep
zero motion; candidates whose reference block leaves the frame are never
chosen; ties go to the first minimum in row-major order of (dy, dx), from
(-radius, -radius).

The cost is defined as the float64 sum of the squared differences, taken
one term at a time in (channel, row, column) order (for integer inputs every
order gives the same, exact, value); :func:`block_match_reference` is that
definition, by brute force. Fields equal it exactly, ties included:

- Integer tensors (uint8 frames, quantised features), and on the CPU float
  tensors holding whole numbers, are summed exactly with running box sums in
  int32 when every partial sum provably fits, else int64.
- Floats are summed with float64 prefix sums per displacement (never a 2-D
  integral image of the whole frame, whose cancellation loses float32 and
  even float64 digits). A proven bound on their rounding error flags every
  centre whose runner-up comes within it of the best; those centres (exact
  ties, such as the all-zero windows of ReLU features, and near-ties) are
  searched again by the definition itself.

The cost per pixel does not depend on the block size (box sums), except at
flagged centres.

Backends: on the CPU, numba kernels (:mod:`latentmotion._bm_kernel`) that
vectorise across the candidate dx; on other devices (the GPU), and for
``subpixel=True``, one vectorised torch pass over all displacements.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .errors import InputError

__all__ = ["block_match", "block_match_reference", "block_match_torch", "check_search"]

Channels = Literal["joint", "each"]


def check_search(block: int, radius: int, h: int, w: int) -> int:
    """Refuse (:class:`InputError`) a block or radius that cannot search an ``h`` x ``w`` frame; return the radius
    that matters, at most ``max(h, w) - block``.

    A longer vector would take every block out of the frame, so such candidates are never chosen: searching
    the smaller radius gives the same field, ties included, at bounded memory and time.
    """
    if isinstance(block, bool) or not isinstance(block, int) or block < 1 or block % 2 == 0:
        raise InputError(f"block must be a positive odd integer, got {block!r}")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise InputError(f"radius must be a non-negative integer, got {radius!r}")
    if block > min(h, w):
        raise InputError(f"block {block} is larger than the frame {h}x{w}")
    return min(radius, max(h, w) - block)


def _check(ref: torch.Tensor, cur: torch.Tensor, block: int, radius: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(ref, cur) as (C, H, W) and the radius that matters (:func:`check_search`)."""
    for name, t in (("ref", ref), ("cur", cur)):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() not in (2, 3):
            raise InputError(f"{name} must have shape (H, W) or (C, H, W), got {tuple(t.shape)}")
    if ref.shape != cur.shape:
        raise InputError(f"ref and cur differ in shape: {tuple(ref.shape)} vs {tuple(cur.shape)}")
    radius = check_search(block, radius, *ref.shape[-2:])
    if ref.is_floating_point() and not (torch.isfinite(ref).all() and torch.isfinite(cur).all()):
        raise InputError("ref or cur holds NaN or infinite values")
    if ref.dim() == 2:
        ref, cur = ref[None], cur[None]
    return ref, cur, radius


def _int_dtype(ref: torch.Tensor, cur: torch.Tensor, terms: int) -> torch.dtype | None:
    """Narrowest integer dtype that sums ``terms`` squared differences of integer tensors exactly, as the float64 definition does (None: none)."""
    lo, hi = (0, 255) if ref.dtype == torch.uint8 else (min(int(ref.min()), int(cur.min())), max(int(ref.max()), int(cur.max())))
    bound = terms * (hi - lo) ** 2
    # strictly below int32's maximum, which marks "no candidate yet"; int64 while float64 sums stay exact
    return torch.int32 if bound < 2**31 - 1 else torch.int64 if bound < 2**53 else None


def _box(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Sums of k consecutive elements along ``dim`` (valid positions only), by prefix-sum differences."""
    c = x.cumsum(dim, dtype=x.dtype)  # integer cumsum would widen to int64
    n = x.shape[dim]
    return torch.cat([c.narrow(dim, k - 1, 1), c.narrow(dim, k, n - k) - c.narrow(dim, 0, n - k)], dim)


def block_match(
    ref: torch.Tensor,
    cur: torch.Tensor,
    block: int = 31,
    radius: int = 11,
    *,
    channels: Channels = "joint",
    subpixel: bool = False,
) -> torch.Tensor:
    """Exhaustive SSD block matching at every pixel.

    Args:
        ref, cur: (H, W) or (C, H, W) frames or feature tensors of one shape;
            integer tensors (e.g. uint8 frames) are matched exactly, and fastest.
        block: odd block side, centred on each pixel.
        radius: search range: integer vectors with |dx|, |dy| <= radius (beyond ``max(H, W) - block``
            no block stays in the frame: the search stops there, with the same result).
        channels: ``"joint"`` sums the cost over channels (one field);
            ``"each"`` gives one field per channel.
        subpixel: refine each vector by a parabola through the cost at the
            minimum and its two neighbours, per axis (within +-0.5).

    Returns:
        float32 (2, H, W) of (dx, dy), or (C, 2, H, W) for ``channels="each"``.

    Example:
        >>> ref = torch.rand(40, 40)
        >>> cur = torch.roll(ref, shifts=(2, -3), dims=(0, 1))  # content moves down 2, left 3
        >>> v = block_match(ref, cur, block=7, radius=4)
        >>> v[:, 20, 20].tolist()
        [-3.0, 2.0]
    """
    if channels not in ("joint", "each"):
        raise InputError(f"channels must be 'joint' or 'each', got {channels!r}")
    ref, cur, radius = _check(ref, cur, block, radius)
    if ref.device.type == "cpu" and not subpixel:
        return _match_cpu(ref, cur, block, radius, each=channels == "each")
    if channels == "each":
        return torch.stack([block_match_torch(ref[i : i + 1], cur[i : i + 1], block, radius, subpixel) for i in range(ref.shape[0])])
    return block_match_torch(ref, cur, block, radius, subpixel)


def _match_cpu(ref: torch.Tensor, cur: torch.Tensor, block: int, radius: int, each: bool = False) -> torch.Tensor:
    """Numba kernels: integers exactly (int32 when every running sum fits, else int64), floats in float64.

    ``each``: one field per channel, (C, 2, H, W); otherwise the joint field (2, H, W).
    """
    import numba
    import numpy as np

    from . import _bm_kernel as K

    c, h, w = cur.shape
    if ref.is_floating_point() and all(t.abs().max() < 2**31 and torch.equal(t, t.round()) for t in (ref, cur)):
        ref, cur = ref.long(), cur.long()  # whole-number floats (e.g. 0..255 frames) match exactly as integers
    dt = None
    if not ref.is_floating_point():  # largest window sum plus one entering column must fit
        dt = {torch.int32: np.int32, torch.int64: np.int64}.get(_int_dtype(ref, cur, (block * block + block) * (1 if each else c)))
    if dt is not None:
        a, b_ = np.ascontiguousarray(ref.numpy(), dtype=dt), np.ascontiguousarray(cur.numpy(), dtype=dt)
        refp, big = K._padded(a, radius, 8), np.iinfo(dt).max  # 8 int32 lanes
        bdx, bdy = K.match_int_each(refp, b_, block, radius, big) if each else K.match_int(refp, b_, block, radius, big, numba.get_num_threads())
    else:  # floats, and integers too wide for exact float64 sums
        a, b_ = np.ascontiguousarray(ref.numpy(), dtype=np.float64), np.ascontiguousarray(cur.numpy(), dtype=np.float64)
        big = np.finfo(np.float64).max
        if each:
            bdx, bdy, best, second = K.match_each(K._padded(a, radius, 4), b_, block, radius, big)  # 4 float64 lanes
            for ch in range(c):
                _redo_near_ties(a[ch : ch + 1], b_[ch : ch + 1], block, radius, best[ch], second[ch], bdx[ch], bdy[ch])
        else:
            ra, rb = (np.ascontiguousarray(t.transpose(1, 2, 0)) for t in (a, b_))  # channel-last: contiguous channel sums
            bdx, bdy, best, second = K.match(K._padded(ra, radius, 4, axis=1), rb, block, radius, big)
            _redo_near_ties(a, b_, block, radius, best, second, bdx, bdy)
    hb = block // 2
    out = torch.zeros((*bdx.shape[:-2], 2, h, w), dtype=torch.float32)
    out[..., 0, hb : h - hb, hb : w - hb] = torch.from_numpy(bdx).float()
    out[..., 1, hb : h - hb, hb : w - hb] = torch.from_numpy(bdy).float()
    return out


def _near_ties(ref, cur, block: int, best, second):
    """Centres whose runner-up cost lies within rounding of the best: (hv, wv) bool, numpy or torch like ``best``.

    ``ref`` and ``cur`` are float (C, H, W) numpy arrays or tensors. Let T be
    the frame's sum of (|cur| + max|ref|)^2, which no prefix sum, window or
    cost exceeds. A box-sum cost passes through at most 2W + 4H + 4C + 3
    roundings of size <= u*T and the defining sum through C*block^2; twice
    that covers second-order terms, and two costs each within that bound of
    their definitions can be twice as close.
    """
    c, h, w = cur.shape
    if isinstance(ref, torch.Tensor):  # on the tensors' device
        total = float((cur.double().abs() + ref.double().abs().amax(dim=(1, 2), keepdim=True)).square().sum())
    else:
        from . import _bm_kernel as K

        total = K.frame_total(ref, cur)
    tol = 2.0 * (2 * w + 4 * h + 4 * c + c * block * block + 8) * 2.0**-53 * total
    return second - best <= 2 * tol


def _redo_near_ties(ref, cur, block: int, radius: int, best, second, bdx, bdy) -> None:
    """Redo the search by the cost's definition at near-tied centres, in place ((hv, wv) numpy arrays; float64 (C, H, W) inputs)."""
    import numpy as np

    from . import _bm_kernel as K

    ys, xs = np.nonzero(_near_ties(ref, cur, block, best, second))
    if len(ys):
        hb = block // 2
        v = K.resolve(ref, cur, (ys + hb).astype(np.int64), (xs + hb).astype(np.int64), block, radius)
        bdx[ys, xs], bdy[ys, xs] = v[:, 0], v[:, 1]


_CHUNK = 2**25  # elements of one channel-by-displacement difference volume on a GPU; CPUs take 1/16 (cache)


def block_match_torch(ref: torch.Tensor, cur: torch.Tensor, block: int, radius: int, subpixel: bool) -> torch.Tensor:
    """Vectorised torch version on the tensors' device (the GPU path; also sub-pixel refinement).

    All displacements at once: candidate reference blocks are strided views of
    the padded reference (``unfold``, no copies), box sums are prefix-sum
    differences in float64 (int32 or int64 for integers, whichever is exact), and ``min`` over the
    flattened (dy, dx) axis returns the first minimum in row-major order. The
    frames are flipped in y and x first, so that the view's displacement axes
    ascend in (dy, dx); the fields are flipped back at the end. Chunks of dy
    bound the memory; an earlier chunk keeps ties (strict <).
    """
    c, h, w = cur.shape
    dt = None if ref.is_floating_point() else _int_dtype(ref, cur, max(h, w * block) * c)  # column then row prefix sums
    dt = dt or torch.float64
    big = torch.finfo(dt).max if dt.is_floating_point else torch.iinfo(dt).max
    b, n = block // 2, 2 * radius + 1
    hv, wv = h - block + 1, w - block + 1
    dev = ref.device
    cur_f = cur.to(dt).flip(1, 2)
    views = F.pad(ref.to(dt).flip(1, 2), (radius,) * 4).unfold(1, h, 1).unfold(2, w, 1)  # (c, n, n, h, w)
    # a candidate is allowed when the reference block centred on p - d fits (in unflipped coordinates)
    offs = torch.arange(-radius, radius + 1, device=dev)
    oy = (h - 1 - b - torch.arange(hv, device=dev))[None] - offs[:, None]  # (n, hv)
    ox = (w - 1 - b - torch.arange(wv, device=dev))[None] - offs[:, None]
    oky, okx = (oy >= b) & (oy <= h - 1 - b), (ox >= b) & (ox <= w - 1 - b)
    best = torch.full((hv, wv), big, dtype=dt, device=dev)
    second = best.clone()  # runner-up cost, to find near-ties of float costs
    arg = torch.zeros((hv, wv), dtype=torch.long, device=dev)
    keep = []
    step = max(1, (_CHUNK if dev.type != "cpu" else _CHUNK // 16) // (c * n * h * w))
    for a0 in range(0, n, step):
        a1 = min(n, a0 + step)
        d = (cur_f[:, None, None] - views[:, a0:a1]).square_()
        d = d[0] if c == 1 else d.sum(0)  # (k, n, h, w); a sum over one channel would copy
        cost = _box(_box(d, block, 2), block, 3)  # (k, n, hv, wv)
        cost.masked_fill_(~(oky[a0:a1, None, :, None] & okx[None, :, None, :]), big)
        if subpixel:
            keep.append(cost)
        flat = cost.flatten(0, 1)
        m, i = flat.min(0)  # first minimum in (dy, dx) order
        if dt.is_floating_point:
            m2 = flat.topk(2, dim=0, largest=False).values[1] if flat.shape[0] > 1 else torch.full_like(m, big)
            second = torch.minimum(torch.minimum(second, m2), torch.maximum(best, m))
        better = m < best
        best = torch.where(better, m, best)
        arg = torch.where(better, i + a0 * n, arg)
    iy, ix = arg // n, arg % n
    if dt.is_floating_point and _near_ties(ref, cur, block, best, second).any():  # redo those centres on the CPU
        bdx, bdy = (t.flip(0, 1).cpu().numpy() for t in (ix - radius, iy - radius))  # unflipped fields
        _redo_near_ties(ref.double().cpu().numpy(), cur.double().cpu().numpy(), block, radius, best.flip(0, 1).cpu().numpy(), second.flip(0, 1).cpu().numpy(), bdx, bdy)
        ix, iy = (torch.from_numpy(v).to(dev).flip(0, 1) + radius for v in (bdx, bdy))
    vx, vy = (ix - radius).to(torch.float64), (iy - radius).to(torch.float64)
    if subpixel:
        vx, vy = _refine(torch.cat(keep), ix, iy, big, vx, vy)
    out = torch.zeros((2, h, w), dtype=torch.float32, device=dev)
    out[0, b : h - b, b : w - b] = vx.flip(0, 1).float()
    out[1, b : h - b, b : w - b] = vy.flip(0, 1).float()
    return out


def _refine(vol, ix, iy, big, vx, vy):
    """Parabola fit of the cost along x and y around the integer minimum."""
    n = vol.shape[0]
    vol = vol.to(torch.float64)

    def at(jy, jx):
        jy_c, jx_c = jy.clamp(0, n - 1), jx.clamp(0, n - 1)
        v = torch.gather(vol.permute(2, 3, 0, 1).reshape(*ix.shape, n * n), -1, (jy_c * n + jx_c)[..., None])[..., 0]
        inside = (jy >= 0) & (jy < n) & (jx >= 0) & (jx < n)
        return torch.where(inside & (v < big), v, torch.full_like(v, float("nan")))

    c0 = at(iy, ix)
    vx = vx + parabola_offset(at(iy, ix - 1), c0, at(iy, ix + 1))
    vy = vy + parabola_offset(at(iy - 1, ix), c0, at(iy + 1, ix))
    return vx, vy


def parabola_offset(minus: torch.Tensor, mid: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
    """Vertex of the parabola through costs at d - 1, d, d + 1, relative to d, in [-0.5, 0.5].

    0 where the fit is not a minimum or a cost is missing (inf or NaN).
    """
    den = minus - 2 * mid + plus
    d = 0.5 * (minus - plus) / den
    ok = torch.isfinite(d) & (den > 0)
    return torch.where(ok, d.clamp(-0.5, 0.5), torch.zeros_like(d))


def block_match_reference(ref: torch.Tensor, cur: torch.Tensor, block: int, radius: int) -> torch.Tensor:
    """Brute-force definition (slow; for tests).

    The cost of a candidate is the float64 sum of its squared differences
    taken one term at a time in (channel, row, column) order
    (``np.add.accumulate`` is sequential by definition); the first minimum in
    (dy, dx) order wins.
    """
    import numpy as np

    ref, cur, radius = _check(ref, cur, block, radius)
    a, c_ = ref.double().numpy(), cur.double().numpy()
    _, h, w = c_.shape
    b = block // 2
    out = torch.zeros(2, h, w)
    for y in range(b, h - b):
        for x in range(b, w - b):
            blk = c_[:, y - b : y + b + 1, x - b : x + b + 1]
            vecs, terms = [], []
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    sy, sx = y - dy, x - dx
                    if b <= sy <= h - 1 - b and b <= sx <= w - 1 - b:
                        vecs.append((dx, dy))
                        terms.append(((blk - a[:, sy - b : sy + b + 1, sx - b : sx + b + 1]) ** 2).ravel())
            costs = np.add.accumulate(np.stack(terms), axis=1)[:, -1]
            out[0, y, x], out[1, y, x] = vecs[int(np.argmin(costs))]  # argmin: first minimum
    return out
