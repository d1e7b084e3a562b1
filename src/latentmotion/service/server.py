"""The cloud: an asyncio gRPC server that decodes many edges' streams and runs their task in batches.

One stream per edge (``latentmotion.service.v1.Cloud/Infer``): an ``Open``
message with the codec header, the edge's weights fingerprint and its task
(:mod:`latentmotion.tasks`: ``classify`` when unset), then frames with
consecutive sequence numbers (modulo 2**64). Each stream has its own decoder; decoded
tensors of all streams meet in the backend's batches, and each frame's result
is its stream's task's (``Task.result``, written by ``Task.express``). Whatever a client sends
can end only its own stream, with a gRPC status naming the problem:

==========================  ====================  =============================
problem                     status                metric kind
==========================  ====================  =============================
missing/wrong/2+ tokens     UNAUTHENTICATED       unauthenticated
too many streams            RESOURCE_EXHAUSTED    too_many_streams
unknown model or layer      NOT_FOUND             unknown_model
layer that cannot be cut    INVALID_ARGUMENT      bad_layer
unknown task                INVALID_ARGUMENT      unknown_task
task does not fit the model FAILED_PRECONDITION   task_mismatch
weights fingerprint differs FAILED_PRECONDITION   weights_mismatch
no such channel transform   FAILED_PRECONDITION   unknown_transform
tensor shape does not fit   FAILED_PRECONDITION   shape_mismatch
damaged header/frame/msg    INVALID_ARGUMENT      bad_stream
tensor or frame too large   RESOURCE_EXHAUSTED    too_large
sequence gap                DATA_LOSS             sequence_gap
silence, or results unread  DEADLINE_EXCEEDED     idle
server draining             UNAVAILABLE           (none)
==========================  ====================  =============================

A frame that fails to decode gets a result with ``error`` set and a request
for an intra frame; the stream goes on from the next intra frame, and ends
after ``max_bad_frames + max_pending`` failures in a row (the frames already
in flight when the edge hears the request fail as well).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from ..codec import BitstreamError, Decoder
from ..codec.bitstream import MAX_STR
from ..errors import InputError, UnknownNameError, shown
from ..models.transform import WEIGHTS_DIR, network_fingerprint, stream_transform
from ..tasks import Task, make_task
from . import cloud_pb2 as pb
from .auth import TokenSet, address, server_credentials, unbracket
from .backends import CloudHandle, LocalBackend, StreamError
from .batcher import Batcher
from .config import ServerConfig
from .metrics import Metrics, log_event

if TYPE_CHECKING:
    import torch

__all__ = ["METHOD", "SERVICE", "CloudServer", "ServerConfig", "serve"]

SERVICE = "latentmotion.service.v1.Cloud"
METHOD = f"/{SERVICE}/Infer"
_S = grpc.StatusCode
SEQ_SPAN = 1 << 64  # Frame.seq is a uint64: sequence numbers run on modulo 2**64


class _Stream:
    """One edge's stream: reads, decodes in order, sends frames to the model, answers in order."""

    def __init__(self, server: CloudServer, context: grpc.aio.ServicerContext) -> None:
        self.server, self.cfg, self.ctx = server, server.config, context
        self.out: asyncio.Queue[asyncio.Future | None] = asyncio.Queue()  # futures of outgoing messages, in order; None ends
        self.window = asyncio.Semaphore(self.cfg.max_pending)
        self.pending = 0  # frames read and not yet answered
        self.slowed = False
        self.transform = None  # the channel transform the stream's coordinates go back through, if it names one
        self.writing_since: float | None = None  # when the write in flight began (None: none is)

    async def _read(self):
        """Next message; None at the end of the stream or when the server drains."""
        read = asyncio.ensure_future(self.ctx.read())
        drain = asyncio.ensure_future(self.server.draining.wait())
        try:
            done = await self._watching({read, drain}, self.cfg.idle_timeout)
        finally:
            drain.cancel()  # also when the stream is cancelled while waiting: no task outlives it
            if not read.done():
                read.cancel()
        if read not in done:
            if not done:
                raise StreamError(_S.DEADLINE_EXCEEDED, "idle", f"no message for {self.cfg.idle_timeout:g} s")
            return None
        msg = read.result()
        if msg is _UNPARSED:
            raise StreamError(_S.INVALID_ARGUMENT, "bad_stream", "a message that does not parse as an EdgeMessage")
        return None if msg is grpc.aio.EOF else msg

    async def _open(self) -> tuple[Decoder, CloudHandle, Task]:
        """Read Open; check the header, the task, the model, the weights and the shape. Sets ``self.header_bytes``."""
        msg = await self._read()
        if msg is None and self.server.draining.is_set():
            raise StreamError(_S.UNAVAILABLE, "", "the server is shutting down; reconnect")
        if msg is None:
            raise StreamError(_S.INVALID_ARGUMENT, "bad_stream", "the stream ended before its Open message")
        if msg.WhichOneof("kind") != "open":
            raise StreamError(_S.INVALID_ARGUMENT, "bad_stream", "the first message must be Open")
        for name in ("weights", "task", "edge_id"):  # what is echoed in statuses and logs stays short
            if len(getattr(msg.open, name).encode()) > MAX_STR:
                raise StreamError(_S.INVALID_ARGUMENT, "bad_stream", f"Open.{name} is longer than {MAX_STR} bytes")
        self.server.metrics.bytes.inc(len(msg.open.header))
        self.header_bytes = msg.open.header
        try:
            dec = Decoder.from_header_bytes(msg.open.header)
        except BitstreamError as exc:
            raise StreamError(_S.INVALID_ARGUMENT, "bad_stream", f"bad stream header: {exc}") from None
        h = dec.header
        if h.shape[0] * h.shape[1] * h.shape[2] > self.cfg.max_elements:
            raise StreamError(_S.RESOURCE_EXHAUSTED, "too_large", f"tensor shape {h.shape} exceeds the server's --max-elements {self.cfg.max_elements}")
        if ":" in h.model and h.model not in self.cfg.models:  # a factory spec imports and calls code: only when the operator lists it
            raise StreamError(_S.NOT_FOUND, "unknown_model", f"model {h.model!r} names a factory; the server loads factories only when --models lists them")
        if self.cfg.models and h.model not in self.cfg.models:
            raise StreamError(_S.NOT_FOUND, "unknown_model", f"model {h.model!r} is not served here; served: {', '.join(self.cfg.models)}")
        task = stream_task(msg.open, self.cfg.top_k)
        handle = await self.server.backend.open(h.model, h.layer, self.cfg.weights)
        edge_fp = edge_weights(msg.open, h)
        network_fp = network_fingerprint(edge_fp)  # FINGERPRINT+TRANSFORM-PRINT for a stream of transform coordinates
        if network_fp != handle.fingerprint:
            raise StreamError(
                _S.FAILED_PRECONDITION, "weights_mismatch",
                f"weights mismatch for {h.model}: edge {network_fp or 'sent no fingerprint'}, cloud {handle.fingerprint} ({self.cfg.weights})",
            )
        await handle.check_shape(h.shape, task)  # before the transform: a wrong channel count is a shape mismatch
        if network_fp != edge_fp:  # the weights name a channel transform the coordinates go back through
            self.transform = await asyncio.to_thread(stream_channel_transform, h, edge_fp)
        return dec, handle, task

    async def _write_loop(self) -> None:
        while (item := await self.out.get()) is not None:
            msg, release = await item
            self.writing_since = time.monotonic()
            try:
                await self.ctx.write(msg)
            finally:  # a failed write is no stuck one: its own error ends the stream
                self.writing_since = None
            if release:
                self.pending -= 1
                self.window.release()

    async def _watching(self, futures: set, timeout: float) -> set:
        """Wait up to ``timeout`` s for the first of ``futures`` (the set done, empty at the timeout), and end the stream
        once a write has been stuck for the idle timeout: an edge that reads nothing, sending a frame now and then or
        none after its last, would otherwise hold its slot in that write. Watched from here rather than each write
        timed out in the writer: with a timeout around every write (asyncio.wait_for), edges whose streams the server
        ended mid-stream got no status and waited for an answer until their own timeout."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            since = self.writing_since
            if since is not None and time.monotonic() - since >= self.cfg.idle_timeout:
                raise StreamError(_S.DEADLINE_EXCEEDED, "idle", f"a result unread for {self.cfg.idle_timeout:g} s")
            if (left := end - loop.time()) <= 0:
                return set()
            done, _ = await asyncio.wait(futures, timeout=min(left, self.cfg.idle_timeout / 4), return_when=asyncio.FIRST_COMPLETED)
            if done:
                return done

    def _request(self, kind: int, seq: int, reason: str) -> None:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result((pb.CloudMessage(request=pb.Request(kind=kind, seq=seq, reason=reason)), False))
        self.out.put_nowait(fut)

    async def _infer(self, handle: CloudHandle, x, seq: int, task: Task, t0: float, decode_ms: float):
        try:
            p = await handle.infer(x, task)
            res = pb.Result(seq=seq, task=task.name, decode_ms=decode_ms, infer_ms=p.infer_ms, batch=p.batch)
            task.express(p.result, res)
            self.server.metrics.frames.inc()
            self.server.metrics.batch.observe(p.batch)
        except Exception as exc:  # noqa: BLE001  (a failed model call loses this frame only; the edge reports it)
            self.server.metrics.errors.labels(kind="model").inc()
            res = pb.Result(seq=seq, error=f"model failed: {type(exc).__name__}: {exc}"[:300])
        res.server_ms = 1000 * (time.perf_counter() - t0)
        self.server.metrics.latency.observe(res.server_ms / 1000)
        return pb.CloudMessage(result=res), True

    def _decode(self, dec: Decoder, record: bytes) -> torch.Tensor:
        """One frame's tensor, mapped back through the stream's channel transform when it names one."""
        x = dec.decode_frame(record)
        return x if self.transform is None else self.transform.decode(x[None])[0]

    async def _frame(self, dec: Decoder, handle: CloudHandle, frame, task: Task, bad: int) -> tuple[Decoder, int]:
        """Decode one frame and queue its task's inference; returns the decoder to go on with and the bad-frame run."""
        t0 = time.perf_counter()
        if self.window.locked() and not self.slowed:
            self.slowed = True
            self._request(pb.Request.SLOW_DOWN, frame.seq, f"{self.cfg.max_pending} frames pending")
        try:  # a full window frees as results are written: an edge that reads none would hold its slot for ever
            await asyncio.wait_for(self.window.acquire(), self.cfg.idle_timeout)
        except TimeoutError:
            raise StreamError(_S.DEADLINE_EXCEEDED, "idle", f"{self.cfg.max_pending} results unread for {self.cfg.idle_timeout:g} s") from None
        self.pending += 1
        try:
            x = await asyncio.to_thread(self._decode, dec, frame.record)
        except BitstreamError as exc:
            # Frames the edge sent before it saw the intra request fail too: up to a window of them is expected.
            if bad + 1 > self.cfg.max_bad_frames + self.cfg.max_pending:
                raise StreamError(_S.INVALID_ARGUMENT, "bad_stream", f"bad stream: frame {frame.seq}: {exc}") from None
            self.server.metrics.errors.labels(kind="bad_frame").inc()
            # One request per window of failures, ahead of the result so the edge's next frame is intra;
            # again after a whole window failed (the intra frame itself may have been damaged).
            if bad % (self.cfg.max_pending + 1) == 0:
                self._request(pb.Request.INTRA, frame.seq, "decoding needs an intra frame")
            fut = asyncio.get_running_loop().create_future()
            fut.set_result((pb.CloudMessage(result=pb.Result(seq=frame.seq, error=f"frame not decoded: {exc}"[:300])), True))
            self.out.put_nowait(fut)
            # The reference is lost: a fresh decoder refuses predicted frames until an intra frame arrives.
            return Decoder.from_header_bytes(self.header_bytes), bad + 1
        if self.slowed and self.pending < self.cfg.max_pending // 2:
            self.slowed = False
        decode_ms = 1000 * (time.perf_counter() - t0)
        self.out.put_nowait(asyncio.ensure_future(self._infer(handle, x, frame.seq, task, t0, decode_ms)))
        return dec, 0

    async def run(self) -> int:
        """Serve the stream; returns frames received. Raises :class:`StreamError` to end it with a status."""
        dec, handle, task = await self._open()
        writer = asyncio.ensure_future(self._write_loop())
        limit = record_limit(dec.header, self.cfg.max_message)
        n, expected, bad = 0, None, 0
        try:
            while (msg := await self._read()) is not None:
                if msg.WhichOneof("kind") != "frame":
                    raise StreamError(_S.INVALID_ARGUMENT, "bad_stream", "a second Open in one stream")
                f = msg.frame
                if expected is not None and f.seq != expected:
                    raise StreamError(_S.DATA_LOSS, "sequence_gap", f"sequence gap: expected frame {expected}, got {f.seq}")
                if len(f.record) > limit:
                    raise StreamError(_S.RESOURCE_EXHAUSTED, "too_large", f"frame {f.seq} of {len(f.record)} bytes exceeds {limit} for shape {dec.header.shape}")
                self.server.metrics.bytes.inc(len(f.record))
                dec, bad = await self._frame(dec, handle, f, task, bad)
                expected, n = (f.seq + 1) % SEQ_SPAN, n + 1  # uint64: the frame after 2**64 - 1 is 0
            self.out.put_nowait(None)
            await self._watching({writer}, math.inf)  # every frame read gets its answer before the stream closes
            writer.result()
        finally:
            # and wait for them: no write or inference of this stream outlives it (a stream cut short, by its edge or a
            # drain past its timeout, leaves frames queued, whose tasks would otherwise be destroyed pending at the end)
            left = [writer, *(item for item in _drained(self.out) if item is not None)]
            for item in left:
                item.cancel()
            await asyncio.gather(*left, return_exceptions=True)
        if self.server.draining.is_set():
            raise StreamError(_S.UNAVAILABLE, "", "the server is shutting down; reconnect")
        return n


def _drained(queue: asyncio.Queue) -> list:
    """Whatever ``queue`` holds, taken out of it."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


_UNPARSED = object()  # what _parse_edge_message makes of bytes that are no EdgeMessage


def _parse_edge_message(data: bytes):
    """An EdgeMessage, or ``_UNPARSED``: the stream then ends as ``bad_stream`` (an exception here would end it
    with gRPC's UNKNOWN and no metric)."""
    try:
        return pb.EdgeMessage.FromString(data)
    except Exception:  # noqa: BLE001  (DecodeError, or UnicodeDecodeError from the pure-Python protobuf: either way no message)
        return _UNPARSED


def record_limit(header, max_message: int) -> int:
    """Largest frame record a stream of this header may send: the codec's own bound for the
    header's shape plus a little framing when the codec offers one, else the message limit."""
    bound = getattr(header, "frame_limit", None)
    return min(max_message, bound() + 64) if callable(bound) else max_message


def stream_task(open_msg, top_k: int) -> Task:
    """The task an ``Open`` message asks for (``classify`` when unset, as edges before ``Open.task`` mean),
    with the edge's ``top_k`` or the server's."""
    try:
        return make_task(open_msg.task, top_k=open_msg.top_k or top_k)
    except UnknownNameError as exc:
        raise StreamError(_S.INVALID_ARGUMENT, "unknown_task", str(exc)) from None


def stream_channel_transform(header, weights: str):
    """The shipped channel transform a stream's weights name (None where they name none); a StreamError where the
    cloud has no such transform for the stream's cut (:func:`latentmotion.models.transform.stream_transform`)."""
    try:
        return stream_transform(header.model, header.layer, weights, header.shape[0])[2]
    except InputError as exc:  # the reason, without the server's install path
        raise StreamError(_S.FAILED_PRECONDITION, "unknown_transform", str(exc).replace(f"{WEIGHTS_DIR}/", "")) from None


def edge_weights(open_msg, header) -> str:
    """The edge's weights (a fingerprint, or ``FINGERPRINT+NAME-PRINT`` for channel-transform coordinates): the
    Open message's, else the codec header's. Where both name weights they must agree: otherwise the header could
    name a transform the Open message hides, and the model would run on coordinates."""
    head = getattr(header, "weights", "") or ""
    if open_msg.weights and head and open_msg.weights != head:
        raise StreamError(_S.FAILED_PRECONDITION, "weights_mismatch", f"the Open message names weights {open_msg.weights!r}, the stream header {head!r}")
    return open_msg.weights or head


class CloudServer:
    """The gRPC server; :meth:`start`, then :meth:`drain` to stop (both on the same event loop).

    Example:
        >>> import asyncio
        >>> async def main():
        ...     cloud = CloudServer(ServerConfig(port=0, insecure=True))
        ...     port = await cloud.start()
        ...     return port > 0, await cloud.drain()
        >>> asyncio.run(main())
        (True, True)
    """

    def __init__(self, config: ServerConfig, backend=None) -> None:
        config.check()
        self.config = config
        self.metrics = Metrics()
        self.tokens = TokenSet.from_file(config.tokens) if config.tokens else None
        self.creds = None if config.insecure else server_credentials(config.cert, config.key)
        self.backend = backend or make_backend(config)
        self.draining = asyncio.Event()
        self.active = 0  # streams being served: what a drain waits for
        self.closing = 0  # ended streams whose status is not yet sent
        self._runs: set[asyncio.Task] = set()  # the streams' own work, which a drain that times out ends itself
        self._metrics_http = None

    async def infer_stream(self, request_iterator, context) -> None:
        """The Infer RPC: one edge's stream, from its token check to its last result."""
        if self.tokens is not None:
            # Every entry, not a dict: with two, a dict keeps the last, so which credential counts would be up to the client.
            auth = [v for k, v in context.invocation_metadata() or () if k.lower() == "authorization"]
            if len(auth) > 1 or not self.tokens.check(auth[0] if auth else None):
                self.metrics.errors.labels(kind="unauthenticated").inc()
                why = f"ambiguous credentials: {len(auth)} authorization headers" if len(auth) > 1 else "missing or unknown bearer token"
                await context.abort(_S.UNAUTHENTICATED, why)
        if self.draining.is_set():
            await context.abort(_S.UNAVAILABLE, "the server is shutting down; reconnect")
        if self.active + self.closing >= self.config.max_streams:
            self.metrics.errors.labels(kind="too_many_streams").inc()
            await context.abort(_S.RESOURCE_EXHAUSTED, f"the server already serves {self.config.max_streams} streams")
        error = None
        with self._slot():
            peer, t = context.peer(), time.perf_counter()
            try:
                # Accepted: the edge waits for this before it writes, so a refusal never races its first message.
                await context.send_initial_metadata(())
                n = await self._run(_Stream(self, context))
                log_event("stream_end", peer=peer, frames=n, seconds=round(time.perf_counter() - t, 3))
            except StreamError as exc:
                if exc.kind:
                    self.metrics.errors.labels(kind=exc.kind).inc()
                error = exc.code, shown(exc)[:1000]  # control characters a client sent come back escaped
                log_event("stream_error", peer=peer, code=exc.code.name, kind=exc.kind, message=error[1])
        if error:  # the status waits behind results an edge that reads nothing never takes, until gRPC closes its idle
            self.closing += 1  # connection: the call counts against --max-streams meanwhile, but a drain does not wait for it
            try:
                await context.abort(*error)
            finally:
                self.closing -= 1

    async def _run(self, stream: _Stream) -> int:
        """Run a stream as a task of ours: a drain past its timeout cancels it and the edge hears UNAVAILABLE (were gRPC
        to cancel the call at its stop, it would print its own traceback)."""
        run = asyncio.ensure_future(stream.run())
        self._runs.add(run)
        try:
            return await run
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # the call itself was cancelled (the edge went away): as before
                raise
            raise StreamError(_S.UNAVAILABLE, "", "the server is shutting down; reconnect") from None
        finally:
            self._runs.discard(run)

    @contextlib.contextmanager
    def _slot(self):
        """One of ``max_streams`` slots, released on every way out (a client may cancel at any await)."""
        self.active += 1
        self.metrics.streams.inc()
        try:
            yield
        finally:
            self.active -= 1
            self.metrics.streams.dec()

    async def start(self) -> int:
        """Bind and start serving; returns the port. :class:`InputError` when the address cannot be bound."""
        cfg = self.config
        opts = [
            ("grpc.so_reuseport", 0),  # a port in use must fail, not be shared silently
            ("grpc.max_receive_message_length", cfg.max_message),
            ("grpc.max_send_message_length", cfg.max_message),
            ("grpc.max_connection_idle_ms", int(cfg.idle_timeout * 1000)),
        ]
        self.server = grpc.aio.server(options=opts, maximum_concurrent_rpcs=cfg.max_streams + 16)
        handler = grpc.stream_stream_rpc_method_handler(self.infer_stream, _parse_edge_message, pb.CloudMessage.SerializeToString)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Infer": handler}),))
        self.health = _CheckOnlyHealth()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        addr = address(cfg.host, cfg.port)
        check_bindable(cfg.host, cfg.port)
        try:
            port = self.server.add_secure_port(addr, self.creds) if self.creds else self.server.add_insecure_port(addr)
        except RuntimeError as exc:
            raise InputError(f"cannot listen on {addr}: {str(exc).splitlines()[0]}") from None
        if not port:
            raise InputError(f"cannot listen on {addr} (port in use or bad host)")
        try:
            await self._preload_and_start()
        except BaseException:  # an error or a signal: stop the bound (maybe started) server and the models while the loop runs
            await self.server.stop(None)
            await self.backend.close()
            raise
        self.port = port
        metrics = self._metrics_http[0].server_port if self._metrics_http else None  # the port --metrics-port 0 got
        log_event("listening", address=address(cfg.host, port), tls=not cfg.insecure, auth=self.tokens is not None, ray=cfg.ray or "", metrics_port=metrics)
        return port

    async def _preload_and_start(self) -> None:
        """Warm the preloaded models, start serving, then the metrics endpoint (:class:`InputError` where one fails)."""
        cfg = self.config
        for spec in cfg.preload:
            try:
                handle = await self.backend.open(*spec.split(":"), cfg.weights)
                if getattr(handle, "nominal", None):
                    await handle.check_shape(handle.nominal)  # one trial run: the first frames meet a warm model
            except StreamError as exc:
                raise InputError(f"--preload {spec}: {exc}") from None
        await self.server.start()
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if cfg.metrics_port is not None:
            self._metrics_http = _start_metrics(self.metrics, cfg.host, cfg.metrics_port)

    async def _until_idle(self, deadline: float) -> bool:
        """Wait until no stream is open or ``deadline`` (``time.perf_counter``) passes; True when none is open."""
        while self.active and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        return self.active == 0

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop accepting streams, let open ones answer every frame received, stop. True when all ended in time."""
        timeout = self.config.drain_timeout if timeout is None else timeout
        self.draining.set()
        await self.health.enter_graceful_shutdown()
        t = time.perf_counter()
        clean = await self._until_idle(t + timeout)
        for run in list(self._runs):  # streams that outlived the timeout end with UNAVAILABLE, before gRPC stops
            run.cancel()
        await self._until_idle(t + timeout + 0.5)
        await self.server.stop(0.5)
        await self.backend.close()
        if self._metrics_http:
            self._metrics_http[0].shutdown()
        log_event("stopped", clean=clean, seconds=round(time.perf_counter() - t, 3))
        return clean


class _CheckOnlyHealth(health_aio.HealthServicer):
    """gRPC health with ``Check`` only. A ``Watch`` stream lasts as long as its client likes, without a token: held open
    by the dozen it took every call slot from the edges, and one that read nothing blocked the drain, which waits for
    the lock grpc_health writes updates under. Probes (Kubernetes', grpc_health_probe) use ``Check``."""

    async def Watch(self, request, context) -> None:
        await context.abort(_S.UNIMPLEMENTED, "Health/Watch is not served here; poll Health/Check")


def check_bindable(host: str, port: int) -> None:
    """Refuse an unknown host or a port in use with one clear line (gRPC would only log its own)."""
    try:
        infos = socket.getaddrinfo(unbracket(host), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)  # [::1] as edges write it
    except socket.gaierror as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _start_metrics(metrics: Metrics, host: str, port: int):
    from prometheus_client import start_http_server

    try:
        return start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise InputError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None


def make_backend(config: ServerConfig):
    """In-process batching, or Ray Serve when ``config.ray`` names a cluster."""
    if config.ray:
        from .ray_backend import RayBackend

        return RayBackend(config.ray, config.weights, max_batch=config.max_batch, max_wait=config.max_wait_ms / 1000, max_models=config.max_models)
    batcher = Batcher(config.max_batch, config.max_wait_ms / 1000, config.max_queue, config.resolved_device(), config.resolved_threads())
    return LocalBackend(batcher, config.max_models)


def serve(config: ServerConfig, ready: Callable[[int], None] | None = None, stopping: Callable[[int, int], None] | None = None) -> int:
    """Run the cloud until SIGINT or SIGTERM; returns the exit code.

    An idle server waits forever. On a signal it calls ``stopping(signal number,
    open streams)``, drains (stops accepting streams, answers every frame
    already received, tells edges to reconnect) and returns 0 when the drain
    finished within ``drain_timeout``, else the interrupted-job code (130 for
    SIGINT, 143 for SIGTERM). ``ready(port)`` is called once it serves.
    """
    config.check()
    return asyncio.run(_serve(config, ready, stopping))


async def _serve(config: ServerConfig, ready, stopping=None) -> int:
    server = CloudServer(config)
    port = await server.start()
    stop, got = asyncio.Event(), []
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda s=sig: (got.append(s), stop.set()))
    if ready:
        ready(port)
    await stop.wait()
    if stopping:
        stopping(int(got[0]), server.active)
    clean = await server.drain()
    return 0 if clean else 128 + int(got[0] if got else signal.SIGTERM)
