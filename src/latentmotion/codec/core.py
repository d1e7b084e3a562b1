"""Closed-loop predictive coding of feature-tensor sequences, with an integer decoder state.

The decoder keeps the reconstruction ``R`` of the previous frame in fixed
point (integers in units of ``step / ONE``, ``ONE = 16``). An intra frame codes
``R = ONE q + o``; a predicted frame codes tile vectors and ``R = P + ONE q + o``
with ``P`` the integer motion-compensated prediction from the previous ``R``
(:func:`latentmotion.codec.prediction.predict`), ``q`` the levels (whole steps)
and ``o`` one offset per channel (the channel's mean residual, 1/ONE step). The
output tensor is ``float32(R) * (float32(step) / ONE)``: one IEEE multiply, the
same on every machine.

The encoder picks levels with a dead-zone quantiser (``q = sign(d) floor(|d| + f)``,
``d`` the residual in step units) and, per tile, the vector of least
``SSE + lambda * bits``; with ``rd=True`` a frame whose prediction leaves at
least 80 % of its energy (a scene cut) is also coded intra and the cheaper of
the two (``SSE + lambda * bits``) is kept.

Example:
    >>> import torch
    >>> enc = Encoder((4, 8, 8), step=0.1, mode="block", weights="abc")
    >>> dec = Decoder.from_header_bytes(enc.header_bytes())
    >>> outs = [dec.decode_frame(enc.encode(torch.randn(4, 8, 8))) for _ in range(3)]
    >>> all(torch.equal(a, b) for a, b in zip(outs, enc.reconstructions, strict=True))
    True
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numba as nb
import numpy as np
import torch

from ..errors import InputError
from . import entropy
from .bitstream import MAX_STR, BitstreamError, Header, Reader, read_frame, read_header, write_frame, write_header
from .limits import check_step
from .prediction import MODE_NAMES, MODES, ONE, Context, block_candidates, choose_vectors, input_candidates, predict

INTRA, INTER = 0, 1
MAX_LEVEL = 1 << 24  # |R| bound: exact in float32, and the decoder refuses more
MAX_Q = (1 << 16) - 1  # |q| bound of the Exp-Golomb binarisation
MAX_MV = 4 * 1024  # |vector| bound, 1/subpel units


@dataclass
class FrameStats:
    kind: str  # "intra" or "inter"
    bits: int
    side_bits: int  # motion side information
    sse: float


@nb.njit(cache=True)
def _offsets(xs, pred):
    """Per channel, the mean of ``ONE xs - pred`` (units of 1/ONE step), rounded (encoder only).

    Clamped to ``|offset| <= MAX_Q`` and so that no residual ``ONE xs - pred - offset`` exceeds
    ``ONE MAX_Q`` (a level the coder can send); the interval holds 0 whenever every
    ``|xs - pred / ONE| <= MAX_Q``, which the encoder's input bound (``|xs| <= MAX_Q // 2``) keeps.
    """
    dc = np.zeros(xs.shape[0], np.int64)
    for c in range(xs.shape[0]):
        t, lo, hi = 0.0, -np.inf, np.inf
        xf, pf = xs[c].ravel(), pred[c].ravel()
        for i in range(xf.shape[0]):
            r = xf[i] * ONE - pf[i]
            t += r
            lo = max(lo, r - ONE * MAX_Q)
            hi = min(hi, r + ONE * MAX_Q)
        m = min(max(np.floor(t / xf.shape[0] + 0.5), np.ceil(lo), -MAX_Q), np.floor(hi), MAX_Q)
        dc[c] = int(m)
    return dc


@nb.njit(cache=True)
def _quantise(xs, pred, dc, f):
    """Residual ``d = xs - (pred + dc) / ONE`` (step units), its dead-zone levels ``q = sign(d) floor(|d| + f)``
    (|q| <= MAX_Q, and |pred + ONE q + dc| <= MAX_LEVEL) and the residual's energy, in one pass (encoder only)."""
    d = np.empty_like(xs)
    q = np.empty(xs.shape, np.int64)
    e = 0.0
    for c in range(xs.shape[0]):
        xf, pf, df, qf = xs[c].ravel(), pred[c].ravel(), d[c].ravel(), q[c].ravel()
        for i in range(xf.shape[0]):
            t = pf[i] + dc[c]
            r = xf[i] - t / ONE
            df[i] = r
            e += r * r
            a = int(min(np.floor(abs(r) + f), MAX_Q))
            v = a if r > 0 else (-a if r < 0 else 0)
            qf[i] = min(max(v, -((MAX_LEVEL + t) // ONE)), (MAX_LEVEL - t) // ONE)
    return d, q, e


def _reconstruct(pred: np.ndarray, q: np.ndarray, dc: np.ndarray) -> np.ndarray:
    """The decoder state: ``R = P + ONE * q + dc[c]`` (int64, units of step / ONE), built in ``pred``'s memory
    (``pred`` and ``q`` are used up: no whole-tensor temporaries, which the decoder's memory bound counts)."""
    q *= ONE
    pred += q
    pred += dc[:, None, None]
    return pred


@nb.njit(cache=True)
def _centred_energy(xs):
    """Sum over channels of the squared deviations from the channel's mean (what intra has to code)."""
    e = 0.0
    for c in range(xs.shape[0]):
        m = xs[c].mean()
        for v in xs[c].ravel():
            e += (v - m) * (v - m)
    return e


@nb.njit(cache=True)
def _sse(a, b, scale):
    """Sum of (a - scale * b)^2."""
    e = 0.0
    af, bf = a.ravel(), b.ravel()
    for i in range(af.shape[0]):
        t = np.float64(af[i]) - scale * np.float64(bf[i])
        e += t * t
    return e


def check_coding(mode: str, *, block: int = 4, mblock: int = 2, search: int = 4, subpel: int = 4, intra_period: int = 0) -> None:
    """Refuse (:class:`InputError`) coding settings a stream header cannot hold; :class:`Encoder` calls it,
    and a command can, before it loads a model or decodes a frame. Defaults: the Encoder's."""
    if mode not in MODES:
        raise InputError(f"unknown motion mode {mode!r}; choose one of {', '.join(MODE_NAMES)}")
    if subpel not in (1, 4):
        raise InputError(f"subpel must be 1 or 4, got {subpel}")
    if not 0 <= intra_period < 65536:
        raise InputError(f"intra period must lie in 0..65535, got {intra_period}")
    if not 1 <= min(block, mblock) <= max(block, mblock) <= 64 or not 0 <= search <= 64:
        raise InputError(f"block and mblock must lie in 1..64 and search in 0..64, got {block}, {mblock}, {search}")


class Encoder:
    """Encode one layer's tensors frame by frame.

    Args:
        shape: (C, H, W) of every tensor.
        step: quantisation step (the quality parameter: smaller is better).
        mode: motion mode: ``zero``, ``block`` or ``input``.
        model, layer, weights: names written to the header (``weights``: the
            weights' identity, e.g. :func:`latentmotion.models.weights_fingerprint`).
        block: tile side of the coded-tile (skip) flags.
        mblock, search, subpel: tile side of the motion vectors, search radius
            (latent px), vector precision (1 or 4).
        intra_period: force intra every N frames (0: first frame only).
        rd: decide intra or predicted per frame by rate-distortion cost.
        stride, offset: the split's geometry (for ``input``).
        lam: Lagrange multiplier in step-unit squared error per bit (mode decisions).
        rdoq: Lagrange multiplier of rate-distortion-optimised quantisation (0: off).
        deadzone: rounding offsets ``(intra, inter)`` of the quantiser before RDOQ (0.5: plain rounding).
        wm: extra weight of each tile's mean error in RDOQ (local means steer the task more than their
            share of the squared error: zeroing many small same-signed residuals shifts them).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        step: float,
        mode: str = "block",
        *,
        model: str = "",
        layer: str = "",
        weights: str = "",
        block: int = 4,
        mblock: int = 2,
        search: int = 4,
        subpel: int = 4,
        intra_period: int = 0,
        fps: float = 25.0,
        rd: bool = True,
        stride: tuple[int, int] = (1, 1),
        offset: tuple[float, float] = (0.0, 0.0),
        lam: float = 1.0,
        rdoq: float = 0.6,
        deadzone: tuple[float, float] = (0.5, 0.5),
        wm: float = 0.5,
    ) -> None:
        check_coding(mode, block=block, mblock=mblock, search=search, subpel=subpel, intra_period=intra_period)
        check_step(step)
        if len(shape) != 3:
            raise InputError(f"tensor shape must be (C, H, W), got {tuple(shape)}")
        c, h, w = (int(v) for v in shape)
        if min(c, h, w) < 1 or max(h, w) > 4096 or c > 65535 or c * h * w > 1 << 24:
            raise InputError(f"tensor shape {tuple(shape)} out of bounds (sides up to 4096, channels up to 65535, at most 2^24 elements)")
        with np.errstate(over="ignore", under="ignore"):
            fps32 = np.float32(fps)  # the header stores it so
        if not (np.isfinite(fps32) and fps32 > 0):
            raise InputError(f"frame rate must be a positive number a float32 holds, got {fps}")
        for name, text in (("model", model), ("layer", layer), ("weights", weights)):
            if len(text.encode()) > MAX_STR:
                raise InputError(f"{name} name of {len(text.encode())} bytes is too long for the stream header (at most {MAX_STR})")
        self.header = Header(model, layer, weights, (c, h, w), float(np.float32(step)), MODES[mode], block, mblock, search, subpel, intra_period, fps)
        self.mode = mode
        self.ctx = Context(mblock, search, subpel, stride, offset)
        self.rd, self.lam, self.rdoq, self.deadzone, self.wm = rd, lam, rdoq, deadzone, wm
        self.ref: np.ndarray | None = None  # reconstruction R of the last frame (1/ONE step)
        self._pred_energy = 0.0
        self.probs = entropy.new_contexts(c)  # inter-frame contexts (reset by every intra frame)
        self.prev_frame: torch.Tensor | None = None
        self.index = 0
        self.stats: list[FrameStats] = []
        self.reconstructions: list[torch.Tensor] = []

    def header_bytes(self) -> bytes:
        return write_header(self.header)

    def _intra(self, xs: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray, int]:
        zero = np.zeros(xs.shape, np.int64)
        dc = _offsets(xs, zero)
        d, q, _ = _quantise(xs, zero, dc, self.deadzone[0])
        data, _ = entropy.encode_frame(q, zero, d, np.zeros((2, 1, 1), np.int64), dc, self.header.block, entropy.new_contexts(q.shape[0]), False, self.rdoq, self.wm)
        return bytes([INTRA]) + data.tobytes(), _reconstruct(zero, q, dc), entropy.new_contexts(q.shape[0]), 0

    def _vectors(self, xs: np.ndarray) -> np.ndarray:
        h = self.header
        nh, nw = -(-h.shape[1] // h.mblock), -(-h.shape[2] // h.mblock)
        if self.mode == "zero":
            return np.zeros((2, nh, nw), np.int64)
        cstep = max(1, h.shape[0] // 32)  # all channels share the motion: about 32 of them find it
        if self.mode == "input" and self.ctx.frames is not None:
            cand = input_candidates(h.shape, self.ctx)
        else:
            k = max(1, h.shape[0] // 8)  # integer candidates: about 8 channels are enough, refinement uses more
            cur = np.clip(np.round(xs[::k] * ONE), -MAX_LEVEL, MAX_LEVEL).astype(np.int64)
            cand = block_candidates(np.ascontiguousarray(self.ref[::k]), cur, self.ctx)
        # errors in units of step / ONE: lam scales by ONE^2
        return choose_vectors(self.ref, np.ascontiguousarray(xs * ONE), cand, h.mblock, h.subpel, self.lam * ONE * ONE, True, cstep)

    def _inter(self, xs: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray, int]:
        h = self.header
        mv = self._vectors(xs)
        pred = predict(self.ref, mv, h.mblock, h.subpel)
        dc = _offsets(xs, pred)
        d, q, self._pred_energy = _quantise(xs, pred, dc, self.deadzone[1])
        probs = self.probs.copy()
        data, side = entropy.encode_frame(q, pred, d, mv, dc, h.block, probs, True, self.rdoq, self.wm)  # q: RD-optimised in place
        return bytes([INTER]) + data.tobytes(), _reconstruct(pred, q, dc), probs, 8 * side

    def encode(self, x: torch.Tensor, frame: torch.Tensor | None = None, intra: bool = False) -> bytes:
        """Code one tensor (C, H, W) into one self-delimiting frame record.

        ``frame``: the input frame as uint8 gray (H, W), for ``input`` mode;
        ``intra``: force an intra frame (e.g. after a receiver joined).
        """
        if tuple(x.shape) != self.header.shape:
            raise InputError(f"tensor shape {tuple(x.shape)} differs from the stream's {self.header.shape}")
        # numpy rather than torch for these whole-tensor passes: no thread-pool start-up per frame
        xn = x.detach().to("cpu", torch.float32).numpy()
        if not np.isfinite(xn).all():
            raise InputError("tensor holds NaN or infinite values")
        if self.index >= 1 << 32:
            raise InputError("a stream holds at most 2^32 frames")
        xs = xn.astype(np.float64) / self.header.step
        if np.abs(xs).max(initial=0) > MAX_Q // 2:  # a residual spans twice the values; more would be clipped
            peak = float(np.abs(xn).max())
            raise InputError(f"step {self.header.step:g} is too small for values up to {peak:g}: levels would exceed {MAX_Q // 2}; use a step of at least {peak / (MAX_Q // 2):g}")
        if self.mode == "input":
            if frame is None:
                raise InputError("the 'input' motion mode needs each tensor's input frame (uint8 luma)")
            # only a pair of consecutive frames may guide the search; never a stale one
            self.ctx.frames = (self.prev_frame, frame) if self.prev_frame is not None else None
        period = self.header.intra_period
        if intra or self.ref is None or (period and self.index % period == 0):
            cands = [self._intra(xs)]
        else:
            cands = [self._inter(xs)]
            # intra is only worth a trial where prediction leaves much of the signal's energy (a scene cut)
            # (prediction from an unrelated frame leaves about twice the energy)
            if self.rd and self._pred_energy >= 0.8 * _centred_energy(xs):
                cands.append(self._intra(xs))
        costs = [_sse(xs, rec, 1.0 / ONE) + self.lam * 8 * len(p) for p, rec, _, _ in cands] if len(cands) > 1 else [0.0]
        payload, rec, probs, side = cands[int(np.argmin(costs))]
        if payload[0] == INTRA:
            probs = entropy.new_contexts(self.header.shape[0])
        payload = struct.pack("<I", self.index) + payload
        pad = self.header.min_record() - 8 - len(payload)
        payload += bytes(max(0, pad))  # zeros read back as the coder's own past-the-end bytes
        self.ref, self.probs, self.prev_frame = rec, probs, frame
        self.index += 1
        out = _output(rec, self.header.step)
        self.stats.append(FrameStats("intra" if payload[4] == INTRA else "inter", 8 * (len(payload) + 8), side, _sse(xn, out.numpy(), 1.0)))
        self.reconstructions.append(out)
        return write_frame(payload)


def _output(levels: np.ndarray, step: float) -> torch.Tensor:
    """float32(R) * (float32(step) / ONE): one IEEE multiply per element, the same on every machine
    (dividing by a power of two is exact, and with the header's 2^-100 <= step <= 2^100 every non-zero
    output is a normal, finite float32)."""
    out = levels.astype(np.float32)
    out *= np.float32(step) / np.float32(ONE)  # in place: the same IEEE multiply, no second float32 copy
    return torch.from_numpy(out)


class Decoder:
    """Decode a stream produced by :class:`Encoder` (header first, then frame records in order)."""

    def __init__(self, header: Header) -> None:
        self.header = header
        self.ref: np.ndarray | None = None
        self.probs = entropy.new_contexts(header.shape[0])
        self.index = 0

    @classmethod
    def from_header_bytes(cls, data: bytes) -> Decoder:
        """A decoder for the stream whose header is exactly ``data``; :class:`BitstreamError` if it is not one."""
        r = Reader(data)
        header = read_header(r, len(MODE_NAMES))
        if not r.done():
            raise BitstreamError(f"{r.end - r.pos} bytes after the header")
        return cls(header)

    def decode_frame(self, record: bytes) -> torch.Tensor:
        """Decode one frame record exactly as :meth:`Encoder.encode` returned it.

        :class:`BitstreamError` on damage and on a frame out of sequence
        (dropped, duplicated, reordered); the decoder's state is then unchanged.
        """
        r = Reader(record)
        payload = read_frame(r, self.header.frame_limit())
        if not r.done():
            raise BitstreamError(f"{r.end - r.pos} bytes after the frame")
        return self.decode_payload(payload)

    def decode_payload(self, payload: bytes) -> torch.Tensor:
        h = self.header
        if len(payload) + 8 < h.min_record():
            raise BitstreamError(f"frame of {len(payload) + 8} bytes is too short to decode a {h.shape} tensor (work is bounded by bytes)")
        r = Reader(payload)
        seq, kind = r.u32(), r.u8()
        if seq != self.index:
            raise BitstreamError(f"frame {seq} out of sequence: expected frame {self.index} (a frame was dropped, duplicated or reordered)")
        if kind not in (INTRA, INTER):
            raise BitstreamError(f"unknown frame type {kind}")
        if kind == INTER and self.ref is None:
            raise BitstreamError("predicted frame without a reference")
        data = np.frombuffer(payload, np.uint8, offset=r.pos)
        c, hh, ww = h.shape
        probs = entropy.new_contexts(c) if kind == INTRA else self.probs.copy()
        ref = self.ref if kind == INTER else np.zeros((1, 1, 1), np.int64)
        q, pred, dc, status = entropy.decode_frame(data, c, hh, ww, h.block, h.mblock, probs, kind == INTER, MAX_MV, ref, h.subpel)
        if status:
            raise BitstreamError(f"frame {seq}: entropy-coded data is corrupt")
        rec = _reconstruct(pred, q, dc)
        if rec.max(initial=0) > MAX_LEVEL or rec.min(initial=0) < -MAX_LEVEL:  # no |rec| copy
            raise BitstreamError(f"frame {seq}: reconstruction level out of range")
        self.ref, self.probs = rec, probs if kind == INTER else entropy.new_contexts(c)
        self.index += 1
        return _output(rec, h.step)


def encode_sequence(tensors: Iterable[torch.Tensor], encoder: Encoder, frames: Iterable[torch.Tensor | None] | None = None) -> bytes:
    """Header plus every frame, as one byte string."""
    parts = [encoder.header_bytes()]
    tensors = list(tensors)
    frames = [None] * len(tensors) if frames is None else list(frames)
    for x, f in zip(tensors, frames, strict=True):  # a missing frame is an error, never a dropped tensor
        parts.append(encoder.encode(x, f))
    return b"".join(parts)


def iter_decode(data: bytes) -> Iterator[torch.Tensor]:
    """Decode a whole stream frame by frame; raises :class:`BitstreamError` on any damage."""
    r = Reader(data)
    dec = Decoder(read_header(r, len(MODE_NAMES)))
    limit = dec.header.frame_limit()
    while not r.done():
        yield dec.decode_payload(read_frame(r, limit))


def read_stream_header(data: bytes) -> Header:
    """The header at the start of a whole stream (e.g. to check its weights before decoding)."""
    return read_header(Reader(data), len(MODE_NAMES))


def decoded_nbytes(data: bytes) -> int:
    """Bytes of float32 tensors the whole stream decodes to, from its header and record lengths (nothing is decoded).

    Lets an application refuse a stream whose output would not fit in memory
    before decoding it: the per-byte work bound limits time, not the total kept.
    """
    r = Reader(data)
    h = read_header(r, len(MODE_NAMES))
    n, limit = 0, h.frame_limit()
    while not r.done():
        read_frame(r, limit)  # lengths and checksums only
        n += 1
    c, hh, ww = h.shape
    return 4 * n * c * hh * ww


def decode_work_nbytes(data: bytes) -> int:
    """Bytes one frame's decoding holds at most besides the outputs (its header only is read).

    Per element: the int64 previous state, levels and prediction (which becomes the new state) and the
    float32 output in the making (32 bytes, rounded up); per place the int64 activity count (8); per
    coded-tile flag the flag and its count (16); per vector its two int64 components (16). At most 72
    bytes per element (1 channel, block 1, mblock 1).
    """
    h = read_stream_header(data)
    c, hh, ww = h.shape
    return 32 * c * hh * ww + 8 * hh * ww + 16 * h.tiles() + 16 * h.vectors()


def decode_stream(data: bytes) -> tuple[Header, list[torch.Tensor]]:
    """Header and all decoded tensors of a stream."""
    out = list(iter_decode(data))
    return read_stream_header(data), out
