"""Bearer tokens and TLS for the edge-to-cloud service.

The server never stores tokens, only their SHA-256 hex digests, one per line
in a token file (``#`` starts a comment). An edge presents the token in the
``authorization: Bearer <token>`` metadata; the server hashes it and compares
the digest with every stored one in constant time (:func:`hmac.compare_digest`,
no early exit over the list), so the reply time does not leak which digest or
how much of it matched.

Example:
    >>> tokens = TokenSet([hash_token("edge-1-secret")])
    >>> tokens.check("Bearer edge-1-secret"), tokens.check("Bearer guess"), tokens.check(None)
    (True, False, False)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from .._files import read_small_file
from ..errors import InputError

__all__ = ["TokenSet", "address", "client_credentials", "hash_token", "is_loopback", "read_pem", "server_credentials", "unbracket"]

MAX_TOKEN_FILE = 1 << 20  # a token file is a few lines; refuse anything larger before reading


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token: what a token file holds."""
    return hashlib.sha256(token.encode()).hexdigest()


_DIGESTS = "64 hex digits: the file holds digests of tokens, never tokens"


def _is_digest(d: bytes) -> bool:
    return len(d) == 64 and all(c in b"0123456789abcdef" for c in d)


class TokenSet:
    """Digests of the accepted tokens."""

    def __init__(self, digests: Iterable[str]) -> None:
        self.digests = [d.strip().lower().encode() for d in digests]
        if not self.digests:
            raise InputError("the token file holds no token digests")
        for i, d in enumerate(self.digests, 1):
            if not _is_digest(d):  # its text is not shown: it may be a token itself
                raise InputError(f"token entry {i} is not a SHA-256 hex digest ({_DIGESTS})")

    @classmethod
    def from_file(cls, path: str | Path) -> TokenSet:
        """Read a token file: one digest per line (see :func:`hash_token`), ``#`` comments."""
        text = read_small_file(path, "token file", MAX_TOKEN_FILE).decode(errors="replace")  # a folder or a FIFO refused as what it is
        lines = [(n, ln.split("#", 1)[0].strip()) for n, ln in enumerate(text.splitlines(), 1)]
        for n, ln in lines:
            if ln and not _is_digest(ln.lower().encode()):  # its text is not shown: it may be a token itself
                raise InputError(f"token file {path} line {n} is not a SHA-256 hex digest ({_DIGESTS})")
        return cls([ln for _, ln in lines if ln])

    def check(self, authorization: str | None) -> bool:
        """Whether an ``authorization`` metadata value carries an accepted token."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        digest = hash_token(authorization[7:]).encode()
        ok = False
        for d in self.digests:  # no early exit: the time does not depend on which digest matched
            ok |= hmac.compare_digest(d, digest)
        return ok


def read_pem(path: str | Path, what: str) -> bytes:
    """The bytes of a PEM file, refused (:class:`InputError` naming ``what``) if it is none or larger than a MiB."""
    data = read_small_file(path, what, MAX_TOKEN_FILE)
    if b"-----BEGIN" not in data:
        raise InputError(f"{what} {path} is not a PEM file")
    return bytes(data)  # gRPC takes bytes, not a bytearray


def server_credentials(cert: str | Path, key: str | Path):
    """gRPC server credentials from a PEM certificate chain and its private key."""
    import grpc

    return grpc.ssl_server_credentials([(read_pem(key, "TLS key"), read_pem(cert, "TLS certificate"))])


def client_credentials(ca: str | Path | None = None):
    """gRPC channel credentials trusting ``ca`` (a PEM file; None: the system's roots)."""
    import grpc

    return grpc.ssl_channel_credentials(read_pem(ca, "CA certificate") if ca else None)


def address(host: str, port: int) -> str:
    """``host:port`` as gRPC reads it: an IPv6 host in brackets (``::1:1`` would read as the address ``::0.1.0.1``).

    Example:
        >>> address("::1", 5050), address("[::1]", 5050), address("localhost", 5050)
        ('[::1]:5050', '[::1]:5050', 'localhost:5050')
    """
    bare = unbracket(host)
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def unbracket(host: str) -> str:
    """``host`` without the brackets of an IPv6 address as edges write it (``[::1]``); stray brackets are refused
    (:class:`InputError`: gRPC would print its own parse error and refuse the address only when binding).

    Example:
        >>> unbracket("[::1]"), unbracket("::1"), unbracket("localhost")
        ('::1', '::1', 'localhost')
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "[" in bare or "]" in bare:
        raise InputError(f"host {host!r}: brackets go around a whole IPv6 address, as in [::1]")
    if not bare:
        raise InputError(f"host {host!r} is empty")
    return bare


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (plaintext is allowed only there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(unbracket(host)).is_loopback
    except (ValueError, InputError):
        return False
