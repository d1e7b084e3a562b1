"""Stream slots: every stream the server counts is uncounted again, however and whenever the client leaves."""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest

from latentmotion.service import EdgeOptions, stream_edge
from latentmotion.service import cloud_pb2 as pb
from latentmotion.service.server import METHOD

from .conftest import LAYER, MODEL, RecordingCoder, ServerThread, features, fingerprint, make_encoder

# where a client cancels its stream: before the cloud accepted it, after, after its Open, after a frame
POINTS = ("before accept", "accepted", "after open", "after frame")


async def _cancel_at(target: str, point: int, delay: float, head: bytes, record: bytes) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.stream_stream(METHOD, pb.EdgeMessage.SerializeToString, pb.CloudMessage.FromString)()
        try:
            if point >= 1:
                await call.initial_metadata()
            if point >= 2:
                await call.write(pb.EdgeMessage(open=pb.Open(header=head, weights=fingerprint())))
            if point >= 3:
                await call.write(pb.EdgeMessage(frame=pb.Frame(seq=0, record=record)))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # refused (all slots taken): cancelling it anyway is part of the test
        await asyncio.sleep(delay)
        call.cancel()


def _cancel_storm(srv: ServerThread, clients: int, opens: int, seed: int = 0) -> None:
    """``clients`` tasks each open ``opens`` streams and cancel each 0-4 ms after a point of its life."""
    enc = make_encoder()()
    head, record = enc.header_bytes(), enc.encode(features()[0])
    rng = random.Random(seed)
    plan = [[(rng.randrange(len(POINTS)), rng.uniform(0, 0.004)) for _ in range(opens)] for _ in range(clients)]

    async def client(steps):
        for point, delay in steps:
            await _cancel_at(srv.target, point, delay, head, record)

    async def main():
        await asyncio.wait_for(asyncio.gather(*(client(s) for s in plan)), 300)

    asyncio.run(main())


def _slots_return_to_zero(srv: ServerThread) -> None:
    t = time.perf_counter()
    while srv.metric("latentmotion_active_streams") > 0 and time.perf_counter() - t < srv.config.idle_timeout + 10:
        time.sleep(0.05)
    assert srv.metric("latentmotion_active_streams") == 0 and srv.server.active == 0
    items = [(x, None) for x in features()[:3]]
    rep = asyncio.run(stream_edge(srv.target, RecordingCoder(), items, EdgeOptions(insecure=True, max_retries=2)))
    assert len(rep.results) == 3 and not rep.lost  # a new edge is served, not told the server is full


def test_streams_cancelled_at_every_point_of_their_life_free_their_slots():
    srv = ServerThread(max_streams=8, idle_timeout=2.0, preload=(f"{MODEL}:{LAYER}",))
    try:
        _cancel_storm(srv, clients=20, opens=10)
        _slots_return_to_zero(srv)
    finally:
        assert srv.stop()  # nothing left to drain


@pytest.mark.slow  # the load: 20 clients x 50 cancels against the default 64 slots
def test_a_thousand_cancelled_streams_free_their_slots():
    srv = ServerThread(idle_timeout=2.0, preload=(f"{MODEL}:{LAYER}",))
    try:
        _cancel_storm(srv, clients=20, opens=50, seed=1)
        _slots_return_to_zero(srv)
    finally:
        assert srv.stop()
