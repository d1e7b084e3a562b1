"""Preparing one stream's split (loading, fx tracing, probing) never disturbs the streams already served."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from latentmotion.codec import Encoder, StreamId, Tools
from latentmotion.service import EdgeOptions, stream_edge
from latentmotion.service.backends import load_cloud

from .conftest import MODEL, RecordingCoder, ServerThread, features, reference
from .test_server import _open, _raw

FACTORY = "torchvision.models:resnet18"  # a network no other test loads: its first Open traces it while the good edge streams
S = grpc.StatusCode


def _header(model: str, layer: str) -> bytes:
    return Encoder(tuple(features().shape[1:]), 2.0, Tools.of(mode="block"), stream=StreamId(model=model, layer=layer)).header_bytes()


def _flood(bad: int) -> list[tuple[bytes, set, str]]:
    """Opens of other clients: unknown layers, valid cuts this header's shape does not fit, another network."""
    opens = [(_header(MODEL, f"_blocks.{40 + i}.add"), {S.NOT_FOUND}, "unknown layer") for i in range(bad)]
    opens += [(_header(MODEL, layer), {S.FAILED_PRECONDITION}, "not tensors of shape") for layer in ("_blocks.6.add", "_blocks.9.add")]
    opens += [(_header(FACTORY, layer), {S.FAILED_PRECONDITION}, "") for layer in ("layer2.0.add", "layer3.0.add")]
    return opens


def _good_edge_beside_a_flood(bad: int, frames: int) -> None:
    srv = ServerThread(load=load_cloud, idle_timeout=20.0, models=(MODEL, FACTORY))
    items = [(x, None) for x in list(features()) * (frames // len(features()) + 1)][:frames]  # one tuple per frame
    coder = RecordingCoder()
    flood = _flood(bad)

    async def main():
        good = asyncio.ensure_future(stream_edge(srv.target, coder, items, EdgeOptions(insecure=True, window=2), 8.0))
        t = time.perf_counter()
        while srv.metric("latentmotion_frames_total") < 2 and time.perf_counter() - t < 120 and not good.done():
            await asyncio.sleep(0.05)  # the good edge is served before the flood starts
        others = await asyncio.gather(*(_raw(srv.target, [_open(head)]) for head, _, _ in flood))
        return await good, others

    try:
        rep, others = asyncio.run(main())
    finally:
        srv.stop()
    assert not rep.lost and rep.reconnects == 0, (rep.lost, rep.reconnects)
    assert [rep.results[s][0] for s in range(frames)] == reference(coder, items)
    for (_, codes, needle), (code, details, _) in zip(flood, others, strict=True):
        assert code in codes and needle in details, (code, details)


def test_a_good_edge_loses_nothing_beside_opens_for_other_cuts():
    _good_edge_beside_a_flood(bad=8, frames=30)


@pytest.mark.slow  # the flood: 60 Opens of unknown layers
def test_a_good_edge_loses_nothing_beside_sixty_bad_opens():
    _good_edge_beside_a_flood(bad=60, frames=30)
