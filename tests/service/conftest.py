"""Shared pieces of the service tests: features of a real clip, a server on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest
import torch

import latentmotion as lm
from latentmotion.codec import Encoder, StreamId, Tools
from latentmotion.data import fit_frame, read_frames, video_path
from latentmotion.models import weights_fingerprint
from latentmotion.service import CloudServer, LiveCoder, ServerConfig
from latentmotion.service.backends import LocalBackend, load_cloud
from latentmotion.service.batcher import Batcher

from ..conftest import model

MODEL, LAYER = "efficientnet_lite0", "_blocks.4.add"


@functools.lru_cache(maxsize=1)
def split() -> lm.Split:
    return lm.split_model(model(MODEL), LAYER)


@functools.lru_cache(maxsize=1)
def features() -> torch.Tensor:
    """Edge features of bikes.mp4 frames 0..11 (real video, trained weights)."""
    frames = fit_frame(read_frames(video_path("bikes.mp4"), range(12)))
    with torch.no_grad():
        return split().edge(frames)


@pytest.fixture(scope="session", autouse=True)
def _compiled_codec():
    """Compile the codec's kernels before any server starts: on a fresh checkout numba compiles them on first use
    (tens of seconds), longer than the servers' idle timeouts wait for an edge's first frame."""
    from latentmotion.codec import decode_stream, encode_sequence

    x = features()[:3]
    enc = Encoder(tuple(x.shape[1:]), 2.0, Tools.of(mode="block"), stream=StreamId(model=MODEL, layer=LAYER))
    decode_stream(encode_sequence(list(x), enc, [None] * 3))


def fingerprint() -> str:
    return weights_fingerprint(model(MODEL))


def make_encoder(step: float = 2.0):
    shape = tuple(features().shape[1:])
    return lambda: Encoder(shape, step, Tools.of(mode="block"), stream=StreamId(model=MODEL, layer=LAYER))


class RecordingCoder(LiveCoder):
    """A LiveCoder that remembers the reconstruction each item was last sent with (the cloud decodes exactly that)."""

    def __init__(self, make=None, weights=None) -> None:
        super().__init__(make or make_encoder(), weights if weights is not None else fingerprint())
        self.recon: dict[int, torch.Tensor] = {}

    def code(self, item, intra):
        rec = super().code(item, intra)
        self.recon[id(item)] = self.enc.reconstructions[-1]
        return rec


def reference(coder: RecordingCoder, items, k: int = 5) -> list[list[int]]:
    """Top-k classes of the cloud sub-model run in process, one tensor at a time, on what each frame decodes to."""
    with torch.no_grad():
        return [split().cloud(coder.recon[id(it)][None]).softmax(1)[0].topk(k).indices.tolist() for it in items]


@functools.cache
def _cached_cloud(m: str, layer: str, weights: str):
    return load_cloud(m, layer, weights)


class ServerThread:
    """A CloudServer on its own event loop thread, on an ephemeral loopback port."""

    def __init__(self, load=None, **options) -> None:
        self.load = load or _cached_cloud  # load_cloud itself: every stream's preparation runs for real
        options.setdefault("insecure", True)
        self.config = ServerConfig(host="127.0.0.1", port=0, **options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(self._make(self._backend()))
        self.port = self.call(self.server.start())
        self.target = f"127.0.0.1:{self.port}"

    def _backend(self):
        batcher = Batcher(self.config.max_batch, self.config.max_wait_ms / 1000, self.config.max_queue, "cpu")
        return LocalBackend(batcher, self.config.max_models, load=self.load)

    async def _make(self, backend):
        return CloudServer(self.config, backend)

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> bool:
        clean = self.call(self.server.drain(5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        return clean

    def metric(self, name: str, **labels) -> float:
        return self.server.metrics.value(name, **labels) or 0.0


@pytest.fixture
def server():
    s = ServerThread(idle_timeout=2.0)
    yield s
    s.stop()
