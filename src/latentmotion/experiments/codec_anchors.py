"""Standard-codec anchors for feature coding: channels tiled into one monochrome 10-bit picture.

Each channel is padded (edge replicate) to a multiple of 8 on each side and
the channels are laid out row by row on a grid of ``ceil(sqrt(C))`` columns.
Each picture is quantised to 10 bits between the frame's min and max, which
travel as side information (two float32, 64 bits per frame, counted in the
rate). The pictures are coded by libx265 through PyAV (``gray10le``, preset
medium, constant QP) and decoded by PyAV's HEVC decoder:

* ``x265_intra``: every frame intra (``keyint=1``);
* ``x265_ldp``: low-delay P (``bframes=0``, one key frame, no scene-cut key frames);
* ``svtav1_ld``: SVT-AV1 low delay (``pred-struct=1``), 4:2:0 10-bit with flat chroma
  (AV1 in PyAV has no monochrome input; flat chroma costs next to nothing).

Example:
    >>> import torch
    >>> x = torch.randn(6, 2, 10, 12)
    >>> dec, bits = code_anchor(x, "x265_intra", 12)
    >>> dec.shape == x.shape and bits > 0 and float((dec - x).abs().max()) < 0.1
    True
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
import torch

ANCHORS = ("x265_intra", "x265_ldp", "svtav1_ld")
SIDE_BITS = 64  # min and max, float32 each


def _grid(c: int, h: int, w: int) -> tuple[int, int, int, int]:
    ph, pw = -(-h // 8) * 8, -(-w // 8) * 8
    cols = math.ceil(math.sqrt(c))
    return ph, pw, cols, -(-c // cols)


def tile(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> one float picture, channels padded to multiples of 8 (edge replicate) on a grid."""
    c, h, w = x.shape
    ph, pw, cols, rows = _grid(c, h, w)
    a = np.pad(x.numpy(), ((0, cols * rows - c), (0, ph - h), (0, pw - w)), mode="edge")
    return a.reshape(rows, cols, ph, pw).transpose(0, 2, 1, 3).reshape(rows * ph, cols * pw)


def untile(p: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = shape
    ph, pw, cols, rows = _grid(c, h, w)
    a = p.reshape(rows, ph, cols, pw).transpose(0, 2, 1, 3).reshape(rows * cols, ph, pw)
    return torch.from_numpy(np.ascontiguousarray(a[:c, :h, :w]))


def _context(name: str, qp: int, width: int, height: int):
    import av

    if name.startswith("x265"):
        cc = av.CodecContext.create("libx265", "w")
        cc.pix_fmt = "gray10le"
        gop = "keyint=1" if name == "x265_intra" else "bframes=0:keyint=100000:min-keyint=100000:scenecut=0"
        cc.options = {"preset": "medium", "x265-params": f"qp={qp}:{gop}:log-level=none"}
    else:
        os.environ.setdefault("SVT_LOG", "0")  # SVT-AV1 prints its configuration to stderr otherwise
        cc = av.CodecContext.create("libsvtav1", "w")
        cc.pix_fmt = "yuv420p10le"
        cc.options = {"preset": "8", "svtav1-params": f"pred-struct=1:rc=0:enable-tpl-la=0:qp={qp}:keyint=-1:scd=0"}
        cc.options["qp"] = str(qp)
    cc.width, cc.height = width, height
    cc.time_base = Fraction(1, 25)
    cc.framerate = Fraction(25, 1)
    return cc


def _frame(p10: np.ndarray, name: str):
    import av

    if name.startswith("x265"):
        return av.VideoFrame.from_ndarray(p10, format="gray10le")
    h, w = p10.shape
    f = av.VideoFrame(w, h, "yuv420p10le")
    for plane, data in zip(f.planes, (p10, np.full((h // 2, w // 2), 512, np.uint16), np.full((h // 2, w // 2), 512, np.uint16))):
        row = np.zeros((plane.height, plane.line_size // 2), np.uint16)
        row[:, : data.shape[1]] = data
        plane.update(row.tobytes())
    return f


def code_anchor(x: torch.Tensor, name: str, qp: int) -> tuple[torch.Tensor, int]:
    """Code a sequence (N, C, H, W) with an anchor at one QP; returns (decoded float32 tensors, total bits)."""
    import av

    n, c, h, w = x.shape
    pics = [tile(t.float()) for t in x]
    lo = [np.float32(p.min()) for p in pics]
    hi = [np.float32(p.max()) for p in pics]
    p10 = [np.round((p - a) / max(b - a, 1e-30) * 1023).clip(0, 1023).astype(np.uint16) for p, a, b in zip(pics, lo, hi)]
    ph, pw = p10[0].shape
    cc = _context(name, qp, pw, ph)
    packets = []
    for i, p in enumerate(p10):
        f = _frame(p, name)
        f.pts = i
        packets += cc.encode(f)
    packets += cc.encode(None)
    bits = 8 * sum(pk.size for pk in packets) + SIDE_BITS * n
    dec = av.CodecContext.create("hevc" if name.startswith("x265") else "libdav1d", "r")
    out = []
    for pk in packets:
        out += dec.decode(pk)
    out += dec.decode(None)
    if len(out) != n:
        raise RuntimeError(f"{name}: {len(out)} pictures decoded of {n}")
    rec = []
    for f, a, b in zip(out, lo, hi):
        v = (f.to_ndarray() if name.startswith("x265") else f.reformat(format="yuv420p10le").to_ndarray()[:ph]).astype(np.float32)
        rec.append(untile(v[:ph, :pw] / np.float32(1023) * (b - a) + a, (c, h, w)))
    return torch.stack(rec), bits
