"""``latentmotion codec eval``: rate-distortion of the feature codec against standard-codec anchors.

For each configuration and quantisation step, the sequence of edge tensors is
encoded and decoded (the decoder's output is checked bit-identical to the
encoder's reconstruction); each anchor (:mod:`latentmotion.experiments.codec_anchors`)
codes the same tensors at each QP. Every operating point goes through one
row builder: rate = all bits (stream header included; the anchors' min/max
side information included), distortion = feature PSNR / NRMSE against the
uncompressed tensors, task accuracy = agreement of the cloud's top-1 class
(and top-5 overlap) on decoded against uncompressed tensors. BD-rates come
from the PyPI package ``bjontegaard``, of every configuration against every
anchor and against our own ``intra`` and ``zero``.

Steps are given relative to the RMS of the clip's features (``step = s * rms``),
so one sweep fits every layer.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..codec import Encoder, decode_stream, encode_sequence
from ..errors import InputError
from ..metrics import nrmse, psnr
from ..models import load_model, split_model, weights_fingerprint
from ..pipeline import edge_features
from .codec_anchors import ANCHORS, code_anchor

#: Evaluated configurations: name -> (motion mode, Encoder keyword arguments).
CONFIGS: dict[str, tuple[str, dict]] = {
    "intra": ("zero", {"intra_period": 1}),
    "zero": ("zero", {}),
    "block": ("block", {"subpel": 4}),
    "block_int": ("block", {"subpel": 1}),
    "input": ("input", {"subpel": 4}),
}
STEPS = (0.088, 0.125, 0.177, 0.25, 0.354, 0.5, 0.707)  # x sqrt(2), down to where top-1 agreement falls under 0.9
QPS = (12, 17, 22, 27, 32, 37)  # likewise: top-1 agreement under 0.9 at the high end


@dataclass
class EvalSettings:
    video: str = "bikes.mp4"
    model: str = "efficientnet_lite0"
    layer: str = "_blocks.4.add"
    weights: str = "imagenet"
    start: int = 0
    frames: int = 24
    steps: tuple[float, ...] = STEPS  # relative to the features' RMS
    configs: tuple[str, ...] = ("intra", "zero", "block", "input")
    anchors: tuple[str, ...] = ANCHORS
    qps: tuple[int, ...] = QPS
    seed: int = 0
    search: int = 4
    extra: dict = field(default_factory=dict)  # Encoder keyword overrides (tuning runs)


def _envelope(rates, dists) -> tuple[list, list]:
    """Operating points that raise quality over every cheaper point (an encoder would never pick the others)."""
    keep_r, keep_d = [], []
    for r, d in sorted(zip(rates, dists, strict=True)):
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
    except (ValueError, AssertionError, ArithmeticError, np.linalg.LinAlgError):  # non-monotonic or non-overlapping curves have no BD-rate
        return None
    return v if np.isfinite(v) else None


def check_settings(st: EvalSettings) -> None:
    """Refuse unknown configurations or anchors and too few steps (before any work or output)."""
    for c in st.configs:
        if c not in CONFIGS:
            raise InputError(f"unknown codec configuration {c!r}; choose from {', '.join(CONFIGS)}")
    for a in st.anchors:
        if a not in ANCHORS:
            raise InputError(f"unknown anchor {a!r}; choose from {', '.join(ANCHORS)}")
    if len(st.steps) < 4 or any(not s > 0 for s in st.steps):
        raise InputError("at least 4 positive steps are needed (BD-rate fits a curve)")


class _Rows:
    """One row builder for every operating point (ours and the anchors')."""

    def __init__(self, st, split, feats, fps, weights):
        self.st, self.split, self.feats, self.fps, self.weights = st, split, feats, fps, weights
        logits = split.cloud(feats)
        self.top1, self.top5 = logits.argmax(1), logits.topk(5, 1).indices
        self.rows: list[dict] = []

    def add(self, name: str, param: float, dec: torch.Tensor, bits: int, **extra) -> None:
        lg = self.split.cloud(dec)
        per = bits / len(dec)
        self.rows.append(
            {
                "video": self.st.video,
                "layer": self.st.layer,
                "config": name,
                "param": param,
                "bits_per_frame": per,
                "kbps": per * self.fps / 1000,
                "psnr": float(psnr(dec, self.feats).mean()),
                "nrmse": float(nrmse(dec, self.feats).mean()),
                "top1_agreement": float((lg.argmax(1) == self.top1).float().mean()),
                "top5_overlap": float(np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(lg.topk(5, 1).indices, self.top5, strict=True)])),
                **extra,
            }
        )


@torch.no_grad()
def evaluate(st: EvalSettings, out: Path, progress=None) -> dict:
    """Run the evaluation and write rd.csv, rd.png, summary.json and report.md into ``out``."""
    check_settings(st)
    model = load_model(st.model, st.weights, st.seed)
    split = split_model(model, st.layer)
    clip = edge_features(st.video, split, st.start, st.frames)
    feats, fps = clip.features, clip.fps
    rms = float(feats.pow(2).mean().sqrt())
    rows = _Rows(st, split, feats, fps, model.weights)
    fingerprint = weights_fingerprint(model)
    for name in st.configs:
        mode, kw = CONFIGS[name]
        for rel in st.steps:
            enc = Encoder(tuple(feats.shape[1:]), rel * rms, mode, model=st.model, layer=st.layer, weights=fingerprint, search=st.search, fps=fps, stride=split.stride, offset=split.offset, **kw, **st.extra)
            stream = encode_sequence(list(feats), enc, list(clip.gray))
            _, dec = decode_stream(stream)
            identical = all(torch.equal(a, b) for a, b in zip(dec, enc.reconstructions, strict=True))
            rows.add(name, rel, torch.stack(dec), 8 * len(stream), intra_share=sum(s.kind == "intra" for s in enc.stats) / len(enc.stats),
                     side_share=sum(s.side_bits for s in enc.stats) / max(1, sum(s.bits for s in enc.stats)), decoder_identical=identical)
            if progress:
                progress(1)
    for name in st.anchors:
        for qp in st.qps:
            dec, bits = code_anchor(feats, name, qp)
            rows.add(name, qp, dec, bits, intra_share=float("nan"), side_share=float("nan"), decoder_identical=True)
            if progress:
                progress(1)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rd.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows.rows[0]))
        w.writeheader()
        w.writerows(rows.rows)
    summary = _summarise(rows.rows, st, fps, split, model.weights, rms)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _plot(rows.rows, out / "rd.png", st)
    (out / "report.md").write_text(report_section(summary, rows.rows, "rd.png"))
    return summary


def _curve(rows, name, key):
    pts = sorted((r["kbps"], r[key]) for r in rows if r["config"] == name)
    return [p[0] for p in pts], [p[1] for p in pts]


def _summarise(rows, st, fps, split, weights, rms) -> dict:
    names = list(dict.fromkeys(r["config"] for r in rows))
    ours = [n for n in names if n in CONFIGS]
    refs = [n for n in names if n in ANCHORS] + [n for n in ("intra", "zero") if n in ours]
    bd: dict[str, dict] = {}
    # top-1 agreement moves in steps of 1/frames and saturates at 1: monotone
    # envelope of the operating points and shape-preserving (pchip) interpolation
    for metric, method in (("psnr", "akima"), ("top1_agreement", "pchip")):
        bd[metric] = {f"{a}_vs_{ref}": _bd(*_curve(rows, ref, metric), *_curve(rows, a, metric), method) for a in ours for ref in refs if a != ref}
    motion = [n for n in ours if n != "intra"]
    best = min(motion, key=lambda n: bd["psnr"].get(f"{n}_vs_x265_ldp") or 0.0) if motion else None
    get = lambda m, k: bd[m].get(k)  # noqa: E731
    goal = {
        "best_mode": best,
        "best_vs_x265_ldp_psnr": get("psnr", f"{best}_vs_x265_ldp"),
        "best_vs_x265_ldp_top1": get("top1_agreement", f"{best}_vs_x265_ldp"),
        "intra_vs_x265_intra_psnr": get("psnr", "intra_vs_x265_intra"),
        "lowest_top1": min(r["top1_agreement"] for r in rows if r["config"] == best) if best else None,
    }
    goal["meets_ldp_psnr"] = goal["best_vs_x265_ldp_psnr"] is not None and goal["best_vs_x265_ldp_psnr"] <= -25
    goal["meets_ldp_top1"] = goal["best_vs_x265_ldp_top1"] is not None and goal["best_vs_x265_ldp_top1"] <= -25
    goal["meets_intra"] = goal["intra_vs_x265_intra_psnr"] is not None and goal["intra_vs_x265_intra_psnr"] <= 0
    return {
        "video": st.video,
        "frames": [st.start, st.start + st.frames - 1],
        "fps": fps,
        "model": st.model,
        "weights": weights,
        "layer": st.layer,
        "stride": split.stride[0],
        "feature_rms": rms,
        "steps_relative": list(st.steps),
        "qps": list(st.qps),
        "seed": st.seed,
        "encoder_overrides": st.extra,
        "bd_rate_percent": bd["psnr"],
        "bd_rate_percent_top1": bd["top1_agreement"],
        "goal": goal,
        "all_decoders_identical": all(r["decoder_identical"] for r in rows),
        "note": "negative BD-rate = fewer bits at equal quality (bjontegaard: akima on PSNR, pchip on the monotone envelope of top-1 agreement); None where the curves allow none",
    }


def _plot(rows, path: Path, st: EvalSettings) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from .plotting import pyplot, save

    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4.5))
    for name in dict.fromkeys(r["config"] for r in rows):
        for ax, key, label in ((axes[0], "psnr", "feature PSNR (dB)"), (axes[1], "top1_agreement", "top-1 agreement with uncompressed")):
            x, y = _curve(rows, name, key)
            ax.plot(x, y, "o-" if name in CONFIGS else "s--", label=name)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 100, 200, 500, 1000, ...: no crowded labels
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("kbit/s")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    fig.suptitle(f"{st.model} {st.layer}, {st.video} frames {st.start}-{st.start + st.frames - 1}")
    save(fig, path)


def _percent(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.1f} %"


def verdict(summary: dict) -> str:
    """One paragraph: each goal of the codec against the anchors, met or not (the CLI prints it)."""
    g = summary["goal"]
    met = lambda b: "met" if b else "**not met**"  # noqa: E731
    return (
        f"Best mode `{g['best_mode']}` against `x265_ldp`: {_percent(g['best_vs_x265_ldp_psnr'])} on PSNR (goal -25 %: {met(g['meets_ldp_psnr'])}), "
        f"{_percent(g['best_vs_x265_ldp_top1'])} on top-1 agreement (goal -25 %: {met(g['meets_ldp_top1'])}); `intra` against `x265_intra`: "
        f"{_percent(g['intra_vs_x265_intra_psnr'])} (goal 0 %: {met(g['meets_intra'])}). Lowest top-1 agreement reached: {g['lowest_top1']}. "
        f"Decoder output bit-identical to the encoder's reconstruction: {'yes' if summary['all_decoders_identical'] else '**no**'}."
    )


def report_section(summary: dict, rows: list[dict], figure: str) -> str:
    from .report import md_table

    lines = [
        f"## Feature codec: {summary['model']} `{summary['layer']}` ({summary['weights']}), {summary['video']} frames {summary['frames'][0]}-{summary['frames'][1]}",
        "",
        f"![rate-distortion]({figure})",
        "",
        md_table(
            ("config", "step/rms or QP", "kbit/s", "bits/frame", "PSNR dB", "NRMSE", "top-1 agree", "top-5 overlap"),
            [(r["config"], r["param"], r["kbps"], int(r["bits_per_frame"]), r["psnr"], r["nrmse"], r["top1_agreement"], r["top5_overlap"]) for r in rows],
        ),
        "",
        "BD-rate on feature PSNR (negative = fewer bits): " + ", ".join(f"`{k}` {_percent(v)}" for k, v in summary["bd_rate_percent"].items()),
        "",
        "BD-rate on top-1 agreement: " + ", ".join(f"`{k}` {_percent(v)}" for k, v in summary["bd_rate_percent_top1"].items()),
        "",
        f"**Verdict.** {verdict(summary)}",
        "",
    ]
    return "\n".join(lines)
