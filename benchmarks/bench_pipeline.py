"""Overhead of the paper's measurement pipeline over the edge forward pass (issue 2).

resnet34 (seeded random weights: same cost as ImageNet ones) cut at
layer2.0.add, batch 64 on the CPU: render the moved frames from a photo, run
the edge, predict the tensors by Eq. 12, measure NRMSE; against the edge
forward alone on the same frames, in one process.

    .venv/bin/python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _util import median_time, run_main, table  # noqa: E402

import latentmotion as lm  # noqa: E402
from latentmotion.data import load_image  # noqa: E402

BATCH = 64


def main() -> None:
    torch.manual_seed(0)
    split = lm.split_model(lm.load_model("resnet34", weights="random"), "layer2.0.add")
    src = load_image("chelsea")
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(BATCH, 7, generator=gen) * 2 - 1
    motions = [lm.Affine(tx=32 * a, ty=32 * b, sx=1 + 0.05 * c, sy=1 + 0.05 * d, shx=5 * e, shy=5 * f, rot=10 * g) for a, b, c, d, e, f, g in u.tolist()]
    pair = lm.render_pair(src, motions)
    with torch.inference_mode():
        ref = split.edge(pair.reference)

        def forward_only():
            split.edge(pair.current)

        def pipeline():
            p = lm.render_pair(src, motions)
            r, c = split.edge(p.reference), split.edge(p.current)
            pred, valid = lm.predict_features(r, motions, split)
            lm.nrmse(pred, c, valid)

        def parts():
            return {
                "render": median_time(lambda: lm.render_pair(src, motions), 3),
                "predict": median_time(lambda: lm.predict_features(ref, motions, split), 3),
            }

        # interleave the two so that machine noise hits both alike
        fwd, full = [], []
        for _ in range(3):
            fwd.append(median_time(forward_only, 1, warmup=0))
            full.append(median_time(pipeline, 1, warmup=0))
        t_fwd, t_all = sorted(fwd)[1], sorted(full)[1]
        p = parts()
    rows = [
        ("edge forward (64 frames)", f"{t_fwd * 1e3:.0f}", "1.00"),
        ("render (65 frames)", f"{p['render'] * 1e3:.0f}", f"{p['render'] / t_fwd:.3f}"),
        ("predict + mask (64)", f"{p['predict'] * 1e3:.0f}", f"{p['predict'] / t_fwd:.3f}"),
        ("render + edge(1 + 64) + predict + NRMSE", f"{t_all * 1e3:.0f}", f"{t_all / t_fwd:.3f}"),
    ]
    print(f"resnet34 layer2.0.add, batch {BATCH}, CPU threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(table(rows, ("stage", "median ms", "ratio to forward")))
    print(f"overhead over the forward pass: {100 * (t_all / t_fwd - 1):.1f} % (target <= 15 %; includes the reference frame's own forward)")


if __name__ == "__main__":
    run_main(main)
