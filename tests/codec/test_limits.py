"""latentmotion.codec.limits: steps checked against the tensor's range before coding."""

from __future__ import annotations

import math

import pytest
import torch

from latentmotion.codec import Encoder, Tools, decode_stream, encode_sequence
from latentmotion.codec.core import MAX_Q
from latentmotion.codec.limits import check_step, step_range
from latentmotion.errors import InputError


@pytest.mark.parametrize("step,needle", [(1e39, "float32"), (1e-50, "float32"), (0.0, "positive"), (-1.0, "positive"), (math.nan, "positive"), (math.inf, "positive")])
def test_numbers_that_no_stream_can_hold(step, needle):
    with pytest.raises(InputError, match=needle):
        check_step(step)


def test_bounds_follow_the_level_range_and_the_peak():
    x = torch.tensor([[[-3.0, 5.0], [0.5, 1.0]]])
    lo, hi = step_range(x, 100)
    assert lo == pytest.approx(5 / 100) and hi == 10.0
    assert check_step(lo * 1.001, x, 100) and check_step(hi, x, 100)
    assert abs(round(5 / (lo * 1.001))) <= 100  # the largest level fits
    with pytest.raises(InputError, match="too small"):
        check_step(lo * 0.999, x, 100)
    with pytest.raises(InputError, match="round to zero"):
        check_step(hi * 1.001, x, 100)
    assert round(5 / (hi * 1.001)) == 0  # what the refusal prevents
    with pytest.raises(ValueError):
        check_step(1.0, x)


def test_an_accepted_step_at_the_bound_codes_without_clipping():
    """At the smallest accepted step, plain rounding decodes every value within step / 2: nothing is clipped."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(4, 8, 8, generator=g) * 3 for _ in range(3)]
    # the largest level the coder takes is MAX_Q; residuals about a prediction span twice the values
    lo, _ = step_range(torch.stack(xs), MAX_Q // 2)
    step = check_step(lo * 1.01, torch.stack(xs), MAX_Q // 2)
    enc = Encoder((4, 8, 8), step, Tools.of(mode="zero", rdoq=0.0))  # plain rounding: RDOQ may trade error for bits
    _, out = decode_stream(encode_sequence(xs, enc))
    err = max(float((a - b).abs().max()) for a, b in zip(out, xs, strict=True))
    assert err <= step / 2 * 1.001


def test_the_bound_a_refusal_suggests_is_accepted_as_typed():
    """The least (most) step a refusal prints, in 6 digits, is accepted when typed: rounded up (down), and past the
    float32 the header stores; the encoder, which divides by that float32, accepts it too (a rounded-down suggestion
    was refused by the same message)."""
    import numpy as np

    from latentmotion.codec.limits import shown_bound

    g = torch.Generator().manual_seed(3)
    for peak in (torch.rand(64, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-6, 6, (64,), generator=g)).tolist():
        x = torch.tensor([[[peak]]])
        lo, hi = step_range(x, MAX_Q // 2)
        up, down = float(shown_bound(lo, True)), float(shown_bound(hi, False))
        assert lo <= float(np.float32(up)) <= lo * (1 + 2e-5) and hi * (1 - 2e-5) <= float(np.float32(down)) <= hi
        assert check_step(up, x, MAX_Q // 2) and check_step(down, x, MAX_Q // 2)
        Encoder((1, 1, 1), up, Tools.of(mode="zero")).encode(x)
    with pytest.raises(InputError, match=r"at least 0\.00500001"):  # 0.005 as a float32 lies below 0.005
        check_step(1e-30, torch.tensor([5.0]), 1000)


def test_nan_tensor_is_refused():
    with pytest.raises(InputError, match="NaN"):
        check_step(1.0, torch.tensor([1.0, math.nan]), 100)


def test_the_encoder_refuses_levels_it_would_clip():
    """Below the bound the encoder itself refuses: nothing is silently clipped."""
    from latentmotion.codec.core import MAX_Q

    x = torch.full((1, 4, 4), 3.0)
    with pytest.raises(InputError, match="too small"):
        Encoder((1, 4, 4), 3.0 / (MAX_Q // 2) / 1.01, Tools.of(mode="zero")).encode(x)


# ----------------------------------------------------------------- work bounded by bytes (issue 20, item 3)


def _zero_stream(shape, block, mblock, n_frames, record=None, bi=False) -> bytes:
    """A header for ``shape`` (block, mblock) then ``n_frames`` all-zero records (an intra frame, then predicted
    ones) of ``record`` bytes each, by default the smallest the decoder accepts: the most work bytes can buy
    without coding levels. ``bi``: the predicted records set every motion tile's two-reference flag (zero
    vectors, no levels), so that the decoder makes and averages both predictions."""
    import struct

    from latentmotion.codec.bitstream import write_frame

    enc = Encoder(shape, 1.0, Tools.of(mode="zero", block=block, mblock=mblock))
    size = max(14, enc.header.min_record()) if record is None else record  # 14: frame header, seq, type and gain
    coded = [b""] + (_all_bi(shape, block, mblock, n_frames - 1) if bi else [b""] * (n_frames - 1))
    recs = [write_frame(struct.pack("<IBB", i, min(i, 1), 16) + coded[i] + bytes(max(0, size - 14 - len(coded[i])))) for i in range(n_frames)]
    return enc.header_bytes() + b"".join(recs)


def _all_bi(shape, block, mblock, n) -> list[bytes]:
    """The coded bytes of n predicted frames whose motion tiles all average two references (zero vectors, no
    levels), the contexts carried from frame to frame as the decoder carries them."""
    import numpy as np

    from latentmotion.codec import rangecoder as rc
    from latentmotion.codec import syntax

    c, h, w = shape
    mv = np.zeros((5, -(-h // mblock), -(-w // mblock)), np.int64)
    mv[2] = 1
    q = np.zeros((c, h, w), np.int64)
    probs, out = syntax.new_contexts(c), []
    for _ in range(n):
        e = rc.encoder(syntax.capacity(q, block, mv))
        syntax.encode_vectors(e, probs, mv)
        syntax.encode_offsets(e, probs, np.zeros(c, np.int64))
        syntax.encode_levels(e, probs, syntax.levels(q, q, block), 0)
        out.append(rc.finish(e).tobytes())
    return out


def test_a_small_record_cannot_buy_a_large_decode():
    """Issue 20 item 3: with block 1 and mblock 1 every element costs a tile flag and a vector as well; a
    kilobyte used to pass for a 1x1024x1024 frame (16384 elements per byte, whatever the tiles)."""
    from latentmotion.codec import BitstreamError, iter_decode

    data = _zero_stream((1, 1024, 1024), 1, 1, 1, record=1000)
    with pytest.raises(BitstreamError, match="too short"):
        list(iter_decode(data))


def test_the_bound_counts_tiles_and_vectors():
    from latentmotion.codec.bitstream import UNITS_PER_BYTE

    big_tiles = Encoder((1, 1024, 1024), 1.0, Tools.of(mode="zero", block=1, mblock=1)).header
    coarse = Encoder((1, 1024, 1024), 1.0, Tools.of(mode="zero", block=64, mblock=64)).header
    assert big_tiles.work_units() > 8 * coarse.work_units()
    for h in (big_tiles, coarse):
        assert h.min_record() * UNITS_PER_BYTE >= h.work_units() > (h.min_record() - 1) * UNITS_PER_BYTE


def test_the_reference_encoder_meets_the_bound():
    """Every record the encoder writes is at least the smallest the decoder accepts (it pads with zeros)."""
    from latentmotion.codec import decode_stream
    from latentmotion.codec.bitstream import Reader, read_frame, read_header

    xs = [torch.zeros(1, 96, 96)] * 3  # nothing to code: every record is padded
    stream = encode_sequence(xs, Encoder((1, 96, 96), 1.0, Tools.of(mode="zero", block=1, mblock=1)))
    r = Reader(stream)
    h = read_header(r)
    sizes = []
    while not r.done():
        sizes.append(len(read_frame(r, h.frame_limit())) + 8)
    assert sizes == [h.min_record()] * 3 and h.min_record() > 14
    assert all(float(t.abs().max()) == 0 for t in decode_stream(stream)[1])


_PEAK = """
import resource, sys
sys.path.insert(0, {tests!r})
from test_limits import _zero_stream
from latentmotion.codec import decode_stream, decode_work_nbytes, decoded_nbytes
decode_stream(_zero_stream((1, 8, 8), 1, 1, 3, bi=True))  # compile the kernels, first allocations
data = _zero_stream({shape}, {block}, {mblock}, 3, bi=True)  # an intra frame, then two predicted from two references
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = decode_stream(data)[1]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(peak - base, decoded_nbytes(data) + decode_work_nbytes(data))
"""


@pytest.mark.parametrize("shape,block,mblock", [((1, 2048, 2048), 1, 1), ((64, 128, 128), 1, 1), ((16, 256, 256), 4, 2)])
def test_decoding_stays_within_the_documented_memory(shape, block, mblock):
    """Peak resident memory of a decode (in a fresh process) against decoded_nbytes + decode_work_nbytes, the
    figures the CLI's memory guard uses; block 1 / mblock 1 is the worst case per element, and every motion tile
    of the predicted frames averages two references."""
    import subprocess
    import sys
    from pathlib import Path

    code = _PEAK.format(tests=str(Path(__file__).parent), shape=shape, block=block, mblock=mblock)
    r = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=600)
    grown, bound = map(int, r.stdout.split())
    assert grown <= bound, (grown, bound)
