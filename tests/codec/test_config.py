"""The settings: one set of defaults, flat keywords routed to their part, limits checked from the bitstream's."""

from __future__ import annotations

import pytest

from latentmotion.codec import Encoder, MotionTools, ResidualTools, StreamId, Tools
from latentmotion.codec.bitstream import MAX_BLOCK, MAX_PERIOD
from latentmotion.errors import InputError


def test_flat_keywords_round_trip_and_defaults_are_the_dataclasses():
    t = Tools.of(mode="zero", block=8, rdoq=0.0)
    assert t.motion == MotionTools(mode="zero") and t.residual == ResidualTools(block=8, rdoq=0.0)
    assert Tools.of(**t.flat()) == t and Tools() == Tools.of()


@pytest.mark.parametrize("kw, message", [
    ({"mode": "global"}, "unknown motion mode"),
    ({"subpel": 2}, "subpel"),
    ({"block": MAX_BLOCK + 1}, "block and mblock"),
    ({"mblock": 0}, "block and mblock"),
    ({"search": -1}, "search"),
    ({"intra_period": MAX_PERIOD + 1}, "intra period"),
    ({"colour": 1}, "unknown coding setting"),
])
def test_settings_a_header_cannot_hold_are_refused(kw, message):
    with pytest.raises(InputError, match=message):
        Tools.of(**kw)


def test_from_split_takes_the_cut_and_its_grid():
    import torch

    import latentmotion as lm

    split = lm.split_model(lm.load_model("efficientnet_lite0"), "_blocks.4.add")
    feats = torch.zeros(2, 40, 28, 28)
    enc = Encoder.from_split(split, feats, 1.0, Tools.of(mode="input"), StreamId("efficientnet_lite0", weights="w", fps=30.0))
    h = enc.header
    assert (h.model, h.layer, h.weights, h.shape, h.fps) == ("efficientnet_lite0", "_blocks.4.add", "w", (40, 28, 28), 30.0)
    assert (enc.ctx.stride, enc.ctx.offset) == (split.stride, split.offset)
