"""Regenerate the codec's golden streams. Run only on purpose, after a deliberate bitstream or encoder change:

    PYTHONPATH=src python tests/expected/codec/regenerate.py [--new-input]

Input: EfficientNet-Lite0 (trained) ``_blocks.4.add`` features of bikes.mp4
frames 0-3, channels 0-7, rows/columns 4-19 (stored as float32 ``input.npy``,
so that the encoder test does not depend on the network's float kernels; it is
kept as it is unless ``--new-input`` asks to recompute it: with the same input,
streams of an unchanged coding path stay byte-identical across format changes).
For each configuration the stream and the sha256 of the stream and of the
decoded float32 output (little-endian bytes) are written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
#: name -> (step, mode, Encoder keyword arguments)
CONFIGS = {
    "intra": (0.5, "zero", {"intra_period": 1}),
    "zero": (0.5, "zero", {"rd": False}),  # predicted frames with zero motion (no intra by cost)
    "block": (0.25, "block", {"subpel": 4}),  # predicted frames at the default gains (pstep 2, the cascade: 40, 36, 40)
    "block_int": (1.0, "block", {"subpel": 1, "block": 2, "mblock": 4, "pstep": 1.0, "cascade": ()}),  # gain 16 in every frame
}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def output_bytes(tensors) -> bytes:
    return b"".join(t.numpy().astype("<f4").tobytes() for t in tensors)


def encode(name: str, x: np.ndarray) -> bytes:
    from latentmotion.codec import Encoder, StreamId, Tools, encode_sequence

    step, mode, kw = CONFIGS[name]
    enc = Encoder(x.shape[1:], step, Tools.of(mode=mode, **kw), StreamId("efficientnet_lite0", "_blocks.4.add", "golden"))
    return encode_sequence([torch.from_numpy(t) for t in x], enc)


def _input() -> np.ndarray:
    import latentmotion as lm
    from latentmotion.pipeline import edge_features

    split = lm.split_model(lm.load_model("efficientnet_lite0"), "_blocks.4.add")
    x = edge_features("bikes.mp4", split, 0, 4).features[:, :8, 4:20, 4:20].numpy().astype(np.float32)
    np.save(HERE / "input.npy", x)
    return x


def main() -> None:
    import sys

    from latentmotion.codec import decode_stream

    x = _input() if "--new-input" in sys.argv[1:] or not (HERE / "input.npy").is_file() else np.load(HERE / "input.npy")
    hashes = {}
    for name in CONFIGS:
        s = encode(name, x)
        (HERE / f"{name}.lmf").write_bytes(s)
        hashes[name] = {"stream": sha(s), "output": sha(output_bytes(decode_stream(s)[1]))}
    (HERE / "hashes.json").write_text(json.dumps(hashes, indent=1) + "\n")


if __name__ == "__main__":
    main()
