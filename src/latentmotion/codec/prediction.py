"""Motion modes of the codec: how a predicted tensor is made from the previous decoded one.

Each mode estimates its parameters on the encoder side, writes them as side
information (whose bits are counted) and predicts; the decoder reads and
predicts with the same code. Prediction runs on the CPU in float32 with
``grid_sample`` (bilinear, border replicate, ``align_corners=False``), so
encoder and decoder produce identical tensors.

Registry (index = the header's mode byte): ``zero``, ``affine``, ``block``,
``input``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..estimation import block_match, parabola_offset
from .bitstream import BitstreamError, Reader, Writer
from .entropy import decode_ints, encode_ints


@dataclass
class Context:
    """What the encoder knows besides the tensors."""

    block: int
    search: int
    subpel: int  # 1 or 4
    stride: tuple[int, int] = (1, 1)
    offset: tuple[float, float] = (0.0, 0.0)
    frames: tuple[torch.Tensor, torch.Tensor] | None = None  # (reference, current) uint8 gray, for "input"


def warp(ref: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``out(p) = ref(p - flow(p))``, bilinear, border replicate. ref (C, H, W), flow (2, H, W)."""
    _, h, w = ref.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    sx, sy = xs - flow[0], ys - flow[1]
    grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1)[None]
    return F.grid_sample(ref[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def _blocks_to_flow(vec: np.ndarray, shape: tuple[int, int], block: int, subpel: int) -> torch.Tensor:
    """Per-block vectors (2, nby, nbx) in 1/subpel units -> dense flow (2, H, W) in latent pixels."""
    h, w = shape
    t = torch.from_numpy(vec.astype(np.float32) / subpel)
    return t.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :h, :w]


def _median_pred(vec: np.ndarray) -> np.ndarray:
    """Median of left, top and top-right neighbours (H.264-style), per component."""
    _, nh, nw = vec.shape
    pad = np.zeros((2, nh + 1, nw + 2), dtype=np.int64)
    pad[:, 1:, 1:-1] = vec
    left, top, tr = pad[:, 1:, :-2], pad[:, :-1, 1:-1], pad[:, :-1, 2:]
    return np.median(np.stack([left, top, tr]), axis=0).astype(np.int64)


class Mode:
    name = "?"

    def estimate(self, ref: torch.Tensor, cur: torch.Tensor, ctx: Context):
        raise NotImplementedError

    def write(self, params, w: Writer) -> None:
        raise NotImplementedError

    def read(self, r: Reader, shape: tuple[int, int, int], ctx: Context):
        raise NotImplementedError

    def predict(self, ref: torch.Tensor, params, ctx: Context) -> torch.Tensor:
        raise NotImplementedError


class ZeroMode(Mode):
    """Prediction = the previous decoded tensor."""

    name = "zero"

    def estimate(self, ref, cur, ctx):
        return None

    def write(self, params, w):
        pass

    def read(self, r, shape, ctx):
        return None

    def predict(self, ref, params, ctx):
        return ref.clone()


class AffineMode(Mode):
    """One global affine motion (6 numbers, as the 7-parameter model's matrix) in latent pixels.

    Estimated by least squares on the joint block-matching field; sent as
    integers: linear part in 1/4096, translation in 1/64 latent pixel.
    """

    name = "affine"
    SCALE = np.array([4096, 4096, 64, 4096, 4096, 64], dtype=np.float64)

    def estimate(self, ref, cur, ctx):
        c, h, w = cur.shape
        f = block_match(ref, cur, 3, ctx.search)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
        cx, cy = (w - 1) / 2, (h - 1) / 2
        inner = torch.zeros(h, w, dtype=torch.bool)
        inner[1:-1, 1:-1] = True
        x, y = (xs - cx)[inner], (ys - cy)[inner]
        # backward map: source = p - v(p) = M (p - c) + c + t
        sx, sy = x - f[0].double()[inner], y - f[1].double()[inner]
        a = torch.stack([x, y, torch.ones_like(x)], 1)
        mx = torch.linalg.lstsq(a, sx[:, None]).solution[:, 0]
        my = torch.linalg.lstsq(a, sy[:, None]).solution[:, 0]
        p = np.concatenate([mx.numpy(), my.numpy()])
        return np.round(p * self.SCALE).astype(np.int64)

    def write(self, params, w):
        for v in params:
            w.i32(int(v))

    def read(self, r, shape, ctx):
        p = np.array([r.i32() for _ in range(6)], dtype=np.int64)
        if np.abs(p / self.SCALE).max() > 1e4:
            raise BitstreamError("affine parameters out of range")
        return p

    def predict(self, ref, params, ctx):
        _, h, w = ref.shape
        m = torch.tensor(params / self.SCALE, dtype=torch.float32)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        cx, cy = (w - 1) / 2, (h - 1) / 2
        x, y = xs - cx, ys - cy
        src_x = m[0] * x + m[1] * y + m[2] + cx
        src_y = m[3] * x + m[4] * y + m[5] + cy
        return warp(ref, torch.stack([xs - src_x, ys - src_y]))


class BlockMode(Mode):
    """One vector per ``block x block`` latent tile, by joint multi-channel block matching.

    Integer or quarter-pel (``subpel=4``: parabola refinement of the cost).
    Vectors are coded as residuals against the median of their neighbours.
    """

    name = "block"

    def estimate(self, ref, cur, ctx):
        from .. import _bm_kernel

        b, r = ctx.block, ctx.search
        win = b + 1 if b % 2 == 0 else b
        hw = win // 2
        pad = hw + r + 1  # replicate padding: vectors may point past the border
        rp = F.pad(ref[None], (pad, pad, pad, pad), mode="replicate")[0].double()
        cp = F.pad(cur[None], (pad, pad, pad, pad), mode="replicate")[0].double()
        _, h, w = cur.shape
        cy = [min(y + b // 2, h - 1) for y in range(0, h, b)]
        cx = [min(x + b // 2, w - 1) for x in range(0, w, b)]
        gy, gx = np.meshgrid(np.array(cy) + pad, np.array(cx) + pad, indexing="ij")
        rn = np.ascontiguousarray(rp.permute(1, 2, 0).numpy())
        cn = np.ascontiguousarray(cp.permute(1, 2, 0).numpy())
        best, around = _bm_kernel.match_at(rn, cn, gy.reshape(-1).astype(np.int64), gx.reshape(-1).astype(np.int64), win, r)
        vec = best.T.reshape(2, len(cy), len(cx)).astype(np.float64)
        if ctx.subpel > 1:  # parabola through the cost at d - 1, d, d + 1, per axis
            c = torch.from_numpy(around)
            for axis, (m, p_) in enumerate(((1, 2), (3, 4))):
                vec[axis] += parabola_offset(c[:, m], c[:, 0], c[:, p_]).numpy().reshape(len(cy), len(cx))
        return np.round(vec * ctx.subpel).astype(np.int64)

    def write(self, params, w):
        w.raw(encode_ints(params - _median_pred(params)))

    def read(self, r, shape, ctx):
        _, h, w = shape
        nh, nw = -(-h // ctx.block), -(-w // ctx.block)
        res = decode_ints(r, 2 * nh * nw)
        if len(res) != 2 * nh * nw:
            raise BitstreamError("wrong number of motion vectors")
        res = res.reshape(2, nh, nw)
        vec = np.zeros_like(res)
        for i in range(nh):  # invert the median prediction in raster order
            for j in range(nw):
                left = vec[:, i, j - 1] if j > 0 else np.zeros(2, np.int64)
                top = vec[:, i - 1, j] if i > 0 else np.zeros(2, np.int64)
                tr = vec[:, i - 1, j + 1] if i > 0 and j + 1 < nw else np.zeros(2, np.int64)
                vec[:, i, j] = res[:, i, j] + np.median(np.stack([left, top, tr]), axis=0).astype(np.int64)
        if np.abs(vec).max(initial=0) > 4 * 1024:
            raise BitstreamError("motion vector out of range")
        return vec

    def predict(self, ref, params, ctx):
        return warp(ref, _blocks_to_flow(params, ref.shape[-2:], ctx.block, ctx.subpel))


class InputMode(BlockMode):
    """Vectors estimated on the input frames at the edge, scaled by Eq. 12 (divided by the stride)."""

    name = "input"

    def estimate(self, ref, cur, ctx):
        if ctx.frames is None:
            raise ValueError("motion mode 'input' needs the input frames")
        g0, g1 = ctx.frames
        field = block_match(g0, g1, 31, min(11, ctx.search * ctx.stride[0]))
        b = ctx.block
        _, h, w = cur.shape
        sy, sx = ctx.stride
        vec = np.zeros((2, -(-h // b), -(-w // b)))
        H, W = field.shape[-2:]
        for i, v0 in enumerate(range(0, h, b)):
            for j, u0 in enumerate(range(0, w, b)):
                y0 = int(max(0, sy * v0 + ctx.offset[0] - sy / 2))
                y1 = int(min(H, sy * min(v0 + b, h) + ctx.offset[0] - sy / 2))
                x0 = int(max(0, sx * u0 + ctx.offset[1] - sx / 2))
                x1 = int(min(W, sx * min(u0 + b, w) + ctx.offset[1] - sx / 2))
                if y1 > y0 and x1 > x0:
                    region = field[:, y0:y1, x0:x1]
                    vec[0, i, j] = float(region[0].median()) / sx
                    vec[1, i, j] = float(region[1].median()) / sy
        return np.round(vec * ctx.subpel).astype(np.int64)


MODES: dict[str, Mode] = {m.name: m for m in (ZeroMode(), AffineMode(), BlockMode(), InputMode())}
MODE_NAMES = list(MODES)
