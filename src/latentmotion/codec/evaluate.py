"""``latentmotion codec eval``: rate-distortion of every motion mode on real video.

For each mode and quantisation step, the sequence of edge tensors is encoded
and decoded (the decoder's output is checked bit-identical to the encoder's
reconstruction); the rate is the stream's size, the distortion the feature
PSNR / NRMSE against the uncompressed tensors, and the task accuracy the
agreement of the cloud's top-1 class (and top-5 overlap) on decoded against
uncompressed tensors. BD-rates come from the PyPI package ``bjontegaard``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import fit_frame, read_frames, video_info, video_path
from ..errors import InputError
from ..experiments.flowcheck import gray8
from ..metrics import nrmse, psnr
from ..models import load_model, split_model
from .core import Encoder, decode_stream, encode_sequence

#: Evaluated configurations: name -> (motion mode, Encoder keyword arguments).
CONFIGS: dict[str, tuple[str, dict]] = {
    "intra": ("zero", {"intra_period": 1}),
    "zero": ("zero", {}),
    "affine": ("affine", {}),
    "block": ("block", {"subpel": 4}),
    "block_int": ("block", {"subpel": 1}),
    "input": ("input", {"subpel": 4}),
}
STEPS = (1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass
class EvalSettings:
    video: str = "bikes.mp4"
    model: str = "efficientnet_lite0"
    layer: str = "_blocks.4.add"
    weights: str = "imagenet"
    start: int = 0
    frames: int = 24
    steps: tuple[float, ...] = STEPS
    configs: tuple[str, ...] = tuple(CONFIGS)
    seed: int = 0
    search: int = 4


def _envelope(rates, dists) -> tuple[list, list]:
    """Operating points that raise quality over every cheaper point (an encoder would never pick the others)."""
    keep_r, keep_d = [], []
    for r, d in sorted(zip(rates, dists)):
        if not keep_d or d > keep_d[-1]:
            keep_r.append(r)
            keep_d.append(d)
    return keep_r, keep_d


def _bd(rate_a, dist_a, rate_b, dist_b, method: str = "akima") -> float | None:
    """BD-rate of b against a in percent (bjontegaard); None where the curves allow none."""
    import bjontegaard as bd

    (rate_a, dist_a), (rate_b, dist_b) = _envelope(rate_a, dist_a), _envelope(rate_b, dist_b)
    if min(len(rate_a), len(rate_b)) < 2:
        return None
    try:
        v = float(bd.bd_rate(rate_a, dist_a, rate_b, dist_b, method=method, require_matching_points=False, min_overlap=0.0))
    except Exception:  # non-monotonic or non-overlapping curves have no BD-rate
        return None
    return v if np.isfinite(v) else None


@torch.no_grad()
def evaluate(st: EvalSettings, out: Path, progress=None) -> dict:
    """Run the evaluation and write rd.csv, rd.png, summary.json and report.md into ``out``."""
    for c in st.configs:
        if c not in CONFIGS:
            raise InputError(f"unknown codec configuration {c!r}; choose from {', '.join(CONFIGS)}")
    path = video_path(st.video)
    n_total, fps, _ = video_info(path)
    if st.start + st.frames > n_total:
        raise InputError(f"frames {st.start}..{st.start + st.frames - 1} out of range: {path.name} has {n_total} frames")
    model = load_model(st.model, st.weights, st.seed)
    split = split_model(model, st.layer)
    frames = fit_frame(read_frames(path, range(st.start, st.start + st.frames)))
    feats = split.edge(frames)
    logits = split.cloud(feats)
    top1, top5 = logits.argmax(1), logits.topk(5, 1).indices
    gray = gray8(frames)
    rows = []
    for name in st.configs:
        mode, kw = CONFIGS[name]
        for step in st.steps:
            enc = Encoder(tuple(feats.shape[1:]), step, mode, model=st.model, layer=st.layer, search=st.search, fps=fps, stride=split.stride, offset=split.offset, **kw)
            stream = encode_sequence(list(feats), enc, list(gray))
            _, dec = decode_stream(stream)
            identical = all(torch.equal(a, b) for a, b in zip(dec, enc.reconstructions))
            d = torch.stack(dec)
            lg = split.cloud(d)
            bits = 8 * len(stream) / len(dec)
            rows.append(
                {
                    "model": st.model,
                    "weights": model.weights,
                    "layer": st.layer,
                    "config": name,
                    "step": step,
                    "bits_per_frame": bits,
                    "kbps": bits * fps / 1000,
                    "psnr": float(psnr(d, feats).mean()),
                    "nrmse": float(nrmse(d, feats).mean()),
                    "top1_agreement": float((lg.argmax(1) == top1).float().mean()),
                    "top5_overlap": float(np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(lg.topk(5, 1).indices, top5)])),
                    "intra_share": sum(s.kind == "intra" for s in enc.stats) / len(enc.stats),
                    "side_share": sum(s.side_bits for s in enc.stats) / max(1, sum(s.bits for s in enc.stats)),
                    "decoder_identical": identical,
                }
            )
            if progress:
                progress(1)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rd.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = _summarise(rows, st, fps, split)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _plot(rows, out / "rd.png", st)
    (out / "report.md").write_text(report_section(summary, rows, "rd.png"))
    return summary


def _curve(rows, name, key):
    pts = sorted((r["kbps"], r[key]) for r in rows if r["config"] == name)
    return [p[0] for p in pts], [p[1] for p in pts]


def _summarise(rows, st, fps, split) -> dict:
    names = sorted({r["config"] for r in rows}, key=list(CONFIGS).index)
    bd: dict[str, dict] = {}
    # top-1 agreement moves in steps of 1/frames and saturates at 1: monotone
    # envelope of the operating points and shape-preserving (pchip) interpolation
    for metric, method in (("psnr", "akima"), ("top1_agreement", "pchip")):
        bd[metric] = {}
        for a in names:
            for anchor in ("intra", "zero"):
                if a != anchor and anchor in names:
                    bd[metric][f"{a}_vs_{anchor}"] = _bd(*_curve(rows, anchor, metric), *_curve(rows, a, metric), method)
    motion = [n for n in names if n not in ("intra", "zero")]
    best = min(motion, key=lambda n: bd["psnr"].get(f"{n}_vs_intra") or 0.0) if motion else None
    goal = {
        "best_mode": best,
        "saving_vs_intra_percent": -bd["psnr"].get(f"{best}_vs_intra") if best and bd["psnr"].get(f"{best}_vs_intra") is not None else None,
        "saving_vs_zero_percent": -bd["psnr"].get(f"{best}_vs_zero") if best and bd["psnr"].get(f"{best}_vs_zero") is not None else None,
    }
    goal["meets_40_vs_intra"] = goal["saving_vs_intra_percent"] is not None and goal["saving_vs_intra_percent"] >= 40
    goal["meets_10_vs_zero"] = goal["saving_vs_zero_percent"] is not None and goal["saving_vs_zero_percent"] >= 10
    return {
        "video": st.video,
        "frames": [st.start, st.start + st.frames - 1],
        "fps": fps,
        "model": st.model,
        "weights": rows[0]["weights"],
        "layer": st.layer,
        "stride": split.stride[0],
        "steps": list(st.steps),
        "seed": st.seed,
        "bd_rate_percent": bd["psnr"],
        "bd_rate_percent_top1": bd["top1_agreement"],
        "goal": goal,
        "all_decoders_identical": all(r["decoder_identical"] for r in rows),
        "note": "negative BD-rate = fewer bits at equal quality (bjontegaard: akima on PSNR, pchip on the monotone envelope of top-1 agreement); None where the curves allow none",
    }


def _plot(rows, path: Path, st: EvalSettings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in sorted({r["config"] for r in rows}, key=list(CONFIGS).index):
        for ax, key, label in ((axes[0], "psnr", "feature PSNR (dB)"), (axes[1], "top1_agreement", "top-1 agreement with uncompressed")):
            x, y = _curve(rows, name, key)
            ax.plot(x, y, "o-", label=name)
            ax.set_xscale("log")
            ax.set_xlabel("kbit/s")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    fig.suptitle(f"{st.model} {st.layer}, {st.video} frames {st.start}-{st.start + st.frames - 1}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_section(summary: dict, rows: list[dict], figure: str) -> str:
    from ..experiments.report import md_table

    g = summary["goal"]
    fmt = lambda v: "n/a" if v is None else f"{v:+.1f} %"  # noqa: E731
    lines = [
        f"## Feature codec: {summary['model']} `{summary['layer']}` ({summary['weights']}), {summary['video']} frames {summary['frames'][0]}-{summary['frames'][1]}",
        "",
        f"![rate-distortion]({figure})",
        "",
        md_table(
            ("config", "step", "kbit/s", "bits/frame", "PSNR dB", "NRMSE", "top-1 agree", "top-5 overlap", "intra share", "side info"),
            [(r["config"], r["step"], r["kbps"], int(r["bits_per_frame"]), r["psnr"], r["nrmse"], r["top1_agreement"], r["top5_overlap"], f"{r['intra_share']:.0%}", f"{r['side_share']:.1%}") for r in rows],
        ),
        "",
        "BD-rate on feature PSNR (negative = fewer bits): " + ", ".join(f"`{k}` {fmt(v)}" for k, v in summary["bd_rate_percent"].items()),
        "",
        "BD-rate on top-1 agreement: " + ", ".join(f"`{k}` {fmt(v)}" for k, v in summary["bd_rate_percent_top1"].items()),
        "",
        f"**Verdict.** Best motion mode: `{g['best_mode']}`: {fmt(g['saving_vs_intra_percent'] and -g['saving_vs_intra_percent'])} bits against intra "
        f"(goal -40 %: {'met' if g['meets_40_vs_intra'] else 'not met'}), {fmt(g['saving_vs_zero_percent'] and -g['saving_vs_zero_percent'])} against `zero` "
        f"(goal -10 %: {'met' if g['meets_10_vs_zero'] else 'not met'}). Decoder output bit-identical to the encoder's reconstruction: "
        f"{'yes' if summary['all_decoders_identical'] else '**no**'}.",
        "",
    ]
    return "\n".join(lines)
