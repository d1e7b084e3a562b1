"""Which quantisation steps make sense for a given tensor, checked before encoding.

The codec quantises ``q = round(r / step)`` and clips ``q`` to
``[-MAX_SYMBOL, MAX_SYMBOL]``, where ``r`` is a residual: the tensor minus a
prediction or minus a channel mean, so ``|r| <= 2 * max|x|``. The header
stores ``step`` as float32. A step is accepted when

* it is a finite positive number whose float32 value is finite and non-zero;
* ``2 * max|x| / step <= MAX_SYMBOL``: no residual is clipped (a smaller
  step would silently distort the largest values);
* ``step <= 2 * max|x|``: not every residual rounds to zero (a larger step
  codes nothing).

Example:
    >>> import torch
    >>> x = torch.tensor([[-3.0, 5.0]])
    >>> check_step(1.0, x)
    1.0
    >>> check_step(1e-30, x)
    Traceback (most recent call last):
    ...
    latentmotion.errors.InputError: step 1e-30 is too small for values up to 5: residuals would exceed 32767 steps and be clipped; use a step of at least 0.000305185
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from .entropy import MAX_SYMBOL

__all__ = ["check_step", "step_range"]


def step_range(values: torch.Tensor) -> tuple[float, float]:
    """(smallest, largest) useful step for ``values`` (see the module docstring)."""
    peak = float(values.detach().abs().max()) if values.numel() else 0.0
    return 2 * peak / MAX_SYMBOL, 2 * peak


def check_step(step: float, values: torch.Tensor | None = None) -> float:
    """Return ``step`` if it suits ``values`` (any tensor of the sequence to code); else :class:`InputError`.

    Without ``values`` only the number itself is checked (finite, positive,
    representable as a non-zero float32).
    """
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise InputError(f"step must be a finite positive number, got {step}")
    with np.errstate(over="ignore", under="ignore"):
        as32 = np.float32(step)
    if not (np.isfinite(as32) and as32 > 0):
        raise InputError(f"step {step:g} does not fit a float32 (the stream stores it so)")
    if values is None:
        return step
    if not torch.isfinite(values).all():
        raise InputError("the tensor to code holds NaN or infinite values")
    lo, hi = step_range(values)
    peak = hi / 2
    if step < lo:
        raise InputError(f"step {step:g} is too small for values up to {peak:g}: residuals would exceed {MAX_SYMBOL} steps and be clipped; use a step of at least {lo:g}")
    if step > hi:
        raise InputError(f"step {step:g} is larger than twice the largest value {peak:g}: every residual would round to zero; use a step of at most {hi:g}")
    return step
