"""Container format: a versioned header and self-delimiting, checksummed frames.

Layout (all integers little-endian)::

    header:  magic "LMFC" | u8 version (7) | str model | str layer | str weights
             | u16 C, H, W | u8 dtype (0: float32) | f32 step | u8 motion mode
             | u8 block | u8 motion block | u8 search | u8 subpel | u16 intra period | f32 fps
             | u32 crc32
    frame:   u32 payload length | u32 crc32(payload) | payload
    payload: u32 sequence number | u8 frame type | u8 gain (16..255: a level is gain / 16 steps)
             | range-coded bytes
    str:     u16 length | utf-8 bytes (length <= 256)

Every size read from a stream is bounded before anything is allocated, and
every failure (truncation, bad magic, checksum, out-of-range value) raises
:class:`BitstreamError`. Work is bounded by bytes: a frame record must hold at
least one byte per ``UNITS_PER_BYTE`` work units of the frame it decodes to
(:meth:`Header.work_units`: elements, coded-tile flags and motion vectors, each
weighted by what it costs the decoder; encoders pad), so no small stream can
claim a long decode.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

from ..errors import LatentMotionError

__all__ = [
    "CODED_PER_BYTE",
    "MAX_BLOCK",
    "MAX_CHANNELS",
    "MAX_ELEMENTS",
    "MAX_GAIN",
    "MAX_PERIOD",
    "MAX_SEARCH",
    "MAX_SIDE",
    "MAX_STEP",
    "MAX_STR",
    "MIN_GAIN",
    "MIN_STEP",
    "MODES",
    "MODE_NAMES",
    "SUBPELS",
    "BitstreamError",
    "Header",
    "Reader",
    "Writer",
    "header_problem",
    "read_frame",
    "read_header",
    "step_problem",
    "tools_problem",
    "write_frame",
    "write_header",
]

MAGIC = b"LMFC"
VERSION = 7  # 7: a channel's unused level contexts start from the previous channel's states; 6: context states that count their bits (young contexts adapt fast); 5: two references (a tile may average predictions from the last two frames); 4: a gain byte per frame
MAX_STR = 256
#: motion modes, by the header's mode byte (:mod:`latentmotion.codec.prediction` implements them)
MODE_NAMES = ("zero", "block", "input")
MODES = {name: i for i, name in enumerate(MODE_NAMES)}
MAX_ELEMENTS = 1 << 24  # C * H * W of one tensor
MAX_SIDE = 4096
MAX_CHANNELS = (1 << 16) - 1  # u16
MAX_BLOCK = MAX_SEARCH = 64  # tile sides and the search radius (u8, bounded further for the decoder's work)
SUBPELS = (1, 4)  # vector precisions
MAX_PERIOD = (1 << 16) - 1  # u16
# a frame's gain byte, in 1/16 steps; below one step is reserved (no encoder needs a level finer than the
# offsets' 1/16 step grid allows, and the reference encoder's level bound assumes at least one step)
MIN_GAIN, MAX_GAIN = 16, 255
# steps the header may hold: every non-zero output R * step / 16 (|R| <= 2^24) is then a normal,
# finite float32, so no flush-to-zero or overflow setting can change a decoded value
MIN_STEP, MAX_STEP = 2.0**-100, 2.0**100
# Work bound (docs/codec.md section 1): a frame costs ELEMENT_UNITS per element (a prediction from each of two
# references), TILE_UNITS per coded-tile flag and VECTOR_UNITS per motion tile (up to two vectors), about what
# each costs the decoder next to an element that is not coded (measured: ~3 ns, ~50-90 ns, ~200-300 ns per vector
# with its prediction), plus CHANNEL_UNITS per channel (its probability tables and offset: what one-pixel channels
# cost) and PLACE_UNITS per place (the interpolation taps and the average of two predictions: what one-channel
# frames cost); a record of n bytes may claim at most n * UNITS_PER_BYTE units, which keeps a byte's worth of
# skipped tiles below what a byte of coded levels costs.
ELEMENT_UNITS, TILE_UNITS, VECTOR_UNITS, CHANNEL_UNITS, PLACE_UNITS = 2, 32, 128, 64, 8
UNITS_PER_BYTE = 1 << 12
#: a record of n bytes (its 8-byte frame header included) may code at most n * CODED_PER_BYTE levels in coded
#: tiles: a coded level costs a decoder about ten times an element that is not coded, and since stream version 6
#: a likely zero level can cost under 0.003
#: bits, so that without this bound a record of the smallest size could hold a frame whose every tile is coded
CODED_PER_BYTE = 128


class BitstreamError(LatentMotionError):
    """A stream that is truncated, corrupted or not a latentmotion feature stream."""


class Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(struct.pack("<B", v))

    def u16(self, v: int) -> None:
        self.parts.append(struct.pack("<H", v))

    def u32(self, v: int) -> None:
        self.parts.append(struct.pack("<I", v))

    def i32(self, v: int) -> None:
        self.parts.append(struct.pack("<i", v))

    def f32(self, v: float) -> None:
        self.parts.append(struct.pack("<f", v))

    def raw(self, b: bytes) -> None:
        self.parts.append(b)

    def blob(self, b: bytes) -> None:
        self.u32(len(b))
        self.parts.append(b)

    def text(self, s: str) -> None:
        b = s.encode()
        if len(b) > MAX_STR:
            raise ValueError(f"string too long for the header: {s!r}")
        self.u16(len(b))
        self.parts.append(b)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    """Bounds-checked reads; every problem is a :class:`BitstreamError`."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = memoryview(data)
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise BitstreamError(f"truncated stream: needed {n} bytes at offset {self.pos}, {self.end - self.pos} left")
        b = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return b

    def _unpack(self, fmt: str, n: int):
        return struct.unpack(fmt, self.take(n))[0]

    def u8(self) -> int:
        return self._unpack("<B", 1)

    def u16(self) -> int:
        return self._unpack("<H", 2)

    def u32(self) -> int:
        return self._unpack("<I", 4)

    def i32(self) -> int:
        return self._unpack("<i", 4)

    def f32(self) -> float:
        v = self._unpack("<f", 4)
        if not math.isfinite(v):
            raise BitstreamError("non-finite number in stream")
        return v

    def blob(self, limit: int) -> bytes:
        n = self.u32()
        if n > limit:
            raise BitstreamError(f"section of {n} bytes exceeds its bound {limit}")
        return self.take(n)

    def text(self) -> str:
        n = self.u16()
        if n > MAX_STR:
            raise BitstreamError(f"string of {n} bytes exceeds {MAX_STR}")
        try:
            return self.take(n).decode()
        except UnicodeDecodeError:
            raise BitstreamError("string is not valid UTF-8") from None

    def done(self) -> bool:
        return self.pos >= self.end


@dataclass(frozen=True)
class Header:
    """What a decoder needs before the first frame."""

    model: str
    layer: str
    weights: str  # identity of the weights (e.g. latentmotion.models.weights_fingerprint); "" if unnamed
    shape: tuple[int, int, int]  # (C, H, W)
    step: float
    mode: int  # index into the motion-mode registry
    block: int  # latent tile side of the coded-tile (skip) flags
    mblock: int  # latent tile side of motion vectors
    search: int  # motion search radius, latent pixels
    subpel: int  # motion vector precision: 1 (integer) or 4 (quarter)
    intra_period: int  # 0: only the first frame is forced intra
    fps: float

    def frame_limit(self) -> int:
        """Largest payload a valid frame of this shape can need (bounds allocation)."""
        c, h, w = self.shape
        return 24 * c * h * w + 64 * c + 65536

    def tiles(self) -> int:
        """Coded-tile flags of one frame (``block x block`` tiles of every channel)."""
        c, h, w = self.shape
        return c * -(-h // self.block) * -(-w // self.block)

    def motion_tiles(self) -> int:
        """Motion tiles of one predicted frame (``mblock x mblock``, shared by all channels; one or two vectors each)."""
        _, h, w = self.shape
        return -(-h // self.mblock) * -(-w // self.mblock)

    def work_units(self) -> int:
        """What decoding one frame may cost: elements, plus tile flags and vectors at their weights."""
        c, h, w = self.shape
        return (ELEMENT_UNITS * c + PLACE_UNITS) * h * w + TILE_UNITS * self.tiles() + VECTOR_UNITS * self.motion_tiles() + CHANNEL_UNITS * c

    def min_record(self) -> int:
        """Smallest frame record (bytes) that may decode to one tensor: work is bounded by bytes."""
        return -(-self.work_units() // UNITS_PER_BYTE)


def _as_float32(v: float) -> float:
    """``v`` as the header stores it (inf beyond float32's range, 0 below it)."""
    return struct.unpack("<f", struct.pack("<f", v))[0] if abs(v) <= 3.4028234663852886e38 else math.inf


def step_problem(step: float) -> str | None:
    """What is wrong with a quantisation step as a header holds it (float32, 2^-100 to 2^100), or None."""
    if not MIN_STEP <= _as_float32(step) <= MAX_STEP:
        return f"step {step:g} is outside the range a stream holds (2^-100 to 2^100, as float32)"
    return None


def tools_problem(block: int, mblock: int, search: int, subpel: int, intra_period: int) -> str | None:
    """What is wrong with coding settings a header stores, or None: the one place these limits are checked."""
    if subpel not in SUBPELS:
        return f"subpel must be 1 or 4, got {subpel}"
    if not 0 <= intra_period <= MAX_PERIOD:
        return f"intra period must lie in 0..{MAX_PERIOD}, got {intra_period}"
    if not 1 <= min(block, mblock) <= max(block, mblock) <= MAX_BLOCK or not 0 <= search <= MAX_SEARCH:
        return f"block and mblock must lie in 1..{MAX_BLOCK} and search in 0..{MAX_SEARCH}, got {block}, {mblock}, {search}"
    return None


def header_problem(h: Header) -> str | None:
    """What is wrong with a header (its shape, step, settings, names), or None; the encoder and the reader both ask."""
    c, hh, ww = h.shape
    if min(c, hh, ww) < 1 or max(hh, ww) > MAX_SIDE or c > MAX_CHANNELS or c * hh * ww > MAX_ELEMENTS:
        return f"tensor shape {h.shape} out of bounds (sides up to {MAX_SIDE}, channels up to {MAX_CHANNELS}, at most 2^24 elements)"
    if step_problem(h.step):
        return step_problem(h.step)
    fps32 = _as_float32(h.fps)
    if not (math.isfinite(fps32) and fps32 > 0):
        return f"frame rate must be a positive number a float32 holds, got {h.fps}"
    if not 0 <= h.mode < len(MODE_NAMES):
        return f"motion mode {h.mode} out of range"
    for name, text in (("model", h.model), ("layer", h.layer), ("weights", h.weights)):
        if len(text.encode()) > MAX_STR:
            return f"{name} name of {len(text.encode())} bytes is too long for the stream header (at most {MAX_STR})"
    return tools_problem(h.block, h.mblock, h.search, h.subpel, h.intra_period)


def write_header(h: Header) -> bytes:
    w = Writer()
    w.raw(MAGIC)
    w.u8(VERSION)
    w.text(h.model)
    w.text(h.layer)
    w.text(h.weights)
    for v in h.shape:
        w.u16(v)
    w.u8(0)
    w.f32(h.step)
    for v in (h.mode, h.block, h.mblock, h.search, h.subpel):
        w.u8(v)
    w.u16(h.intra_period)
    w.f32(h.fps)
    body = w.getvalue()
    return body + struct.pack("<I", zlib.crc32(body))


def read_header(r: Reader) -> Header:
    start = r.pos
    if r.take(4) != MAGIC:
        raise BitstreamError("not a latentmotion feature stream (bad magic)")
    version = r.u8()
    if version != VERSION:
        raise BitstreamError(f"stream version {version} is not supported: this decoder reads version {VERSION} only (re-encode the features with this release)")
    model, layer, weights = r.text(), r.text(), r.text()
    shape = (r.u16(), r.u16(), r.u16())
    if r.u8() != 0:
        raise BitstreamError("unknown dtype code")
    step = r.f32()
    mode, block, mblock, search, subpel = r.u8(), r.u8(), r.u8(), r.u8(), r.u8()
    intra_period, fps = r.u16(), r.f32()
    crc = r.u32()
    if crc != zlib.crc32(bytes(r.data[start : r.pos - 4])):
        raise BitstreamError("header checksum mismatch")
    h = Header(model, layer, weights, shape, step, mode, block, mblock, search, subpel, intra_period, fps)
    problem = header_problem(h)
    if problem:
        raise BitstreamError(f"header parameters out of range: {problem}")
    return h


def write_frame(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def read_frame(r: Reader, limit: int) -> bytes:
    n, crc = r.u32(), r.u32()
    if n > limit:
        raise BitstreamError(f"frame of {n} bytes exceeds the bound {limit} for this shape")
    payload = r.take(n)
    if zlib.crc32(payload) != crc:
        raise BitstreamError("frame checksum mismatch")
    return payload
