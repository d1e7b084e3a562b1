"""Section 2 checks: do CNN operations preserve optical flow (Eqs. 2-12)?

Signals with known motion ``v`` are built analytically (band-limited sums of
sinusoids, so a moved frame is exact, not interpolated). Each operation is
applied to two frames ``t0 +- dt``; the optical-flow residual
``J_x v' + J_t`` is evaluated for candidate velocities and the velocity is
estimated by least squares, ``v' = -sum(J_x J_t) / sum(J_x^2)`` (2-D: the 2x2
normal equations). The prediction is ``v`` for convolutions, pointwise
nonlinearities and local maxima, and ``v / s`` for a scale change by ``s``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .plotting import pyplot, save

__all__ = ["FlowCheck", "checks_1d", "checks_2d", "figure", "taylor_max_error"]

DX = 0.05  # grid step of the fine 1-D signal
DT = 1e-3  # half time step of the central time difference


@dataclass(frozen=True)
class FlowCheck:
    """One row of the Section 2 table."""

    dim: str  # "1-D" or "2-D"
    operation: str
    parameter: str
    v_true: float
    v_predicted: float
    v_estimated: float
    rel_error: float
    argmin_candidate: float
    degenerate_share: float  # share of positions where the equation says nothing (J_x ~ 0)

    def as_dict(self) -> dict:
        return asdict(self)


def _signal_1d(rng: np.random.Generator, fmax: float, n_terms: int = 24) -> Callable[[np.ndarray], np.ndarray]:
    freqs = rng.uniform(0.2 * fmax, fmax, n_terms)
    amps = rng.normal(0, 1, n_terms) / np.sqrt(n_terms)
    phases = rng.uniform(0, 2 * np.pi, n_terms)
    return lambda x: (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * x[None] + phases[:, None])).sum(0)


def _estimate_1d(j0: np.ndarray, j1: np.ndarray, dx: float, candidates: np.ndarray) -> tuple[float, float, float]:
    jt = (j1 - j0) / (2 * DT)
    jx = np.gradient((j0 + j1) / 2, dx)
    inner = slice(80, -80)  # away from the ends, where zero padding is not shift-equivariant
    jt, jx = jt[inner], jx[inner]
    denom = float((jx**2).sum())
    v_est = -float((jx * jt).sum()) / denom if denom > 0 else float("nan")
    resid = ((jx[None] * candidates[:, None] + jt[None]) ** 2).mean(1)
    degenerate = float((np.abs(jx) < 1e-6 * (np.abs(jx).max() + 1e-30)).mean())
    return v_est, float(candidates[int(resid.argmin())]), degenerate


def _row(dim, op, param, v, v_pred, est) -> FlowCheck:
    v_est, arg, deg = est
    return FlowCheck(dim, op, param, v, v_pred, v_est, abs(v_est - v_pred) / abs(v_pred), arg, deg)


def checks_1d(seed: int = 0, v: float = 1.3) -> list[FlowCheck]:
    """1-D+t experiments for every operation of Section 2."""
    rng = np.random.default_rng(seed)
    f = _signal_1d(rng, fmax=0.25)
    x = np.arange(0, 200, DX)
    f0, f1 = f(x + v * DT), f(x - v * DT)  # I(x, t) = f(x - v t) at t = -dt, +dt
    cands = np.linspace(-2 * v, 3 * v, 2001)
    rows: list[FlowCheck] = []
    rows.append(_row("1-D", "identity", "-", v, v, _estimate_1d(f0, f1, DX, cands)))
    kr = rng.normal(0, 1, 41)
    rows.append(_row("1-D", "convolution", "random kernel, 41 taps", v, v, _estimate_1d(np.convolve(f0, kr, "same"), np.convolve(f1, kr, "same"), DX, cands)))
    kg = np.exp(-0.5 * (np.arange(-60, 61) * DX / 1.0) ** 2)
    rows.append(_row("1-D", "convolution", "Gaussian, sigma 1", v, v, _estimate_1d(np.convolve(f0, kg / kg.sum(), "same"), np.convolve(f1, kg / kg.sum(), "same"), DX, cands)))
    acts = {
        "ReLU": lambda a: np.maximum(a, 0),
        "ReLU, bias -1.0 (dead zones)": lambda a: np.maximum(a - 1.0, 0),
        "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
        "ReLU6 of 6x": lambda a: np.clip(6 * a, 0, 6),
        "SiLU": lambda a: a / (1 + np.exp(-a)),
    }
    for name, fn in acts.items():
        rows.append(_row("1-D", "pointwise", name, v, v, _estimate_1d(fn(f0), fn(f1), DX, cands)))
    for h in (0.25, 1.0, 2.5, 5.0):
        size = 2 * int(round(h / DX)) + 1
        m0, m1 = ndimage.maximum_filter1d(f0, size), ndimage.maximum_filter1d(f1, size)
        rows.append(_row("1-D", "local maximum", f"window 2h, h = {h:g}", v, v, _estimate_1d(m0, m1, DX, cands)))
    for s in (2, 4, 8):
        xs = np.arange(0, 200 / s, DX)
        rows.append(_row("1-D", "scale change", f"s = {s}", v, v / s, _estimate_1d(f(s * xs + v * DT), f(s * xs - v * DT), DX, cands / s)))
    # Discrete grids: the next layer samples every s-th pixel (pixel = 1 unit)
    # without a pre-filter. Once the signal's top frequency nears the coarse
    # Nyquist rate 1 / (2 s), finite differences fail; beyond it, aliasing.
    s = 4
    xc = np.arange(0, 2000, s)
    for ratio in (0.1, 0.25, 0.5, 0.9, 1.8):
        g = _signal_1d(np.random.default_rng(seed + 1), fmax=ratio / (2 * s))
        est = _estimate_1d(g(xc + v * DT), g(xc - v * DT), 1.0, cands / s)
        rows.append(_row("1-D", "decimation by 4 (no pre-filter)", f"fmax / coarse Nyquist = {ratio:g}", v, v / s, est))
    return rows


def taylor_max_error(seed: int = 0, hs: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)) -> list[dict]:
    """Eq. 8 (first-order Taylor model of the local maximum) against the true maximum.

    Error is relative to the signal's standard deviation, per half-window h.
    """
    f = _signal_1d(np.random.default_rng(seed), fmax=0.25)
    x = np.arange(0, 200, DX)
    fx = f(x)
    d = np.gradient(fx, DX)
    out = []
    for h in hs:
        size = 2 * int(round(h / DX)) + 1
        true = ndimage.maximum_filter1d(fx, size)
        approx = fx + np.abs(d) * h
        inner = slice(size, -size)
        err = np.abs(approx - true)[inner]
        out.append({"h": h, "mean_abs_error": float(err.mean() / fx.std()), "p95_abs_error": float(np.quantile(err, 0.95) / fx.std())})
    return out


def _signal_2d(rng: np.random.Generator, fmax: float, n_terms: int = 32):
    fxy = rng.uniform(-fmax, fmax, (n_terms, 2))
    amps = rng.normal(0, 1, n_terms) / np.sqrt(n_terms)
    ph = rng.uniform(0, 2 * np.pi, n_terms)

    def f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * (fxy[:, 0, None, None] * x[None] + fxy[:, 1, None, None] * y[None]) + ph[:, None, None]
        return (amps[:, None, None] * np.sin(arg)).sum(0)

    return f


def _estimate_2d(j0: torch.Tensor, j1: torch.Tensor, step: float) -> tuple[float, float]:
    a0, a1 = j0.double().numpy(), j1.double().numpy()
    jt = (a1 - a0) / (2 * DT)
    jy, jx = np.gradient((a0 + a1) / 2, step, axis=(-2, -1))
    sl = (slice(None),) * (jt.ndim - 2) + (slice(12, -12), slice(12, -12))  # away from padded borders
    jt, jx, jy = jt[sl], jx[sl], jy[sl]
    a = np.array([[np.sum(jx * jx), np.sum(jx * jy)], [np.sum(jx * jy), np.sum(jy * jy)]])
    b = -np.array([np.sum(jx * jt), np.sum(jy * jt)])
    vx, vy = np.linalg.solve(a, b)
    return float(vx), float(vy)


def checks_2d(seed: int = 0, v: tuple[float, float] = (0.9, -0.6)) -> list[FlowCheck]:
    """2-D+t experiments with the operations real CNNs use (torch ops, 4-channel random conv)."""
    rng = np.random.default_rng(seed)
    f = _signal_2d(rng, fmax=0.08)
    step = 0.25
    ys, xs = np.meshgrid(np.arange(0, 64, step), np.arange(0, 64, step), indexing="ij")

    def frames(scale: float = 1.0):
        return [torch.from_numpy(f(scale * xs - sgn * v[0] * DT, scale * ys - sgn * v[1] * DT))[None, None].float() for sgn in (-1, 1)]

    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 1, 9, 9, generator=gen)
    ops: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]] = {
        "identity": (lambda a: a, 1),
        "conv 9x9 (random, 4 channels)": (lambda a: F.conv2d(a, w, padding=4), 1),
        "conv + ReLU": (lambda a: F.relu(F.conv2d(a, w, padding=4)), 1),
        "conv + SiLU": (lambda a: F.silu(F.conv2d(a, w, padding=4)), 1),
        "max filter 3x3 (stride 1)": (lambda a: F.max_pool2d(a, 3, 1, 1), 1),
        "max pool 2x2 / 2": (lambda a: F.max_pool2d(a, 2, 2), 2),
        "avg pool 2x2 / 2": (lambda a: F.avg_pool2d(a, 2, 2), 2),
        "conv 3x3 / 2 (strided)": (lambda a: F.conv2d(a, w[:, :, 3:6, 3:6], stride=2, padding=1), 2),
    }
    rows = []
    with torch.no_grad():
        f0, f1 = frames()
        for name, (op, s) in ops.items():
            # velocities in pixels of each grid: v / step before, v / (step s) after
            vx, vy = _estimate_2d(op(f0), op(f1), 1.0)
            vpx, vpy = v[0] / step / s, v[1] / step / s
            err = float(np.hypot(vx - vpx, vy - vpy) / np.hypot(vpx, vpy))
            rows.append(FlowCheck("2-D", name, f"v = ({v[0] / step:g}, {v[1] / step:g}) px; speeds shown", float(np.hypot(*v)) / step, float(np.hypot(vpx, vpy)), float(np.hypot(vx, vy)), err, float("nan"), float("nan")))
    return rows


def figure(rows: list[FlowCheck], taylor: list[dict], path, seed: int = 0) -> None:
    """Residual curves per operation, Eq. 8 error against h, estimated vs predicted v'."""
    plt = pyplot()

    rng = np.random.default_rng(seed)
    f = _signal_1d(rng, fmax=0.25)
    x = np.arange(0, 200, DX)
    v = 1.3
    f0, f1 = f(x + v * DT), f(x - v * DT)
    cands = np.linspace(-1, 3.5, 401)
    fig, axes = plt.subplots(1, 3, figsize=(17, 6), gridspec_kw={"width_ratios": [1, 1, 1.4]})
    ops = {
        "identity": lambda a: a,
        "ReLU": lambda a: np.maximum(a, 0),
        "ReLU, bias -1": lambda a: np.maximum(a - 1, 0),
        "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
        "max, h=1": lambda a: ndimage.maximum_filter1d(a, 41),
        "max, h=5": lambda a: ndimage.maximum_filter1d(a, 201),
    }
    for name, op in ops.items():
        j0, j1 = op(f0), op(f1)
        jt = (j1 - j0) / (2 * DT)
        jx = np.gradient((j0 + j1) / 2, DX)
        r = ((jx[None] * cands[:, None] + jt[None]) ** 2).mean(1)
        axes[0].plot(cands, r / r.max(), label=name)
    axes[0].axvline(v, color="k", ls="--", lw=1, label=f"input v = {v}")
    axes[0].set_xlabel("candidate velocity v'")
    axes[0].set_ylabel("mean optical-flow residual (normalised, log)")
    axes[0].set_yscale("log")
    axes[0].set_title("Residual of Eq. (2)-(10) after each operation")
    axes[0].legend(fontsize=7)
    hs = [t["h"] for t in taylor]
    axes[1].loglog(hs, [t["mean_abs_error"] for t in taylor], "o-", label="mean")
    axes[1].loglog(hs, [t["p95_abs_error"] for t in taylor], "s--", label="95th percentile")
    axes[1].set_xlabel("half window h")
    axes[1].set_ylabel("|Eq. 8 - true max| / std(I)")
    axes[1].set_title("Taylor model of the local maximum (Eq. 8)")
    axes[1].legend(fontsize=7)
    labels = [f"{r.dim} {r.operation}: {r.parameter.split(';')[0]}" for r in rows]
    ratio = [r.v_estimated / r.v_predicted for r in rows]
    axes[2].barh(range(len(rows)), ratio, color=["tab:red" if abs(q - 1) > 0.05 else "tab:green" for q in ratio])
    axes[2].axvline(1, color="k", lw=1)
    axes[2].set_yticks(range(len(rows)))
    axes[2].set_yticklabels(labels, fontsize=6.5)
    axes[2].invert_yaxis()
    axes[2].set_xlabel("estimated v' / predicted v'  (green: within 5 %)")
    axes[2].set_title("Least-squares velocity after each operation")
    save(fig, path)
