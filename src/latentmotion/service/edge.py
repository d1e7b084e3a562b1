"""The edge: stream coded features to a cloud, pipelined, with reconnection and loss accounting.

Frames are sent within a window (at most ``window`` frames unanswered), so
the frame rate is not bound to one round trip. Every frame sent either gets a
result or is listed in :attr:`EdgeReport.lost` with the reason. When the
connection breaks for a reason worth retrying (server restart, drain,
overload), the edge reconnects with exponential back-off (seeded jitter),
sends the same header and re-sends the unanswered frames re-coded from an
intra frame, so a predicted stream always resumes from a reference the new
decoder has. A refusal (bad token, weights mismatch, unknown model, bad
stream) is final and raises :class:`ServiceError`.

Example (a cloud in this process, three frames of zeros):

    >>> import asyncio, torch
    >>> from latentmotion import load_model
    >>> from latentmotion.codec import Encoder, StreamId, Tools
    >>> from latentmotion.models import weights_fingerprint
    >>> from latentmotion.service import CloudServer, ServerConfig
    >>> fp = weights_fingerprint(load_model("efficientnet_lite0"))
    >>> coder = LiveCoder(lambda: Encoder((40, 28, 28), 4.0, Tools.of(mode="zero"), StreamId("efficientnet_lite0", "_blocks.4.add")), fp)
    >>> async def main():
    ...     cloud = CloudServer(ServerConfig(port=0, insecure=True))
    ...     port = await cloud.start()
    ...     rep = await stream_edge(f"127.0.0.1:{port}", coder, [(torch.zeros(40, 28, 28), None)] * 3, EdgeOptions(insecure=True))
    ...     await cloud.drain()
    ...     return len(rep.results), len(rep.lost)
    >>> asyncio.run(main())
    (3, 0)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import grpc
import numpy as np

from ..codec.config import Tools
from ..defaults import DEFAULT_LAYER, DEFAULT_MODEL
from ..errors import InputError, LatentMotionError
from ..tasks import make_task
from . import cloud_pb2 as pb
from .auth import client_credentials, is_loopback, read_pem, unbracket
from .metrics import log_event
from .server import METHOD

__all__ = ["EdgeOptions", "EdgeReport", "LiveCoder", "ServiceError", "VideoSource", "run_edge", "stream_edge", "stream_video"]

MIN_REALTIME_FPS = 0.1  # pacing slower than this is a hang, not real time
MAX_RETRIES = 100  # reconnections in a row without a result; each costs its back-off and up to answer_timeout, so a
# huge count is an edge that never gives up on a dead cloud

_S = grpc.StatusCode
RETRY = {_S.UNAVAILABLE, _S.RESOURCE_EXHAUSTED, _S.DEADLINE_EXCEEDED, _S.CANCELLED, _S.UNKNOWN, _S.INTERNAL, _S.ABORTED}


_END = object()


class ServiceError(LatentMotionError):
    """The cloud refused the stream, or could not be reached; ``report`` holds what was done."""

    def __init__(self, msg: str, report: EdgeReport) -> None:
        super().__init__(msg)
        self.report = report


class LiveCoder:
    """Codes (tensor, gray frame) items with a fresh :class:`~latentmotion.codec.Encoder` per stream.

    An intra frame is always made by a fresh encoder: its header bytes equal the
    old one's, its first frame is intra and its frame count starts again, which
    is exactly what the cloud's fresh decoder expects after a failed frame.
    """

    def __init__(self, make_encoder: Callable, weights: str) -> None:
        self.make, self.weights = make_encoder, weights
        self.enc = make_encoder()
        self.fresh = True  # the next frame is the encoder's first, hence intra

    def restart(self) -> bytes:
        """Header of a new stream; the next frame coded is intra."""
        self.enc, self.fresh = self.make(), True
        return self.enc.header_bytes()

    def code(self, item, intra: bool) -> bytes:
        x, frame = item
        if intra and not self.fresh:
            self.enc = self.make()
        self.fresh = False
        return self.enc.encode(x, frame)


@dataclass
class EdgeReport:
    """What one edge run did.

    Attributes:
        sent: frames taken from the source (each is answered or lost); results: seq -> the task's result
        (:mod:`latentmotion.tasks`; ``classify``: a ``Classification``, the named tuple (classes, scores));
        lost: seq -> why it got no result; bytes_sent: header and frame bytes
        (re-sends included); latency_ms: last send -> result, per answered frame.
    """

    sent: int = 0
    results: dict = field(default_factory=dict)
    lost: dict = field(default_factory=dict)
    bytes_sent: int = 0
    latency_ms: list = field(default_factory=list)
    batches: list = field(default_factory=list)
    reconnects: int = 0
    intra_requests: int = 0
    slow_downs: int = 0
    seconds: float = 0.0

    def summary(self, fps: float | None = None) -> dict:
        """frames, lost, kbit/s (at ``fps``, else over the wall time), latency p50/p99 ms, mean batch."""
        lat = np.array(self.latency_ms) if self.latency_ms else np.zeros(1)
        per_s = fps / max(self.sent, 1) if fps else 1 / max(self.seconds, 1e-9)
        return {
            "frames": self.sent,
            "answered": len(self.results),
            "lost": len(self.lost),
            "kbit_s": 8 * self.bytes_sent * per_s / 1000,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "mean_batch": float(np.mean(self.batches)) if self.batches else 0.0,
            "reconnects": self.reconnects,
        }


async def _status_error(call) -> grpc.aio.AioRpcError:
    """The finished call's status as an exception."""
    return grpc.aio.AioRpcError(await call.code(), await call.initial_metadata(), await call.trailing_metadata(), await call.details())


# What grpc sets on a call whose write failed locally. A write that races the server's end of the stream
# fails so, and overwrites the status already received (or is replaced by it when that arrives later).
_WRITE_FAILED = "Internal error from Core"


def _settled(coro):
    """The value of a grpc accessor coroutine on a finished call (it returns without waiting)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    return None


async def _own_status(call, exc: grpc.aio.AioRpcError, first: list, wait: float = 2.0) -> grpc.aio.AioRpcError:
    """The status the server ended the stream with, not a racing write's bare INTERNAL error.
    ``first``: the (code, details) the call finished with first (see :meth:`_Edge._connection`)."""
    t = time.perf_counter()
    while not (first and first[0][1] != _WRITE_FAILED) and await call.details() == _WRITE_FAILED and time.perf_counter() - t < wait:
        await asyncio.sleep(0.01)
    code, details = first[0] if first and first[0][1] != _WRITE_FAILED else (await call.code(), await call.details())
    if code == _S.OK or (code, details) == (exc.code(), exc.details()):
        return exc
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class _Stalled(Exception):
    """The cloud took frames and answered nothing for too long."""


class _Edge:
    def __init__(self, target: str, coder, opts: EdgeOptions, fps: float | None) -> None:
        self.target, self.coder, self.opts, self.fps = target, coder, opts, fps
        self.creds = None if opts.insecure else client_credentials(opts.ca)
        self.window = opts.window
        self.rng = random.Random(opts.seed)
        self.report = EdgeReport()
        self.task = make_task(opts.task, top_k=opts.top_k)
        self.pending: dict[int, tuple] = {}  # seq -> (item, send time), in send order
        self.resend: list[tuple[int, object]] = []
        self.can_send = asyncio.Event()
        self.force_intra = False

    def _next(self, it):
        if self.resend:
            return self.resend.pop(0)
        item = next(it, _END)
        if item is _END:
            return None
        seq = self.report.sent
        self.report.sent += 1
        return seq, item

    async def _pace(self, seq: int, t0: float) -> None:
        if self.fps:
            await asyncio.sleep(max(0.0, t0 + seq / self.fps - time.perf_counter()))

    async def _send(self, call, it, t0: float) -> None:
        first = True
        while True:
            while len(self.pending) >= self.window:
                self.can_send.clear()
                await self.can_send.wait()
            nxt = self._next(it)
            if nxt is None:
                await call.done_writing()
                return
            seq, item = nxt
            self.pending[seq] = (item, None)  # from here on the frame is answered, re-sent or reported lost
            await self._pace(seq, t0)
            intra, first, self.force_intra = first or self.force_intra, False, False
            record = await asyncio.to_thread(self.coder.code, item, intra)
            self.pending[seq] = (item, time.perf_counter())
            self.report.bytes_sent += len(record)
            await call.write(pb.EdgeMessage(frame=pb.Frame(seq=seq, record=record)))

    def _receive(self, msg) -> None:
        if msg.WhichOneof("kind") == "request":
            r = msg.request
            if r.kind == pb.Request.INTRA:
                self.report.intra_requests += 1
                self.force_intra = True
            else:
                self.report.slow_downs += 1
                self.window = max(1, self.window // 2)
            return
        r = msg.result
        item = self.pending.pop(r.seq, None)
        if item is None:
            return  # an answer to nothing we sent is ignored
        result, why = self._read(r)
        if why:
            self.report.lost[r.seq] = why
        else:
            self.report.results[r.seq] = result
            self.report.latency_ms.append(1000 * (time.perf_counter() - item[1]))
            self.report.batches.append(r.batch)
        self.window = min(self.opts.window, self.window + 1)  # additive increase after a slow-down
        self.can_send.set()

    def _read(self, r) -> tuple[object, str]:
        """(the task's result, '') of a Result message, or (None, why it holds none)."""
        if r.error:
            return None, r.error
        if (r.task or "classify") != self.task.name:  # a cloud from before Open.task answers every stream by classifying
            return None, f"the cloud answered with task {r.task or 'classify'!r}, not {self.task.name!r}"
        try:
            return self.task.read(r), ""
        except Exception as exc:  # noqa: BLE001 (the cloud's reply is untrusted: whatever it breaks loses this frame, not the run)
            return None, f"unreadable result: {exc}"

    async def _connection(self, it, t0: float) -> int:
        """One stream; returns results received. Raises grpc.aio.AioRpcError when it breaks."""
        channel = grpc.aio.secure_channel(self.target, self.creds) if self.creds else grpc.aio.insecure_channel(self.target)
        async with channel:
            call = channel.stream_stream(METHOD, pb.EdgeMessage.SerializeToString, pb.CloudMessage.FromString)(
                metadata=(("authorization", f"Bearer {self.opts.token}"),) if self.opts.token else None
            )
            first: list = []  # the status the call finishes with, kept before a failing write can overwrite it
            call.add_done_callback(lambda c: first or first.append((_settled(c.code()), _settled(c.details()))))
            try:
                return await self._exchange(call, it, t0)
            except grpc.aio.AioRpcError as exc:
                raise await _own_status(call, exc, first) from None
            except _Stalled:
                raise grpc.aio.AioRpcError(_S.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), f"no answer from the cloud for {self.opts.answer_timeout:g} s") from None

    async def _watch(self, call, heard: list) -> None:
        """Cancel the call once a sent frame has waited ``answer_timeout`` with nothing heard from the cloud."""
        limit = self.opts.answer_timeout
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            sent = [t for _, t in self.pending.values() if t is not None]
            now = time.perf_counter()
            if sent and now - max(heard[0], min(sent)) > limit:
                self.stalled = True
                call.cancel()
                return

    async def _exchange(self, call, it, t0: float) -> int:
        """Open the stream, then send and receive concurrently until both sides are done."""
        await call.initial_metadata()  # the cloud accepts the stream before the edge writes, or refuses it here
        if call.done():
            raise await _status_error(call)
        header = self.coder.restart()
        self.report.bytes_sent += len(header)
        await call.write(pb.EdgeMessage(open=pb.Open(header=header, weights=self.coder.weights, top_k=self.opts.top_k, edge_id=self.opts.edge_id, task=self.task.name)))
        sender = asyncio.ensure_future(self._send(call, it, t0))
        sender.add_done_callback(lambda t: t.cancelled() or t.exception() is None or call.cancel())
        heard, self.stalled = [time.perf_counter()], False
        watch = asyncio.ensure_future(self._watch(call, heard))
        got = len(self.report.results)
        try:
            try:
                async for msg in call:
                    heard[0] = time.perf_counter()
                    self._receive(msg)
            except asyncio.CancelledError:
                if self.stalled and not asyncio.current_task().cancelling():
                    raise _Stalled from None
                # the sender failed (the edge's own error, e.g. a tensor it cannot code) and cancelled the call
                if asyncio.current_task().cancelling() or not sender.done() or sender.cancelled() or not sender.exception():
                    raise
                raise sender.exception() from None
            if sender.done() and not sender.cancelled() and sender.exception():
                raise sender.exception()
            if await call.code() != _S.OK:
                raise await _status_error(call)
            await sender
        finally:
            sender.cancel()
            watch.cancel()
            await asyncio.gather(sender, watch, return_exceptions=True)
        return len(self.report.results) - got

    def _requeue(self) -> None:
        """Unanswered frames go back in front of the queue, to be re-coded from an intra frame."""
        self.resend = sorted([(s, item) for s, (item, _) in self.pending.items()] + self.resend, key=lambda p: p[0])
        self.pending.clear()

    def _give_up(self, why: str) -> None:
        self._requeue()
        for seq, _ in self.resend:
            self.report.lost[seq] = why
        self.resend.clear()

    async def run(self, items: Iterable) -> EdgeReport:
        it, t0, failures = iter(items), time.perf_counter(), 0
        while True:
            try:
                if await self._connection(it, t0):
                    failures = 0
                if not self.pending and not self.resend:
                    break
                failures += 1  # the stream ended without answering everything
                why = "the cloud ended the stream without answering"
            except grpc.aio.AioRpcError as exc:
                why = f"{exc.code().name}: {exc.details()}"
                self._requeue()
                if exc.code() not in RETRY:
                    self._give_up(why)
                    self.report.seconds = time.perf_counter() - t0
                    raise ServiceError(f"the cloud at {self.target} refused the stream: {why}", self.report) from None
                failures += 1
            self._requeue()
            if failures > self.opts.max_retries:
                self._give_up(why)
                self.report.seconds = time.perf_counter() - t0
                raise ServiceError(f"gave up on the cloud at {self.target} after {self.opts.max_retries} retries: {why}", self.report)
            self.report.reconnects += 1
            log_event("edge_retry", target=self.target, failures=failures, reason=why)
            await asyncio.sleep(min(5.0, 0.2 * 2 ** (failures - 1)) * (0.5 + self.rng.random()))
        self.report.seconds = time.perf_counter() - t0
        return self.report


@dataclass
class EdgeOptions:
    """How an edge talks to the cloud.

    Attributes:
        insecure: plaintext, no TLS (loopback targets only).
        ca: PEM file of the CA to trust (the server's own certificate when self-signed; None: system roots).
        token: bearer token (never logged).
        window: frames in flight (halved on a SLOW_DOWN request, grown back by one per result).
        top_k: classes per result (``classify``).
        max_retries: reconnections in a row without a result before giving up (at most :data:`MAX_RETRIES`).
        seed: seed of the back-off jitter.
        edge_id: free text for the cloud's logs.
        task: what the cloud does with the features, a name of :data:`latentmotion.tasks.TASKS`
            (empty: the edge model's own task in :func:`stream_video`, ``classify`` elsewhere).
        answer_timeout: seconds a sent frame may wait with no message from the cloud before the stream
            counts as broken (a retry; a cloud that accepts and never answers cannot hold the edge forever).
    """

    insecure: bool = False
    ca: str | None = None
    token: str | None = None
    window: int = 8
    top_k: int = 5
    max_retries: int = 5
    seed: int = 0
    edge_id: str = ""
    task: str = ""
    answer_timeout: float = 120.0

    def check(self, target: str) -> None:
        """Refuse a bad address or option with :class:`InputError` before any work."""
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise InputError(f"cloud address {target!r}: expected host:port with a port in 1..65535")
        bare = unbracket(host)  # stray brackets or no host at all: refused here
        if self.insecure and not is_loopback(bare):
            raise InputError(f"--insecure sends plaintext and is allowed only to loopback, not to {host!r}")
        if self.ca and self.insecure:
            raise InputError("--ca has no use with --insecure: plaintext trusts no certificate")
        if self.ca:
            read_pem(self.ca, "CA certificate")  # before the model loads and the clip is coded: read again to connect
        for name, v, low in (("--window", self.window, 1), ("top-k", self.top_k, 1), ("--retries", self.max_retries, 0)):
            if v < low:
                raise InputError(f"{name} {v} must be at least {low}")
        if self.max_retries > MAX_RETRIES:
            raise InputError(f"--retries {self.max_retries} exceeds {MAX_RETRIES} (reconnections in a row without a result)")
        if not 0 < self.answer_timeout <= 1e6:
            raise InputError(f"answer timeout must lie in (0, 1e6] s, got {self.answer_timeout}")
        make_task(self.task)  # an unknown task is refused before any work
        check_token(self.token)


def check_token(token: str | None) -> None:
    """Refuse a token that a gRPC metadata value cannot carry (printable ASCII only) with :class:`InputError`.

    gRPC would refuse it only when the call starts, with a status the edge takes
    for a broken connection (``INTERNAL``) and retries; the message never shows the token.
    """
    for i, c in enumerate(token or ""):
        if not " " <= c <= "~":
            raise InputError(
                f"the token has character U+{ord(c):04X} at position {i + 1}; a token must be printable ASCII (0x20-0x7E) on one line"
            )


async def stream_edge(target: str, coder: LiveCoder, items: Iterable, options: EdgeOptions | None = None, fps: float | None = None) -> EdgeReport:
    """Stream ``items`` (whatever ``coder.code`` takes) to the cloud at ``target`` (``host:port``).

    ``fps`` paces new frames in real time (None: as fast as the window allows).
    Raises :class:`ServiceError` when the cloud refuses the stream or stays
    unreachable; its ``report`` still accounts for every frame taken.
    """
    options = options or EdgeOptions()
    options.check(target)
    if fps is not None and not MIN_REALTIME_FPS <= fps <= 1000:
        raise InputError(f"real-time pacing needs a frame rate in {MIN_REALTIME_FPS:g}..1000 fps, got {fps:g} (stream without pacing instead)")
    return await _Edge(target, coder, options, fps).run(items)


def run_edge(target: str, coder: LiveCoder, items: Iterable, options: EdgeOptions | None = None, fps: float | None = None) -> EdgeReport:
    """Blocking :func:`stream_edge`."""
    return asyncio.run(stream_edge(target, coder, items, options, fps))


@dataclass
class VideoSource:
    """What an edge streams: frames of a video through the edge sub-model, coded at ``step`` with ``tools``."""

    video: str = "bikes.mp4"
    start: int = 0
    frames: int = 24
    model: str = DEFAULT_MODEL
    layer: str = DEFAULT_LAYER
    weights: str = "imagenet"
    step: float = 4.0
    tools: Tools = field(default_factory=Tools)
    transform: str = "none"  # code the features' coordinates in the cut's shipped channel transform (klt, kltw)


def _check_task(split, options: EdgeOptions) -> None:
    """The server's rule (:func:`~latentmotion.service.backends.fit_problem`) at the edge, on its own cloud sub-model:
    :class:`InputError` where the task cannot use that model's output (``--task segment`` on a classifier)."""
    from .backends import fit_problem, probe_output

    shape = split.feature_shape()
    kind, why = fit_problem(probe_output(split.cloud, shape, shape), make_task(options.task, top_k=options.top_k))
    if kind:
        raise InputError(f"--task {options.task}: {why}")


def stream_video(target: str, src: VideoSource, options: EdgeOptions | None = None, realtime: bool = False) -> tuple[EdgeReport, float]:
    """Run the edge sub-model on a clip, code its features and stream them; returns the report and the clip's fps."""
    from ..codec import MAX_Q, Encoder, StreamId
    from ..codec.limits import check_step
    from ..data import video_path
    from ..models import load_model, split_model, weights_fingerprint
    from ..models.transform import check_transform_choice, edge_transform
    from ..pipeline import check_clip_range, check_frame_range, edge_features

    options = options or EdgeOptions()
    options.check(target)  # before any model or video is loaded
    check_transform_choice(src.transform, src.model, src.layer)
    check_frame_range(src.start, src.frames, src.start + src.frames, src.video)  # the numbers, then the clip's length:
    check_clip_range(video_path(src.video), src.start, src.frames)  # a range past the clip is refused before the model loads
    net = load_model(src.model, src.weights)
    if not options.task:  # the model's own task: a segmentation model's stream segments
        options = replace(options, task=net.task)
    split = split_model(net, src.layer)
    _check_task(split, options)  # before the clip is read and coded: the cloud would refuse it at open
    to_coordinates, weights = edge_transform(src.transform, src.model, src.layer, weights_fingerprint(net))  # the cloud maps them back
    clip = edge_features(src.video, split, src.start, src.frames)
    x = to_coordinates(clip.features)
    check_step(src.step, x, max_level=MAX_Q // 2)  # as codec encode: no level clipped, not all zero
    fps, items = clip.fps, list(zip(x, clip.gray, strict=True))
    del clip  # with a transform, the features themselves are no longer needed
    coder = LiveCoder(lambda: Encoder.from_split(split, x, src.step, src.tools, StreamId(src.model, weights=weights, fps=fps)), weights)
    return run_edge(target, coder, items, options, fps if realtime else None), fps
