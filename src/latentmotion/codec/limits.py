"""Which quantisation steps make sense for a given tensor, checked before encoding.

A codec maps values to integer levels ``round(x / step)`` and can represent
levels up to some ``max_level`` in magnitude; its header stores ``step`` as
float32. A step is accepted when

* its float32 value (the header stores it so) lies in the header's range
  ``2^-100 .. 2^100``;
* ``max|x| / step <= max_level``: no level is clipped (a smaller step would
  silently distort the largest values);
* ``step <= 2 * max|x|``: not every value rounds to zero (a larger step codes
  nothing).

The codec passes its own ``max_level``.

Example:
    >>> import torch
    >>> x = torch.tensor([[-3.0, 5.0]])
    >>> check_step(1.0, x, max_level=1000)
    1.0
    >>> check_step(1e-30, x, max_level=1000)
    Traceback (most recent call last):
    ...
    latentmotion.errors.InputError: step 1e-30 is too small for values up to 5: levels would exceed 1000 and be clipped; use a step of at least 0.00500001
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from .bitstream import step_problem

__all__ = ["check_step", "shown_bound", "step_range"]


def step_range(values: torch.Tensor, max_level: int) -> tuple[float, float]:
    """(smallest, largest) useful step for ``values`` (see the module docstring)."""
    peak = float(values.detach().abs().max()) if values.numel() else 0.0
    return peak / max_level, 2 * peak


def shown_bound(v: float, up: bool) -> str:
    """``v`` in 6 significant digits, rounded away from the forbidden side (``up``: a least step) and so that the
    header's float32 of the printed number still lies on the allowed side: a user who types it is accepted.

    Example:
        >>> shown_bound(0.001105525, up=True), shown_bound(0.001105525, up=False)
        ('0.00110553', '0.00110552')
    """
    if not (math.isfinite(v) and v > 0):
        return f"{v:g}"
    unit = 10.0 ** (math.floor(math.log10(v)) - 5)
    s = (math.ceil if up else math.floor)(v / unit) * unit
    while (float(np.float32(s)) < v) if up else (float(np.float32(s)) > v):
        s += unit if up else -unit
    return f"{s:.6g}"


def check_step(step: float, values: torch.Tensor | None = None, max_level: int | None = None) -> float:
    """Return ``step`` if it suits ``values`` (the tensors to code); else :class:`InputError`.

    Without ``values`` only the number itself is checked (finite, and as a
    float32 within the header's range), so a command can refuse it before
    any work; with ``values``, ``max_level`` (the codec's largest level) is needed.
    """
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise InputError(f"step must be a finite positive number, got {step}")
    if problem := step_problem(step):
        raise InputError(problem)
    if values is None:
        return step
    if max_level is None or max_level < 1:
        raise ValueError("check_step needs the codec's max_level (a positive integer) with values")
    if not torch.isfinite(values).all():
        raise InputError("the tensor to code holds NaN or infinite values")
    lo, hi = step_range(values, max_level)
    if step < lo:
        raise InputError(f"step {step:g} is too small for values up to {hi / 2:g}: levels would exceed {max_level} and be clipped; use a step of at least {shown_bound(lo, True)}")
    if step > hi:
        raise InputError(f"step {step:g} is larger than twice the largest value {hi / 2:g}: every value would round to zero; use a step of at most {shown_bound(hi, False)}")
    return step
