"""Closed-loop predictive coding of feature-tensor sequences, with an integer decoder state.

The decoder keeps the reconstruction ``R`` of the previous frame in fixed
point (integers in units of ``step / ONE``, ``ONE = 16``), and the one
before it (``R2``). An intra frame codes ``R = G q + o``; a predicted frame codes
tile vectors and ``R = P + G q + o`` with ``P`` the integer motion-compensated
prediction from the previous ``R``, on some tiles averaged with one from ``R2``
(:func:`latentmotion.codec.prediction.compensate`), ``q`` the levels, ``G`` the
frame's gain (a level is ``G / ONE`` steps; this encoder sends ``ONE`` for
intra frames and about ``ONE pstep`` for predicted ones, finer on every fourth:
:meth:`~latentmotion.codec.config.ResidualTools.gain`) and ``o`` one offset
per channel (the channel's mean residual, 1/ONE step, or nearer 0 where that pays). The
output tensor is ``float32(R) * (float32(step) / ONE)``: one IEEE multiply, the
same on every machine.

The stages, each a module with one job: the prediction
(:mod:`~latentmotion.codec.prediction`: vectors and motion compensation), the
residual (:mod:`~latentmotion.codec.residual`: offsets, dead-zone levels, their
rate-distortion-optimised choice, reconstruction), the syntax
(:mod:`~latentmotion.codec.syntax`: binarisation and contexts) over the range
coder (:mod:`~latentmotion.codec.rangecoder`), and the stream
(:mod:`~latentmotion.codec.bitstream`: header, records, limits). This module
runs them in order; the settings come from :mod:`~latentmotion.codec.config`.
With ``rd`` on, a frame whose prediction leaves at least 80 % of its energy
(a scene cut) is coded both intra and predicted at the intra step (the same
vectors), and the cheaper of the two (``SSE + lambda * bits``) is kept.

Example:
    >>> import torch
    >>> enc = Encoder((4, 8, 8), step=0.1, stream=StreamId(weights="abc"))
    >>> dec = Decoder.from_header_bytes(enc.header_bytes())
    >>> outs = [dec.decode_frame(enc.encode(torch.randn(4, 8, 8))) for _ in range(3)]
    >>> all(torch.equal(a, b) for a, b in zip(outs, enc.reconstructions, strict=True))
    True
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numba as nb
import numpy as np
import torch

from ..errors import InputError
from . import rangecoder, syntax
from .bitstream import CODED_PER_BYTE, MAX_GAIN, MIN_GAIN, BitstreamError, Header, Reader, header_problem, read_frame, read_header, write_frame, write_header
from .config import MotionTools, ResidualTools, StreamId, Tools
from .limits import check_step, shown_bound
from .prediction import FIELD_ROWS, MAX_MV, MODES, ONE, Context, block_candidates, choose_second, choose_vectors, compensate, input_candidates
from .residual import MAX_LEVEL, MAX_Q, offsets, quantise, rdoq, reconstruct, shrink_offsets

__all__ = [
    "MAX_MV", "MAX_Q", "Decoder", "Encoder", "FrameStats", "MotionTools", "ResidualTools", "StreamId", "Tools",
    "decode_stream", "decode_work_nbytes", "decoded_nbytes", "encode_sequence", "iter_decode", "read_stream_header",
]

INTRA, INTER = 0, 1
SEARCH_CHANNELS = 32  # about this many channels (the strongest, as many as every C // 32-th would be) choose the vectors


@dataclass
class FrameStats:
    kind: str  # "intra" or "inter"
    bits: int
    side_bits: int  # motion side information
    sse: float
    gain: int = ONE  # a level is gain / ONE steps


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


class Encoder:
    """Encode one layer's tensors frame by frame.

    Args:
        shape: (C, H, W) of every tensor.
        step: quantisation step (the quality parameter: smaller is better).
        tools: motion and residual tools (:class:`~latentmotion.codec.config.Tools`; defaults there).
        stream: what the header names: network, cut, weights' identity, frame rate.
        grid: the split's (stride, offset), which the ``input`` mode needs; :meth:`from_split` fills it.
    """

    def __init__(self, shape: tuple[int, int, int], step: float, tools: Tools | None = None, stream: StreamId | None = None,
                 grid: tuple[tuple[int, int], tuple[float, float]] = ((1, 1), (0.0, 0.0))) -> None:
        tools, stream = tools or Tools(), stream or StreamId()
        if not isinstance(tools, Tools) or not isinstance(stream, StreamId):  # e.g. a mode name where Tools go (the old signature)
            raise TypeError(f"Encoder takes tools=Tools(...) (e.g. Tools.of(mode='zero')) and stream=StreamId(...), got {tools!r}, {stream!r}")
        check_step(step)
        if len(shape) != 3:
            raise InputError(f"tensor shape must be (C, H, W), got {tuple(shape)}")
        m, r = tools.motion, tools.residual
        self.header = Header(stream.model, stream.layer, stream.weights, tuple(int(v) for v in shape), float(np.float32(step)), MODES[m.mode],
                             r.block, m.mblock, m.search, m.subpel, m.intra_period, float(stream.fps))
        problem = header_problem(self.header)
        if problem:
            raise InputError(problem)
        self.tools = tools
        self.ctx = Context(m.mblock, m.search, m.subpel, *grid)
        self.ref: np.ndarray | None = None  # reconstruction R of the last frame (1/ONE step)
        self.ref2: np.ndarray | None = None  # and of the frame before it (the last one again after an intra frame)
        self._pred_energy = 0.0
        self.probs = syntax.new_contexts(shape[0])  # inter-frame contexts (reset by every intra frame)
        self.prev_frame: torch.Tensor | None = None
        self.index = 0
        self.last_intra = 0  # index of the last intra frame: the quality cascade counts from it
        self.stats: list[FrameStats] = []
        self.reconstructions: list[torch.Tensor] = []

    @classmethod
    def from_split(cls, split, features: torch.Tensor, step: float, tools: Tools | None = None, stream: StreamId | None = None) -> Encoder:
        """An encoder for ``features`` (N, C, H, W) of ``split``'s cut: its shape, its layer and grid.

        ``stream`` names the network, the weights and the frame rate (its ``layer`` is the split's).
        """
        stream = replace(stream or StreamId(), layer=split.layer)
        grid = (split.stride, split.offset) if split.stride is not None else ((1, 1), (0.0, 0.0))
        return cls(tuple(features.shape[1:]), step, tools, stream, grid)

    @property
    def mode(self) -> str:
        return self.tools.motion.mode

    def header_bytes(self) -> bytes:
        return write_header(self.header)

    def _frame(self, xs: np.ndarray, pred: np.ndarray, mv: np.ndarray | None, probs: np.ndarray, gain: int = ONE) -> tuple[bytes, np.ndarray, int]:
        """Residual and syntax of one frame about ``pred``, levels of ``gain / ONE`` steps: (payload, reconstruction,
        side bits); ``probs`` adapts."""
        r = self.tools.residual
        # one lambda in level units for every frame, the predicted frames' (rdoq is in their squared steps): intra
        # frames at rdoq steps^2 (4x this at pstep 2) came out coarse; this rule gained 3-19 % of feature-PSNR
        # BD-rate on klt (48 frames, docs/codec.md section 7, "One RDOQ lambda in level units for every frame")
        lam = r.rdoq * (ONE / r.base_gain()) ** 2
        e = rangecoder.encoder(syntax.capacity(xs, r.block, np.zeros((2, 0, 0)) if mv is None else mv))  # (sizes only)
        if mv is not None:
            syntax.encode_vectors(e, probs, mv)
        dc = offsets(xs, pred)
        # RDOQ's lambda, not the motion decisions': an offset's error is a residual's error, and kltw's low lambda says its
        # (task-weighted) errors cost more (the motion lambda here lost kltw 2-15 points of KL BD-rate on 6 of 8 runs)
        added = shrink_offsets(e, probs, xs, pred, dc, lam, r.wm, gain) if r.rdoq > 0 else 0.0
        d, q, energy = quantise(xs, pred, dc, r.deadzone[mv is not None], gain)
        if mv is not None:
            self._pred_energy = energy - added  # the prediction's error about the channels' true means
        side = int(e.st[4])
        syntax.encode_offsets(e, probs, dc)
        levels = syntax.levels(q, pred, r.block)
        if r.rdoq > 0:  # decides each tile with the contexts the coder has there, and codes it
            rdoq(e, probs, levels, d, lam, r.wm)
        else:
            syntax.encode_levels(e, probs, levels, 0)
        payload = bytes([INTRA if mv is None else INTER, gain]) + rangecoder.finish(e).tobytes()
        # a record pays for its coded levels (CODED_PER_BYTE): zeros read back as the coder's own past-the-end bytes
        payload += bytes(max(0, -(-syntax.coded_levels(levels) // CODED_PER_BYTE) - 12 - len(payload)))
        return payload, reconstruct(pred, q, dc, gain), 8 * side

    def _intra(self, xs: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray, int]:
        probs = syntax.new_contexts(xs.shape[0])
        payload, rec, _ = self._frame(xs, np.zeros(xs.shape, np.int64), None, probs)
        return payload, rec, syntax.new_contexts(xs.shape[0]), 0

    def _vectors(self, xs: np.ndarray) -> np.ndarray:
        h = self.header
        nh, nw = -(-h.shape[1] // h.mblock), -(-h.shape[2] // h.mblock)
        if self.mode == "zero":
            return np.zeros((FIELD_ROWS, nh, nw), np.int64)
        # all channels share the motion: a sample of them finds it, the strongest in the reference (measured on five
        # 48-frame runs against every C // 32-th channel: feature PSNR BD-rate -0.5 to -2.2 %, KL -6.5 to +4.3 %)
        c = h.shape[0]
        order = np.argsort(-np.square(self.ref, dtype=np.float64).sum(axis=(1, 2)), kind="stable")  # strongest first
        sel, sel8 = (np.sort(order[: -(-c // max(1, c // n))]) for n in (SEARCH_CHANNELS, 8))
        ref, ref2, xs_s = (np.ascontiguousarray(a[sel]) for a in (self.ref, self.ref2, xs))
        lam = self.tools.motion.lam * ONE * ONE * len(sel) / c  # errors in units of step / ONE, summed over len(sel) of c channels
        if self.mode == "input" and self.ctx.frames is not None:
            cand = input_candidates(h.shape, self.ctx)
        else:
            cur = np.clip(np.round(xs[sel8] * ONE), -MAX_LEVEL, MAX_LEVEL).astype(np.int64)  # integer candidates: about 8 channels
            cand = block_candidates(np.ascontiguousarray(self.ref[sel8]), cur, self.ctx)
        cur = np.ascontiguousarray(xs_s * ONE)
        mv = choose_vectors(ref, cur, cand, h.mblock, h.subpel, lam, 1)
        if not self.tools.motion.bi:
            return np.concatenate([mv, np.zeros((FIELD_ROWS - 2, nh, nw), np.int64)])
        return choose_second(ref, ref2, cur, mv, h.mblock, h.subpel, lam, 1)

    def _inter(self, xs: np.ndarray, gain: int, mv: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray, int]:
        """A predicted frame at ``gain`` with the vectors ``mv`` searched for ``xs``."""
        h = self.header
        probs = self.probs.copy()
        payload, rec, side = self._frame(xs, compensate(self.ref, self.ref2, mv, h.mblock, h.subpel), mv, probs, gain)
        return payload, rec, probs, side

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
            raise InputError(f"step {self.header.step:g} is too small for values up to {peak:g}: levels would exceed {MAX_Q // 2}; use a step of at least {shown_bound(peak / (MAX_Q // 2), True)}")
        if self.mode == "input":
            if frame is None:
                raise InputError("the 'input' motion mode needs each tensor's input frame (uint8 luma)")
            # only a pair of consecutive frames may guide the search; never a stale one
            self.ctx.frames = (self.prev_frame, frame) if self.prev_frame is not None else None
        period = self.header.intra_period
        if intra or self.ref is None or (period and self.index % period == 0):
            cands = [self._intra(xs)]
        else:
            mv = self._vectors(xs)
            cands = [self._inter(xs, self.tools.residual.gain(self.index - self.last_intra), mv)]
            # intra is only worth a trial where prediction leaves much of the signal's energy (a scene cut)
            # (prediction from an unrelated frame leaves about twice the energy); there the predicted frame is
            # tried at the intra step too, so that the choice is of quality alike (what follows inherits it)
            if self.tools.motion.rd and self._pred_energy >= 0.8 * _centred_energy(xs):
                cands = [self._inter(xs, ONE, mv), self._intra(xs)]
        costs = [_sse(xs, rec, 1.0 / ONE) + self.tools.motion.lam * 8 * len(p) for p, rec, _, _ in cands] if len(cands) > 1 else [0.0]
        payload, rec, probs, side = cands[int(np.argmin(costs))]
        if payload[0] == INTRA:
            probs, self.last_intra = syntax.new_contexts(self.header.shape[0]), self.index
        payload = struct.pack("<I", self.index) + payload
        pad = self.header.min_record() - 8 - len(payload)
        payload += bytes(max(0, pad))  # zeros read back as the coder's own past-the-end bytes
        self.ref, self.ref2, self.probs, self.prev_frame = rec, rec if payload[4] == INTRA else self.ref, probs, frame
        self.index += 1
        out = _output(rec, self.header.step)
        kind = "intra" if payload[4] == INTRA else "inter"
        self.stats.append(FrameStats(kind, 8 * (len(payload) + 8), side, _sse(xn, out.numpy(), 1.0), payload[5]))
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
        self.ref2: np.ndarray | None = None
        self.probs = syntax.new_contexts(header.shape[0])
        self.index = 0

    @classmethod
    def from_header_bytes(cls, data: bytes) -> Decoder:
        """A decoder for the stream whose header is exactly ``data``; :class:`BitstreamError` if it is not one."""
        r = Reader(data)
        header = read_header(r)
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
        seq, kind, gain = r.u32(), r.u8(), r.u8()
        if seq != self.index:
            raise BitstreamError(f"frame {seq} out of sequence: expected frame {self.index} (a frame was dropped, duplicated or reordered)")
        if kind not in (INTRA, INTER):
            raise BitstreamError(f"unknown frame type {kind}")
        if not MIN_GAIN <= gain <= MAX_GAIN:
            raise BitstreamError(f"frame {seq}: gain {gain} out of range {MIN_GAIN}..{MAX_GAIN}")
        if kind == INTER and self.ref is None:
            raise BitstreamError("predicted frame without a reference")
        c, hh, ww = h.shape
        probs = syntax.new_contexts(c) if kind == INTRA else self.probs.copy()
        d = rangecoder.decoder(np.frombuffer(payload, np.uint8, offset=r.pos))
        if kind == INTER:
            mv, bad = syntax.decode_vectors(d, probs, -(-hh // h.mblock), -(-ww // h.mblock), MAX_MV)
            pred = compensate(self.ref, self.ref2, mv, h.mblock, h.subpel) if not bad else None
        else:
            bad, pred = 0, np.zeros((c, hh, ww), np.int64)
        if not bad:
            dc, bad = syntax.decode_offsets(d, probs, c)
        if not bad:
            q, bad = syntax.decode_levels(d, probs, pred, h.block, CODED_PER_BYTE * (len(payload) + 8))
        if bad == 2:
            raise BitstreamError(f"frame {seq}: its coded tiles hold more levels than its {len(payload) + 8} bytes allow ({CODED_PER_BYTE} a byte)")
        if bad:
            raise BitstreamError(f"frame {seq}: entropy-coded data is corrupt")
        rec = reconstruct(pred, q, dc, gain)
        if rec.max(initial=0) > MAX_LEVEL or rec.min(initial=0) < -MAX_LEVEL:  # no |rec| copy
            raise BitstreamError(f"frame {seq}: reconstruction level out of range")
        self.ref, self.ref2, self.probs = rec, rec if kind == INTRA else self.ref, probs if kind == INTER else syntax.new_contexts(c)
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
    dec = Decoder(read_header(r))
    limit = dec.header.frame_limit()
    while not r.done():
        yield dec.decode_payload(read_frame(r, limit))


def read_stream_header(data: bytes) -> Header:
    """The header at the start of a whole stream (e.g. to check its weights before decoding)."""
    return read_header(Reader(data))


def decoded_nbytes(data: bytes) -> int:
    """Bytes of float32 tensors the whole stream decodes to, from its header and record lengths (nothing is decoded).

    Lets an application refuse a stream whose output would not fit in memory
    before decoding it: the per-byte work bound limits time, not the total kept.
    """
    r = Reader(data)
    h = read_header(r)
    n, limit = 0, h.frame_limit()
    while not r.done():
        read_frame(r, limit)  # lengths and checksums only
        n += 1
    c, hh, ww = h.shape
    return 4 * n * c * hh * ww


def decode_work_nbytes(data: bytes) -> int:
    """Bytes one frame's decoding holds at most besides the outputs (its header only is read).

    Per element: the int64 two previous states, levels, the prediction (which becomes the new state) and the
    prediction from the second reference, and the float32 output in the making (48 bytes, rounded up); per place
    the int64 activity count (8); per coded-tile flag the flag and its count (16);
    per motion tile its five int64 fields (40); per channel three probability tables (the stream's, its copy,
    a fresh one: 24 bytes per context) and the offset (8); the sampler of one motion tile (72 per place). At
    most 112 bytes per element (1 channel, block 1, mblock 1) besides the tables.
    """
    h = read_stream_header(data)
    c, hh, ww = h.shape
    return 48 * c * hh * ww + 8 * hh * ww + 16 * h.tiles() + 40 * h.motion_tiles() + 24 * syntax.n_contexts(c) + 8 * c + 72 * h.mblock**2


def decode_stream(data: bytes) -> tuple[Header, list[torch.Tensor]]:
    """Header and all decoded tensors of a stream."""
    out = list(iter_decode(data))
    return read_stream_header(data), out
