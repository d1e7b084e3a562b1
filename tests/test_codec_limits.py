"""latentmotion.codec.limits: steps checked against the tensor's range before coding."""

from __future__ import annotations

import math

import pytest
import torch

from latentmotion.codec import Encoder, decode_stream, encode_sequence
from latentmotion.codec.core import MAX_Q
from latentmotion.codec.limits import check_step, step_range
from latentmotion.errors import InputError


@pytest.mark.parametrize("step,needle", [(1e39, "float32"), (1e-50, "float32"), (0.0, "positive"), (-1.0, "positive"), (math.nan, "positive"), (math.inf, "positive")])
def test_numbers_that_no_stream_can_hold(step, needle):
    with pytest.raises(InputError, match=needle):
        check_step(step)


def test_bounds_follow_the_level_range_and_the_peak():
    x = torch.tensor([[[-3.0, 5.0], [0.5, 1.0]]])
    lo, hi = step_range(x, 100)
    assert lo == pytest.approx(5 / 100) and hi == 10.0
    assert check_step(lo * 1.001, x, 100) and check_step(hi, x, 100)
    assert abs(round(5 / (lo * 1.001))) <= 100  # the largest level fits
    with pytest.raises(InputError, match="too small"):
        check_step(lo * 0.999, x, 100)
    with pytest.raises(InputError, match="round to zero"):
        check_step(hi * 1.001, x, 100)
    assert round(5 / (hi * 1.001)) == 0  # what the refusal prevents
    with pytest.raises(ValueError):
        check_step(1.0, x)


def test_an_accepted_step_at_the_bound_codes_without_clipping():
    """At the smallest accepted step, plain rounding decodes every value within step / 2: nothing is clipped."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(4, 8, 8, generator=g) * 3 for _ in range(3)]
    # the largest level the coder takes is MAX_Q; residuals about a prediction span twice the values
    lo, _ = step_range(torch.stack(xs), MAX_Q // 2)
    step = check_step(lo * 1.01, torch.stack(xs), MAX_Q // 2)
    enc = Encoder((4, 8, 8), step, "zero", rdoq=0.0)  # plain rounding: RDOQ may trade error for bits
    _, out = decode_stream(encode_sequence(xs, enc))
    err = max(float((a - b).abs().max()) for a, b in zip(out, xs, strict=True))
    assert err <= step / 2 * 1.001


def test_nan_tensor_is_refused():
    with pytest.raises(InputError, match="NaN"):
        check_step(1.0, torch.tensor([1.0, math.nan]), 100)


def test_the_encoder_refuses_levels_it_would_clip():
    """Below the bound the encoder itself refuses: nothing is silently clipped."""
    from latentmotion.codec.core import MAX_Q

    x = torch.full((1, 4, 4), 3.0)
    with pytest.raises(InputError, match="too small"):
        Encoder((1, 4, 4), 3.0 / (MAX_Q // 2) / 1.01, "zero").encode(x)
