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
from latentmotion.service.backends import LocalBackend, ModelCache, ServedModel, StreamError, load_cloud, probe_output
from latentmotion.service.batcher import Batcher

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


def test_a_shape_the_cloud_cannot_take_is_refused_with_nothing_on_stderr(capfd):
    """torch.fx prints twenty lines of its own when a traced line fails: a server's log must not carry them per Open."""
    nominal = tuple(features().shape[1:])
    for net in (split().cloud.eval(), ServedModel(split().cloud, nominal, trace=False)):
        why, out = probe_output(net, nominal, (nominal[0], 1, 1))
        assert out is None and "cannot take tensors of shape" in why
    assert capfd.readouterr().err == ""


def test_a_backend_traces_a_bounded_number_of_splits_and_serves_the_rest_eager():
    """TorchScript keeps what every trace compiles: Opens that churn the model cache must not trace without end, and
    a split prepared again takes its earlier graph instead of spending the budget."""
    eager = split().cloud.eval()
    x = features()[:3]
    nominal = tuple(x.shape[1:])
    loaded = []

    def load(m, layer, w):
        loaded.append(layer)
        return copy.deepcopy(eager), "fp", nominal

    async def main():
        backend = LocalBackend(Batcher(max_batch=4, max_wait=0.01), max_models=1, load=load, traces=2)
        return [await backend.open(MODEL, layer, "w") for layer in ("l0", "l1", "l0", "l1", "l2", "l0")]  # one slot: each Open evicts

    handles = asyncio.run(main())
    assert loaded == ["l0", "l1", "l0", "l1", "l2", "l0"]
    graphs = [h.net.graph for h in handles]
    assert graphs[0] is not None and graphs[1] is not None and graphs[0] is not graphs[1]
    assert graphs[2] is graphs[0] and graphs[3] is graphs[1] and graphs[5] is graphs[0]  # reused, not traced again
    assert graphs[4] is None  # a third split: the budget is spent, it runs eager
    with torch.no_grad():
        assert torch.allclose(handles[4].net(x), eager(x), atol=1e-5) and torch.allclose(handles[2].net(x), eager(x), atol=1e-4)


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


def test_model_cache_close_cancels_a_preparation_under_way():
    """A server stopping while an Open still loads its model: the Open is cancelled, close returns once the loading
    thread has ended (it cannot be stopped), the handle it made is closed, later Opens are refused, and no task is
    left pending when the loop ends."""
    started, release, closed = threading.Event(), threading.Event(), []

    class Handle:
        def close(self):
            closed.append(self)

    def make(m, layer, w):
        started.set()
        release.wait(5)
        return Handle()

    async def main():
        cache = ModelCache(make)
        opening = asyncio.ensure_future(cache.get("m", "l", "w"))
        await asyncio.to_thread(started.wait, 5)
        asyncio.get_running_loop().call_later(0.2, release.set)
        await cache.close()
        assert release.is_set() and len(closed) == 1  # close waited for the thread and closed its handle
        with pytest.raises(asyncio.CancelledError):
            await opening
        with pytest.raises(StreamError, match="shutting down"):
            await cache.get("m", "l2", "w")
        return len(cache), [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(main()) == (0, [])
