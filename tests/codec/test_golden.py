"""Golden codec streams (tests/expected/codec) and bit-exact decoding under other CPU kernels (issue 9).

The hashes are regenerated only on purpose, by tests/expected/codec/regenerate.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentmotion.codec import decode_stream

HERE = Path(__file__).parents[1] / "expected" / "codec"
sys.path.insert(0, str(HERE))
import regenerate as golden  # noqa: E402

HASHES = json.loads((HERE / "hashes.json").read_text())


@pytest.mark.parametrize("name", sorted(HASHES))
def test_golden_stream_decodes_to_its_hash(name):
    _, out = decode_stream((HERE / f"{name}.lmf").read_bytes())
    assert golden.sha(golden.output_bytes(out)) == HASHES[name]["output"]


def _frame_types(stream: bytes) -> list[int]:
    from latentmotion.codec.bitstream import Reader, read_frame, read_header

    r = Reader(stream)
    h = read_header(r)
    types = []
    while not r.done():
        types.append(read_frame(r, h.frame_limit())[4])  # after the u32 sequence number
    return types


def test_golden_streams_cover_intra_and_predicted_frames():
    assert _frame_types((HERE / "intra.lmf").read_bytes()) == [0, 0, 0, 0]
    for name in ("zero", "block", "block_int"):
        assert _frame_types((HERE / f"{name}.lmf").read_bytes())[1:] == [1, 1, 1], name


@pytest.mark.parametrize("name", sorted(HASHES))
def test_encoder_reproduces_the_golden_stream(name):
    s = golden.encode(name, np.load(HERE / "input.npy"))
    assert golden.sha(s) == HASHES[name]["stream"]


_SUB = """
import sys, hashlib
sys.path.insert(0, {here!r})
import regenerate as golden
from latentmotion.codec import decode_stream
for p in sys.argv[1:]:
    print(golden.sha(golden.output_bytes(decode_stream(open(p, 'rb').read())[1])))
"""


def test_decoding_is_bit_exact_under_default_cpu_kernels(tmp_path):
    """A stream of real features decodes to the same bits with PyTorch's baseline kernels as with the machine's best."""
    import torch

    import latentmotion as lm
    from latentmotion.codec import Encoder, Tools, encode_sequence
    from latentmotion.pipeline import edge_features

    split = lm.split_model(lm.load_model("efficientnet_lite0"), "_blocks.4.add")
    clip = edge_features("bikes.mp4", split, 0, 4)
    enc = Encoder(tuple(clip.features.shape[1:]), 0.5, Tools.of(mode="block"), grid=(split.stride, split.offset))
    fresh = tmp_path / "fresh.lmf"
    fresh.write_bytes(encode_sequence(list(clip.features), enc))
    paths = [str(fresh)] + [str(HERE / f"{n}.lmf") for n in sorted(HASHES)]
    here = [golden.sha(golden.output_bytes(enc.reconstructions))] + [HASHES[n]["output"] for n in sorted(HASHES)]
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", _SUB.format(here=str(HERE)), *paths], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == here
    assert torch.equal(torch.stack(decode_stream(fresh.read_bytes())[1]), torch.stack(enc.reconstructions))
