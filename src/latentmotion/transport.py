"""Edge-to-cloud streaming of coded features over TCP (Fig. 1 as a running system).

The edge runs the edge sub-model on video frames, codes each tensor with
:mod:`latentmotion.codec` and sends the stream as it grows: the codec's header,
then its self-delimiting, checksummed frames. The cloud parses the stream
incrementally, decodes each frame, runs the cloud sub-model named in the
header and answers one JSON line per frame (index, top-1 class and score).
Any damage to the stream ends the connection with an error line; sockets
carry timeouts so neither side can hang.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from .codec import Decoder, Encoder
from .codec.bitstream import MAGIC, MAX_STR, BitstreamError, Reader, read_frame, read_header
from .codec.prediction import MODE_NAMES
from .errors import InputError
from .models import Split

HEADER_TAIL = 2 * 3 + 1 + 4 + 4 + 2 + 4 + 4  # shape, dtype, step, 4 bytes of modes, intra period, fps, crc


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise BitstreamError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_stream_header(sock: socket.socket) -> tuple[bytes, object]:
    """Read exactly one codec header from a socket; returns its bytes and the parsed header."""
    raw = _recv_exact(sock, 5)
    if raw[:4] != MAGIC:
        raise BitstreamError("not a latentmotion feature stream (bad magic)")
    for _ in range(3):  # model, layer and weights names (stream version 2)
        n = struct.unpack("<H", _recv_exact(sock, 2))[0]
        if n > MAX_STR:
            raise BitstreamError("header string too long")
        raw += struct.pack("<H", n) + _recv_exact(sock, n)
    raw += _recv_exact(sock, HEADER_TAIL)
    return raw, read_header(Reader(raw), len(MODE_NAMES))


def _read_frame(sock: socket.socket, limit: int) -> bytes | None:
    """One frame's payload, or None at a clean end of stream."""
    first = sock.recv(1)
    if not first:
        return None
    head = first + _recv_exact(sock, 7)
    n, _ = struct.unpack("<II", head)
    if n > limit:
        raise BitstreamError(f"frame of {n} bytes exceeds the bound {limit}")
    raw = head + _recv_exact(sock, n)
    return read_frame(Reader(raw), limit)


def serve_connection(conn: socket.socket, load_split: Callable[[str, str], Split], timeout: float = 30.0) -> int:
    """Decode and classify one edge's stream; answers a JSON line per frame. Returns frames served."""
    conn.settimeout(timeout)
    served = 0
    try:
        _, header = read_stream_header(conn)
        split = load_split(header.model, header.layer)
        dec = Decoder(header)
        limit = header.frame_limit()
        while (payload := _read_frame(conn, limit)) is not None:
            x = dec.decode_payload(payload)
            with torch.no_grad():
                p = split.cloud(x[None]).softmax(1)[0]
            score, top = p.max(0)
            conn.sendall((json.dumps({"index": served, "top1": int(top), "score": float(score)}) + "\n").encode())
            served += 1
    except (BitstreamError, socket.timeout, ConnectionError) as exc:
        try:
            conn.sendall((json.dumps({"error": str(exc)}) + "\n").encode())
        except OSError:
            pass
    finally:
        conn.close()
    return served


def serve(host: str, port: int, load_split: Callable[[str, str], Split], connections: int = 1, ready: Callable[[int], None] | None = None, timeout: float = 30.0) -> int:
    """Listen on ``host:port`` and serve ``connections`` edges one after another (0: forever)."""
    with socket.create_server((host, port)) as srv:
        srv.settimeout(timeout if connections else None)
        if ready:
            ready(srv.getsockname()[1])
        total, n = 0, 0
        while connections == 0 or n < connections:
            conn, _ = srv.accept()
            total += serve_connection(conn, load_split, timeout)
            n += 1
        return total


@dataclass
class StreamReport:
    frames: int
    bytes_sent: int
    results: list[dict]
    round_trip_ms: list[float]  # send of a frame to its answer


def stream(tensors: Iterable[torch.Tensor], encoder: Encoder, host: str, port: int, frames: Iterable[torch.Tensor | None] | None = None, timeout: float = 30.0) -> StreamReport:
    """Send coded tensors to a cloud at ``host:port`` frame by frame, collecting its answers."""
    sent, results, rtt = 0, [], []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        lines = sock.makefile("r")
        head = encoder.header_bytes()
        sock.sendall(head)
        sent += len(head)
        frames = frames if frames is not None else iter(lambda: None, 0)
        for x, f in zip(tensors, frames):
            chunk = encoder.encode(x, f)
            t = time.perf_counter()
            sock.sendall(chunk)
            sent += len(chunk)
            line = lines.readline()
            if not line:
                raise InputError("the cloud closed the connection")
            msg = json.loads(line)
            if "error" in msg:
                raise InputError(f"the cloud refused the stream: {msg['error']}")
            rtt.append(1000 * (time.perf_counter() - t))
            results.append(msg)
        sock.shutdown(socket.SHUT_WR)
    return StreamReport(len(results), sent, results, rtt)
