"""The task seam served end to end: a segmentation edge gets label maps equal to the local cloud's on what
the cloud decoded; a task that does not fit the model, or that no one knows, ends only its own stream."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest
import torch

import latentmotion as lm
from latentmotion.codec import Encoder, StreamId, Tools
from latentmotion.data import fit_frame, read_frames, video_path
from latentmotion.models import weights_fingerprint
from latentmotion.service import EdgeOptions, ServiceError, VideoSource, run_edge, stream_video
from latentmotion.service import cloud_pb2 as pb
from latentmotion.tasks import Segment, Segmentation

from .conftest import RecordingCoder, ServerThread, features, fingerprint, make_encoder
from .test_server import _raw

SEG, SEG_LAYER = "lraspp_mobilenet_v3_large", "backbone.3.add"


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """A cloud serving LR-ASPP with seeded random weights, as a state-dict file both sides load: the head's
    biases are zeroed, since random biases alone pick one class at every pixel and every label map would agree."""
    path = tmp_path_factory.mktemp("seg") / "lraspp-random-seed0-head-bias0.pt"
    m = lm.load_model(SEG, "random", seed=0)
    with torch.no_grad():
        for conv in (m.net.classifier.low_classifier, m.net.classifier.high_classifier):
            conv.bias.zero_()
    torch.save(m.net.state_dict(), path)
    net = lm.load_model(SEG, str(path))
    split = lm.split_model(net, SEG_LAYER)
    with torch.no_grad():
        feats = split.edge(fit_frame(read_frames(video_path("bikes.mp4"), range(4))))  # real street video
    srv = ServerThread(weights=str(path), models=(SEG,), idle_timeout=5.0)
    yield SimpleNamespace(path=str(path), split=split, feats=feats, fp=weights_fingerprint(net), server=srv)
    srv.stop()


def test_a_segmentation_edge_gets_the_label_maps_of_what_the_cloud_decoded(seg):
    shape, step = tuple(seg.feats.shape[1:]), 0.25 * float(seg.feats.pow(2).mean().sqrt())
    coder = RecordingCoder(lambda: Encoder(shape, step, Tools.of(mode="block"), stream=StreamId(model=SEG, layer=SEG_LAYER)), seg.fp)
    items = [(x, None) for x in seg.feats]
    rep = run_edge(seg.server.target, coder, items, EdgeOptions(insecure=True, task="segment", window=2))
    assert not rep.lost and sorted(rep.results) == [0, 1, 2, 3]
    assert all(isinstance(r, Segmentation) and r.labels.shape == (224, 224) and r.labels.dtype == torch.uint8 for r in rep.results.values())
    served = torch.stack([rep.results[i].labels for i in range(4)]).long()
    with torch.no_grad():
        decoded = seg.split.cloud(torch.stack([coder.recon[id(it)] for it in items]))
        uncompressed = seg.split.cloud(seg.feats)
    assert len(served.unique()) >= 3  # a real label map, not one class everywhere
    # the cloud's traced graph equals the eager sub-model up to float rounding: a near-tie pixel may flip
    assert (served == decoded.argmax(1)).double().mean() > 0.999
    s = Segment().score(uncompressed, decoded)
    assert list(s) == ["pixel_agreement", "miou"] and 0.5 < s["pixel_agreement"] <= 1 and 0 < s["miou"] <= 1


def test_stream_video_asks_for_the_models_own_task(seg):
    src = VideoSource(frames=2, model=SEG, layer=SEG_LAYER, weights=seg.path, step=0.01)
    rep, _ = stream_video(seg.server.target, src, EdgeOptions(insecure=True))
    assert not rep.lost and all(isinstance(r, Segmentation) for r in rep.results.values()) and len(rep.results) == 2


def test_tasks_that_do_not_fit_the_model_are_refused_at_open(seg, server):
    coder = RecordingCoder(lambda: Encoder(tuple(seg.feats.shape[1:]), 0.01, Tools.of(mode="block"), stream=StreamId(model=SEG, layer=SEG_LAYER)), seg.fp)
    with pytest.raises(ServiceError, match="FAILED_PRECONDITION: task 'classify' does not fit this model: classification needs"):
        run_edge(seg.server.target, coder, [(seg.feats[0], None)], EdgeOptions(insecure=True, task="classify"))
    assert seg.server.metric("latentmotion_errors_total", kind="task_mismatch") == 1
    with pytest.raises(ServiceError, match="task 'segment' does not fit this model: segmentation needs"):
        run_edge(server.target, RecordingCoder(), [(features()[0], None)], EdgeOptions(insecure=True, task="segment"))
    with pytest.raises(lm.UnknownNameError, match="unknown task 'segmnet'"):  # refused before connecting
        run_edge(server.target, RecordingCoder(), [], EdgeOptions(insecure=True, task="segmnet"))
    head = make_encoder()().header_bytes()
    code, details, _ = asyncio.run(_raw(server.target, [pb.EdgeMessage(open=pb.Open(header=head, weights=fingerprint(), task="detect"))]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown task 'detect'" in details


def test_an_edge_that_predates_tasks_is_classified(server):
    """Its Open has no task field: the cloud classifies, and answers in the fields it always read."""
    enc = make_encoder()()
    msgs = [pb.EdgeMessage(open=pb.Open(header=enc.header_bytes(), weights=fingerprint(), top_k=3))]
    msgs += [pb.EdgeMessage(frame=pb.Frame(seq=i, record=enc.encode(x))) for i, x in enumerate(features()[:2])]
    code, _, replies = asyncio.run(_raw(server.target, msgs))
    results = [r.result for r in replies if r.WhichOneof("kind") == "result"]
    assert code == grpc.StatusCode.OK and len(results) == 2
    assert all(len(r.classes) == 3 and len(r.scores) == 3 and r.task == "classify" and not r.outputs for r in results)
