"""Feature codec: bit-exact decoding, closed loop, mode decision, robustness (issue 5)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import latentmotion as lm
from latentmotion.codec import MODE_NAMES, BitstreamError, Encoder, decode_stream, encode_sequence, iter_decode
from latentmotion.codec.bitstream import Header, Reader, write_header
from latentmotion.codec.entropy import decode_tensor, encode_tensor
from latentmotion.data import fit_frame, load_image, read_frames, video_path
from latentmotion.experiments.flowcheck import gray8

from .conftest import model


@pytest.fixture(scope="module")
def clip():
    split = lm.split_model(model("efficientnet_lite0"), "_blocks.4.add")
    frames = fit_frame(read_frames(video_path("bikes.mp4"), range(0, 6)))
    with torch.no_grad():
        feats = split.edge(frames)
    return split, frames, feats


def test_entropy_coder_round_trip():
    rng = np.random.default_rng(0)
    q = rng.laplace(0, 1.5, (6, 9, 11)).round().astype(np.int32)
    q[2] = 0
    q[3, 0, 0] = -32767
    assert np.array_equal(decode_tensor(Reader(encode_tensor(q, 4)), q.shape, 4), q)
    z = np.zeros((2, 3, 3), np.int32)
    assert np.array_equal(decode_tensor(Reader(encode_tensor(z, 4)), z.shape, 4), z)


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_decoder_is_bit_identical_and_loop_is_closed(clip, mode):
    split, frames, feats = clip
    step = 2.0
    enc = Encoder(tuple(feats.shape[1:]), step, mode, stride=split.stride, offset=split.offset)
    stream = encode_sequence(list(feats), enc, list(gray8(frames)))
    header, out = decode_stream(stream)
    assert header.mode == MODE_NAMES.index(mode) and len(out) == len(feats)
    for a, b, x in zip(out, enc.reconstructions, feats):
        assert torch.equal(a, b)
        assert (a - x).abs().max() <= step / 2 + 1e-4  # closed loop: no drift, error bounded by the quantiser
    assert enc.stats[0].kind == "intra" and any(s.kind == "inter" for s in enc.stats[1:])


def test_motion_modes_beat_zero_on_moving_camera(clip):
    split, frames, feats = clip
    bits = {}
    for mode in ("zero", "block"):
        enc = Encoder(tuple(feats.shape[1:]), 2.0, mode, stride=split.stride, offset=split.offset)
        bits[mode] = len(encode_sequence(list(feats), enc, list(gray8(frames))))
    assert bits["block"] < 0.95 * bits["zero"]


def test_scene_cut_falls_back_to_intra(clip):
    split, frames, feats = clip
    other = fit_frame(load_image("coffee"))[None]
    with torch.no_grad():
        cut = split.edge(other)[0]
    seq = [feats[0], feats[1], cut, feats[2]]
    enc = Encoder(tuple(feats.shape[1:]), 2.0, "block")
    encode_sequence(seq, enc)
    assert [s.kind for s in enc.stats[:3]] == ["intra", "inter", "intra"]


def test_intra_period_and_bad_parameters(clip):
    _, _, feats = clip
    enc = Encoder(tuple(feats.shape[1:]), 2.0, "zero", intra_period=2, rd=False)
    encode_sequence(list(feats), enc)
    assert [s.kind for s in enc.stats] == ["intra", "inter"] * 3
    with pytest.raises(lm.InputError, match="motion mode"):
        Encoder((1, 4, 4), 1.0, "global")
    with pytest.raises(lm.InputError, match="step"):
        Encoder((1, 4, 4), 0.0)
    with pytest.raises(lm.InputError, match="shape"):
        Encoder((1, 4, 4), 1.0).encode(torch.zeros(2, 4, 4))


# ----------------------------------------------------------------- robustness


def _small_stream() -> bytes:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 8, 8, generator=g)
    seq = [base, base.roll(1, 2), base.roll(2, 2) + 0.1 * torch.randn(3, 8, 8, generator=g)]
    return encode_sequence(seq, Encoder((3, 8, 8), 0.25, "block", block=4, search=2))


def test_truncation_at_every_offset_is_a_bitstream_error():
    s = _small_stream()
    legal = _frame_boundaries(s)
    for n in range(len(s)):
        if n in legal:  # a stream cut after a whole frame decodes to fewer frames
            assert len(list(iter_decode(s[:n]))) == sorted(legal).index(n)
        else:
            with pytest.raises(BitstreamError):
                list(iter_decode(s[:n]))


def _frame_boundaries(s: bytes) -> set[int]:
    """Offsets where a stream may legally end (after the header or a whole frame)."""
    r = Reader(s)
    from latentmotion.codec.bitstream import read_frame, read_header

    h = read_header(r, len(MODE_NAMES))
    ends = {r.pos}
    while not r.done():
        read_frame(r, h.frame_limit())
        ends.add(r.pos)
    return ends


def test_header_bounds_refuse_huge_allocations():
    h = Header("m", "l", (4096, 4096, 4096), 1.0, 0, 4, 4, 1, 0, 25.0)
    with pytest.raises(BitstreamError, match="out of bounds"):
        list(iter_decode(write_header(h)))
    ok = write_header(Header("m", "l", (2, 4, 4), 1.0, 0, 4, 4, 1, 0, 25.0))
    huge = ok + struct.pack("<II", 2**31, 0)
    with pytest.raises(BitstreamError, match="exceeds the bound"):
        list(iter_decode(huge))
    with pytest.raises(BitstreamError, match="magic"):
        list(iter_decode(b"RIFF" + ok[4:]))
    body = bytearray(ok)
    body[4] = 9  # version
    body[-4:] = struct.pack("<I", zlib.crc32(bytes(body[:-4])))
    with pytest.raises(BitstreamError, match="version"):
        list(iter_decode(bytes(body)))


STREAM = _small_stream()


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    cut=st.integers(0, len(STREAM)),
    flips=st.lists(st.tuples(st.integers(0, len(STREAM) - 1), st.integers(1, 255)), max_size=4),
    insert=st.binary(max_size=8),
    at=st.integers(0, len(STREAM)),
)
def test_fuzzed_streams_raise_only_bitstream_error(cut, flips, insert, at):
    data = bytearray(STREAM)
    for pos, x in flips:
        data[pos] ^= x
    data = bytes(data[:at]) + insert + bytes(data[at:])
    data = data[: cut + len(insert)]
    try:
        for t in iter_decode(data):
            assert t.shape == (3, 8, 8)
    except BitstreamError:
        pass


def test_cli_encode_decode_round_trip(tmp_path):
    import subprocess
    import sys

    s = tmp_path / "a.lmf"
    r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "encode", "--out", str(s), "--frames", "3", "--step", "8"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "decode", str(s), "--out", str(tmp_path / "x.pt")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and torch.load(tmp_path / "x.pt").shape == (3, 40, 28, 28)
    (tmp_path / "bad.lmf").write_bytes(s.read_bytes()[:-5])
    r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "decode", str(tmp_path / "bad.lmf"), "--out", str(tmp_path / "y.pt")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "truncated" in r.stderr and not (tmp_path / "y.pt").exists()
