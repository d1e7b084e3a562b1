"""The cloud sub-model as a Ray Serve deployment (``pip install latentmotion[ray]``).

Decoding stays with each gRPC stream (it is stateful); the decoded tensors go
to one Serve application per ``(model, layer, weights)``, whose replicas
gather them into batches with ``@serve.batch``. ``address="local"`` starts a
Ray instance in this process; anything else is passed to ``ray.init`` (e.g.
``auto`` or ``ray://head:10001``). Serve's HTTP proxy is not started: the
gRPC server is the only way in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time

import grpc
import numpy as np
import torch

from ..errors import InputError
from ..tasks import Task
from .auth import address as address_of
from .auth import unbracket
from .backends import CloudHandle, ModelCache, ServedModel, StreamError, probe_output
from .batcher import Prediction, run_tasks

__all__ = ["CloudModel", "RayBackend"]


class CloudModel:
    """Serve replica body: one cloud sub-model; errors of loading are kept and reported, not raised."""

    def __init__(self, model: str, layer: str, weights: str) -> None:
        from .backends import load_cloud

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            net, self.fp, self.nominal = load_cloud(model, layer, weights)
            self.net, self.error = ServedModel(net, self.nominal, self.device), None
        except StreamError as exc:
            self.net, self.fp, self.error = None, "", (exc.code.name, exc.kind, str(exc))

    def fingerprint(self) -> tuple[str, tuple | None]:
        return self.fp, self.error

    def probe(self, shape: tuple[int, int, int]) -> tuple[str, tuple[int, ...] | None]:
        """('', output shape per frame) when the sub-model takes tensors of ``shape``, else (why not, None)."""
        return probe_output(self.net, self.nominal, shape, self.device)

    async def __call__(self, items: list[tuple[np.ndarray, Task]]) -> list[tuple[object, int, float]]:
        """(task result, batch size, model ms) of each (tensor, task) item, the model run once on the batch."""
        t = time.perf_counter()
        results = run_tasks(self.net, torch.from_numpy(np.stack([i[0] for i in items])), [i[1] for i in items], self.device)
        ms = 1000 * (time.perf_counter() - t)
        return [(r, len(items), ms) for r in results]


class _RayHandle(CloudHandle):
    def __init__(self, handle, app: str, fingerprint: str) -> None:
        self.handle, self.app, self.fingerprint = handle, app, fingerprint
        self._shapes: dict[tuple, tuple] = {}

    async def probe(self, shape: tuple[int, int, int]) -> tuple[str, tuple[int, ...] | None]:
        why, out = await self.handle.probe.remote(shape)
        return why, None if out is None else tuple(out)

    async def infer(self, x: torch.Tensor, task: Task) -> Prediction:
        response = self.handle.remote((x.numpy(), task))
        try:
            result, batch, ms = await response
        except asyncio.CancelledError:  # its stream ended first: the replica need not run it
            with contextlib.suppress(Exception):  # nor may a failed cancel hide why this one ends
                response.cancel()
            raise
        if isinstance(result, Exception):  # this frame's task failed (run_tasks): this frame alone
            raise result
        return Prediction(result, batch, ms)

    def close(self) -> None:
        from ray import serve

        serve.delete(self.app, _blocking=False)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) Ray address where no gRPC server (a Ray head's GCS, or a Ray
    client server) completes an HTTP/2 handshake within ``timeout`` seconds: InputError at once, where ``ray.init``
    would retry for minutes. ``local`` and ``auto`` are not checked.

    Example:
        >>> check_reachable("local")
        >>> check_reachable("127.0.0.1:1", 1.0)
        Traceback (most recent call last):
        ...
        latentmotion.errors.InputError: --ray '127.0.0.1:1': no Ray cluster answers there (Connection refused)
    """
    import socket

    if address in ("local", "auto"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536 or not host:
        raise InputError(f"--ray {address!r}: expected local, auto or HOST:PORT of a Ray cluster")
    try:
        bare = unbracket(host)
    except InputError as exc:
        raise InputError(f"--ray {address!r}: {exc}") from None
    try:
        socket.create_connection((bare, int(port)), timeout=timeout).close()
    except (OSError, UnicodeError) as exc:  # UnicodeError: a host name IDNA cannot encode
        raise InputError(f"--ray {address!r}: no Ray cluster answers there ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    channel = grpc.insecure_channel(address_of(bare, int(port)))  # a listener that is no gRPC server never completes the handshake
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise InputError(f"--ray {address!r}: something listens there, but no Ray cluster answers (no gRPC handshake in {timeout:g} s)") from None
    finally:
        channel.close()


class RayBackend:
    """Cloud sub-models on Ray Serve, one application per (model, layer, weights), LRU-bounded."""

    def __init__(self, address: str, weights: str, max_batch: int = 16, max_wait: float = 0.005, max_models: int = 4, replicas: int = 1) -> None:
        check_reachable(address)  # ray.init retries an unreachable cluster for minutes
        try:
            import ray
            from ray import serve
        except ImportError:
            raise InputError("--ray needs Ray Serve: pip install 'latentmotion[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
        serve.start(proxy_location="Disabled")
        batched = serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=max_wait)(CloudModel.__call__)
        body = type("CloudModel", (CloudModel,), {"__call__": batched})
        self.deployment = serve.deployment(num_replicas=replicas, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=4 * max_batch)(body)
        self.cache = ModelCache(self._deploy, max_models)

    def _deploy(self, model: str, layer: str, weights: str) -> _RayHandle:
        from ray import serve

        app = "latentmotion-" + hashlib.sha256(f"{model}|{layer}|{weights}".encode()).hexdigest()[:12]
        handle = serve.run(self.deployment.bind(model, layer, weights), name=app, route_prefix=None)
        fp, error = handle.fingerprint.remote().result()
        if error:
            serve.delete(app, _blocking=False)
            code, kind, msg = error
            raise StreamError(grpc.StatusCode[code], kind, msg)
        return _RayHandle(handle, app, fp)

    async def open(self, model: str, layer: str, weights: str) -> CloudHandle:
        return await self.cache.get(model, layer, weights)

    async def close(self) -> None:
        await self.cache.close()  # the applications stay with the Ray cluster, which outlives this server
