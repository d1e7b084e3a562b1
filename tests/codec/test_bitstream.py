"""The stream: integrity (order, versions, truncation), header bounds, work bounded by bytes, fuzzing."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import latentmotion as lm
from latentmotion.codec import BitstreamError, Decoder, Encoder, StreamId, Tools, iter_decode
from latentmotion.codec.bitstream import Header, Reader, read_frame, read_header, write_frame, write_header


def _header(shape=(2, 4, 4), **kw) -> Header:
    f = dict(model="m", layer="l", weights="w", shape=shape, step=1.0, mode=0, block=4, mblock=2, search=4, subpel=1, intra_period=0, fps=25.0)
    f.update(kw)
    return Header(**f)




# ----------------------------------------------------------------- stream integrity


def _records(n=4, **kw):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 8, 8, generator=g)
    enc = Encoder((3, 8, 8), 0.25, Tools.of(mode="block", block=4, search=2, **kw), stream=StreamId(weights="w0"))
    return enc, [enc.encode(base.roll(i, 2) + 0.1 * torch.randn(3, 8, 8, generator=g)) for i in range(n)]


@pytest.mark.parametrize("order, bad_at", [((0, 2), 1), ((0, 1, 1), 2), ((0, 2, 1), 1), ((1,), 0)])
def test_dropped_duplicated_swapped_frames_are_errors(order, bad_at):
    enc, recs = _records()
    dec = Decoder.from_header_bytes(enc.header_bytes())
    for k, i in enumerate(order):
        if k == bad_at:
            with pytest.raises(BitstreamError, match="out of sequence"):
                dec.decode_frame(recs[i])
            break
        dec.decode_frame(recs[i])
    # the state is unchanged by the refused frame: the right one still decodes exactly
    i = dec.index
    assert torch.equal(dec.decode_frame(recs[i]), enc.reconstructions[i])


def test_header_names_the_weights():
    enc, _ = _records(1)
    assert Decoder.from_header_bytes(enc.header_bytes()).header.weights == "w0"


@pytest.mark.parametrize("old", [1, 2, 5])
def test_old_version_is_refused_with_a_message(old):
    body = bytearray(write_header(_header()))
    body[4] = old
    body[-4:] = struct.pack("<I", zlib.crc32(bytes(body[:-4])))
    with pytest.raises(BitstreamError, match=f"version {old} is not supported.*re-encode"):
        Decoder.from_header_bytes(bytes(body))


def test_header_step_range_is_enforced_by_decoder_and_encoder():
    assert Decoder.from_header_bytes(write_header(_header(step=2.0**-100))).header.step == 2.0**-100
    for bad in (2.0**-101, 2.0**101):
        with pytest.raises(BitstreamError, match="out of range"):
            Decoder.from_header_bytes(write_header(_header(step=bad)))
        with pytest.raises(lm.InputError, match="range a stream holds"):
            Encoder((1, 4, 4), bad)


@pytest.mark.parametrize("mblock", [0, 65])
def test_motion_tile_out_of_range_is_refused(mblock):
    assert Decoder.from_header_bytes(write_header(_header(mblock=3))).header.mblock == 3
    with pytest.raises(BitstreamError, match="out of range"):
        Decoder.from_header_bytes(write_header(_header(mblock=mblock)))


def _frame_boundaries(s: bytes) -> set[int]:
    """Offsets where a stream may legally end (after the header or a whole frame)."""
    r = Reader(s)
    h = read_header(r)
    ends = {r.pos}
    while not r.done():
        read_frame(r, h.frame_limit())
        ends.add(r.pos)
    return ends


def _small_stream() -> bytes:
    enc, recs = _records(3)
    return enc.header_bytes() + b"".join(recs)


def test_truncation_at_every_offset_is_a_bitstream_error():
    s = _small_stream()
    legal = _frame_boundaries(s)
    for n in range(len(s)):
        if n in legal:  # a stream cut after a whole frame decodes to fewer frames
            assert len(list(iter_decode(s[:n]))) == sorted(legal).index(n)
        else:
            with pytest.raises(BitstreamError):
                list(iter_decode(s[:n]))


# ----------------------------------------------------------------- bounds


def test_header_bounds_refuse_huge_allocations():
    with pytest.raises(BitstreamError, match="out of bounds"):
        list(iter_decode(write_header(_header((4096, 4096, 4096)))))
    ok = write_header(_header())
    with pytest.raises(BitstreamError, match="exceeds the bound"):
        list(iter_decode(ok + struct.pack("<II", 2**31, 0)))
    with pytest.raises(BitstreamError, match="magic"):
        list(iter_decode(b"RIFF" + ok[4:]))


def _claiming(shape, n_frames, size) -> bytes:
    """A well-formed header for ``shape`` then ``n_frames`` tiny valid-looking records, padded to ``size`` bytes."""
    head = write_header(_header(shape))
    recs = [write_frame(struct.pack("<IBB", i, 0, 16) + b"\x00" * 3) for i in range(n_frames)]
    data = head + b"".join(recs)
    return data + b"\x00" * max(0, size - len(data))


def test_small_stream_claiming_huge_tensors_is_refused_early():
    data = _claiming((1, 4096, 4096), 30, 575)[:575]  # 30 x 1x4096x4096 float32: 2 GB of output
    assert len(data) == 575
    tracemalloc.start()
    with pytest.raises(BitstreamError, match="too short"):
        list(iter_decode(data))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20  # refused before allocating or decoding anything


def test_work_is_bounded_by_bytes():
    """Whatever 99 bytes say, they buy at most 99 * UNITS_PER_BYTE work units: never minutes of work."""
    from latentmotion.codec.bitstream import UNITS_PER_BYTE

    shape = (16, 256, 256)  # 1 M elements: needs records of 192 bytes or more (with tiles and vectors)
    data = _claiming(shape, 3, 99)[:99]
    with pytest.raises(BitstreamError):
        list(iter_decode(data))
    # a record just long enough decodes (all-zero levels) in bounded time
    h = _header(shape)
    rec = write_frame(struct.pack("<IBB", 0, 0, 16) + b"\x00" * (h.min_record() - 14))
    out = Decoder(h).decode_frame(rec)
    assert out.abs().max() == 0
    assert len(rec) * UNITS_PER_BYTE >= h.work_units() >= out.numel()


# ----------------------------------------------------------------- fuzz


STREAM = _small_stream()


def _fix_crcs(data: bytes) -> bytes:
    """Recompute every frame checksum, so that damage reaches the entropy decoder."""
    out = bytearray(data)
    r = Reader(bytes(out))
    try:
        read_header(r)
    except BitstreamError:
        return data
    while r.pos + 8 <= len(out):
        n = struct.unpack_from("<I", out, r.pos)[0]
        if r.pos + 8 + n > len(out):
            break
        struct.pack_into("<I", out, r.pos + 4, zlib.crc32(bytes(out[r.pos + 8 : r.pos + 8 + n])))
        r.pos += 8 + n
    return bytes(out)


def _decode_fuzzed(data: bytes) -> None:
    try:
        for t in iter_decode(data):
            assert t.shape == (3, 8, 8) and torch.isfinite(t).all()
    except BitstreamError:
        pass


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    cut=st.integers(0, len(STREAM)),
    flips=st.lists(st.tuples(st.integers(0, len(STREAM) - 1), st.integers(1, 255)), max_size=4),
    insert=st.binary(max_size=8),
    at=st.integers(0, len(STREAM)),
    fix=st.booleans(),
)
def test_fuzzed_streams_raise_only_bitstream_error(cut, flips, insert, at, fix):
    data = bytearray(STREAM)
    for pos, x in flips:
        data[pos] ^= x
    data = bytes(data[:at]) + insert + bytes(data[at:])
    data = data[: cut + len(insert)]
    _decode_fuzzed(_fix_crcs(data) if fix else data)


@pytest.mark.parametrize("gain", [0, 15])
def test_a_frame_gain_below_one_step_is_refused(gain):
    """A frame's gain byte is at least 16 (one step): gains below are reserved and refused."""
    h = _header((2, 8, 8))
    rec = write_frame(struct.pack("<IBB", 0, 0, gain) + b"\x00" * max(4, h.min_record() - 14))
    with pytest.raises(BitstreamError, match="gain"):
        Decoder(h).decode_frame(rec)
    assert Decoder(h).decode_frame(write_frame(struct.pack("<IBB", 0, 0, 16) + b"\x00" * max(4, h.min_record() - 14))).abs().max() == 0


def _one_level_a_tile(shape: tuple[int, int, int], block: int) -> np.ndarray:
    """Levels with a single 1 in every tile: every tile coded, its other levels zeros (cheap in adapted contexts)."""
    q = np.zeros(shape, np.int64)
    q[:, ::block, ::block] = 1
    return q


def test_a_record_must_pay_for_the_levels_its_coded_tiles_hold():
    """Since stream version 6 a likely zero level can cost under 0.003 bits: a record of the smallest size could code
    every tile of a large frame, each coded level costing a decoder about ten times a skipped one. The decoder
    refuses a record whose coded tiles hold more than CODED_PER_BYTE levels a byte."""
    from latentmotion.codec import rangecoder as rc
    from latentmotion.codec import syntax
    from latentmotion.codec.bitstream import CODED_PER_BYTE

    shape, block = (16, 64, 64), 4
    h = _header(shape=shape)
    q = _one_level_a_tile(shape, block)
    e, probs = rc.encoder(syntax.capacity(q, block, np.zeros((2, 0, 0)))), syntax.new_contexts(shape[0])
    syntax.encode_offsets(e, probs, np.zeros(shape[0], np.int64))
    syntax.encode_levels(e, probs, syntax.levels(q.copy(), np.zeros(shape, np.int64), block), 0)
    body = struct.pack("<IBB", 0, 0, 16) + rc.finish(e).tobytes()
    assert 8 + len(body) < q.size / CODED_PER_BYTE  # the content fits in fewer bytes than the rule asks
    body += bytes(max(0, h.min_record() - 8 - len(body)))  # as short as the work bound allows
    dec = Decoder(h)
    with pytest.raises(BitstreamError, match="coded tiles hold more levels"):
        dec.decode_frame(write_frame(body))
    need = -(-q.size // CODED_PER_BYTE)  # record bytes its coded levels ask
    with pytest.raises(BitstreamError, match="coded tiles hold more levels"):  # one byte short
        dec.decode_frame(write_frame(body + bytes(need - 9 - len(body))))
    body += bytes(need - 8 - len(body))  # padded to what its coded levels ask: the same decoder takes it as frame 0
    assert np.array_equal(dec.decode_frame(write_frame(body)).numpy(), q.astype(np.float32) * np.float32(h.step))


def test_the_encoder_pads_a_record_to_what_its_coded_levels_ask():
    from latentmotion.codec.bitstream import CODED_PER_BYTE

    shape, step = (16, 64, 64), 0.5
    x = torch.from_numpy(_one_level_a_tile(shape, 4).astype(np.float32) * step)
    enc = Encoder(shape, step, Tools.of(mode="zero", rdoq=0.0), StreamId(weights="w"))
    record = enc.encode(x)
    assert len(record) >= x.numel() / CODED_PER_BYTE > enc.header.min_record()
    assert torch.equal(Decoder(enc.header).decode_frame(record), enc.reconstructions[0])  # the decoder accepts it
