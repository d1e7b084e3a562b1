"""Feature codec v2: integer decoding, closed loop, mode decision, stream integrity and bounds (issue 9)."""

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
from latentmotion.codec import MODE_NAMES, BitstreamError, Decoder, Encoder, decode_stream, encode_sequence, entropy, iter_decode
from latentmotion.codec.bitstream import Header, Reader, read_frame, read_header, write_frame, write_header
from latentmotion.codec.prediction import predict
from latentmotion.data import fit_frame, load_image, read_frames, video_path
from latentmotion.pipeline import gray8

from .conftest import model


@pytest.fixture(scope="module")
def clip():
    split = lm.split_model(model("efficientnet_lite0"), "_blocks.4.add")
    frames = fit_frame(read_frames(video_path("bikes.mp4"), range(6)))
    with torch.no_grad():
        feats = split.edge(frames)
    return split, frames, feats


def _header(shape=(2, 4, 4), **kw) -> Header:
    f = dict(model="m", layer="l", weights="w", shape=shape, step=1.0, mode=0, block=4, mblock=2, search=4, subpel=1, intra_period=0, fps=25.0)
    f.update(kw)
    return Header(**f)


# ----------------------------------------------------------------- entropy coding and prediction


@pytest.mark.parametrize("with_mv", [False, True])
def test_entropy_coder_round_trip(with_mv):
    rng = np.random.default_rng(0)
    q = rng.laplace(0, 1.5, (6, 9, 11)).round().astype(np.int64)
    q[2] = 0  # a channel with no coded tile
    q[3, 0, 0], q[3, 0, 1] = -entropy_max(), entropy_max()  # the binarisation's extremes
    mv = rng.integers(-40, 40, (2, 3, 4)).astype(np.int64)  # motion tiles of 3 (coded-tile flags: 4)
    ref = rng.integers(-50, 50, q.shape).astype(np.int64)
    pred = predict(ref, mv, 3, 4) if with_mv else np.zeros_like(q)
    dc = np.array([0, 5, -1, entropy_max(), -entropy_max(), 1], np.int64)  # channel offsets, extremes included
    probs = entropy.new_contexts(6)
    data, _ = entropy.encode_frame(q, pred, q.astype(float), mv, dc, 4, probs, with_mv, 0.0)
    probs2 = entropy.new_contexts(6)
    q2, pred2, dc2, status = entropy.decode_frame(data, 6, 9, 11, 4, 3, probs2, with_mv, 4096, ref if with_mv else np.zeros((1, 1, 1), np.int64), 4)
    assert status == 0 and np.array_equal(q2, q) and np.array_equal(pred2, pred) and np.array_equal(dc2, dc)
    assert np.array_equal(probs, probs2)  # both sides adapted their contexts alike


def test_levels_where_earlier_channels_have_levels_cost_less():
    """Cross-channel activity contexts: levels at the same places in every channel (where one motion fails
    it fails for all, Eq. 12) code in fewer bytes than the same channels each moved by whole tiles
    (identical statistics within every channel, only the alignment across channels differs)."""
    rng = np.random.default_rng(3)
    c, h, w = 24, 32, 32
    support = rng.random((h, w)) < 0.12
    shared = np.where(support, rng.integers(1, 3, (c, h, w)) * rng.choice([-1, 1], (c, h, w)), 0).astype(np.int64)
    moved = np.stack([np.roll(shared[k], (4 * rng.integers(8), 4 * rng.integers(8)), (0, 1)) for k in range(c)])

    def nbytes(q):
        return len(entropy.encode_frame(q, np.zeros_like(q), q.astype(float), np.zeros((2, 1, 1), np.int64), np.zeros(c, np.int64), 4, entropy.new_contexts(c), False, 0.0)[0])

    assert nbytes(shared) < 0.85 * nbytes(moved)


def entropy_max() -> int:
    from latentmotion.codec.core import MAX_Q

    return MAX_Q


def test_adaptive_coder_approaches_the_entropy_of_a_skewed_source():
    rng = np.random.default_rng(1)
    q = (rng.random((4, 32, 32)) < 0.05).astype(np.int64)  # 5 % ones
    data, _ = entropy.encode_frame(q, np.zeros_like(q), q.astype(float), np.zeros((2, 8, 8), np.int64), np.zeros(4, np.int64), 4, entropy.new_contexts(4), False, 0.0)
    h = -(0.05 * np.log2(0.05) + 0.95 * np.log2(0.95)) * q.size  # bits of an ideal coder knowing p
    assert 8 * len(data) < 1.5 * h


def _mc_reference(ref: np.ndarray, mv: np.ndarray, block: int, s: int) -> np.ndarray:
    """Bilinear interpolation by its definition with Python integers: floor(sum / s^2 + 1/2), border replicate."""
    c, h, w = ref.shape
    out = np.zeros_like(ref)
    for y in range(h):
        for x in range(w):
            vx, vy = (int(v) for v in mv[:, y // block, x // block])
            sy, sx = s * y - vy, s * x - vx
            iy, ix = sy // s, sx // s  # Python floor division
            fy, fx = sy - s * iy, sx - s * ix
            cy = lambda k: min(max(k, 0), h - 1)  # noqa: E731
            cx = lambda k: min(max(k, 0), w - 1)  # noqa: E731
            for ch in range(c):
                acc = (s - fx) * (s - fy) * int(ref[ch, cy(iy), cx(ix)]) + fx * (s - fy) * int(ref[ch, cy(iy), cx(ix + 1)])
                acc += (s - fx) * fy * int(ref[ch, cy(iy + 1), cx(ix)]) + fx * fy * int(ref[ch, cy(iy + 1), cx(ix + 1)])
                out[ch, y, x] = (2 * acc + s * s) // (2 * s * s)  # round half up
    return out


@pytest.mark.parametrize("s", [1, 4])
def test_integer_motion_compensation_matches_its_definition(s):
    rng = np.random.default_rng(2)
    ref = rng.integers(-1000, 1000, (3, 9, 10)).astype(np.int64)
    mv = rng.integers(-30, 30, (2, 3, 3)).astype(np.int64)
    assert np.array_equal(predict(ref, mv, 4, s), _mc_reference(ref, mv, 4, s))
    whole = np.zeros((2, 3, 3), np.int64)
    whole[0] = 2 * s  # two pixels right, integer: a pure shift inside the frame
    assert np.array_equal(predict(ref, whole, 4, s)[:, :, 2:], ref[:, :, :-2])


# ----------------------------------------------------------------- closed loop and modes


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_decoder_is_bit_identical_and_loop_is_closed(clip, mode):
    split, frames, feats = clip
    step = 2.0
    for rdoq in (0.0, 0.5):  # without RDOQ every level is the nearest: error at most step / 2
        enc = Encoder(tuple(feats.shape[1:]), step, mode, stride=split.stride, offset=split.offset, rdoq=rdoq)
        stream = encode_sequence(list(feats), enc, list(gray8(frames)))
        header, out = decode_stream(stream)
        assert header.mode == MODE_NAMES.index(mode) and len(out) == len(feats)
        for a, b, x in zip(out, enc.reconstructions, feats):
            assert torch.equal(a, b)
            if rdoq == 0:
                assert (a - x).abs().max() <= step / 2 + 1e-4  # closed loop: no drift
        assert enc.stats[0].kind == "intra" and any(s.kind == "inter" for s in enc.stats[1:])


def test_motion_beats_zero_on_moving_camera(clip):
    split, frames, feats = clip
    bits = {}
    for mode in ("zero", "block"):
        enc = Encoder(tuple(feats.shape[1:]), 2.0, mode, stride=split.stride, offset=split.offset)
        bits[mode] = len(encode_sequence(list(feats), enc, list(gray8(frames))))
    assert bits["block"] < 0.95 * bits["zero"]


def test_static_content_costs_almost_nothing(clip):
    _, _, feats = clip
    enc = Encoder(tuple(feats.shape[1:]), 1.0, "block")
    recs = [enc.encode(feats[0]) for _ in range(4)]
    assert len(recs[3]) < 0.02 * len(recs[0])


def test_scene_cut_falls_back_to_intra(clip):
    split, _frames, feats = clip
    other = fit_frame(load_image("coffee"))[None]
    with torch.no_grad():
        cut = split.edge(other)[0]
    seq = [feats[0], feats[1], cut, feats[2]]
    enc = Encoder(tuple(feats.shape[1:]), 2.0, "block")
    encode_sequence(seq, enc)
    assert [s.kind for s in enc.stats[:3]] == ["intra", "inter", "intra"]


@pytest.mark.parametrize("mode, kw", [("zero", {"intra_period": 1}), ("block", {})])
def test_channel_means_survive_a_step_coarser_than_every_value(mode, kw):
    """Per-channel offsets (in 1/16 step): channels whose values all lie inside the dead zone keep their means
    to within half an offset unit, in intra and predicted frames (without offsets every level is 0)."""
    g = torch.Generator().manual_seed(5)
    off = torch.linspace(-0.45, 0.45, 8)[:, None, None]
    xs = [off + 0.05 * torch.randn(8, 16, 16, generator=g) for _ in range(4)]
    _, out = decode_stream(encode_sequence(xs, Encoder((8, 16, 16), 1.0, mode, **kw)))
    for x, y in zip(xs, out, strict=True):
        assert float((x.mean((1, 2)) - y.mean((1, 2))).abs().max()) <= 1 / 32 + 1e-6


def test_intra_period_forced_intra_and_bad_parameters(clip):
    _, _, feats = clip
    enc = Encoder(tuple(feats.shape[1:]), 2.0, "zero", intra_period=2, rd=False)
    encode_sequence(list(feats), enc)
    assert [s.kind for s in enc.stats] == ["intra", "inter"] * 3
    enc = Encoder(tuple(feats.shape[1:]), 2.0, "zero", rd=False)
    dec = Decoder.from_header_bytes(enc.header_bytes())
    kinds = []
    for i, x in enumerate(feats[:3]):
        assert torch.equal(dec.decode_frame(enc.encode(x, intra=i == 2)), enc.reconstructions[-1])
        kinds.append(enc.stats[-1].kind)
    assert kinds == ["intra", "inter", "intra"]
    with pytest.raises(lm.InputError, match="motion mode"):
        Encoder((1, 4, 4), 1.0, "global")
    with pytest.raises(lm.InputError, match="step"):
        Encoder((1, 4, 4), 0.0)
    with pytest.raises(lm.InputError, match="shape"):
        Encoder((1, 4, 4), 1.0).encode(torch.zeros(2, 4, 4))
    # what the header cannot hold is refused here, not when the stream is written or read
    for kw, needle in (({"fps": 1e-50}, "frame rate"), ({"fps": 1e39}, "frame rate"), ({"model": "m" * 300}, "too long")):
        with pytest.raises(lm.InputError, match=needle):
            Encoder((2, 8, 8), 1.0, **kw)
    with pytest.raises(lm.InputError, match=r"\(C, H, W\)"):
        Encoder((8, 8), 1.0)


def test_values_up_to_the_input_bound_are_never_clipped_when_a_channel_mean_shifts():
    """Offsets are clamped so that no residual exceeds the largest level: a channel whose mean jumps by
    8000 steps while one value swings by 62000 (inside the accepted 32767-step bound) is coded exactly."""
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    x2 = torch.where((yy + xx) % 2 == 0, 24000.0, -24000.0)[None].clone()
    x1 = x2 - 8000
    x2[0, 0, 1], x1[0, 0, 1] = -31000.0, 31000.0
    enc = Encoder((1, 8, 8), 1.0, "zero", rd=False)
    _, out = decode_stream(encode_sequence([x1, x2], enc))
    assert [s.kind for s in enc.stats] == ["intra", "inter"]
    assert float((out[1] - x2).abs().max()) <= 0.5 and torch.equal(out[1], enc.reconstructions[1])


@pytest.mark.parametrize("shape, mblock", [((8, 16, 16), 64), ((1, 1, 1), 2), ((8, 2, 16), 2)])
def test_motion_tiles_larger_than_the_tensor_still_code(shape, mblock):
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(*shape, generator=g) for _ in range(3)]
    enc = Encoder(shape, 0.1, "block", mblock=mblock)
    _, out = decode_stream(encode_sequence(xs, enc))
    assert all(torch.equal(a, b) for a, b in zip(out, enc.reconstructions, strict=True))


# ----------------------------------------------------------------- stream integrity


def _records(n=4, **kw):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 8, 8, generator=g)
    enc = Encoder((3, 8, 8), 0.25, "block", block=4, search=2, weights="w0", **kw)
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


@pytest.mark.parametrize("old", [1, 2])
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
    h = read_header(r, len(MODE_NAMES))
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
    recs = [write_frame(struct.pack("<IB", i, 0) + b"\x00" * 4) for i in range(n_frames)]
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
    rec = write_frame(struct.pack("<IB", 0, 0) + b"\x00" * (h.min_record() - 13))
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
        read_header(r, len(MODE_NAMES))
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


# ----------------------------------------------------------------- layout and CLI


def test_codec_package_imports_no_application():
    import subprocess
    import sys

    code = "import sys, latentmotion.codec; bad = [m for m in sys.modules if m.startswith(('latentmotion.experiments', 'latentmotion.cli'))]; print(bad); sys.exit(bool(bad))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_encode_decode_round_trip_and_weights_check(tmp_path):
    import subprocess
    import sys

    s = tmp_path / "a.lmf"
    r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "encode", "--out", str(s), "--frames", "3", "--step", "0.5"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "decode", str(s), "--out", str(tmp_path / "x.pt"), "--classify"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and torch.load(tmp_path / "x.pt").shape == (3, 40, 28, 28) and "top-1 classes" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "decode", str(s), "--classify", "--weights", "random"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "refused" in r.stderr
    (tmp_path / "bad.lmf").write_bytes(s.read_bytes()[:-5])
    r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "decode", str(tmp_path / "bad.lmf"), "--out", str(tmp_path / "y.pt")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "truncated" in r.stderr and not (tmp_path / "y.pt").exists()


def test_cli_eval_refuses_unknown_names_before_any_output(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "rd"
    for bad in (["--anchors", "x266"], ["--configs", "affine"]):
        r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "eval", "--out", str(out), "--frames", "4", *bad], capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and r.stderr.startswith("error: unknown") and not out.exists(), r.stderr


def test_rdoq_early_stop_bound_is_below_every_coding_of_the_tile():
    """The RDOQ trial stops on ``_skip_bounds``: rest[k] must not exceed what coding levels k.. costs, for any levels
    (here random ones, costed one by one with adapting contexts as the coder does) and any context state."""
    rng = np.random.default_rng(0)
    block, c, lam = 4, 0, 0.5
    for _ in range(200):
        d = rng.normal(0, rng.uniform(0.3, 4), (1, block, block))
        probs = rng.integers(1, 2047, entropy.n_contexts(1)).astype(np.int64)
        rest = np.empty(block * block + 1)
        entropy._skip_bounds(probs, d, c, 0, block, 0, block, 0, 0, lam, 0.5, rest)  # the mean term (wm) is not in the bounds
        q = np.rint(d).astype(np.int64) + rng.integers(-1, 2, d.shape) * (rng.random(d.shape) < 0.3)
        p, st_, out, eg = probs.copy(), np.zeros(6, np.int64), np.zeros(0, np.uint8), entropy.PER_CHANNEL
        costs = []
        for y in range(block):
            for x in range(block):
                n, s = entropy._level_ctx(q, c, y, x)
                bits = entropy._level(st_, out, p, 0, eg, n, s, rng.integers(0, entropy.N_PB), rng.integers(0, entropy.N_AB), q[c, y, x], 1)  # any |P| and activity bucket
                costs.append((d[c, y, x] - q[c, y, x]) ** 2 + lam * bits)
        tail = np.cumsum(costs[::-1])[::-1]
        assert np.all(rest[:-1] <= tail + 1e-9), (rest[:-1] - tail).max()


def test_encoder_refuses_what_it_cannot_write_or_would_drop():
    """fps and channel counts the header cannot hold, a missing input frame, unequal tensors and frames: errors, never silence."""
    xs = [torch.zeros(2, 8, 8) for _ in range(3)]
    with pytest.raises(lm.InputError, match="frame rate"):
        Encoder((2, 8, 8), 1.0, "zero", fps=0.0)
    with pytest.raises(lm.InputError, match="channels"):
        Encoder((65536, 1, 1), 1.0, "zero")
    with pytest.raises(lm.InputError, match="input frame"):
        Encoder((2, 8, 8), 1.0, "input").encode(xs[0])
    with pytest.raises(ValueError):
        encode_sequence(xs, Encoder((2, 8, 8), 1.0, "zero"), [None, None])


def test_decoded_size_is_known_before_decoding():
    """A few hundred kilobytes that would decode to gigabytes are sized from lengths alone, so an application can refuse them."""
    from latentmotion.codec import decoded_nbytes

    h = _header((1024, 128, 128))
    recs = b"".join(write_frame(struct.pack("<IB", i, 0) + b"\x00" * (h.min_record() - 13)) for i in range(30))
    data = write_header(h) + recs
    assert len(data) < 400_000 and decoded_nbytes(data) == 30 * 4 * 1024 * 128 * 128  # 2 GB of output
    xs = [torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    stream = encode_sequence(xs, Encoder((2, 4, 4), 0.1, "zero"))
    assert decoded_nbytes(stream) == sum(x.numel() * 4 for x in decode_stream(stream)[1])


def test_cli_classify_refuses_a_small_stream_that_claims_a_huge_grid(tmp_path):
    """Issue 20 (attack): 5 KB of stream claiming (40, 512, 512) made --classify run the cloud on it (53 s, 2 GB).
    The cloud takes the cut's channels and at most 4x its nominal area, checked before decoding."""
    import subprocess
    import sys

    from latentmotion.codec import Encoder, encode_sequence
    from latentmotion.models import load_model, weights_fingerprint

    fp = weights_fingerprint(load_model("efficientnet_lite0"))
    enc = Encoder((40, 512, 512), 1.0, "zero", model="efficientnet_lite0", layer="_blocks.4.add", weights=fp, block=64, mblock=64)
    s = tmp_path / "big.lmf"
    s.write_bytes(encode_sequence([torch.zeros(40, 512, 512)] * 2, enc))
    r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "decode", str(s), "--classify"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "4x the area" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
