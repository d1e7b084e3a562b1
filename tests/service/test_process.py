"""The service as processes: restart mid-stream with the edge resuming, signals, a killed edge, CLI errors."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from latentmotion.service import EdgeOptions, stream_edge

from .conftest import RecordingCoder, ServerThread, features, reference

CLI = [sys.executable, "-m", "latentmotion.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, *extra: str) -> subprocess.Popen:
    p = subprocess.Popen([*CLI, "serve", "--insecure", "--port", str(port), "--idle-timeout", "10", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = []
    t = threading.Thread(target=lambda: line.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(120)
    assert line and line[0].startswith("listening on"), (line, p.poll())
    return p


def _stop(p: subprocess.Popen, sig: int) -> tuple[int, str]:
    p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    return p.returncode, err


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_server_restart_mid_stream_edge_resumes_and_signals_drain_to_exit_0():
    port = _free_port()
    first = _start(port)
    items = [(x, None) for x in features()]
    coder = RecordingCoder()
    restarted: list = []

    def restart():  # once a few frames went out, stop the cloud (drain) and start a new one on the same port
        t = time.perf_counter()
        while len(coder.recon) < 4 and time.perf_counter() - t < 120:
            time.sleep(0.05)
        restarted.append(_stop(first, signal.SIGTERM))
        restarted.append(_start(port))

    th = threading.Thread(target=restart, daemon=True)
    th.start()
    rep = asyncio.run(stream_edge(f"127.0.0.1:{port}", coder, items, EdgeOptions(insecure=True, window=2, max_retries=12), 4.0))
    th.join(120)
    (code, err), second = restarted
    try:
        assert code == 0 and '"clean": true' in err  # SIGTERM: drained cleanly, exit 0
        assert not rep.lost and len(rep.results) == 12 and rep.reconnects >= 1
        assert [rep.results[s][0] for s in range(12)] == reference(coder, items)  # resumed frames decode exactly
        # the edge command against the restarted cloud: one summary line
        r = subprocess.run([*CLI, "stream", "--insecure", "--port", str(port), "--frames", "3"], capture_output=True, text=True, timeout=300, check=False)
        assert r.returncode == 0 and "3 frames to" in r.stdout and "lost 0" in r.stdout, (r.stdout, r.stderr)
    finally:
        code2, _ = _stop(second, signal.SIGINT)
    assert code2 == 0  # an idle server asked to stop exits 0 too


@pytest.mark.slow  # about 40 s on 2 busy cores; test_server.py cuts an edge's connection in process by default
def test_an_edge_killed_mid_stream_ends_only_its_stream():
    port, mport = _free_port(), _free_port()
    server = _start(port, "--metrics-port", str(mport))
    try:
        edge = subprocess.Popen([*CLI, "stream", "--insecure", "--port", str(port), "--frames", "60", "--realtime"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t = time.perf_counter()
        while _metric(mport, "latentmotion_frames_total") < 3 and time.perf_counter() - t < 120:
            time.sleep(0.1)
        edge.kill()
        edge.wait(30)
        while _metric(mport, "latentmotion_active_streams") > 0 and time.perf_counter() - t < 150:
            time.sleep(0.1)
        assert _metric(mport, "latentmotion_active_streams") == 0
        coder, items = RecordingCoder(), [(x, None) for x in features()[:3]]
        rep = asyncio.run(stream_edge(f"127.0.0.1:{port}", coder, items, EdgeOptions(insecure=True)))
        assert [rep.results[s][0] for s in range(3)] == reference(coder, items)
    finally:
        assert _stop(server, signal.SIGTERM)[0] == 0


@pytest.mark.parametrize(
    "args,needle",
    [
        (("serve", "--insecure", "--port", "70000"), "--port"),
        (("serve", "--insecure", "--host", "0.0.0.0"), "only on loopback"),
        (("serve", "--port", "0"), "needs --cert, --key and --tokens"),
        (("serve", "--cert", "{tmp}/c.pem", "--key", "{tmp}/c.pem", "--tokens", "{tmp}/t"), "not a certificate and its private key"),
        (("serve", "--insecure", "--weights", "{tmp}/t"), "is not a readable state_dict"),
        (("serve", "--insecure", "--model-threads", "100000"), "--model-threads 100000 exceeds"),
        (("serve", "--insecure", "--port", "{busy}"), "Address already in use"),
        (("serve", "--insecure", "--ray", "127.0.0.1:1"), "no Ray cluster answers there"),
        (("serve", "--insecure", "--ray", ""), "--ray needs local, auto or HOST:PORT"),
        (("stream", "--insecure", "--port", "70000"), "--port"),
        (("stream", "--insecure", "--transform", "dct"), "--transform must be none or one of klt, kltw"),
        (("stream", "--insecure", "--model", "resnet18", "--layer", "layer2.0.add", "--transform", "kltw"), "no channel transform for resnet18"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, needle, tmp_path):
    from latentmotion.service import hash_token

    (tmp_path / "c.pem").write_text("-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n")
    (tmp_path / "t").write_text(hash_token("x") + "\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        argv = [a.format(tmp=tmp_path, busy=busy.getsockname()[1]) for a in args]
        r = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and needle in r.stderr, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1


def test_serve_says_in_one_line_that_a_signal_stops_it_and_drains_to_exit_0():
    import queue

    import grpc

    from latentmotion.service import cloud_pb2 as pb
    from latentmotion.service.server import METHOD

    port = _free_port()
    server = _start(port)
    requests: queue.Queue = queue.Queue()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(METHOD, pb.EdgeMessage.SerializeToString, pb.CloudMessage.FromString)(iter(requests.get, None))
        call.initial_metadata()  # accepted: one open stream, waiting for its Open
        code, err = _stop(server, signal.SIGTERM)
        requests.put(None)
        assert call.code() == grpc.StatusCode.UNAVAILABLE  # the drain told the edge to reconnect
    said = [ln for ln in err.splitlines() if not ln.startswith("{")]  # the rest are the JSON log lines
    assert said == ["stopping on SIGTERM: draining 1 stream"], err
    assert err.index("stopping on SIGTERM") < err.index('"stopped"')  # said when the signal came, not after the drain
    assert code == 0 and '"clean": true' in err


def test_a_drain_that_times_out_exits_like_an_interrupted_job_with_the_one_stopping_line(monkeypatch, capsys):
    import latentmotion.service as service
    from latentmotion.cli._app import run_app

    def cut_short(config, ready=None, stopping=None):  # SIGINT came with 2 streams open, and they outlived --drain-timeout
        ready(config.port)
        if stopping:
            stopping(int(signal.SIGINT), 2)
        return 130

    monkeypatch.setattr(service, "serve", cut_short)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exit_:
            run_app(["serve", "--insecure", "--port", "0"])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert exit_.value.code == 130
    assert capsys.readouterr().err.splitlines() == ["stopping on SIGINT: draining 2 streams"]


def test_a_metrics_port_in_use_is_one_line_and_stops_the_started_server():
    """The gRPC server is bound and started before the metrics endpoint: where that port is taken, the server is
    stopped while its loop runs (its destructor used to print a traceback after the error line)."""
    port = _free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        mport = taken.getsockname()[1]
        r = subprocess.run([*CLI, "serve", "--insecure", "--port", str(port), "--metrics-port", str(mport)], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and r.stderr.startswith("error: cannot serve metrics") and r.stderr.count("\n") == 1, r.stderr


def test_the_listening_line_names_the_metrics_port_that_0_got(caplog):
    with caplog.at_level(logging.INFO, logger="latentmotion.service"):
        srv = ServerThread(metrics_port=0)
    try:
        line = next(json.loads(r.getMessage()) for r in caplog.records if '"listening"' in r.getMessage())
        port = line["metrics_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert b"latentmotion_active_streams" in reply.read()
    finally:
        srv.stop()
