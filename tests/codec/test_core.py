"""The assembled codec: closed loop, motion modes, intra decisions, refusals, the CLI."""

from __future__ import annotations

import struct

import pytest
import torch

import latentmotion as lm
from latentmotion.codec import MODE_NAMES, Decoder, Encoder, StreamId, Tools, decode_stream, encode_sequence
from latentmotion.codec.bitstream import write_frame, write_header
from latentmotion.data import fit_frame, load_image, read_frames, video_path
from latentmotion.errors import InputError
from latentmotion.pipeline import gray8

from ..conftest import model
from .test_bitstream import _header


@pytest.fixture(scope="module")
def clip():
    split = lm.split_model(model("efficientnet_lite0"), "_blocks.4.add")
    frames = fit_frame(read_frames(video_path("bikes.mp4"), range(6)))
    with torch.no_grad():
        feats = split.edge(frames)
    return split, frames, feats





# ----------------------------------------------------------------- closed loop and modes


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_decoder_is_bit_identical_and_loop_is_closed(clip, mode):
    split, frames, feats = clip
    step = 2.0
    for rdoq, pstep in ((0.0, 1.0), (0.0, 2.5), (0.5, 2.0)):  # without RDOQ every level is the nearest: error at most half its steps
        enc = Encoder(tuple(feats.shape[1:]), step, Tools.of(mode=mode, rdoq=rdoq, pstep=pstep), grid=(split.stride, split.offset))
        stream = encode_sequence(list(feats), enc, list(gray8(frames)))
        header, out = decode_stream(stream)
        assert header.mode == MODE_NAMES.index(mode) and len(out) == len(feats)
        for a, b, x, st in zip(out, enc.reconstructions, feats, enc.stats, strict=True):
            assert torch.equal(a, b)
            if rdoq == 0:  # closed loop: no drift; a frame's levels are gain / 16 steps
                assert (a - x).abs().max() <= step * st.gain / 16 / 2 + 1e-4
        assert enc.stats[0].kind == "intra" and any(s.kind == "inter" for s in enc.stats[1:])


def test_tiles_take_the_second_reference_and_an_intra_frame_restarts_both(clip, monkeypatch):
    """Two references on a real clip: some tiles average two references, a frame forced intra mid-stream resets
    both references alike on each side (the decoder stays bit-identical), and without the tool the stream differs."""
    from latentmotion.codec import core

    split, _, feats = clip
    seen, real = [], core.compensate
    monkeypatch.setattr(core, "compensate", lambda ref, ref2, mv, b, s: seen.append(int(mv[2].sum())) or real(ref, ref2, mv, b, s))
    enc = Encoder(tuple(feats.shape[1:]), 0.5, Tools.of(mode="block"), grid=(split.stride, split.offset))
    records = [enc.header_bytes()] + [enc.encode(x, intra=i == 3) for i, x in enumerate(feats)]
    dec, seen[:] = Decoder.from_header_bytes(records[0]), []
    out = [dec.decode_frame(r) for r in records[1:]]
    assert all(torch.equal(a, b) for a, b in zip(out, enc.reconstructions, strict=True))
    assert [s.kind for s in enc.stats] == ["intra", "inter", "inter", "intra", "inter", "inter"]
    assert len(seen) == 4 and max(seen) > 0  # the decoder averaged two references on some tiles
    single = Encoder(tuple(feats.shape[1:]), 0.5, Tools.of(mode="block", bi=False), grid=(split.stride, split.offset))
    assert encode_sequence(list(feats), single) != b"".join(records)


def test_vectors_never_drift_beyond_what_the_decoder_accepts():
    """A tile's candidates include its left neighbour's vector and refinement adds to it: across a 4096-wide ramp
    (found by an attack) the vectors used to drift past MAX_MV, into a stream the decoder refused."""
    w = 4096
    x = torch.arange(w, dtype=torch.float32).view(1, 1, w).contiguous()
    for tools in (Tools(), Tools.of(mode="block", bi=False, rd=False)):
        enc = Encoder((1, 1, w), 0.2, tools)
        _, out = decode_stream(encode_sequence([x, torch.zeros(1, 1, w)], enc))
        assert all(torch.equal(a, b) for a, b in zip(out, enc.reconstructions, strict=True))


def test_motion_beats_zero_on_moving_camera(clip):
    split, frames, feats = clip
    bits = {}
    for mode in ("zero", "block"):
        enc = Encoder(tuple(feats.shape[1:]), 2.0, Tools.of(mode=mode), grid=(split.stride, split.offset))
        bits[mode] = len(encode_sequence(list(feats), enc, list(gray8(frames))))
    assert bits["block"] < 0.95 * bits["zero"]


def test_static_content_costs_almost_nothing(clip):
    _, _, feats = clip
    enc = Encoder(tuple(feats.shape[1:]), 1.0, Tools.of(mode="block"))
    recs = [enc.encode(feats[0]) for _ in range(4)]
    assert len(recs[3]) < 0.02 * len(recs[0])


def test_frames_carry_the_gain_of_their_type():
    """Intra frames code whole steps (gain 16), predicted frames pstep steps (gain round(16 pstep)) without a cascade;
    a pstep outside 1..255/16 is refused."""
    g = torch.Generator().manual_seed(6)
    xs = [torch.randn(4, 8, 8, generator=g) + 0.1 * i for i in range(3)]
    for pstep, gain in ((1.0, 16), (2.0, 32), (1.7, 27)):
        enc = Encoder((4, 8, 8), 0.1, Tools.of(mode="zero", rd=False, pstep=pstep, cascade=()))
        recs = [enc.encode(x) for x in xs]
        assert [r[12] for r in recs] == [0, 1, 1] and [r[13] for r in recs] == [16, gain, gain]  # type, gain after u32 n, crc, seq
        assert [s.gain for s in enc.stats] == [16, gain, gain]
    with pytest.raises(InputError, match="pstep"):
        Tools.of(pstep=0.9)
    with pytest.raises(InputError, match="pstep"):
        Tools.of(pstep=float("nan"))


def test_predicted_frames_follow_the_quality_cascade():
    """The default cascade (-2 +2 +1 +2 sixths of an octave about pstep 2, by position after the last intra frame):
    gains 32 * 2^(o/6) rounded, every fourth frame finer; an intra frame (forced, or a scene cut's) is at 16 and
    starts the count again; gains stay within 16..255; bad cascades are refused before any encode."""
    g = torch.Generator().manual_seed(6)
    xs = [torch.randn(4, 8, 8, generator=g) + 0.1 * i for i in range(10)]
    enc = Encoder((4, 8, 8), 0.1, Tools.of(mode="zero", rd=False))
    recs = [enc.encode(x, intra=i == 6) for i, x in enumerate(xs)]
    assert [r[13] for r in recs] == [16, 40, 36, 40, 25, 40, 16, 40, 36, 40]  # 32 * 2^(2/6) = 40.3, 2^(1/6) 35.9, 2^(-2/6) 25.4
    assert [s.gain for s in enc.stats] == [r[13] for r in recs]
    _, out = decode_stream(enc.header_bytes() + b"".join(recs))
    assert all(torch.equal(a, b) for a, b in zip(out, enc.reconstructions, strict=True))
    a, b, c = (torch.randn(8, 16, 16, generator=g) for _ in range(3))
    enc = Encoder((8, 16, 16), 0.3, Tools.of(mode="zero"))  # a scene cut at frame 2
    encode_sequence([a, a + 0.05 * b, c, c, c, c], enc)
    assert [(s.kind, s.gain) for s in enc.stats] == [("intra", 16), ("inter", 40), ("intra", 16), ("inter", 40), ("inter", 36), ("inter", 40)]
    assert [Tools.of(pstep=15.0, cascade=(6,)).residual.gain(i) for i in (1, 2)] == [255, 255]
    assert Tools.of(pstep=1.0, cascade=[-12]).residual.gain(3) == 16  # a list (JSON) is taken as a tuple; floor 16
    for bad in ((13,), (float("nan"),), (float("inf"),), (10**400,), (True,), ("1",), (0.0,) * 65, 3):
        with pytest.raises(InputError, match="cascade") as e:
            Tools.of(cascade=bad)
        assert len(str(e.value)) < 120


def test_scene_cut_falls_back_to_intra(clip):
    split, _frames, feats = clip
    other = fit_frame(load_image("coffee"))[None]
    with torch.no_grad():
        cut = split.edge(other)[0]
    seq = [feats[0], feats[1], cut, feats[2]]
    enc = Encoder(tuple(feats.shape[1:]), 2.0, Tools.of(mode="block"))
    stream = encode_sequence(seq, enc)
    assert [s.kind for s in enc.stats[:3]] == ["intra", "inter", "intra"]
    assert torch.equal(torch.stack(decode_stream(stream)[1]), torch.stack(enc.reconstructions))


def _mean_errors(mode, **kw) -> float:
    """Largest error of a decoded channel mean, in offset units (1/16 step), on channels inside the dead zone."""
    g = torch.Generator().manual_seed(5)
    off = torch.linspace(-0.45, 0.45, 8)[:, None, None]
    xs = [off + 0.05 * torch.randn(8, 16, 16, generator=g) for _ in range(4)]
    _, out = decode_stream(encode_sequence(xs, Encoder((8, 16, 16), 1.0, Tools.of(mode=mode, **kw))))
    return max(float((x.mean((1, 2)) - y.mean((1, 2))).abs().max()) * 16 for x, y in zip(xs, out, strict=True))


@pytest.mark.parametrize("mode, kw", [("zero", {"intra_period": 1}), ("block", {})])
def test_channel_means_survive_a_step_coarser_than_every_value(mode, kw):
    """Per-channel offsets (in 1/16 step): channels whose values all lie inside the dead zone keep their means
    to within half an offset unit, in intra and predicted frames (without offsets every level is 0), with RDOQ
    off, and at its default lambda, where these offsets are worth their bits."""
    for rdoq in (0.0, 0.6):
        assert _mean_errors(mode, **kw, rdoq=rdoq) <= 0.5 + 1e-4


def test_offsets_shrink_by_rdoqs_lambda():
    """With a heavy RDOQ lambda an offset moves towards 0 where its bits outweigh its error (some mean is off by more
    than half a unit), but no further than the trade allows: the chosen offset costs at most what the rounded mean
    costs, so ``(1 + wm) N (e / 16)^2 <= (1 + wm) N (0.5 / 16)^2 + lam B`` with ``B`` the rounded mean's bits (< 32)
    and ``lam = rdoq (16 / round(16 pstep))^2`` (squared levels per bit, the same in every frame; intra levels are
    steps). The motion decisions' lambda does not move them."""
    t = Tools.of(mode="zero", intra_period=1, rdoq=3.0)
    e = _mean_errors("zero", intra_period=1, rdoq=3.0)
    lam = t.residual.rdoq * (16 / round(16 * t.residual.pstep)) ** 2
    bound = 16 * (0.25 / 256 + lam * 32 / ((1 + t.residual.wm) * 256)) ** 0.5
    assert 0.5 < e <= bound
    assert _mean_errors("zero", intra_period=1, rdoq=3.0, lam=0.01) == e


def test_rdoq_weighs_levels_with_one_lambda_in_every_frame(monkeypatch):
    """Intra frames, predicted frames and a scene cut's candidates (predicted at the intra step, and intra) all
    price a level's bits with the predicted frames' lambda in level units, ``rdoq (16 / g)^2``, ``g`` their gain
    (before, intra levels weighed ``rdoq`` itself and came out coarse)."""
    from latentmotion.codec import core

    lams, real = [], core.rdoq
    monkeypatch.setattr(core, "rdoq", lambda e, p, lv, d, lam, wm: lams.append(lam) or real(e, p, lv, d, lam, wm))
    g = torch.Generator().manual_seed(1)
    a, b, c = (torch.randn(8, 16, 16, generator=g) for _ in range(3))
    enc = Encoder((8, 16, 16), 0.3, Tools.of(mode="zero", pstep=1.7))
    encode_sequence([a, a + 0.05 * b, c, c], enc)
    assert [s.kind for s in enc.stats] == ["intra", "inter", "intra", "inter"] and len(lams) == 6  # frame 2 tried both ways
    assert set(lams) == {0.6 * (16 / round(16 * 1.7)) ** 2}


def test_intra_period_forced_intra_and_bad_parameters(clip):
    _, _, feats = clip
    enc = Encoder(tuple(feats.shape[1:]), 2.0, Tools.of(mode="zero", intra_period=2, rd=False))
    encode_sequence(list(feats), enc)
    assert [s.kind for s in enc.stats] == ["intra", "inter"] * 3
    enc = Encoder(tuple(feats.shape[1:]), 2.0, Tools.of(mode="zero", rd=False))
    dec = Decoder.from_header_bytes(enc.header_bytes())
    kinds = []
    for i, x in enumerate(feats[:3]):
        assert torch.equal(dec.decode_frame(enc.encode(x, intra=i == 2)), enc.reconstructions[-1])
        kinds.append(enc.stats[-1].kind)
    assert kinds == ["intra", "inter", "intra"]
    with pytest.raises(lm.InputError, match="motion mode"):
        Encoder((1, 4, 4), 1.0, Tools.of(mode="global"))
    with pytest.raises(lm.InputError, match="step"):
        Encoder((1, 4, 4), 0.0)
    with pytest.raises(lm.InputError, match="shape"):
        Encoder((1, 4, 4), 1.0).encode(torch.zeros(2, 4, 4))
    # what the header cannot hold is refused here, not when the stream is written or read
    for kw, needle in (({"fps": 1e-50}, "frame rate"), ({"fps": 1e39}, "frame rate"), ({"model": "m" * 300}, "too long")):
        with pytest.raises(lm.InputError, match=needle):
            Encoder((2, 8, 8), 1.0, stream=StreamId(**kw))
    with pytest.raises(lm.InputError, match=r"\(C, H, W\)"):
        Encoder((8, 8), 1.0)


def test_values_up_to_the_input_bound_are_never_clipped_when_a_channel_mean_shifts():
    """Offsets are clamped so that no residual exceeds the largest level: a channel whose mean jumps by
    8000 steps while one value swings by 62000 (inside the accepted 32767-step bound) is coded exactly."""
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    x2 = torch.where((yy + xx) % 2 == 0, 24000.0, -24000.0)[None].clone()
    x1 = x2 - 8000
    x2[0, 0, 1], x1[0, 0, 1] = -31000.0, 31000.0
    for pstep in (1.0, 2.0):  # the predicted frame's levels are pstep steps
        enc = Encoder((1, 8, 8), 1.0, Tools.of(mode="zero", rd=False, pstep=pstep))
        _, out = decode_stream(encode_sequence([x1, x2], enc))
        assert [s.kind for s in enc.stats] == ["intra", "inter"]
        assert float((out[1] - x2).abs().max()) <= pstep / 2 and torch.equal(out[1], enc.reconstructions[1])


@pytest.mark.parametrize("shape, mblock", [((8, 16, 16), 64), ((1, 1, 1), 2), ((8, 2, 16), 2)])
def test_motion_tiles_larger_than_the_tensor_still_code(shape, mblock):
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(*shape, generator=g) for _ in range(3)]
    enc = Encoder(shape, 0.1, Tools.of(mode="block", mblock=mblock))
    _, out = decode_stream(encode_sequence(xs, enc))
    assert all(torch.equal(a, b) for a, b in zip(out, enc.reconstructions, strict=True))


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


def test_cli_codes_through_the_cuts_transform_and_decodes_to_its_features(tmp_path):
    """--transform kltw: the stream names the transform, and decoding maps the coordinates back to the cut's
    features (close to the uncompressed ones at a fine step; the cloud classifies them as it does those)."""
    import subprocess
    import sys

    from latentmotion.codec import read_stream_header
    from latentmotion.models import split_model
    from latentmotion.pipeline import edge_features

    cli = [sys.executable, "-m", "latentmotion.cli", "codec"]
    s = tmp_path / "w.lmf"
    r = subprocess.run([*cli, "encode", "--out", str(s), "--frames", "3", "--step", "0.05", "--transform", "kltw"], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    assert "+kltw-" in read_stream_header(s.read_bytes()).weights
    r = subprocess.run([*cli, "decode", str(s), "--out", str(tmp_path / "x.pt"), "--classify"], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0 and "kltw transform" in r.stdout, r.stderr
    x = torch.load(tmp_path / "x.pt")
    f = edge_features("bikes.mp4", split_model(lm.load_model("efficientnet_lite0"), "_blocks.4.add"), 0, 3).features
    assert x.shape == f.shape and lm.psnr(x, f).min() > 30  # the features, not their coordinates


def test_cli_eval_refuses_unknown_names_before_any_output(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "rd"
    for bad in (["--anchors", "x266"], ["--configs", "affine"]):
        r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "eval", "--out", str(out), "--frames", "4", *bad], capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and r.stderr.startswith("error: unknown") and not out.exists(), r.stderr

def test_encoder_refuses_what_it_cannot_write_or_would_drop():
    """fps and channel counts the header cannot hold, a missing input frame, unequal tensors and frames: errors, never silence."""
    xs = [torch.zeros(2, 8, 8) for _ in range(3)]
    with pytest.raises(lm.InputError, match="frame rate"):
        Encoder((2, 8, 8), 1.0, Tools.of(mode="zero"), stream=StreamId(fps=0.0))
    with pytest.raises(lm.InputError, match="channels"):
        Encoder((65536, 1, 1), 1.0, Tools.of(mode="zero"))
    with pytest.raises(lm.InputError, match="input frame"):
        Encoder((2, 8, 8), 1.0, Tools.of(mode="input")).encode(xs[0])
    with pytest.raises(ValueError):
        encode_sequence(xs, Encoder((2, 8, 8), 1.0, Tools.of(mode="zero")), [None, None])


def test_decoded_size_is_known_before_decoding():
    """A few hundred kilobytes that would decode to gigabytes are sized from lengths alone, so an application can refuse them."""
    from latentmotion.codec import decoded_nbytes

    h = _header((1024, 128, 128))
    recs = b"".join(write_frame(struct.pack("<IBB", i, 0, 16) + b"\x00" * (h.min_record() - 14)) for i in range(30))
    data = write_header(h) + recs
    assert len(data) < 600_000 and decoded_nbytes(data) == 30 * 4 * 1024 * 128 * 128  # 2 GB of output
    xs = [torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    stream = encode_sequence(xs, Encoder((2, 4, 4), 0.1, Tools.of(mode="zero")))
    assert decoded_nbytes(stream) == sum(x.numel() * 4 for x in decode_stream(stream)[1])


def test_cli_classify_refuses_a_small_stream_that_claims_a_huge_grid(tmp_path):
    """Issue 20 (attack): 5 KB of stream claiming (40, 512, 512) made --classify run the cloud on it (53 s, 2 GB).
    The cloud takes the cut's channels and at most 4x its nominal area, checked before decoding."""
    import subprocess
    import sys

    from latentmotion.codec import Encoder, StreamId, Tools, encode_sequence
    from latentmotion.models import load_model, weights_fingerprint

    fp = weights_fingerprint(load_model("efficientnet_lite0"))
    enc = Encoder((40, 512, 512), 1.0, Tools.of(mode="zero", block=64, mblock=64), stream=StreamId(model="efficientnet_lite0", layer="_blocks.4.add", weights=fp))
    s = tmp_path / "big.lmf"
    s.write_bytes(encode_sequence([torch.zeros(40, 512, 512)] * 2, enc))
    r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "codec", "decode", str(s), "--classify"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "4x the area" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
