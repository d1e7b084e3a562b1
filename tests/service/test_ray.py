"""The cloud's batched model half on Ray Serve (local Ray instance): same answers as in process."""

from __future__ import annotations

import asyncio

import pytest
import torch

from latentmotion.service import EdgeOptions, stream_edge
from latentmotion.service.ray_backend import CloudModel
from latentmotion.tasks import Classify

from .conftest import LAYER, MODEL, RecordingCoder, ServerThread, features, fingerprint, reference, split


def test_replica_body_batches_like_in_process_and_keeps_load_errors():
    """The Serve replica's code without Ray (fast, default run): answers and error capture."""
    body = CloudModel(MODEL, LAYER, "imagenet")
    assert body.fingerprint() == (fingerprint(), None) and body.probe((40, 28, 28)) == ("", (1000,))
    assert "(41, 28, 28)" in body.probe((41, 28, 28))[0] and "area" in body.probe((40, 60, 60))[0]
    xs = features()[:3]
    out = asyncio.run(body([(x.numpy(), Classify(top_k=2)) for x in xs]))
    with torch.no_grad():
        ref = split().cloud(xs).softmax(1).topk(2)
    assert [o[0].classes for o in out] == ref.indices.tolist() and all(o[1] == 3 for o in out)
    code, kind, msg = CloudModel("resnet43", LAYER, "imagenet").fingerprint()[1]
    assert (code, kind) == ("NOT_FOUND", "unknown_model") and "resnet34" in msg


@pytest.fixture(scope="module")
def ray_server():
    ray = pytest.importorskip("ray", reason="Ray Serve is the optional extra latentmotion[ray]")
    from latentmotion.service.ray_backend import RayBackend

    srv = None
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2)
    try:
        backend = RayBackend("local", "imagenet", max_batch=8, max_wait=0.01)
        srv = _ray_thread(backend)
        yield srv
    finally:
        if srv:
            srv.stop()
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def _ray_thread(backend):
    class RayServerThread(ServerThread):
        def _backend(self):
            return backend

    return RayServerThread(max_batch=8)


@pytest.mark.slow  # about 35 s on 2 busy cores (ray.init, Serve, one deployment); `make test-slow` runs it
def test_ray_serve_backend_answers_like_in_process_inference(ray_server):
    items = [[(x, None) for x in features()[i : i + 4]] for i in range(3)]
    coders = [RecordingCoder() for _ in items]

    async def main():
        return await asyncio.gather(*(stream_edge(ray_server.target, c, it, EdgeOptions(insecure=True, window=4)) for c, it in zip(coders, items)))

    reps = asyncio.run(main())
    for c, it, rep in zip(coders, items, reps):
        assert not rep.lost and [rep.results[s][0] for s in range(4)] == reference(c, it)
    assert max(b for rep in reps for b in rep.batches) > 1  # @serve.batch gathered frames of several edges


@pytest.mark.parametrize("family,host", [("AF_INET", "127.0.0.1"), ("AF_INET6", "::1"), ("AF_INET6", "[::1]")])
def test_a_listener_that_is_no_ray_cluster_is_told_apart_from_none(family, host):
    """TCP answers but no gRPC handshake: refused as such, IPv6 written with or without brackets (one address rule)."""
    import socket

    from latentmotion.errors import InputError
    from latentmotion.service.ray_backend import check_reachable

    try:
        srv = socket.socket(getattr(socket, family))
        srv.bind((host.strip("[]"), 0))
    except OSError:
        pytest.skip(f"no {family} loopback here")
    with srv:
        srv.listen()
        with pytest.raises(InputError, match="something listens there, but no Ray cluster answers"):
            check_reachable(f"{host}:{srv.getsockname()[1]}", timeout=0.5)
