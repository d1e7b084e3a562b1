"""Error measures of the paper: NRMSE (Eq. 13) and its PSNR mapping (Eq. 14)."""

from __future__ import annotations

import math

import torch

from .errors import InputError

__all__ = ["HEVC_PSNR_RANGE_DB", "hevc_band", "kl_divergence", "nrmse", "nrmse_from_psnr", "psnr", "psnr_from_nrmse", "task_db"]

#: PSNR range of HEVC's motion-compensated prediction quoted by the paper ([20], Table III).
HEVC_PSNR_RANGE_DB = (27.0, 41.0)


def nrmse(pred: torch.Tensor, actual: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised RMSE per sample (Eq. 13).

    ``sqrt(mean over valid elements of (pred - actual)^2) / R`` with
    ``R = max - min`` of the whole actual tensor of that sample (all channels,
    mask ignored), as in the original code.

    Args:
        pred, actual: (N, ...) tensors of one shape; dim 0 is the sample.
        mask: bool tensor broadcastable to them; ``True`` = counted.

    Returns:
        (N,) float64. NaN where a sample has no valid element; inf where R = 0
        and the error is non-zero.

    Example:
        >>> nrmse(torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 4.0]]))
        tensor([0.3536], dtype=torch.float64)
    """
    if pred.shape != actual.shape:
        raise InputError(f"pred and actual differ in shape: {tuple(pred.shape)} vs {tuple(actual.shape)}")
    n = pred.shape[0]
    dims = tuple(range(1, pred.dim()))
    diff = pred - actual
    if mask is None:
        total = diff.reshape(n, -1).square().sum(1).to(torch.float64)
        cnt = torch.full((n,), diff[0].numel(), dtype=torch.float64, device=diff.device)
    else:
        mask = mask.to(torch.bool)
        if pred.dim() == 4 and mask.dim() == 4 and mask.shape[0] == n and mask.shape[1] == 1:
            # (N, 1, H, W) masks: sum squares over channels first (one fused pass), then mask pixels
            per_pixel = diff.square_().sum(1)
            total = (per_pixel * mask[:, 0]).sum((1, 2)).to(torch.float64)
            cnt = mask.sum(dims).to(torch.float64) * pred.shape[1]
        else:
            sq = diff.square()
            total = torch.where(mask, sq, torch.zeros((), dtype=sq.dtype, device=sq.device)).sum(dims).to(torch.float64)
            cnt = torch.broadcast_to(mask, pred.shape).sum(dims).to(torch.float64)
    mse = total / cnt
    flat = actual.reshape(n, -1)
    rng = (flat.amax(1) - flat.amin(1)).to(torch.float64)
    return torch.sqrt(mse) / rng


def psnr(pred: torch.Tensor, actual: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio per sample with peak = dynamic range R: ``-20 log10(NRMSE)``."""
    return -20 * torch.log10(nrmse(pred, actual, mask))


def nrmse_from_psnr(psnr_db: float | torch.Tensor) -> float | torch.Tensor:
    """Eq. 14: ``NRMSE = sqrt(255^2 / 10^(PSNR/10)) / 256`` (27 dB -> 0.0445, 41 dB -> 0.0089)."""
    if isinstance(psnr_db, torch.Tensor):
        return torch.sqrt(255.0**2 / 10 ** (psnr_db / 10)) / 256
    return math.sqrt(255.0**2 / 10 ** (psnr_db / 10)) / 256


def psnr_from_nrmse(value: float | torch.Tensor) -> float | torch.Tensor:
    """Inverse of Eq. 14: ``PSNR = 10 log10(255^2 / (256 NRMSE)^2)``."""
    if isinstance(value, torch.Tensor):
        return 10 * torch.log10(255.0**2 / (256 * value) ** 2)
    if value <= 0:
        raise InputError(f"NRMSE must be positive, got {value}")
    return 10 * math.log10(255.0**2 / (256 * value) ** 2)


def hevc_band() -> tuple[float, float]:
    """NRMSE band (low, high) typical of video-coding motion models, from Eq. 14."""
    lo_db, hi_db = HEVC_PSNR_RANGE_DB
    return (float(nrmse_from_psnr(hi_db)), float(nrmse_from_psnr(lo_db)))


def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL divergence of the softmax of ``logits`` from that of ``ref_logits``, per sample, in nats.

    ``KL(p || q) = sum_k p_k (log p_k - log q_k)`` with ``p = softmax(ref_logits)``
    (the uncompressed cloud output) and ``q = softmax(logits)`` (after coding),
    computed in float64 from log-softmax so tiny probabilities stay exact.
    A smooth task measure: unlike top-1 agreement it does not jump when two
    near-tied classes swap. ``task_db = -10 log10(KL)`` is its decibel form.

    Args:
        ref_logits, logits: (N, K) class scores of one shape.

    Returns:
        (N,) float64, >= 0; 0 where the two distributions are equal.

    Example:
        >>> kl_divergence(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]]))
        tensor([0.], dtype=torch.float64)
        >>> round(float(kl_divergence(torch.tensor([[0.0, 0.0]]), torch.log(torch.tensor([[0.25, 0.75]])))), 6)  # 0.5 ln 2 + 0.5 ln(2/3)
        0.143841
    """
    if ref_logits.shape != logits.shape or ref_logits.dim() != 2:
        raise InputError(f"logits must be (N, K) of one shape, got {tuple(ref_logits.shape)} and {tuple(logits.shape)}")
    lp = torch.log_softmax(ref_logits.to(torch.float64), 1)
    lq = torch.log_softmax(logits.to(torch.float64), 1)
    return (lp.exp() * (lp - lq)).sum(1).clamp_min(0)


def task_db(kl: float) -> float:
    """Task fidelity in decibels, ``-10 log10 KL`` of a mean KL divergence (KL floored at 1e-30: 300 dB).

    Example:
        >>> task_db(0.01), task_db(0.0)
        (20.0, 300.0)
    """
    return -10 * math.log10(max(kl, 1e-30))
