"""Where the cloud sub-model runs: in this process (default) or on Ray Serve.

A backend turns ``(model, layer, weights)`` into a :class:`CloudHandle` that
knows the weights fingerprint of the whole model and runs one decoded tensor at
a time for a stream's task (:mod:`latentmotion.tasks`; batching happens behind
it). Handles live in a bounded LRU
cache keyed by ``(model, layer, weights)``; preparing one (loading, cutting,
tracing, probing) runs on a thread so other streams keep flowing, one at a
time, and two streams asking for the same key share one preparation. The
last two whole networks are kept, so another layer of the same network is cut
without loading it again and an unknown layer is refused by a lookup.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import torch
from torch import nn

from ..errors import InputError, UnknownNameError, WeightsUnavailableError
from ..tasks import Task
from .batcher import Batcher, Prediction

__all__ = ["CloudHandle", "LocalBackend", "ModelCache", "ServedModel", "StreamError", "fit_problem", "load_cloud", "probe_output"]


class StreamError(Exception):
    """Ends one stream with a gRPC status; ``kind`` labels the error metric."""

    def __init__(self, code: grpc.StatusCode, kind: str, msg: str) -> None:
        super().__init__(msg)
        self.code, self.kind = code, kind


_PREPARE = threading.Lock()  # one split prepared at a time: a flood of Opens costs one core, not one per Open


@functools.lru_cache(maxsize=2)
def _network(model: str, weights: str) -> tuple[nn.Module, str]:
    """A whole network and its weights fingerprint, kept (guarded by ``_PREPARE``) so that other
    layers are cut without loading and tracing it again and an unknown layer costs a lookup.
    Nothing serves it: every split deep-copies what it uses."""
    from ..models import load_model, weights_fingerprint

    net = load_model(model, weights)
    return net, weights_fingerprint(net)


def load_cloud(model: str, layer: str, weights: str) -> tuple[nn.Module, str, tuple[int, int, int]]:
    """Cloud sub-model of ``model`` cut at ``layer``, the fingerprint of the whole model's weights,
    and the layer's tensor shape for a 224x224 input (the nominal shape)."""
    from ..models import split_model

    try:
        with _PREPARE:
            net, fingerprint = _network(model, weights)
            split = split_model(net, layer)
        return split.cloud.eval(), fingerprint, split.feature_shape()
    except UnknownNameError as exc:
        raise StreamError(grpc.StatusCode.NOT_FOUND, "unknown_model", str(exc)) from None
    except WeightsUnavailableError as exc:
        raise StreamError(grpc.StatusCode.FAILED_PRECONDITION, "weights_unavailable", str(exc)) from None
    except InputError as exc:
        raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "bad_layer", str(exc)) from None


TRACES = 8  # splits a LocalBackend traces in its life (LocalBackend says why)
_TRACING = threading.Lock()  # catch_warnings is process-wide: two loads tracing at once would undo each other's filter


class ServedModel(nn.Module):
    """A cloud sub-model prepared for serving; same outputs as ``net`` up to float rounding (~1e-5).

    Inputs go channels-last (the layout oneDNN's CPU convolutions are fastest in:
    about 1.3x on EfficientNet-Lite0's cloud half). Tensors of the ``nominal``
    shape run a frozen TorchScript graph traced from ``net``: batch-norms folded,
    and the whole forward runs in C++ without taking the GIL per operator, so
    the server's decode and gRPC threads do not stall it. Other shapes run the
    eager module. When tracing fails or changes the output, only the eager
    module is used, and so it is with ``trace=False``; ``graph`` hands it one traced before from the same weights.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
        >>> served = ServedModel(net, (4, 10, 10))
        >>> x = torch.randn(3, 4, 10, 10)
        >>> served.graph is not None, torch.allclose(served(x), net(x), atol=1e-5)
        (True, True)
    """

    def __init__(self, net: nn.Module, nominal: tuple[int, int, int], device: str = "cpu", trace: bool = True, graph=None) -> None:
        super().__init__()
        self.net, self.nominal = net.to(device).eval().to(memory_format=torch.channels_last), tuple(nominal)
        self.graph = graph if graph is not None or not trace else self._traced(device)

    def _traced(self, device: str):
        """The frozen graph of ``net`` at the nominal shape, or None where tracing fails or changes the output."""
        x = torch.randn(2, *self.nominal, device=device).contiguous(memory_format=torch.channels_last)
        try:
            with _TRACING, torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's deprecation notices
                graph = torch.jit.freeze(torch.jit.trace(self.net, x[:1]).eval())
                ok = torch.allclose(graph(x), self.net(x), rtol=1e-3, atol=1e-4)
        except Exception:  # noqa: BLE001  (a module tracing cannot follow keeps its eager path)
            ok = False
        return graph if ok else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if self.graph is not None and tuple(x.shape[1:]) == self.nominal:
            return self.graph(x)
        return self.net(x)


MAX_AREA_FACTOR = 4  # a stream's latent grid may cover at most 4x the nominal (224 px input) area


@torch.no_grad()
def probe_output(net: nn.Module, nominal: tuple[int, int, int], shape: tuple[int, int, int], device: str = "cpu") -> tuple[str, tuple[int, ...] | None]:
    """('', the output's shape per frame) when ``net`` takes tensors of ``shape``, else (why not, None).
    The channel count and the area are checked first, so the trial run never costs more than a few nominal frames."""
    if shape[0] != nominal[0] or shape[1] * shape[2] > MAX_AREA_FACTOR * nominal[1] * nominal[2]:
        return f"the cloud sub-model takes {nominal[0]} channels and at most {MAX_AREA_FACTOR}x the area of {nominal}, not tensors of shape {shape}", None
    try:
        out = _quiet_call(net, torch.zeros(1, *shape, device=device))
    except Exception as exc:  # noqa: BLE001  (a shape the model cannot take fails in many ways)
        return f"the cloud sub-model cannot take tensors of shape {shape}: {str(exc).splitlines()[0][:200]}", None
    if not isinstance(out, torch.Tensor):
        return f"the cloud sub-model returns {type(out).__name__}, not one tensor", None
    return "", tuple(out.shape[1:])


def _quiet_call(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` without the report torch.fx prints to stderr when a line of a traced module fails (twenty lines per
    hostile Open in a server's JSON-lines log; redirecting stderr would swallow other threads' lines too): a
    ``GraphModule`` runs its ``forward``, not its call wrapper, and a :class:`ServedModel` its eager module."""
    if isinstance(net, ServedModel):
        net, x = net.net, x.contiguous(memory_format=torch.channels_last)
    return net.forward(x) if isinstance(net, torch.fx.GraphModule) else net(x)


def fit_problem(probed: tuple[str, tuple[int, ...] | None], task: Task | None) -> tuple[str, str]:
    """('', '') when a probed sub-model (:func:`probe_output`'s answer) takes the tensors and ``task`` can use its
    output, else (``shape_mismatch`` or ``task_mismatch``, why): the one rule the server and ``codec decode`` apply."""
    why, out = probed
    if why:
        return "shape_mismatch", why
    if task is not None and (why := task.check(out)):
        return "task_mismatch", f"task {task.name!r} does not fit this model: {why}"
    return "", ""


class CloudHandle:
    """One cloud sub-model: its weights fingerprint, a shape and task check and batched inference.

    Subclasses set ``fingerprint`` and ``_shapes = {}`` and implement :meth:`probe` and :meth:`infer`.
    """

    fingerprint: str
    _shapes: dict

    async def probe(self, shape: tuple[int, int, int]) -> tuple[str, tuple[int, ...] | None]:
        """:func:`probe_output` of the sub-model, wherever it runs."""
        raise NotImplementedError

    async def check_shape(self, shape: tuple[int, int, int], task: Task | None = None) -> None:
        """Refuse (:class:`StreamError`) tensors of ``shape`` the sub-model cannot take, or whose output ``task`` cannot use."""
        if shape not in self._shapes:
            if len(self._shapes) > 64:  # a bounded memo: hostile headers cannot grow it
                self._shapes.clear()
            self._shapes[shape] = await self.probe(shape)
        kind, why = fit_problem(self._shapes[shape], task)
        if kind:
            raise StreamError(grpc.StatusCode.FAILED_PRECONDITION, kind, why)

    async def infer(self, x: torch.Tensor, task: Task) -> Prediction:
        raise NotImplementedError

    def close(self) -> None:
        """Called when the cache evicts the handle."""


@dataclass
class ModelCache:
    """At most ``max_models`` handles, least recently used evicted first; one is made at a time."""

    make: Callable[[str, str, str], CloudHandle]
    max_models: int = 4
    _entries: OrderedDict = field(default_factory=OrderedDict)

    _making: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    _closed: bool = False

    async def _make(self, model: str, layer: str, weights: str) -> CloudHandle:
        async with self._making:  # one at a time, off the event loop: Opens for many keys queue, not pile onto the cores
            loading = asyncio.ensure_future(asyncio.to_thread(self.make, model, layer, weights))
            try:
                return await asyncio.shield(loading)
            except asyncio.CancelledError:  # a thread cannot be stopped: hold the slot until it ends, close what it made
                loading.add_done_callback(_close_unused)
                await asyncio.wait({loading})
                raise

    async def get(self, model: str, layer: str, weights: str) -> CloudHandle:
        if self._closed:
            raise StreamError(grpc.StatusCode.UNAVAILABLE, "", "the server is shutting down; reconnect")
        key = (model, layer, weights)
        if key not in self._entries:  # streams asking for the same key share one preparation
            self._entries[key] = asyncio.ensure_future(self._make(model, layer, weights))
        task = self._entries[key]
        self._entries.move_to_end(key)
        try:
            handle = await asyncio.shield(task)
        except Exception:
            if self._entries.get(key) is task:  # a failed load is not cached: the next stream retries
                del self._entries[key]
            raise
        while len(self._entries) > self.max_models:
            _, old = self._entries.popitem(last=False)
            if old.done() and not old.exception():
                old.result().close()
        return handle

    async def close(self) -> None:
        """Refuse further Opens, cancel the preparations still under way (a server stopping mid-Open: each returns
        once its loading thread ends, whose handle is then closed) and forget every handle made (their owner, the
        backend, releases what they hold). No task is left pending when the event loop ends."""
        self._closed = True
        tasks, self._entries = list(self._entries.values()), OrderedDict()
        for task in tasks:
            task.cancel()  # no effect on a finished one
        await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._entries)


def _close_unused(loading: asyncio.Future) -> None:
    """Close the handle a cancelled preparation made after all (nobody will use it)."""
    if not loading.cancelled() and loading.exception() is None:
        loading.result().close()


class _LocalHandle(CloudHandle):
    def __init__(self, net: ServedModel, fingerprint: str, nominal: tuple[int, int, int], batcher: Batcher) -> None:
        self.net, self.fingerprint, self.nominal, self.batcher = net, fingerprint, nominal, batcher
        self._shapes: dict[tuple, tuple] = {}

    async def probe(self, shape: tuple[int, int, int]) -> tuple[str, tuple[int, ...] | None]:
        return await asyncio.to_thread(probe_output, self.net, self.nominal, shape, self.batcher.device)

    async def infer(self, x: torch.Tensor, task: Task) -> Prediction:
        return await self.batcher.infer(self.net, x, task)

    def close(self) -> None:
        self.batcher.forget(self.net)


class LocalBackend:
    """The cloud sub-model in this process, batched by a :class:`Batcher`.

    TorchScript never frees what a trace compiles (measured: about 28 MB per traced and frozen cloud half of
    EfficientNet-Lite0, cut at five layers in turn), and Opens naming more keys than the cache holds make it
    prepare splits again and again. So a split evicted and prepared again takes the graph traced for it before
    (kept by model, layer and weights fingerprint: it is never freed anyway), and the backend traces at most
    ``traces`` distinct splits in its life; later ones run the eager module (about 1.4x slower). No stream of
    Opens can grow the server without bound, nor take the graph of a split it served before.
    """

    def __init__(self, batcher: Batcher, max_models: int = 4, load: Callable[[str, str, str], tuple] = load_cloud, traces: int = TRACES) -> None:
        self.batcher, self.load, self.traces_left = batcher, load, traces
        self.graphs: dict[tuple[str, str, str], object] = {}  # (model, layer, fingerprint) -> its traced graph, or None
        self.cache = ModelCache(self._handle, max_models)

    def _handle(self, model: str, layer: str, weights: str) -> _LocalHandle:
        net, fingerprint, nominal = self.load(model, layer, weights)  # the cache makes one at a time: no race on the count
        key = (model, layer, fingerprint)
        if key in self.graphs or self.traces_left <= 0:
            served = ServedModel(net, nominal, self.batcher.device, trace=False, graph=self.graphs.get(key))
        else:
            served = ServedModel(net, nominal, self.batcher.device)
            self.graphs[key], self.traces_left = served.graph, self.traces_left - 1
        return _LocalHandle(served, fingerprint, nominal, self.batcher)

    async def open(self, model: str, layer: str, weights: str) -> CloudHandle:
        return await self.cache.get(model, layer, weights)

    async def close(self) -> None:
        await self.cache.close()
        await self.batcher.close()
