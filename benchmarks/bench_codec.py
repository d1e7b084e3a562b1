"""Feature codec v2 against standard codecs (issue 9): speed, and (``--rd``) the BD-rate goals.

Speed: resnet34 ``layer2.0.add`` (128x28x28; seeded random weights, the cost
does not depend on them) on 24 frames of bikes.mp4: encode + decode tensors
per second per configuration, beside libx265 (low-delay P, QP 32, tiled
10-bit picture) coding and decoding the same tensors in the same process.

``--rd``: ``codec eval`` (intra and block against x265_intra, x265_ldp and
svtav1_ld) for EfficientNet-Lite0 (trained) ``_blocks.4.add`` and
``_blocks.10.add`` on bikes.mp4 and carphone_pristine.mp4, 96 frames each,
steps down to top-1 agreement under 0.9; prints every BD-rate goal.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_codec.py [--rd] [--frames 96] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _util import median_time, table  # noqa: E402

import latentmotion as lm  # noqa: E402
from latentmotion.codec import Encoder, decode_stream, encode_sequence  # noqa: E402
from latentmotion.experiments.codec_anchors import code_anchor  # noqa: E402
from latentmotion.pipeline import edge_features  # noqa: E402

N = 24


def cpu_time(fn, repeats: int = 3) -> float:
    """Median CPU seconds of the process per call (what the work costs when the machine is shared)."""
    return median_time(fn, repeats, 1, time.process_time)


def speed() -> None:
    split = lm.split_model(lm.load_model("resnet34", weights="random"), "layer2.0.add")
    clip = edge_features("bikes.mp4", split, 0, N)
    feats, gray = clip.features, list(clip.gray)
    step = 0.5 * float(feats.pow(2).mean().sqrt())
    rows = []
    t_x265 = median_time(lambda: code_anchor(feats, "x265_ldp", 32), 3) / N
    c_x265 = cpu_time(lambda: code_anchor(feats, "x265_ldp", 32)) / N
    for mode, kw in (("zero", {}), ("block", {"subpel": 1}), ("block", {"subpel": 4}), ("input", {})):
        label = mode + ("" if not kw else " " + ",".join(f"{k}={v}" for k, v in kw.items()))

        def enc(mode=mode, kw=kw):
            e = Encoder(tuple(feats.shape[1:]), step, mode, stride=split.stride, offset=split.offset, **kw)
            return encode_sequence(list(feats), e, gray)

        stream = enc()
        t_enc = median_time(enc, 3) / N
        t_dec = median_time(lambda s=stream: decode_stream(s), 3) / N
        per = t_enc + t_dec
        cpu = (cpu_time(enc) + cpu_time(lambda s=stream: decode_stream(s))) / N
        rows.append((label, f"{t_enc * 1e3:.1f}", f"{t_dec * 1e3:.1f}", f"{1 / per:.0f}", f"{t_x265 / per:.2f}", f"{1 / cpu:.0f}", f"{c_x265 / cpu:.2f}", f"{8 * len(stream) / N / 1000:.1f}"))
    print(f"{tuple(feats.shape[1:])} tensors, {N} frames, step 0.5 x rms, torch threads {torch.get_num_threads()}")
    print(f"x265_ldp (QP 32, tiled 10-bit, encode + decode, same tensors): {t_x265 * 1e3:.1f} ms/tensor = {1 / t_x265:.0f} tensors/s wall, {1 / c_x265:.0f} per CPU-second")
    print(table(rows, ("mode", "encode ms", "decode ms", "tensors/s (enc+dec)", "speed vs x265", "tensors per CPU-s", "CPU vs x265", "kbit/frame")))
    print("goal: >= 100 tensors/s for encode + decode")


def rd(frames: int, out: Path) -> None:
    from latentmotion.experiments.codec_eval import EvalSettings, evaluate

    fmt = lambda v: "n/a" if v is None else f"{v:+.1f} %"  # noqa: E731
    rows = []
    for video in ("bikes.mp4", "carphone_pristine.mp4"):
        for layer in ("_blocks.4.add", "_blocks.10.add"):
            st = EvalSettings(video=video, layer=layer, frames=frames, configs=("intra", "block"))
            s = evaluate(st, out / f"{video}_{layer}")
            g = s["goal"]
            rows.append((video, layer, fmt(g["best_vs_x265_ldp_psnr"]), fmt(g["best_vs_x265_ldp_top1"]), fmt(g["intra_vs_x265_intra_psnr"]),
                         fmt(s["bd_rate_percent"].get("block_vs_svtav1_ld")), f"{g['lowest_top1']:.3f}", s["all_decoders_identical"]))
    print(table(rows, ("video", "layer", "block vs x265_ldp PSNR", "block vs x265_ldp top-1", "intra vs x265_intra", "block vs svtav1_ld", "lowest top-1", "bit-exact")))
    print("goals: <= -25 % vs x265_ldp (PSNR and top-1), <= 0 % intra vs x265_intra; reports in", out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rd", action="store_true", help="run the BD-rate comparison (minutes) instead of the speed test")
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.rd:
        rd(a.frames, a.out or Path(tempfile.mkdtemp(prefix="bench_codec_")))
    else:
        speed()


if __name__ == "__main__":
    main()
