"""The served cloud sub-model: same answers as the eager one, fallback when tracing would change them; preparation is bounded."""

from __future__ import annotations

import asyncio
import copy
import threading
import time

import grpc
import pytest
import torch
from torch import nn

import latentmotion.models as models
from latentmotion.service.backends import ModelCache, ServedModel, StreamError, load_cloud

from .conftest import LAYER, MODEL, features, split


def test_served_model_matches_the_eager_cloud_on_real_features():
    eager = split().cloud.eval()
    x = features()[:6]
    served = ServedModel(copy.deepcopy(eager), tuple(x.shape[1:]))
    assert served.graph is not None  # the nominal shape takes the frozen graph
    with torch.no_grad():
        ref, out = eager(x), served(x)
        assert torch.allclose(out, ref, atol=1e-4)
        assert (out.topk(5).indices == ref.topk(5).indices).all()
        # another grid size runs the eager path, with the same answers as the eager module
        small = x[:, :, :20, :20]
        assert torch.allclose(served(small), eager(small), atol=1e-5)


class _BatchBaked(nn.Module):
    """Multiplies by the batch size read as a Python int: a trace bakes in the traced batch."""

    def forward(self, x):
        return x.flatten(1) * int(x.shape[0])


def test_served_model_falls_back_when_tracing_changes_the_output():
    served = ServedModel(_BatchBaked(), (2, 3, 3))
    assert served.graph is None
    x = torch.randn(4, 2, 3, 3)
    assert torch.equal(served(x), x.flatten(1) * 4)


def test_preparing_splits_loads_each_network_once_and_one_at_a_time(monkeypatch):
    loads = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    load_cloud(MODEL, LAYER, "imagenet")
    for i in range(20):  # a flood of unknown layers is refused by a lookup, not by loading the network again
        with pytest.raises(StreamError, match="unknown layer") as err:
            load_cloud(MODEL, f"_blocks.{40 + i}.add", "imagenet")
        assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert len(loads) <= 1

    running, most, made = [0], [0], []
    lock = threading.Lock()

    def make(m, layer, w):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        made.append(layer)
        return object()

    async def main():
        cache = ModelCache(make, max_models=8)
        return await asyncio.gather(*(cache.get("m", f"l{i % 4}", "w") for i in range(16)))

    handles = asyncio.run(main())
    assert most[0] == 1 and sorted(made) == ["l0", "l1", "l2", "l3"]  # one at a time, each key once
    assert handles[0] is handles[4] is handles[8]
