"""Standard-codec anchors, set up as practitioners set them up.

Two families, each named by a base and optional ``-modifier`` words
(``x265_ldp-pad8-framerange-noscenecut-medium``):

Feature anchors (split inference with a standard codec on the features): the
channels of each tensor are tiled row by row on a grid of ``ceil(sqrt(C))``
columns into one 10-bit monochrome picture and coded by libx265 (``gray10le``)
or SVT-AV1 (4:2:0 10-bit with flat chroma: AV1 in PyAV has no monochrome
input, and flat chroma costs next to nothing), constant QP, decoded by
PyAV's HEVC decoder or dav1d.

* bases: ``x265_intra`` (every frame intra), ``x265_ldp`` (low-delay P:
  no B frames), ``svtav1_ld`` (SVT-AV1 low delay, ``pred-struct=1``);
* layout: ``own`` (default; channels at their own size, the whole mosaic
  edge-padded to a multiple of 8) or ``pad8`` (each channel edge-padded to a
  multiple of 8: content aligned to the codec's smallest blocks, more samples);
* value range: ``cliprange`` (default; one min/max for the whole clip, sent
  once: 64 bits) or ``framerange`` (min/max per frame, 64 bits each; the value
  mapping then changes every frame and inter prediction codes the remapping);
* ``scenecut`` (default) or ``noscenecut``: the encoder may insert key frames;
* preset: x265 ``medium``, ``slow`` (default), ``veryslow``; SVT-AV1 ``p0`` ..
  ``p13`` (default ``p5``).

The defaults are the strongest set-up measured (docs/codec.md, "Anchors").

Remote-inference anchors (the camera sends the video itself; the whole network
runs in the cloud): 8-bit 4:2:0 frames, low delay, scene cut on,
coded by ``remote_x265_*`` (preset slow) or ``remote_svtav1_*`` (preset 5), at
the network's input size (``*_net``: the 224x224 crop the edge sees, rounded to
8 bits) or at the clip's own resolution (``*_clip``: the cloud crops and resizes
exactly as the edge does).

Example:
    >>> import torch
    >>> x = torch.randn(6, 2, 10, 12)
    >>> dec, bits = code_features(x, "x265_intra", 12)
    >>> dec.shape == x.shape and bits > 0 and float((dec - x).abs().max()) < 0.1
    True
    >>> parse_anchor("x265_ldp-pad8-medium").name
    'x265_ldp-pad8-medium'
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import torch

from ..errors import InputError

__all__ = ["ANCHORS", "DEFAULT_ANCHORS", "SIDE_BITS", "Anchor", "code_features", "code_pixels", "parse_anchor", "tile", "untile"]

#: Bases: name -> (codec, group of pictures, what is coded).
_BASES = {
    "x265_intra": ("x265", "intra", "features"),
    "x265_ldp": ("x265", "ld", "features"),
    "svtav1_ld": ("svtav1", "ld", "features"),
    "remote_x265_net": ("x265", "ld", "net"),
    "remote_x265_clip": ("x265", "ld", "clip"),
    "remote_svtav1_net": ("svtav1", "ld", "net"),
    "remote_svtav1_clip": ("svtav1", "ld", "clip"),
}
ANCHORS = tuple(_BASES)
DEFAULT_ANCHORS = ("x265_intra", "x265_ldp", "svtav1_ld", "remote_x265_net", "remote_x265_clip", "remote_svtav1_net", "remote_svtav1_clip")
SIDE_BITS = 64  # min and max, float32 each
_X265_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
_PRESETS = {"x265": _X265_PRESETS, "svtav1": tuple(f"p{i}" for i in range(14))}  # the words a preset modifier may be
_DEFAULT_PRESET = {"x265": "slow", "svtav1": "p5"}


@dataclass(frozen=True)
class Anchor:
    """One anchor set-up; :func:`parse_anchor` reads it from its name."""

    base: str
    layout: str = "own"  # own | pad8 (feature anchors)
    value_range: str = "cliprange"  # cliprange | framerange (feature anchors)
    scenecut: bool = True
    preset: str = ""  # empty: the codec's default above

    @property
    def codec(self) -> str:
        return _BASES[self.base][0]

    @property
    def gop(self) -> str:
        return _BASES[self.base][1]

    @property
    def target(self) -> str:
        """``features``, ``net`` (remote, network input size) or ``clip`` (remote, the clip's resolution)."""
        return _BASES[self.base][2]

    @property
    def remote(self) -> bool:
        return self.target != "features"

    @property
    def name(self) -> str:
        """The canonical name: the base and each modifier that differs from the default."""
        mods = [self.layout if self.layout != "own" else "", self.value_range if self.value_range != "cliprange" else "",
                "" if self.scenecut else "noscenecut", self.preset if self.preset and self.preset != _DEFAULT_PRESET[self.codec] else ""]
        return "-".join([self.base] + [m for m in mods if m])


def parse_anchor(name: str) -> Anchor:
    """An :class:`Anchor` from ``base[-modifier...]``; unknown words are refused with the choices."""
    base, *mods = name.strip().split("-")
    if base not in _BASES:
        raise InputError(f"unknown anchor {base!r}; choose from {', '.join(ANCHORS)} (modifiers: own, pad8, cliprange, framerange, scenecut, noscenecut, a preset)")
    a = Anchor(base)
    for m in mods:
        if m in ("own", "pad8") and not a.remote:
            a = replace(a, layout=m)
        elif m in ("cliprange", "framerange") and not a.remote:
            a = replace(a, value_range=m)
        elif m in ("scenecut", "noscenecut"):
            a = replace(a, scenecut=m == "scenecut")
        elif m in _PRESETS[a.codec]:
            a = replace(a, preset=m)
        else:
            raise InputError(f"anchor {name!r}: modifier {m!r} does not apply to {base}")
    aspects = [_aspect(m) for m in mods]
    twice = [k for k in dict.fromkeys(aspects) if aspects.count(k) > 1]
    if twice:  # x265_ldp-veryslow-medium ran as medium: the last word won unsaid
        raise InputError(f"anchor {name!r}: more than one {twice[0]} ({', '.join(w for w, k in zip(mods, aspects, strict=True) if k == twice[0])})")
    return a


def _aspect(word: str) -> str:
    """What a modifier of an anchor (one :func:`parse_anchor` accepted) sets."""
    kinds = {"own": "layout", "pad8": "layout", "cliprange": "value range", "framerange": "value range", "scenecut": "scene cut setting", "noscenecut": "scene cut setting"}
    return kinds.get(word, "preset")


def _grid(c: int, h: int, w: int, layout: str) -> tuple[int, int, int, int]:
    ph, pw = (-(-h // 8) * 8, -(-w // 8) * 8) if layout == "pad8" else (h, w)
    cols = math.ceil(math.sqrt(c))
    return ph, pw, cols, -(-c // cols)


def tile(x: torch.Tensor, layout: str) -> np.ndarray:
    """(C, H, W) -> one float picture: channels on a grid, row by row (edge replicate padding).

    ``pad8`` pads each channel to multiples of 8; ``own`` keeps channels at their
    own size and pads the whole mosaic to multiples of 8.
    """
    c, h, w = x.shape
    ph, pw, cols, rows = _grid(c, h, w, layout)
    a = np.pad(x.numpy(), ((0, cols * rows - c), (0, ph - h), (0, pw - w)), mode="edge")
    p = a.reshape(rows, cols, ph, pw).transpose(0, 2, 1, 3).reshape(rows * ph, cols * pw)
    return np.pad(p, ((0, -p.shape[0] % 8), (0, -p.shape[1] % 8)), mode="edge")


def untile(p: np.ndarray, shape: tuple[int, int, int], layout: str) -> torch.Tensor:
    """Inverse of :func:`tile`."""
    c, h, w = shape
    ph, pw, cols, rows = _grid(c, h, w, layout)
    p = p[: rows * ph, : cols * pw]
    a = p.reshape(rows, ph, cols, pw).transpose(0, 2, 1, 3).reshape(rows * cols, ph, pw)
    return torch.from_numpy(np.ascontiguousarray(a[:c, :h, :w]))


def _context(a: Anchor, qp: int, width: int, height: int, pix_fmt: str):
    import av

    if a.codec == "x265":
        cc = av.CodecContext.create("libx265", "w")
        gop = "keyint=1" if a.gop == "intra" else "bframes=0" + ("" if a.scenecut else ":scenecut=0")
        # info=0: by default x265 writes its version and every setting as text (an SEI of about 2.3 KB) into each
        # keyframe; no decoder needs it and no one sends it, and counted as rate it cost the anchor 18 kbit a keyframe
        cc.options = {"preset": a.preset or _DEFAULT_PRESET["x265"], "x265-params": f"qp={qp}:{gop}:info=0:log-level=none"}
    else:
        os.environ.setdefault("SVT_LOG", "0")  # SVT-AV1 prints its configuration to stderr otherwise
        cc = av.CodecContext.create("libsvtav1", "w")
        preset = (a.preset or _DEFAULT_PRESET["svtav1"])[1:]
        cc.options = {"preset": preset, "qp": str(qp), "svtav1-params": f"pred-struct=1:rc=0:enable-tpl-la=0:qp={qp}:keyint=-1:scd={int(a.scenecut)}"}
    cc.pix_fmt = pix_fmt
    cc.width, cc.height = width, height
    cc.time_base = Fraction(1, 25)
    cc.framerate = Fraction(25, 1)
    return cc


def _run(a: Anchor, qp: int, frames: list, pix_fmt: str) -> tuple[list, int]:
    """Encode PyAV frames, decode the packets; (decoded frames, stream bits)."""
    import av

    cc = _context(a, qp, frames[0].width, frames[0].height, pix_fmt)
    packets = []
    for i, f in enumerate(frames):
        f.pts = i
        packets += cc.encode(f)
    packets += cc.encode(None)
    dec = av.CodecContext.create("hevc" if a.codec == "x265" else "libdav1d", "r")
    out = []
    for pk in packets:
        out += dec.decode(pk)
    out += dec.decode(None)
    if len(out) != len(frames):
        raise RuntimeError(f"{a.name}: {len(out)} pictures decoded of {len(frames)}")
    return out, 8 * sum(pk.size for pk in packets)


def _picture10(p10: np.ndarray, codec: str):
    import av

    if codec == "x265":
        return av.VideoFrame.from_ndarray(p10, format="gray10le")
    h, w = p10.shape
    f = av.VideoFrame(w, h, "yuv420p10le")
    flat = np.full((h // 2, w // 2), 512, np.uint16)
    for plane, data in zip(f.planes, (p10, flat, flat), strict=True):
        row = np.zeros((plane.height, plane.line_size // 2), np.uint16)
        row[:, : data.shape[1]] = data
        plane.update(row.tobytes())
    return f


def code_features(x: torch.Tensor, anchor: str | Anchor, qp: int) -> tuple[torch.Tensor, int]:
    """Code a feature sequence (N, C, H, W) with a feature anchor at one QP.

    Returns the decoded float32 tensors and the total bits, value-range side
    information included.
    """
    a = parse_anchor(anchor) if isinstance(anchor, str) else anchor
    if a.remote:
        raise InputError(f"{a.name} codes frames, not features: use code_pixels")
    n, c, h, w = x.shape
    pics = [tile(t.float(), a.layout) for t in x]
    if a.value_range == "cliprange":
        lo, hi = [np.float32(min(p.min() for p in pics))] * n, [np.float32(max(p.max() for p in pics))] * n
        side = SIDE_BITS
    else:
        lo, hi = [np.float32(p.min()) for p in pics], [np.float32(p.max()) for p in pics]
        side = SIDE_BITS * n
    p10 = [np.round((p - a0) / max(b0 - a0, 1e-30) * 1023).clip(0, 1023).astype(np.uint16) for p, a0, b0 in zip(pics, lo, hi, strict=True)]
    out, bits = _run(a, qp, [_picture10(p, a.codec) for p in p10], "gray10le" if a.codec == "x265" else "yuv420p10le")
    ph, pw = p10[0].shape
    rec = []
    for f, a0, b0 in zip(out, lo, hi, strict=True):
        v = (f.to_ndarray() if a.codec == "x265" else f.reformat(format="yuv420p10le").to_ndarray()[:ph]).astype(np.float32)
        rec.append(untile(v[:ph, :pw] / np.float32(1023) * (b0 - a0) + a0, (c, h, w), a.layout))
    return torch.stack(rec), bits + side


def _to_i420(rgb: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) uint8 -> I420 planes (3H/2, W): BT.601 limited range, as cameras send."""
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


def _from_i420(i420: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_to_i420` with the same matrix (swscale's default YUV->RGB in PyAV
    darkens every channel by about 1.4 levels, which would charge remote inference for a bug)."""
    import cv2

    return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)


def code_pixels(frames: torch.Tensor, anchor: str | Anchor, qp: int) -> tuple[torch.Tensor, int]:
    """Code RGB frames (N, 3, H, W) uint8 as a camera would (8-bit 4:2:0, BT.601) with a remote anchor.

    Returns the decoded frames (N, 3, H, W) uint8 and the stream's bits.
    """
    import av

    a = parse_anchor(anchor) if isinstance(anchor, str) else anchor
    if not a.remote:
        raise InputError(f"{a.name} codes features, not frames: use code_features")
    if frames.dtype != torch.uint8 or frames.shape[-1] % 2 or frames.shape[-2] % 2:
        raise InputError(f"frames must be uint8 with even height and width (4:2:0), got {frames.dtype} {tuple(frames.shape)}")
    pics = [av.VideoFrame.from_ndarray(_to_i420(f.permute(1, 2, 0).contiguous().numpy()), format="yuv420p") for f in frames]
    out, bits = _run(a, qp, pics, "yuv420p")
    return torch.stack([torch.from_numpy(_from_i420(f.reformat(format="yuv420p").to_ndarray())).permute(2, 0, 1) for f in out]), bits
