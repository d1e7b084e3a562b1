"""Figures, tables, summary and verdicts of ``latentmotion reproduce``.

Everything said about results is computed here from the measured rows; the
report holds no hand-written numbers.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..metrics import hevc_band, nrmse_from_psnr
from .plotting import pyplot, save
from .profiles import PARAMS, PLOT_RANGE, UNITS

__all__ = [
    "alignment_table",
    "fig5",
    "fig6",
    "in_plot_range",
    "md_table",
    "short",
    "summarize",
    "trained_vs_random",
    "verdicts",
    "write_csv",
]

CSV_FIELDS = ("model", "weights", "layer", "stride", "transform", "value", "alignment", "nrmse", "tx", "ty", "sx", "sy", "shx", "shy", "rot")


def key(r: dict) -> tuple[str, str, str]:
    return (r["model"], r["weights"], r["layer"])


def short(k: tuple[str, str, str]) -> str:
    model, weights, layer = k
    w = "ImageNet" if weights.startswith(("imagenet", "file")) else "random"
    return f"{model} [{w}] {layer}"


def group(rows: list[dict], transform: str | None = None, alignment: str | None = None) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if (transform is None or r["transform"] == transform) and (alignment is None or r["alignment"] == alignment):
            out[key(r)].append(r)
    return out


# --------------------------------------------------------------------------- files


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.9g}" if isinstance(r[k], float) else r[k]) for k in CSV_FIELDS})


def _stats(values: list[float]) -> dict:
    lo, hi = hevc_band()
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "median": float(np.median(a)),
        "q05": float(np.quantile(a, 0.05)),
        "q95": float(np.quantile(a, 0.95)),
        "max": float(a.max()),
        "share_in_band": float(((a >= lo) & (a <= hi)).mean()),
        "share_at_or_below_band_top": float((a <= hi).mean()),
    }


def in_plot_range(r: dict) -> bool:
    t = r["transform"]
    if t not in PLOT_RANGE:
        return True
    lo, hi = PLOT_RANGE[t]
    return lo - 1e-9 <= r["value"] <= hi + 1e-9


def summarize(rows: list[dict]) -> dict:
    """Per model, weights and layer: statistics per transform (plotted range) and alignment."""
    out: dict = {"band": dict(zip(("low", "high"), hevc_band(), strict=True)), "layers": []}
    for k, rs in group(rows).items():
        entry = {"model": k[0], "weights": k[1], "layer": k[2], "stride": rs[0]["stride"], "transforms": {}}
        by = defaultdict(list)
        for r in rs:
            if in_plot_range(r):
                by[(r["transform"], r["alignment"])].append(r["nrmse"])
        for (t, a), vals in sorted(by.items()):
            entry["transforms"].setdefault(t, {})[a] = _stats(vals)
        out["layers"].append(entry)
    return out


# --------------------------------------------------------------------------- figures


def fig5(rows: list[dict], path: Path, alignment: str, smooth_window: int = 0) -> None:
    """NRMSE against each parameter, every layer: raw points, optional smoothed line."""
    from scipy.signal import savgol_filter

    plt = pyplot()
    lo, hi = hevc_band()
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    keys = sorted(group(rows))
    colours = {k: plt.cm.tab10(i % 10) for i, k in enumerate(keys)}
    for ax, p in zip(axes.flat, PARAMS):  # one axis more than parameters: the legend
        ymax = 0.0
        for k, rs in group(rows, p, alignment).items():
            rs = sorted((r for r in rs if in_plot_range(r)), key=lambda r: r["value"])
            x = np.array([r["value"] for r in rs])
            y = np.array([r["nrmse"] for r in rs])
            ax.plot(x, y, ".-", ms=2.5, lw=0.6, color=colours[k], label=short(k))
            if smooth_window and len(y) > smooth_window:
                ax.plot(x, savgol_filter(y, smooth_window, 3), lw=1.6, alpha=0.5, color=colours[k])
            ymax = max(ymax, float(np.nanquantile(y, 0.98)) if len(y) else 0)
        ax.axhspan(lo, hi, color="0.85", zorder=0, label="Eq. 14 band (HEVC MC, 27-41 dB)")
        ax.set_xlabel(f"{p} {UNITS[p]}".strip())
        ax.set_ylabel("NRMSE")
        ax.set_xlim(*PLOT_RANGE[p])
        ax.set_ylim(0, max(ymax * 1.1, hi * 1.2))
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    axes.flat[-1].axis("off")
    axes.flat[-1].legend(handles, labels, fontsize=7, loc="center")
    fig.suptitle(f"Fig. 5: NRMSE of the Eq. 12 prediction, alignment '{alignment}' (raw points" + (", thick: Savitzky-Golay" if smooth_window else "") + ")")
    save(fig, path)


def fig6(rows: list[dict], path: Path) -> None:
    """Density (KDE) of NRMSE over the random affine motions, per layer."""
    from scipy.stats import gaussian_kde

    plt = pyplot()
    lo, hi = hevc_band()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    groups = group(rows, "affine", "exact")
    top = max((max(r["nrmse"] for r in rs) for rs in groups.values()), default=0.1)
    xs = np.linspace(0, top * 1.05, 512)
    for k, rs in sorted(groups.items()):
        v = np.array([r["nrmse"] for r in rs])
        v = v[np.isfinite(v)]
        if v.size > 2 and v.std() > 0:
            ax.plot(xs, gaussian_kde(v)(xs), label=f"{short(k)} (median {np.median(v):.4f})")
    ax.axvspan(lo, hi, color="0.85", zorder=0, label="Eq. 14 band")
    ax.set_xlabel("NRMSE")
    ax.set_ylabel("density")
    ax.set_title("Fig. 6: NRMSE over random affine motions (alignment 'exact')")
    ax.legend(fontsize=7)
    save(fig, path)


# --------------------------------------------------------------------------- verdicts


def _nearest(xs: np.ndarray, ys: np.ndarray, x: float) -> float | None:
    i = int(np.abs(xs - x).argmin())
    return float(ys[i]) if abs(xs[i] - x) < 1e-6 else None


def translation_dips(rows: list[dict]) -> dict[tuple, dict]:
    """Per layer: NRMSE at non-zero multiples of the stride against half a stride beside them."""
    out = {}
    for k, rs in group(rows, alignment="exact").items():
        stride = rs[0]["stride"]
        ratios, ok, checked = [], True, 0
        for p in ("tx", "ty"):
            pts = sorted((r["value"], r["nrmse"]) for r in rs if r["transform"] == p)
            if not pts:
                continue
            xs, ys = np.array([a for a, _ in pts]), np.array([b for _, b in pts])
            m = stride
            while m <= xs.max() + 1e-9:
                for x in (m, -m):
                    at = _nearest(xs, ys, x)
                    side = [_nearest(xs, ys, x + d) for d in (-stride / 2, stride / 2)]
                    side = [s for s in side if s is not None]
                    if at is None or not side:
                        continue
                    checked += 1
                    ratios.append(at / min(side))
                    ok &= at < min(side)
                m += stride
        out[k] = {"checked": checked, "holds": bool(ok and checked > 0), "median_ratio": float(np.median(ratios)) if ratios else float("nan")}
    return out


def identity_error(rows: list[dict]) -> float:
    vals = [r["nrmse"] for r in rows if r["transform"] in ("tx", "ty", "rot", "shx", "shy") and r["value"] == 0] + [
        r["nrmse"] for r in rows if r["transform"] in ("sx", "sy") and abs(r["value"] - 1) < 1e-12
    ]
    return float(max(vals)) if vals else float("nan")


def _claim(claim: str, holds: bool, numbers: str) -> dict:
    return {"claim": claim, "holds": bool(holds), "numbers": numbers}


def _eq14_claim() -> dict:
    eq14 = (nrmse_from_psnr(41.0), nrmse_from_psnr(27.0))
    return _claim("Eq. 14 maps HEVC's 27-41 dB to NRMSE 0.009-0.044", round(eq14[0], 3) == 0.009 and round(eq14[1], 3) == 0.044, f"41 dB -> {eq14[0]:.4f}, 27 dB -> {eq14[1]:.4f}")


def _identity_claim(rows: list[dict]) -> dict:
    ident = identity_error(rows)
    return _claim("Zero motion is predicted exactly (sanity)", ident < 1e-6, f"largest NRMSE at the identity: {ident:.2e}")


def _section2_claims(theory_rows: list) -> list[dict]:
    """Operations that keep the velocity, and the limit of decimation without a pre-filter."""
    sec2 = [r for r in theory_rows if "decimation" not in r.operation]
    bad = [r for r in sec2 if r.rel_error > 0.05]
    numbers = f"{len(sec2) - len(bad)}/{len(sec2)} operations within 5 % of the predicted velocity (largest error {max(r.rel_error for r in sec2):.1%})"
    if bad:
        numbers += "; off: " + ", ".join(f"{r.operation} ({r.parameter}) {r.rel_error:.1%}" for r in bad)
    out = [_claim("Sec. 2: convolution, pointwise nonlinearities, local maximum preserve v; scale change gives v/s", not bad, numbers)]
    dec = [r for r in theory_rows if "decimation" in r.operation]
    if dec:
        out.append(
            _claim(
                "Sec. 2 (limit): without a pre-filter, decimation keeps v/s only for content well below the coarse Nyquist rate",
                dec[0].rel_error < 0.05 and dec[-1].rel_error > 0.5,
                "; ".join(f"{r.parameter.split('= ')[-1]}x Nyquist: error {r.rel_error:.0%}" for r in dec),
            )
        )
    return out


def _dips_claim(rows: list[dict]) -> dict:
    dips = translation_dips(rows)
    held = [k for k, d in dips.items() if d["holds"]]
    checked = [k for k, d in dips.items() if d["checked"]]
    return _claim(
        "Fig. 5: translation NRMSE has local minima at multiples of the stride (Eq. 12 exact there)",
        bool(checked) and len(held) == len(checked),
        f"{len(held)}/{len(checked)} layers; median NRMSE ratio multiple / half-stride neighbour: " + ", ".join(f"{short(k)} {dips[k]['median_ratio']:.2f}" for k in checked),
    )


def _band_claim(summary: dict) -> dict:
    """Fig. 5: the largest NRMSE of each layer over the swept (non-affine) motions."""
    _, hi = hevc_band()
    per_layer = []
    for e in summary["layers"]:
        mx = max((t["exact"]["max"] for n, t in e["transforms"].items() if n != "affine" and "exact" in t and t["exact"].get("n")), default=float("nan"))
        per_layer.append((short((e["model"], e["weights"], e["layer"])), mx))
    return _claim(
        f"Fig. 5: NRMSE stays at or below about 0.04 (band top {hi:.3f}) over the plotted parameter ranges",
        all(m <= hi for _, m in per_layer),
        "largest NRMSE per layer: " + ", ".join(f"{n} {m:.4f}" for n, m in per_layer),
    )


def _affine_claim(summary: dict) -> dict:
    _, hi = hevc_band()
    aff = [(short((e["model"], e["weights"], e["layer"])), e["transforms"]["affine"]["exact"]) for e in summary["layers"] if "affine" in e["transforms"]]
    return _claim(
        "Fig. 6: under random affine motion the Eq. 12 prediction is as accurate as video-coding motion models (median NRMSE within the Eq. 14 band)",
        bool(aff) and all(s["median"] <= hi for _, s in aff),
        ", ".join(f"{n} median {s['median']:.4f}, {s['share_at_or_below_band_top']:.0%} <= {hi:.3f}" for n, s in aff),
    )


def verdicts(rows: list[dict], summary: dict, theory_rows: list, flow: dict | None) -> list[dict]:
    """Each claim of the paper: ``{"claim", "holds", "numbers"}``, in the report's order."""
    out = [_eq14_claim(), _identity_claim(rows), *_section2_claims(theory_rows), _dips_claim(rows), _band_claim(summary), _affine_claim(summary)]
    if flow:
        out.append(_claim("Fig. 2: block matching in feature channels finds the input motion divided by the stride", flow["holds"], flow["numbers"]))
    return out


def alignment_table(summary: dict) -> list[tuple]:
    """Median NRMSE, exact vs paper alignment, per layer and transform group."""
    out = []
    for e in summary["layers"]:
        for t in ("tx", "rot", "sx", "shx", "affine"):
            s = e["transforms"].get(t, {})
            if "exact" in s and "paper" in s and s["exact"].get("n"):
                out.append((short((e["model"], e["weights"], e["layer"])), t, s["exact"]["median"], s["paper"]["median"]))
    return out


def trained_vs_random(summary: dict) -> list[tuple]:
    """Same model and layer with trained and random weights: median NRMSE per transform."""
    by = defaultdict(dict)
    for e in summary["layers"]:
        trained = e["weights"].startswith(("imagenet", "file"))
        by[(e["model"], e["layer"])]["trained" if trained else "random"] = e
    out = []
    for (m, layer), d in sorted(by.items()):
        if "trained" in d and "random" in d:
            for t in ("tx", "rot", "sx", "shx", "affine"):
                a = d["trained"]["transforms"].get(t, {}).get("exact", {})
                b = d["random"]["transforms"].get(t, {}).get("exact", {})
                if a.get("n") and b.get("n"):
                    out.append((m, layer, t, a["median"], b["median"]))
    return out


def md_table(header: tuple, rows: list[tuple]) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
