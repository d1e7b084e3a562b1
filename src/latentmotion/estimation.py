"""Motion estimation by exhaustive block matching (the paper's Fig. 2).

Conventions: fields are (2, H, W) tensors of forward motion (dx, dy) on the
current frame's grid (see :mod:`latentmotion.motion`): the block centred on
pixel ``p`` of ``cur`` is compared with the block centred on ``p - d`` of
``ref``; the vector ``d`` with the smallest sum of squared differences (SSD)
wins. Rules (PROTOCOL.md): pixels whose block does not fit in the frame keep
zero motion; candidates whose reference block leaves the frame are never
chosen; ties go to the first minimum in row-major order of (dy, dx), from
(-radius, -radius).

Exactness: costs are box sums per displacement, made with separable prefix
sums in float64 (int32/int64 for integer inputs such as uint8 frames), never
with a 2-D integral image of the whole frame. Window sums of non-negative terms
that are all zero come out exactly zero and integer data is summed exactly, so
ties resolve as the brute-force definition does; float costs that differ only
by rounding (about 1e-13 relative) may resolve otherwise. The cost per pixel
does not depend on the block size.

Backends: on the CPU fused numba kernels (:mod:`latentmotion._bm_kernel`;
integer single-channel frames take an exact running-sum variant);
on other devices, and for ``subpixel=True``, vectorised torch on the tensors'
device.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .errors import InputError

Channels = Literal["joint", "each"]


def _check(ref: torch.Tensor, cur: torch.Tensor, block: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("ref", ref), ("cur", cur)):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() not in (2, 3):
            raise InputError(f"{name} must have shape (H, W) or (C, H, W), got {tuple(t.shape)}")
    if ref.shape != cur.shape:
        raise InputError(f"ref and cur differ in shape: {tuple(ref.shape)} vs {tuple(cur.shape)}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1 or block % 2 == 0:
        raise InputError(f"block must be a positive odd integer, got {block!r}")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise InputError(f"radius must be a non-negative integer, got {radius!r}")
    h, w = ref.shape[-2:]
    if block > min(h, w):
        raise InputError(f"block {block} is larger than the frame {h}x{w}")
    if ref.is_floating_point() and not (torch.isfinite(ref).all() and torch.isfinite(cur).all()):
        raise InputError("ref or cur holds NaN or infinite values")
    if ref.dim() == 2:
        ref, cur = ref[None], cur[None]
    return ref, cur


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.is_floating_point() else torch.int64


def _box_rows(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Sums of k consecutive elements along ``dim`` (valid positions only)."""
    c = x.cumsum(dim)
    n = x.shape[dim]
    first = c.narrow(dim, k - 1, 1)
    rest = c.narrow(dim, k, n - k) - c.narrow(dim, 0, n - k)
    return torch.cat([first, rest], dim)


def _costs_for_dy(ref_p: torch.Tensor, cur: torch.Tensor, dy: int, radius: int, block: int) -> torch.Tensor:
    """Joint SSD box sums for all dx at one dy: (2r+1, 1, H-k+1, W-k+1)."""
    c, h, w = cur.shape
    rows = ref_p[:, radius - dy : radius - dy + h, :]  # (C, H, W + 2r), row shift by dy
    # candidate dx takes ref columns x - dx: window start radius - dx
    shifted = torch.stack([rows[:, :, radius - dx : radius - dx + w] for dx in range(-radius, radius + 1)])
    d = (cur[None] - shifted).square_().sum(1, keepdim=True)
    return _box_rows(_box_rows(d, block, 3), block, 2)


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
            integer tensors (e.g. uint8 frames) are matched exactly in int64.
        block: odd block side, centred on each pixel.
        radius: search range: integer vectors with |dx|, |dy| <= radius.
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
    ref, cur = _check(ref, cur, block, radius)
    if channels == "each":
        return torch.stack([block_match(ref[i], cur[i], block, radius, subpixel=subpixel) for i in range(ref.shape[0])])
    if ref.device.type == "cpu" and not subpixel:
        return _match_cpu(ref, cur, block, radius)
    return _match_torch(ref, cur, block, radius, subpixel)


def _match_cpu(ref: torch.Tensor, cur: torch.Tensor, block: int, radius: int) -> torch.Tensor:
    """Fused numba kernels: int32 when every prefix and window sum fits, else int64; floats in float64."""
    import numpy as np

    from . import _bm_kernel

    c, h, w = cur.shape
    if ref.is_floating_point():
        a, b_ = ref.double().numpy(), cur.double().numpy()
        bdx, bdy, _ = _bm_kernel.match(np.ascontiguousarray(a.transpose(1, 2, 0)), np.ascontiguousarray(b_.transpose(1, 2, 0)), block, radius, np.finfo(np.float64).max)
    else:
        if ref.dtype == torch.uint8:
            lo, hi = 0, 255
        else:
            lo = min(int(ref.min()), int(cur.min()))
            hi = max(int(ref.max()), int(cur.max()))
        # every prefix and window sum must fit: int32 when it does, else int64
        fits = (h + w) * block * c * (hi - lo) ** 2 < 2**31 - 1
        dt = np.int32 if fits else np.int64
        a, b_ = ref.numpy().astype(dt), cur.numpy().astype(dt)
        big = np.iinfo(dt).max
        if c == 1:
            bdx, bdy, _ = _bm_kernel.match_int(np.ascontiguousarray(a[0]), np.ascontiguousarray(b_[0]), block, radius, big)
        else:
            bdx, bdy, _ = _bm_kernel.match(np.ascontiguousarray(a.transpose(1, 2, 0)), np.ascontiguousarray(b_.transpose(1, 2, 0)), block, radius, big)
    out = torch.zeros((2, h, w), dtype=torch.float32)
    hb = block // 2
    out[0, hb : h - hb, hb : w - hb] = torch.from_numpy(bdx).float()
    out[1, hb : h - hb, hb : w - hb] = torch.from_numpy(bdy).float()
    return out


def _match_torch(ref: torch.Tensor, cur: torch.Tensor, block: int, radius: int, subpixel: bool) -> torch.Tensor:
    """Vectorised torch version (any device; also keeps the cost volume for sub-pixel refinement)."""
    dt = _work_dtype(ref)
    ref, cur = ref.to(dt), cur.to(dt)
    c, h, w = cur.shape
    b = block // 2
    ref_p = F.pad(ref, (radius, radius, radius, radius))
    hv, wv = h - block + 1, w - block + 1  # pixels whose block fits: y in [b, h-1-b]
    ys = torch.arange(b, h - b, device=ref.device)
    xs = torch.arange(b, w - b, device=ref.device)
    offs = torch.arange(-radius, radius + 1, device=ref.device)
    # candidate d is allowed when the reference block centred on p - d fits
    okx = ((xs[None, :] - offs[:, None]) >= b) & ((xs[None, :] - offs[:, None]) <= w - 1 - b)  # (n, wv)
    oky = ((ys[None, :] - offs[:, None]) >= b) & ((ys[None, :] - offs[:, None]) <= h - 1 - b)  # (n, hv)
    big = torch.finfo(torch.float64).max if dt == torch.float64 else torch.iinfo(torch.int64).max
    best = torch.full((1, hv, wv), big, dtype=dt, device=ref.device)
    best_dx = torch.zeros((1, hv, wv), dtype=torch.long, device=ref.device)
    best_dy = torch.zeros((1, hv, wv), dtype=torch.long, device=ref.device)
    keep = [] if subpixel else None
    for i, dy in enumerate(range(-radius, radius + 1)):
        cost = _costs_for_dy(ref_p, cur, dy, radius, block)  # (n, 1, hv, wv)
        cost = cost.masked_fill(~(okx[:, None, None, :] & oky[i][None, None, :, None]), big)
        if keep is not None:
            keep.append(cost)
        m, arg = cost.min(0)  # first minimum over dx
        better = m < best  # strict: an earlier dy keeps ties
        best = torch.where(better, m, best)
        best_dx = torch.where(better, arg - radius, best_dx)
        best_dy = torch.where(better, torch.full_like(arg, dy), best_dy)
    vx, vy = best_dx.to(torch.float64), best_dy.to(torch.float64)
    if keep is not None:
        vol = torch.stack(keep)  # (n_dy, n_dx, 1, hv, wv)
        vx, vy = _refine(vol, best_dx + radius, best_dy + radius, big, vx, vy)
    out = torch.zeros((2, h, w), dtype=torch.float32, device=ref.device)
    out[0, b : h - b, b : w - b] = vx[0].float()
    out[1, b : h - b, b : w - b] = vy[0].float()
    return out


def _refine(vol, ix, iy, big, vx, vy):
    """Parabola fit of the cost along x and y around the integer minimum."""
    n = vol.shape[0]
    vol = vol.to(torch.float64)

    def at(jy, jx):
        jy_c, jx_c = jy.clamp(0, n - 1), jx.clamp(0, n - 1)
        v = torch.gather(vol.permute(2, 3, 4, 0, 1).reshape(*ix.shape, n * n), -1, (jy_c * n + jx_c)[..., None])[..., 0]
        inside = (jy >= 0) & (jy < n) & (jx >= 0) & (jx < n)
        return torch.where(inside & (v < big), v, torch.full_like(v, float("nan")))

    def delta(minus, mid, plus):
        den = minus - 2 * mid + plus
        d = 0.5 * (minus - plus) / den
        ok = torch.isfinite(d) & (den > 0)
        return torch.where(ok, d.clamp(-0.5, 0.5), torch.zeros_like(d))

    c0 = at(iy, ix)
    vx = vx + delta(at(iy, ix - 1), c0, at(iy, ix + 1))
    vy = vy + delta(at(iy - 1, ix), c0, at(iy + 1, ix))
    return vx, vy


def block_match_reference(ref: torch.Tensor, cur: torch.Tensor, block: int, radius: int) -> torch.Tensor:
    """Brute-force definition (slow; for tests): joint SSD by direct summation in float64."""
    ref, cur = _check(ref, cur, block, radius)
    ref, cur = ref.double(), cur.double()
    _, h, w = cur.shape
    b = block // 2
    out = torch.zeros(2, h, w)
    for y in range(b, h - b):
        for x in range(b, w - b):
            blk = cur[:, y - b : y + b + 1, x - b : x + b + 1]
            best, bv = float("inf"), (0, 0)
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    sy, sx = y - dy, x - dx
                    if sy - b < 0 or sy + b > h - 1 or sx - b < 0 or sx + b > w - 1:
                        continue
                    cost = float(((blk - ref[:, sy - b : sy + b + 1, sx - b : sx + b + 1]) ** 2).sum())
                    if cost < best:
                        best, bv = cost, (dx, dy)
            out[0, y, x], out[1, y, x] = bv
    return out
