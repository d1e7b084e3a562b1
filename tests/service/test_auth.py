"""Tokens and TLS: a valid token over TLS is served, a wrong or missing one gets UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from latentmotion.errors import InputError
from latentmotion.service import EdgeOptions, ServerConfig, ServiceError, TokenSet, hash_token, stream_edge

from .conftest import RecordingCoder, ServerThread, features, reference


def test_token_set_accepts_exactly_the_listed_tokens(tmp_path):
    f = tmp_path / "tokens"
    f.write_text(f"# edges of site A\n{hash_token('alpha')}\n\n{hash_token('beta').upper()}  # edge 2\n")
    ts = TokenSet.from_file(f)
    assert ts.check("Bearer alpha") and ts.check("Bearer beta")
    assert not any(ts.check(v) for v in (None, "", "alpha", "Bearer ", "Bearer alph", "Bearer alpha ", "bearer alpha", f"Bearer {hash_token('alpha')}"))
    (tmp_path / "bad").write_text(f"# site A\n\n{hash_token('alpha')}\nalpha-is-a-raw-token\n")  # a token where its digest belongs
    with pytest.raises(InputError, match=r"token file .*bad line 4 is not a SHA-256 hex digest") as err:
        TokenSet.from_file(tmp_path / "bad")
    assert "alpha-is" not in str(err.value)  # what may be a secret is never shown
    (tmp_path / "empty").write_text("# nobody\n")
    with pytest.raises(InputError, match="no token"):
        TokenSet.from_file(tmp_path / "empty")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A self-signed certificate for localhost, made with the openssl line of docs/service.md."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (d / "tokens").write_text(hash_token("edge-secret") + "\n")
    return d


def test_tls_with_a_valid_a_wrong_and_no_token(pki):
    srv = ServerThread(insecure=False, cert=str(pki / "cert.pem"), key=str(pki / "key.pem"), tokens=str(pki / "tokens"))
    target = f"localhost:{srv.port}"
    items = [(x, None) for x in features()[:4]]
    try:
        coder = RecordingCoder()
        rep = asyncio.run(stream_edge(target, coder, items, EdgeOptions(ca=str(pki / "cert.pem"), token="edge-secret")))
        assert [rep.results[s][0] for s in range(4)] == reference(coder, items) and not rep.lost
        for token in ("edge-secre", None):
            with pytest.raises(ServiceError, match="UNAUTHENTICATED"):
                asyncio.run(stream_edge(target, RecordingCoder(), items, EdgeOptions(ca=str(pki / "cert.pem"), token=token)))
        # plaintext to a TLS port never gets through (the handshake fails; the edge gives up after its retries)
        with pytest.raises(ServiceError, match="UNAVAILABLE"):
            asyncio.run(stream_edge(f"127.0.0.1:{srv.port}", RecordingCoder(), items, EdgeOptions(insecure=True, max_retries=0)))
        assert srv.metric("latentmotion_errors_total", kind="unauthenticated") == 2
        assert srv.metric("latentmotion_frames_total") == 4
    finally:
        srv.stop()


def test_plaintext_is_refused_off_loopback():
    with pytest.raises(InputError, match="only on loopback"):
        ServerConfig(host="0.0.0.0", insecure=True).check()
    with pytest.raises(InputError, match="only to loopback"):
        asyncio.run(stream_edge("192.0.2.1:5050", RecordingCoder(), [], EdgeOptions(insecure=True)))


@pytest.mark.parametrize("token", ["edge\nsecret", "edge-secret\r", "tab\tin", "caf\u00e9", "nul\x00", "del\x7f"])
def test_a_token_gRPC_metadata_cannot_carry_is_refused_before_connecting(token):
    # no server on this port: a refusal must come from the check, not from a connection attempt or its retries
    with pytest.raises(InputError, match="printable ASCII"):
        asyncio.run(stream_edge("127.0.0.1:1", RecordingCoder(), [], EdgeOptions(insecure=True, token=token, max_retries=0)))
    EdgeOptions(insecure=True, token="A z~!#=/+").check("127.0.0.1:1")  # every printable ASCII character, space included, is fine


def test_stream_refuses_a_token_file_with_a_newline_inside_in_one_line(tmp_path):
    import sys

    from latentmotion.cli.service import _token

    (tmp_path / "ok.token").write_text("c2VjcmV0LXRva2VuLWJ5dGVz\n")  # what `head -c 24 /dev/urandom | base64 > f` writes
    assert _token(str(tmp_path / "ok.token")) == "c2VjcmV0LXRva2VuLWJ5dGVz"  # the trailing newline is not part of the token
    (tmp_path / "binary.token").write_bytes(b"\xff\xfesecret\n")  # not UTF-8: refused by the same check, no traceback
    with pytest.raises(InputError, match="printable ASCII"):
        EdgeOptions(insecure=True, token=_token(str(tmp_path / "binary.token"))).check("127.0.0.1:1")
    (tmp_path / "two.token").write_text("first-line\nsecond-line\n")
    r = subprocess.run(
        [sys.executable, "-m", "latentmotion.cli", "stream", "--insecure", "--port", "1", "--retries", "0", "--token-file", str(tmp_path / "two.token")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and "printable ASCII" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "first-line" not in r.stderr  # the secret is never printed
    (tmp_path / "blank.token").write_text(" \n")  # no token: sent as none, and $LATENTMOTION_TOKEN passed over
    with pytest.raises(InputError, match="holds no token"):
        _token(str(tmp_path / "blank.token"))


def test_a_ca_file_is_checked_before_any_work_and_only_with_tls(pki, tmp_path):
    EdgeOptions(ca=str(pki / "cert.pem")).check("localhost:1")
    for ca, needle in ((tmp_path / "none.pem", "does not exist"), (pki / "tokens", "not a PEM file")):
        with pytest.raises(InputError, match=needle):
            EdgeOptions(ca=str(ca)).check("localhost:1")
    with pytest.raises(InputError, match="--ca has no use with --insecure"):
        EdgeOptions(ca=str(pki / "cert.pem"), insecure=True).check("127.0.0.1:1")


@pytest.mark.parametrize("host", ["[::1", "::1]", "[[::1]]", "a[b]", "[]"])
def test_stray_brackets_in_a_host_are_refused_in_one_line(host):
    from latentmotion.service.auth import address, is_loopback
    from latentmotion.service.server import check_bindable

    needle = "is empty" if host == "[]" else "brackets go around a whole IPv6 address"
    with pytest.raises(InputError, match=needle):
        address(host, 5050)
    with pytest.raises(InputError, match=needle):
        check_bindable(host, 0)  # gRPC printed its own parse error before ours
    with pytest.raises(InputError, match=needle):
        EdgeOptions().check(f"{host}:5050")
    assert not is_loopback(host)


def test_two_authorization_headers_are_refused_whatever_their_values(tmp_path):
    import grpc

    from latentmotion.service import cloud_pb2 as pb
    from latentmotion.service.server import METHOD

    (tmp_path / "tokens").write_text(hash_token("edge-secret") + "\n")
    srv = ServerThread(tokens=str(tmp_path / "tokens"), idle_timeout=5.0)

    async def status(metadata) -> tuple:
        async with grpc.aio.insecure_channel(srv.target) as channel:
            call = channel.stream_stream(METHOD, pb.EdgeMessage.SerializeToString, pb.CloudMessage.FromString)(metadata=metadata)
            await call.initial_metadata()
            if not call.done():  # accepted: end the stream without an Open
                await call.done_writing()
            return await call.code(), await call.details()

    good, bad = ("authorization", "Bearer edge-secret"), ("authorization", "Bearer wrong")
    try:
        for md in ((good, bad), (bad, good), (good, good)):
            code, details = asyncio.run(status(md))
            assert code == grpc.StatusCode.UNAUTHENTICATED and details == "ambiguous credentials: 2 authorization headers", (md, code, details)
        assert asyncio.run(status((good,)))[0] == grpc.StatusCode.INVALID_ARGUMENT  # one valid header is accepted (then no Open)
        assert srv.metric("latentmotion_errors_total", kind="unauthenticated") == 3
    finally:
        srv.stop()


def test_a_fifo_or_folder_as_a_pem_or_token_file_is_refused_before_it_is_opened(pki, tmp_path):
    """An attack gave a FIFO as --key: the TLS library's open blocked until a signal. A folder read "does not exist"."""
    import os

    from latentmotion.service.auth import client_credentials

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for cert, key in ((pki / "cert.pem", fifo), (fifo, pki / "key.pem")):
        with pytest.raises(InputError, match="not a regular file"):
            ServerConfig(cert=str(cert), key=str(key), tokens=str(pki / "tokens")).check()
    for bad in (fifo, tmp_path):
        with pytest.raises(InputError, match="not a regular file"):
            TokenSet.from_file(bad)
        with pytest.raises(InputError, match="not a regular file"):
            client_credentials(bad)
