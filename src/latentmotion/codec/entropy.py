"""Entropy coding of integer tensors with constriction's range coder.

A quantised tensor (C, H, W) is coded as:

* ``R = max |q|`` (u16); nothing more when ``R = 0``;
* one skip flag per channel and ``block x block`` tile (all zeros or not),
  with a binary model whose probability is sent in one byte;
* a scale index per channel (4 bits, log-spaced Laplace scales);
* the symbols of non-skipped tiles, grouped by scale index, each group with a
  discretised Laplace model on [-R, R].

Models are fixed tables built identically on both sides, so decoding is
deterministic; the range coder's words are stored little-endian.
"""

from __future__ import annotations

from functools import lru_cache

import constriction
import numpy as np

from .bitstream import BitstreamError, Reader, Writer

SCALES = 2.0 ** (np.arange(16) / 2.0 - 2.0)  # 0.25 ... 45
MAX_SYMBOL = 32767


@lru_cache(maxsize=256)
def _laplace(idx: int, r: int):
    k = np.arange(-r, r + 1, dtype=np.float64)
    b = SCALES[idx]
    def cdf(x: np.ndarray) -> np.ndarray:
        tail = 0.5 * np.exp(-np.abs(x) / b)
        return np.where(x < 0, tail, 1 - tail)

    p = cdf(k + 0.5) - cdf(k - 0.5)
    p = np.maximum(p, 1e-12)
    return constriction.stream.model.Categorical(p / p.sum(), perfect=False)


@lru_cache(maxsize=256)
def _binary(k: int):
    p = k / 256.0
    return constriction.stream.model.Categorical(np.array([1 - p, p]), perfect=False)


def scale_index(mean_abs: float) -> int:
    return int(np.abs(np.log2(SCALES) - np.log2(max(mean_abs, 1e-9))).argmin())


def _tiles(q: np.ndarray, block: int) -> np.ndarray:
    """(C, H, W) -> (C, n_tiles, block * block), zero-padded to whole tiles."""
    c, h, w = q.shape
    nh, nw = -(-h // block), -(-w // block)
    p = np.zeros((c, nh * block, nw * block), dtype=np.int32)
    p[:, :h, :w] = q
    return p.reshape(c, nh, block, nw, block).transpose(0, 1, 3, 2, 4).reshape(c, nh * nw, block * block)


def _untile(t: np.ndarray, shape: tuple[int, int, int], block: int) -> np.ndarray:
    c, h, w = shape
    nh, nw = -(-h // block), -(-w // block)
    full = t.reshape(c, nh, nw, block, block).transpose(0, 1, 3, 2, 4).reshape(c, nh * block, nw * block)
    return full[:, :h, :w]


def _finish(enc) -> bytes:
    return enc.get_compressed().astype("<u4").tobytes()


def _decoder(data: bytes):
    if len(data) % 4:
        raise BitstreamError("range-coded section is not a whole number of words")
    return constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))


def _write_range(w: Writer, values: np.ndarray) -> int:
    """Write and return ``R = max |values|`` (the symbol range of the models)."""
    r = int(np.abs(values).max()) if values.size else 0
    if r > MAX_SYMBOL:
        raise ValueError(f"value {r} exceeds {MAX_SYMBOL}")
    w.u16(r)
    return r


def encode_tensor(q: np.ndarray, block: int) -> bytes:
    """Code an int tensor (C, H, W) with |q| <= 32767."""
    w = Writer()
    r = _write_range(w, q)
    if r == 0:
        return w.getvalue()
    tiles = _tiles(q, block)
    flags = np.any(tiles != 0, axis=2)  # (C, n_tiles)
    k = int(np.clip(round(flags.mean() * 256), 1, 255))
    scales = np.zeros(q.shape[0], dtype=np.uint8)
    for ch in range(q.shape[0]):
        if flags[ch].any():
            scales[ch] = scale_index(float(np.abs(tiles[ch][flags[ch]]).mean()))
    w.u8(k)
    w.raw(((scales[0::2] & 15) | (np.pad(scales[1::2], (0, len(scales) % 2)) << 4)).astype(np.uint8).tobytes())
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(flags.reshape(-1).astype(np.int32), _binary(k))
    for idx in np.unique(scales[flags.any(1)]):
        sel = (scales == idx)[:, None] & flags
        enc.encode((tiles[sel].reshape(-1) + r).astype(np.int32), _laplace(int(idx), r))
    w.raw(_finish(enc))
    return w.getvalue()


def decode_tensor(rd: Reader, shape: tuple[int, int, int], block: int) -> np.ndarray:
    """Inverse of :func:`encode_tensor`; reads to the end of ``rd``."""
    c, h, wd = shape
    r = rd.u16()
    if r == 0:
        return np.zeros(shape, dtype=np.int32)
    if r > MAX_SYMBOL:
        raise BitstreamError(f"symbol range {r} out of bounds")
    k = rd.u8()
    if not 1 <= k <= 255:
        raise BitstreamError("skip probability out of range")
    packed = np.frombuffer(rd.take((c + 1) // 2), dtype=np.uint8)
    scales = np.empty(2 * len(packed), dtype=np.uint8)
    scales[0::2], scales[1::2] = packed & 15, packed >> 4
    scales = scales[:c]
    n_tiles = (-(-h // block)) * (-(-wd // block))
    try:
        dec = _decoder(rd.take(rd.end - rd.pos))
        flags = dec.decode(_binary(k), c * n_tiles).reshape(c, n_tiles).astype(bool)
        tiles = np.zeros((c, n_tiles, block * block), dtype=np.int32)
        for idx in np.unique(scales[flags.any(1)]):
            sel = (scales == idx)[:, None] & flags
            vals = dec.decode(_laplace(int(idx), r), int(sel.sum()) * block * block).astype(np.int32) - r
            tiles[sel] = vals.reshape(-1, block * block)
    except BitstreamError:
        raise
    except Exception as exc:  # the range decoder's own complaints
        raise BitstreamError(f"entropy-coded data is corrupt ({type(exc).__name__})") from None
    return _untile(tiles, shape, block)


def encode_ints(v: np.ndarray) -> bytes:
    """Code a small int vector (motion-vector residuals, means) with one Laplace model."""
    w = Writer()
    v = np.asarray(v, dtype=np.int64).reshape(-1)
    w.u32(len(v))
    r = _write_range(w, v)
    if r == 0:
        return w.getvalue()
    idx = scale_index(float(np.abs(v).mean()))
    w.u8(idx)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode((v + r).astype(np.int32), _laplace(idx, r))
    data = _finish(enc)
    w.blob(data)
    return w.getvalue()


def decode_ints(rd: Reader, limit: int) -> np.ndarray:
    n = rd.u32()
    if n > limit:
        raise BitstreamError(f"{n} values exceed the bound {limit}")
    r = rd.u16()
    if r == 0:
        return np.zeros(n, dtype=np.int64)
    if r > MAX_SYMBOL:
        raise BitstreamError("value range out of bounds")
    idx = rd.u8()
    if idx >= len(SCALES):
        raise BitstreamError("scale index out of range")
    data = rd.blob(4 * n + 64)
    try:
        return _decoder(data).decode(_laplace(idx, r), n).astype(np.int64) - r
    except BitstreamError:
        raise
    except Exception as exc:
        raise BitstreamError(f"entropy-coded data is corrupt ({type(exc).__name__})") from None
