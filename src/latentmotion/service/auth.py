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

__all__ = ["TokenSet", "address", "client_credentials", "hash_token", "is_loopback", "server_credentials"]

MAX_TOKEN_FILE = 1 << 20  # a token file is a few lines; refuse anything larger before reading


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token: what a token file holds."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenSet:
    """Digests of the accepted tokens."""

    def __init__(self, digests: Iterable[str]) -> None:
        self.digests = [d.strip().lower().encode() for d in digests]
        if not self.digests:
            raise InputError("the token file holds no token digests")
        for d in self.digests:
            if len(d) != 64 or any(c not in b"0123456789abcdef" for c in d):
                raise InputError(f"token file line {d[:16].decode(errors='replace')!r}... is not a SHA-256 hex digest")

    @classmethod
    def from_file(cls, path: str | Path) -> TokenSet:
        """Read a token file: one digest per line (see :func:`hash_token`), ``#`` comments."""
        text = read_small_file(path, "token file", MAX_TOKEN_FILE).decode(errors="replace")  # a folder or a FIFO refused as what it is
        lines = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
        return cls([ln for ln in lines if ln])

    def check(self, authorization: str | None) -> bool:
        """Whether an ``authorization`` metadata value carries an accepted token."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        digest = hash_token(authorization[7:]).encode()
        ok = False
        for d in self.digests:  # no early exit: the time does not depend on which digest matched
            ok |= hmac.compare_digest(d, digest)
        return ok


def _read_pem(path: str | Path, what: str) -> bytes:
    data = read_small_file(path, what, MAX_TOKEN_FILE)
    if b"-----BEGIN" not in data:
        raise InputError(f"{what} {path} is not a PEM file")
    return data


def server_credentials(cert: str | Path, key: str | Path):
    """gRPC server credentials from a PEM certificate chain and its private key."""
    import grpc

    return grpc.ssl_server_credentials([(_read_pem(key, "TLS key"), _read_pem(cert, "TLS certificate"))])


def client_credentials(ca: str | Path | None = None):
    """gRPC channel credentials trusting ``ca`` (a PEM file; None: the system's roots)."""
    import grpc

    return grpc.ssl_channel_credentials(_read_pem(ca, "CA certificate") if ca else None)


def address(host: str, port: int) -> str:
    """``host:port`` as gRPC reads it: an IPv6 host in brackets (``::1:1`` would read as the address ``::0.1.0.1``).

    Example:
        >>> address("::1", 5050), address("[::1]", 5050), address("localhost", 5050)
        ('[::1]:5050', '[::1]:5050', 'localhost:5050')
    """
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (plaintext is allowed only there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
