"""Edge-to-cloud streaming over loopback TCP."""

from __future__ import annotations

import socket
import threading

import torch

import latentmotion as lm
from latentmotion.codec import Encoder
from latentmotion.data import fit_frame, read_frames, video_path
from latentmotion.transport import serve, stream

from .conftest import model


def _server(split, connections=1):
    port = []
    ready = threading.Event()
    served = []

    def run():
        served.append(serve("127.0.0.1", 0, lambda m, l: split, connections, ready=lambda p: (port.append(p), ready.set()), timeout=60))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(30)
    return port[0], t, served


def test_stream_over_loopback_matches_local_decode():
    split = lm.split_model(model("efficientnet_lite0"), "_blocks.4.add")
    frames = fit_frame(read_frames(video_path("bikes.mp4"), range(4)))
    with torch.no_grad():
        feats = split.edge(frames)
    port, t, served = _server(split)
    enc = Encoder(tuple(feats.shape[1:]), 2.0, "block", model="efficientnet_lite0", layer="_blocks.4.add")
    rep = stream(list(feats), enc, "127.0.0.1", port)
    t.join(30)
    with torch.no_grad():
        local = split.cloud(torch.stack(enc.reconstructions)).argmax(1).tolist()
    assert [r["top1"] for r in rep.results] == local
    assert rep.frames == 4 and served == [4] and rep.bytes_sent > 0


def test_cloud_rejects_garbage_with_an_error_line():
    split = lm.split_model(model("efficientnet_lite0"), "_blocks.4.add")
    port, t, served = _server(split)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        reply = s.makefile("r").readline()
    t.join(30)
    assert "error" in reply and "magic" in reply and served == [0]
