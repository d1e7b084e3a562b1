"""The cloud on real loopback sockets: many edges, batching across them, and faults that end only their own stream."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from latentmotion.codec import Decoder, Encoder, StreamId, Tools
from latentmotion.errors import InputError
from latentmotion.models import weights_fingerprint
from latentmotion.models.transform import load_transform
from latentmotion.service import EdgeOptions, ServiceError, run_edge, stream_edge
from latentmotion.service import cloud_pb2 as pb
from latentmotion.service.server import METHOD, record_limit

from .conftest import LAYER, MODEL, RecordingCoder, ServerThread, features, fingerprint, make_encoder, reference, split


def _items(start: int, n: int):
    return [(x, None) for x in features()[start : start + n]]


def test_many_edges_get_the_in_process_answers_from_shared_batches(server):
    async def main():
        coders = [RecordingCoder() for _ in range(6)]
        items = [_items(i, 6) for i in range(6)]
        reps = await asyncio.gather(*(stream_edge(server.target, c, it, EdgeOptions(insecure=True, window=4)) for c, it in zip(coders, items)))
        return coders, items, reps

    coders, items, reps = asyncio.run(main())
    for c, it, rep in zip(coders, items, reps):
        assert not rep.lost and rep.sent == 6 and rep.reconnects == 0
        assert [rep.results[s][0] for s in range(6)] == reference(c, it)
    assert max(b for rep in reps for b in rep.batches) > 1  # frames of different edges shared a model call
    assert server.metric("latentmotion_frames_total") == 36
    assert server.metric("latentmotion_active_streams") == 0


def test_bytes_that_are_no_message_end_only_their_stream_as_a_bad_stream(server):
    async def send(data: bytes):
        async with grpc.aio.insecure_channel(server.target) as ch:
            call = ch.stream_stream(METHOD, lambda b: b, lambda b: b)()
            await call.initial_metadata()
            await call.write(data)
            await call.done_writing()
            with pytest.raises(grpc.aio.AioRpcError):
                async for _ in call:
                    pass
            return await call.code(), await call.details()

    code, details = asyncio.run(send(b"\xff\xff\xff\xff not a protobuf"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not parse" in details
    assert server.metric("latentmotion_errors_total", kind="bad_stream") == 1
    coder, items = RecordingCoder(), _items(0, 2)  # the server goes on serving
    rep = asyncio.run(stream_edge(server.target, coder, items, EdgeOptions(insecure=True)))
    assert [rep.results[s][0] for s in range(2)] == reference(coder, items)


def test_an_edge_coding_transform_coordinates_gets_the_answers_of_the_features_they_map_back_to(server):
    """A stream of kltw coordinates (its weights name the transform): the cloud maps each decoded frame back through
    the shipped transform before the model, so the answers are those of the mapped-back reconstruction."""
    from latentmotion.models.transform import edge_transform

    to_coordinates, weights = edge_transform("kltw", MODEL, LAYER, fingerprint())
    z = to_coordinates(features()[:6])
    t = load_transform(MODEL, LAYER, weighted=True)
    coder = RecordingCoder(lambda: Encoder(tuple(z.shape[1:]), 0.5 * float(z.pow(2).mean().sqrt()), Tools.of(mode="block"), stream=StreamId(model=MODEL, layer=LAYER)), weights)
    items = [(x, None) for x in z]
    rep = run_edge(server.target, coder, items, EdgeOptions(insecure=True))
    assert not rep.lost and rep.sent == 6
    with torch.no_grad():
        want = [split().cloud(t.decode(coder.recon[id(it)][None])).softmax(1)[0].topk(5).indices.tolist() for it in items]
        plain = [split().cloud(coder.recon[id(it)][None]).softmax(1)[0].topk(5).indices.tolist() for it in items]
    assert [rep.results[s][0] for s in range(6)] == want != plain  # mapped back: coordinates themselves would answer otherwise


async def _raw(target: str, messages, wait: float = 0.0, metadata=None) -> tuple[grpc.StatusCode, str, list]:
    """Send raw protocol messages, then read until the server ends the stream: its status, details and replies."""
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.stream_stream(METHOD, pb.EdgeMessage.SerializeToString, pb.CloudMessage.FromString)(metadata=metadata)
        try:
            await call.initial_metadata()  # as the edge does: write only once the cloud accepted the stream
            for m in messages:
                await call.write(m)
            if wait:  # hold the stream open that long, or until the server ends it
                t = time.perf_counter()
                while not call.done() and time.perf_counter() - t < wait:
                    await asyncio.sleep(0.05)
            else:
                await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the server ended the stream early; its status is read below
        replies = []
        try:
            async for r in call:
                replies.append(r)
        except grpc.aio.AioRpcError:
            pass
        return await call.code(), await call.details(), replies


def _open(header: bytes, weights: str | None = None) -> pb.EdgeMessage:
    return pb.EdgeMessage(open=pb.Open(header=header, weights=fingerprint() if weights is None else weights))


def _frame(seq: int, record: bytes) -> pb.EdgeMessage:
    return pb.EdgeMessage(frame=pb.Frame(seq=seq, record=record))


def _bad_clients():
    enc = make_encoder()()
    head = enc.header_bytes()
    recs = [enc.encode(x) for x in features()[:3]]
    other = Encoder((41, 28, 28), 2.0, Tools.of(mode="block"), stream=StreamId(model=MODEL, layer=LAYER)).header_bytes()
    unknown = Encoder(tuple(features().shape[1:]), 2.0, Tools.of(mode="block"), stream=StreamId(model="resnet43", layer=LAYER)).header_bytes()
    factory = Encoder(tuple(features().shape[1:]), 2.0, Tools.of(mode="block"), stream=StreamId(model="os:abort", layer=LAYER)).header_bytes()  # must never be called
    random_fp = weights_fingerprint(torch.nn.Linear(2, 2))  # any other weights
    # a header that names a transform the Open message does not: coordinates must never pass for features
    hidden = Encoder(tuple(features().shape[1:]), 2.0, Tools.of(mode="block"), stream=StreamId(MODEL, LAYER, weights=fingerprint() + "+kltw-0123456789ab")).header_bytes()
    S = grpc.StatusCode
    return {
        "garbage header": ([_open(b"GET / HTTP/1.1\r\n\r\n" * 4)], S.INVALID_ARGUMENT, "bad magic"),
        "half header": ([_open(head[: len(head) // 2])], S.INVALID_ARGUMENT, "bad stream header"),
        "frame first": ([_frame(0, recs[0])], S.INVALID_ARGUMENT, "must be Open"),
        "garbage frames": ([_open(head)] + [_frame(i, b"\x00garbage" * 9) for i in range(40)], S.INVALID_ARGUMENT, "bad stream: frame"),
        "oversized frame": ([_open(head), _frame(0, bytes(record_limit(Decoder.from_header_bytes(head).header, 4 << 20) + 1))], S.RESOURCE_EXHAUSTED, "exceeds"),
        "sequence gap": ([_open(head), _frame(0, recs[0]), _frame(2, recs[1])], S.DATA_LOSS, "expected frame 1, got 2"),
        # the frame after the last uint64 is 0, not 2**64 (which no Frame can carry)
        "gap after the last sequence number": ([_open(head), _frame(2**64 - 1, recs[0]), _frame(1, recs[1])], S.DATA_LOSS, "expected frame 0, got 1"),
        "unknown model": ([_open(unknown)], S.NOT_FOUND, "did you mean 'resnet34'"),
        "factory model": ([_open(factory)], S.NOT_FOUND, "loads factories only when --models lists them"),
        "shape mismatch": ([_open(other)], S.FAILED_PRECONDITION, "takes 40 channels"),
        "weights mismatch": ([_open(head, random_fp)], S.FAILED_PRECONDITION, "weights mismatch"),
        "no fingerprint": ([_open(head, "")], S.FAILED_PRECONDITION, "sent no fingerprint"),
        "unknown transform": ([_open(head, fingerprint() + "+dct-0123456789ab")], S.FAILED_PRECONDITION, "unknown channel transform"),
        "other transform": ([_open(head, fingerprint() + "+kltw-0123456789ab")], S.FAILED_PRECONDITION, "another kltw transform"),
        "transform of other weights": ([_open(head, random_fp + "+kltw-0123456789ab")], S.FAILED_PRECONDITION, "weights mismatch"),
        "empty transform name": ([_open(head, fingerprint() + "+")], S.FAILED_PRECONDITION, "unknown channel transform ''"),
        "transform without fingerprint": ([_open(head, fingerprint() + "+klt")], S.FAILED_PRECONDITION, "'klt' without its fingerprint"),
        "weights too long": ([_open(head, "f" * 300)], S.INVALID_ARGUMENT, "Open.weights is longer than 256 bytes"),
        "transform the Open hides": ([_open(hidden)], S.FAILED_PRECONDITION, "the stream header '"),
        "transform of other channels": ([_open(other, fingerprint() + "+kltw-0123456789ab")], S.FAILED_PRECONDITION, "takes 40 channels"),
    }


def test_sequence_numbers_run_on_past_the_last_uint64(server):
    enc = make_encoder()()
    seqs = [2**64 - 2, 2**64 - 1, 0, 1]
    msgs = [_open(enc.header_bytes())] + [_frame(q, enc.encode(x)) for q, x in zip(seqs, features()[:4], strict=True)]
    code, details, replies = asyncio.run(_raw(server.target, msgs))
    assert code == grpc.StatusCode.OK, details
    assert [r.result.seq for r in replies if r.WhichOneof("kind") == "result"] == seqs

def test_each_bad_client_ends_only_its_own_stream(server):
    cases = _bad_clients()

    async def main():
        good = asyncio.ensure_future(stream_edge(server.target, RecordingCoder(), _items(0, 12), EdgeOptions(insecure=True, window=2), 12.0))
        # a raw TCP client that sends half an HTTP/2 preface and goes silent
        raw = socket.create_connection(("127.0.0.1", server.port))
        raw.sendall(b"PRI * HTTP/2.0\r\n")
        silent = asyncio.ensure_future(_raw(server.target, [], wait=4.0))  # opens a stream, sends nothing
        bad = await asyncio.gather(*(_raw(server.target, msgs) for msgs, _, _ in cases.values()))
        out = await asyncio.gather(good, silent)
        raw.close()
        return bad, out

    bad, (rep, silent) = asyncio.run(main())
    for (name, (_, code, needle)), (got, details, _) in zip(cases.items(), bad, strict=True):
        assert got == code and needle in details, (name, got, details)
    assert silent[0] == grpc.StatusCode.DEADLINE_EXCEEDED and "no message for 2 s" in silent[1]
    assert not rep.lost and len(rep.results) == 12  # the well-behaved edge never noticed
    for kind in ("bad_stream", "sequence_gap", "unknown_model", "shape_mismatch", "weights_mismatch", "unknown_transform", "idle"):
        assert server.metric("latentmotion_errors_total", kind=kind) >= 1, kind


def test_a_corrupt_frame_is_reported_lost_and_the_stream_resumes_from_an_intra_frame(server):
    class Corrupting(RecordingCoder):
        def code(self, item, intra):
            rec = super().code(item, intra)
            return rec[:-4] + bytes(4) if item is items[3] else rec  # a frame record with a broken checksum

    items = _items(0, 10)
    coder = Corrupting()
    rep = asyncio.run(stream_edge(server.target, coder, items, EdgeOptions(insecure=True, window=1)))
    assert list(rep.lost) == [3] and "frame not decoded" in rep.lost[3]
    assert rep.intra_requests == 1 and len(rep.results) == 9
    ref = reference(coder, items)
    assert all(rep.results[s][0] == ref[s] for s in rep.results)


def test_limits_are_enforced_before_allocation():
    srv = ServerThread(max_streams=1, max_elements=1000, idle_timeout=3.0)
    try:
        head = make_encoder()().header_bytes()

        async def main():
            hold = asyncio.ensure_future(_raw(srv.target, [], wait=1.5))
            await asyncio.sleep(0.5)
            second = await _raw(srv.target, [], wait=0.5)  # refused before it reads anything
            await hold
            big = await _raw(srv.target, [_open(head)])
            return second, big

        second, big = asyncio.run(main())
        assert second[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "already serves 1 streams" in second[1]
        assert big[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-elements 1000" in big[1]
    finally:
        srv.stop()
    with pytest.raises(InputError, match="expected MODEL:LAYER"):
        ServerThread(preload=("efficientnet_lite0",))
    with pytest.raises(InputError, match="unknown layer 'nope'"):
        ServerThread(preload=("efficientnet_lite0:nope",))
    only = ServerThread(models=("resnet34",))
    try:
        got = asyncio.run(_raw(only.target, [_open(head)]))
        assert got[0] == grpc.StatusCode.NOT_FOUND and "not served here; served: resnet34" in got[1]
    finally:
        only.stop()


def test_health_check_and_a_refused_edge_raises(server):
    with grpc.insecure_channel(server.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        assert stub.Check(health_pb2.HealthCheckRequest(service="latentmotion.service.v1.Cloud"), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        # Watch is refused: held open by the dozen (no token needed) it took the edges' call slots, and unread it blocked the drain
        with pytest.raises(grpc.RpcError) as watch:
            next(iter(stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)))
        assert watch.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(ServiceError, match="weights mismatch") as err:
        asyncio.run(stream_edge(server.target, RecordingCoder(weights="0" * 16), _items(0, 3), EdgeOptions(insecure=True)))
    rep = err.value.report
    assert set(rep.lost) == set(range(rep.sent)) and not rep.results  # every frame taken is reported lost


def test_an_edge_that_vanishes_mid_stream_ends_only_its_stream(server):
    async def main():
        coder = RecordingCoder()
        doomed = asyncio.ensure_future(stream_edge(server.target, coder, _items(0, 12), EdgeOptions(insecure=True), 8.0))
        t = time.perf_counter()
        while server.metric("latentmotion_frames_total") < 2 and time.perf_counter() - t < 60:
            await asyncio.sleep(0.05)
        doomed.cancel()  # the edge's connection closes under the server's feet
        await asyncio.gather(doomed, return_exceptions=True)
        while server.metric("latentmotion_active_streams") > 0 and time.perf_counter() - t < 60:
            await asyncio.sleep(0.05)
        return await stream_edge(server.target, RecordingCoder(), _items(0, 3), EdgeOptions(insecure=True))

    rep = asyncio.run(main())
    assert server.metric("latentmotion_active_streams") == 0 and len(rep.results) == 3 and not rep.lost


def test_a_full_stream_window_asks_the_edge_to_slow_down():
    srv = ServerThread(max_pending=2, max_batch=2)
    try:
        rep = asyncio.run(stream_edge(srv.target, RecordingCoder(), _items(0, 12), EdgeOptions(insecure=True, window=8)))
        assert rep.slow_downs >= 1 and len(rep.results) == 12 and not rep.lost
    finally:
        srv.stop()


SMALL_WINDOW = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]  # an edge's small receive window


async def _idle_end(srv, call) -> None:
    """Wait (up to 30 s) until the server ends a stream as idle and frees its slot, while the edge still holds its
    ``call``; then let the call go."""
    for _ in range(300):
        if srv.metric("latentmotion_errors_total", kind="idle") >= 1 and srv.metric("latentmotion_active_streams") == 0:
            break
        await asyncio.sleep(0.1)
    call.cancel()


def _assert_idle_end(srv) -> None:
    assert srv.metric("latentmotion_errors_total", kind="idle") == 1
    assert srv.metric("latentmotion_active_streams") == 0


def test_an_edge_that_reads_no_results_loses_its_stream_and_slot():
    """Results the edge never reads fill its receive window, then the server's window of unanswered frames: the
    stream must end after the idle timeout (its slot freed), not wait for ever in the full window."""
    srv = ServerThread(idle_timeout=2.0, max_pending=2, max_batch=2)
    enc, x = make_encoder()(), features()
    frames = [_frame(i, enc.encode(x[i % len(x)])) for i in range(400)]

    async def main():
        async with grpc.aio.insecure_channel(srv.target, options=SMALL_WINDOW) as ch:
            call = ch.stream_stream(METHOD, pb.EdgeMessage.SerializeToString, pb.CloudMessage.FromString)()
            await call.initial_metadata()
            try:
                for m in [_open(enc.header_bytes()), *frames]:  # and never read
                    await asyncio.wait_for(call.write(m), 10)
            except (TimeoutError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # the server stopped reading, or ended the stream
            await _idle_end(srv, call)

    try:
        asyncio.run(main())
        _assert_idle_end(srv)
        assert srv.metric("latentmotion_frames_total") < 400  # the server did stop reading
    finally:
        srv.stop()


def test_an_edge_that_sent_all_its_frames_and_reads_nothing_loses_its_stream_and_slot():
    """An attack half-closed its stream after three frames asking for 1000 classes each, and never read: the server,
    answering every frame read before it closes, waited in a write for ever and the slot stayed taken."""
    srv = ServerThread(idle_timeout=2.0)
    enc, x = make_encoder()(), features()
    head = pb.EdgeMessage(open=pb.Open(header=enc.header_bytes(), weights=fingerprint(), top_k=1000))
    frames = [_frame(i, enc.encode(x[i])) for i in range(3)]

    async def main():
        async with grpc.aio.insecure_channel(srv.target, options=SMALL_WINDOW) as ch:
            call = ch.stream_stream(METHOD, pb.EdgeMessage.SerializeToString, pb.CloudMessage.FromString)()
            for m in (head, *frames):
                await asyncio.wait_for(call.write(m), 10)
            await call.done_writing()  # and never read
            await _idle_end(srv, call)

    try:
        asyncio.run(main())
        _assert_idle_end(srv)
        assert srv.metric("latentmotion_frames_total") == 3  # all inferred: the stuck write ended it, not a full window
        t = time.perf_counter()
        while srv.server.closing and time.perf_counter() - t < 20:
            time.sleep(0.05)
        assert srv.server.closing == 0  # the call left the count once the edge let it go
    finally:
        srv.stop()


def test_an_edge_that_sends_now_and_then_and_reads_nothing_loses_its_stream_once_a_write_is_stuck():
    """A frame every half second keeps the stream from falling silent, and the window of 64 never fills; the results
    the edge never reads stop the writer at its first large one: that write, stuck for the idle timeout, ends it."""
    srv = ServerThread(idle_timeout=2.0, max_pending=64, preload=(f"{MODEL}:{LAYER}",))  # loaded: frames are read as sent
    enc, x = make_encoder()(), features()
    head = pb.EdgeMessage(open=pb.Open(header=enc.header_bytes(), weights=fingerprint(), top_k=1000))

    async def main():
        async with grpc.aio.insecure_channel(srv.target, options=SMALL_WINDOW) as ch:
            call = ch.stream_stream(METHOD, pb.EdgeMessage.SerializeToString, pb.CloudMessage.FromString)()
            try:
                await asyncio.wait_for(call.write(head), 10)
                for i in range(40):  # 20 s, if the server never ended it
                    await asyncio.wait_for(call.write(_frame(i, enc.encode(x[i % len(x)]))), 10)
                    await asyncio.sleep(0.5)
            except (TimeoutError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # the server ended the stream
            await _idle_end(srv, call)

    try:
        asyncio.run(main())
        _assert_idle_end(srv)
        assert srv.metric("latentmotion_frames_total") < 20  # ended after about the idle timeout, not at the last frame
    finally:
        srv.stop()


def test_a_stream_ended_with_its_status_unsent_still_counts_against_max_streams():
    """Such a call (its edge reads nothing) lives until gRPC closes the idle connection: uncounted, they piled up past
    every limit of ours. White-box: the server's count of them stands in for one, which real timing makes flaky."""
    srv = ServerThread(max_streams=1)
    try:
        srv.server.closing = 1
        refused = asyncio.run(_raw(srv.target, [], wait=0.5))
        assert refused[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "already serves 1 streams" in refused[1]
        srv.server.closing = 0
        accepted = asyncio.run(_raw(srv.target, [], wait=0.5))
        assert accepted[0] != grpc.StatusCode.RESOURCE_EXHAUSTED, accepted
    finally:
        srv.stop()


def test_a_tensor_the_edge_cannot_code_raises_its_own_error(server):
    items = _items(0, 2) + [(torch.full(features().shape[1:], float("nan")), None)]
    with pytest.raises(InputError, match="NaN"):
        asyncio.run(stream_edge(server.target, RecordingCoder(), items, EdgeOptions(insecure=True)))
    t = time.perf_counter()
    while server.metric("latentmotion_active_streams") > 0 and time.perf_counter() - t < 10:
        time.sleep(0.05)  # the cloud notices the cancelled stream
    assert server.metric("latentmotion_active_streams") == 0


def test_edges_refused_mid_stream_see_the_servers_status_not_a_racing_writes_internal_error():
    """The server ends each stream (bad frames) while its edge is still writing: the edge's failed write must
    not replace the server's status with INTERNAL 'Internal error from Core' (which it would also retry)."""
    srv = ServerThread(max_pending=2, max_bad_frames=0)

    class Corrupting(RecordingCoder):
        coded = 0

        def code(self, item, intra):
            rec = super().code(item, intra)
            self.coded += 1
            return rec if self.coded <= 3 else rec[:-4] + bytes(4)  # from the 4th frame on: broken checksums

    async def edge():
        try:
            await stream_edge(srv.target, Corrupting(), _items(0, 12), EdgeOptions(insecure=True, max_retries=0))
        except ServiceError as exc:
            return str(exc)
        return "served"

    async def main():
        return [msg for _ in range(8) for msg in await asyncio.gather(*(edge() for _ in range(6)))]

    try:
        got = asyncio.run(main())
    finally:
        srv.stop()
    assert all("refused the stream: INVALID_ARGUMENT: bad stream" in msg for msg in got), [m for m in got if "INVALID_ARGUMENT" not in m][:3]


def test_an_edge_gives_up_on_a_cloud_that_accepts_and_never_answers():
    """Every frame is answered or reported lost: a silent cloud costs answer_timeout per try, not forever."""

    async def silent(requests, ctx):
        await ctx.send_initial_metadata(())
        async for _ in requests:
            pass
        await asyncio.sleep(3600)
        yield pb.CloudMessage()

    async def main():
        srv = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(silent, pb.EdgeMessage.FromString, pb.CloudMessage.SerializeToString)
        srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(METHOD.split("/")[1], {"Infer": handler}),))
        port = srv.add_insecure_port("127.0.0.1:0")
        await srv.start()
        t = time.perf_counter()
        try:
            with pytest.raises(ServiceError, match="no answer from the cloud for 0.5 s") as err:
                await stream_edge(f"127.0.0.1:{port}", RecordingCoder(), _items(0, 3), EdgeOptions(insecure=True, answer_timeout=0.5, max_retries=1))
            return err.value.report, time.perf_counter() - t
        finally:
            await srv.stop(0)

    rep, took = asyncio.run(main())
    assert sorted(rep.lost) == [0, 1, 2] and not rep.results and took < 20


def test_a_frame_range_past_the_clip_is_refused_before_the_edge_loads_its_model(monkeypatch):
    from latentmotion import models
    from latentmotion.service import VideoSource, stream_video

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model loaded before the range was checked"))
    with pytest.raises(InputError, match="out of range: bikes.mp4 has 250 frames"):
        stream_video("127.0.0.1:1", VideoSource(video="bikes.mp4", start=200, frames=51), EdgeOptions(insecure=True))


def test_a_task_the_model_cannot_serve_is_refused_before_the_edge_reads_the_clip(monkeypatch):
    from latentmotion import pipeline
    from latentmotion.service import VideoSource, stream_video

    monkeypatch.setattr(pipeline, "edge_features", lambda *a, **k: pytest.fail("the clip was coded before the task was checked"))
    with pytest.raises(InputError, match="--task segment: task 'segment' does not fit this model: segmentation needs"):
        stream_video("127.0.0.1:1", VideoSource(frames=2, weights="random"), EdgeOptions(insecure=True, task="segment"))


def test_a_drain_past_its_timeout_ends_the_streams_itself():
    """Frames still waiting in the batcher when the drain's time is up: the server ends their stream itself, with
    UNAVAILABLE and its reason (a stream_error), before gRPC stops; gRPC would cancel the call under the handler
    ('Cancelling all calls', and a traceback from its own logger)."""
    srv = ServerThread(max_wait_ms=30000, max_batch=64)  # the frames wait for a batch that never fills
    enc = make_encoder()()
    msgs = [_open(enc.header_bytes()), *(_frame(i, enc.encode(x)) for i, x in enumerate(features()[:2]))]

    async def main():
        talk = asyncio.ensure_future(_raw(srv.target, msgs, wait=60))
        t = time.perf_counter()
        while waiting() < 2 and time.perf_counter() - t < 60:  # both frames decoded and queued for a batch
            await asyncio.sleep(0.05)
        queued = waiting()
        clean = await asyncio.to_thread(srv.call, srv.server.drain(0.3))
        return clean, queued, await talk

    def waiting():
        return sum(len(q) for q in list(srv.server.backend.batcher._queues.values()))

    async def inferring():  # the stream's queued inferences ended with it: none is left on the server's loop
        return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "_Stream._infer" and not t.done()]

    try:
        clean, queued, (code, details, replies) = asyncio.run(main())
        assert queued == 2  # else the drain came before the second frame's inference: no test of it
        assert srv.call(inferring()) == []
    finally:
        srv.loop.call_soon_threadsafe(srv.loop.stop)
        srv.thread.join(10)
    assert not clean and code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details, (code, details)
    assert not [r for r in replies if r.WhichOneof("kind") == "result"]  # no answer came: they were still batching
