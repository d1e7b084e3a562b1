"""Codec throughput on 128x28x28 tensors (issue 5), network excluded.

resnet34 layer2.0.add (seeded random weights; the cost does not depend on
them) on 24 frames of bikes.mp4: tensors per second for encode + decode per
motion mode (RD mode decision on, step 4), beside the edge forward time per
frame measured in the same process.

    .venv/bin/python benchmarks/bench_codec.py
"""

from __future__ import annotations

import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _util import median_time, table  # noqa: E402

import latentmotion as lm  # noqa: E402
from latentmotion.codec import Encoder, decode_stream, encode_sequence  # noqa: E402
from latentmotion.data import fit_frame, read_frames, video_path  # noqa: E402
from latentmotion.experiments.flowcheck import gray8  # noqa: E402

N = 24


def main() -> None:
    split = lm.split_model(lm.load_model("resnet34", weights="random"), "layer2.0.add")
    frames = fit_frame(read_frames(video_path("bikes.mp4"), range(N)))
    with torch.inference_mode():
        t_fwd = median_time(lambda: split.edge(frames), 3) / N
        feats = split.edge(frames)
    gray = list(gray8(frames))
    rows = []
    for mode, kw in (("zero", {}), ("affine", {}), ("block", {"subpel": 1}), ("block", {"subpel": 4}), ("input", {}), ("zero", {"rd": False})):
        label = mode + ("" if not kw else " " + ",".join(f"{k}={v}" for k, v in kw.items()))

        def enc():
            e = Encoder(tuple(feats.shape[1:]), 4.0, mode, stride=split.stride, offset=split.offset, **kw)
            return encode_sequence(list(feats), e, gray)

        stream = enc()
        t_enc = median_time(enc, 3) / N
        t_dec = median_time(lambda: decode_stream(stream), 3) / N
        per = t_enc + t_dec
        rows.append((label, f"{t_enc * 1e3:.1f}", f"{t_dec * 1e3:.1f}", f"{1 / per:.0f}", f"{per / t_fwd:.2f}", f"{8 * len(stream) / N / 1000:.1f}"))
    print(f"128x28x28 tensors, {N} frames, CPU threads {torch.get_num_threads()}; edge forward {t_fwd * 1e3:.1f} ms/frame")
    print(table(rows, ("mode", "encode ms", "decode ms", "tensors/s (enc+dec)", "ratio to forward", "kbit/frame")))
    print("target: >= 100 tensors/s for encode + decode")


if __name__ == "__main__":
    main()
