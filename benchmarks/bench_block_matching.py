"""Block matching speed (issue 4), one process, same frames.

Real 224x224 grayscale pair from bikes.mp4 (frames 60, 62): latentmotion's
exhaustive SSD search (block 31, radius 11) against OpenCV's Farneback
optical flow, against the torch backend and against brute force: direct
summation at every centre (numba, full frame, fields compared) and the
Python reference of the tests (on a crop: too slow for the frame); then a 128x28x28
feature tensor (block 3, radius 5, joint). Blocks 7 and 63 show that the
time does not grow with the block. On a CUDA device, the 224 case on the GPU.

    .venv/bin/python benchmarks/bench_block_matching.py
"""

from __future__ import annotations

import sys

import cv2
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _util import median_time, run_main, table  # noqa: E402

from latentmotion.estimation import block_match, block_match_reference, block_match_torch  # noqa: E402
from latentmotion.experiments.flowcheck import video_pair  # noqa: E402
from latentmotion.pipeline import gray8  # noqa: E402


def _direct_full_frame(a: torch.Tensor, b: torch.Tensor, block: int, radius: int) -> tuple[float, bool]:
    """The exhaustive search by direct summation at every centre (no box sums), and whether it agrees."""
    import time

    import numpy as np

    from latentmotion import _bm_kernel

    h, w = a.shape
    hb = block // 2
    an, bn = (np.ascontiguousarray(t.double().numpy()[..., None]) for t in (a, b))
    ys, xs = (g.ravel().astype(np.int64) for g in np.meshgrid(np.arange(hb, h - hb), np.arange(hb, w - hb), indexing="ij"))
    _bm_kernel.match_at(an, bn, ys[:1], xs[:1], block, radius)  # compile
    t = time.perf_counter()
    vec, _ = _bm_kernel.match_at(an, bn, ys, xs, block, radius)
    elapsed = time.perf_counter() - t
    field = block_match(a, b, block, radius)[:, hb : h - hb, hb : w - hb].reshape(2, -1).T.numpy()
    return elapsed, bool(np.array_equal(vec, field))


def main() -> None:
    g = gray8(video_pair("bikes.mp4", 60, 62))
    a, b = g[0], g[1]
    an, bn = a.numpy(), b.numpy()
    rows = []
    t_fb = median_time(lambda: cv2.calcOpticalFlowFarneback(an, bn, None, 0.5, 3, 15, 3, 5, 1.2, 0), 21, 3)
    t_bm = median_time(lambda: block_match(a, b, 31, 11), 11, 2)
    t_bmf = median_time(lambda: block_match(a.double() / 255, b.double() / 255, 31, 11), 5, 1)
    t_torch = median_time(lambda: block_match_torch(a[None], b[None], 31, 11, False), 3, 1)
    rows += [
        ("224x224 gray, Farneback (OpenCV)", f"{t_fb * 1e3:.1f}", "1.00"),
        ("224x224 gray, block_match uint8 (exact int)", f"{t_bm * 1e3:.1f}", f"{t_bm / t_fb:.2f}"),
        ("224x224 gray, block_match float64", f"{t_bmf * 1e3:.1f}", f"{t_bmf / t_fb:.2f}"),
        ("224x224 gray, torch backend (CPU)", f"{t_torch * 1e3:.1f}", f"{t_torch / t_fb:.2f}"),
    ]
    for blk in (7, 63):  # box sums: the time must not grow with the block
        t_b = median_time(lambda: block_match(a, b, blk, 11), 11, 2)
        rows.append((f"224x224 gray uint8, block {blk} r 11", f"{t_b * 1e3:.1f}", f"{t_b / t_bm:.2f} of block 31's time"))
    t_direct, same = _direct_full_frame(a, b, 31, 11)
    rows.append(("224x224 gray, brute force (numba direct sums)", f"{t_direct * 1e3:.0f}", f"{t_direct / t_bm:.0f}x block_match; fields {'equal' if same else 'DIFFER'}"))
    ca, cb = a[:44, :44], b[:44, :44]
    t_bf = median_time(lambda: block_match_reference(ca, cb, 31, 5), 1, 0)
    t_bfo = median_time(lambda: block_match(ca, cb, 31, 5), 11, 2)
    rows += [
        ("44x44 crop, block 31 r 5: brute force (Python)", f"{t_bf * 1e3:.1f}", "-"),
        ("44x44 crop, block 31 r 5: block_match", f"{t_bfo * 1e3:.2f}", f"{t_bf / t_bfo:.0f}x faster than brute force"),
    ]
    gen = torch.Generator().manual_seed(0)
    f0 = torch.relu(torch.randn(128, 28, 28, generator=gen))
    f1 = torch.relu(torch.randn(128, 28, 28, generator=gen))
    t_f = median_time(lambda: block_match(f0, f1, 3, 5), 21, 3)
    rows.append(("128x28x28 features, block 3 r 5, joint", f"{t_f * 1e3:.2f}", "target < 5 ms"))
    t_e = median_time(lambda: block_match(f0, f1, 3, 5, channels="each"), 5, 1)
    rows.append(("128x28x28 features, block 3 r 5, each channel", f"{t_e * 1e3:.1f}", f"{t_e / t_f:.1f}x joint (128 fields)"))
    if torch.cuda.is_available():
        ad, bd = a.cuda(), b.cuda()
        same = torch.equal(block_match(ad, bd, 31, 11).cpu(), block_match(a, b, 31, 11))

        def gpu():
            block_match(ad, bd, 31, 11)
            torch.cuda.synchronize()

        t_g = median_time(gpu, 11, 3)
        note = f"target < 1 ms; {'equals' if same else 'DIFFERS FROM'} the CPU field"
        rows.append((f"224x224 gray uint8 on {torch.cuda.get_device_name()}", f"{t_g * 1e3:.2f}", note))
    print(f"CPU threads {torch.get_num_threads()}, torch {torch.__version__}, OpenCV {cv2.__version__}")
    print(table(rows, ("case", "median ms", "ratio to Farneback / note")))


if __name__ == "__main__":
    run_main(main)
