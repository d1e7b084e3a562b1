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
import hashlib
import time

import grpc
import numpy as np
import torch

from ..errors import InputError
from .backends import CloudHandle, ModelCache, ServedModel, StreamError, probe_shape
from .batcher import Prediction, top_k

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

    def probe(self, shape: tuple[int, int, int]) -> str:
        return probe_shape(self.net, self.nominal, shape, self.device)

    async def __call__(self, items: list[tuple[np.ndarray, int]]) -> list[tuple[list, list, int, float]]:
        t = time.perf_counter()
        k = max(i[1] for i in items)
        s, c = top_k(self.net, torch.from_numpy(np.stack([i[0] for i in items])), k, self.device)
        ms = 1000 * (time.perf_counter() - t)
        return [(c[j, : it[1]].tolist(), s[j, : it[1]].tolist(), len(items), ms) for j, it in enumerate(items)]


class _RayHandle(CloudHandle):
    def __init__(self, handle, app: str, fingerprint: str) -> None:
        self.handle, self.app, self.fingerprint = handle, app, fingerprint
        self._shapes: dict[tuple, str] = {}

    async def check_shape(self, shape: tuple[int, int, int]) -> None:
        if shape not in self._shapes:
            if len(self._shapes) > 64:  # a bounded memo: hostile headers cannot grow it
                self._shapes.clear()
            self._shapes[shape] = await self.handle.probe.remote(shape)
        if self._shapes[shape]:
            raise StreamError(grpc.StatusCode.FAILED_PRECONDITION, "shape_mismatch", self._shapes[shape])

    async def infer(self, x: torch.Tensor, k: int) -> Prediction:
        classes, scores, batch, ms = await self.handle.remote((x.numpy(), k))
        return Prediction(classes, scores, batch, ms)

    def close(self) -> None:
        from ray import serve

        serve.delete(self.app, _blocking=False)


class RayBackend:
    """Cloud sub-models on Ray Serve, one application per (model, layer, weights), LRU-bounded."""

    def __init__(self, address: str, weights: str, max_batch: int = 16, max_wait: float = 0.005, max_models: int = 4, replicas: int = 1) -> None:
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
        await asyncio.sleep(0)  # the applications stay with the Ray cluster, which outlives this server
