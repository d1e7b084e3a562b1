"""What a path is, asked before anything opens it: a FIFO blocks whoever opens it
until the other end comes, and a device or a socket is no file to read or replace.
Symbolic links are followed (the kind is the kind of what they point to)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputError

__all__ = ["file_kind", "package_folder", "read_small_file", "regular_file"]

_CHUNK = 1 << 20  # read_small_file's reads: its limit may be a GiB

_KINDS = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def file_kind(path: str | Path) -> str | None:
    """``file``, ``folder``, ``FIFO``, ``character device``, ``block device`` or ``socket``; None if nothing is there.

    Example:
        >>> file_kind("/dev/null"), file_kind("/"), file_kind("/no/such/thing")
        ('character device', 'folder', None)
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # a symlink loop, a folder that may not be searched
        raise InputError(f"cannot use {path}: {exc.strerror}") from None
    return next((name for test, name in _KINDS if test(mode)), "special file")


def regular_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a regular file; else :class:`InputError` (``what``: how the message names it)."""
    kind = file_kind(path)
    if kind is None:
        raise InputError(f"{what} {path} does not exist")
    if kind != "file":
        raise InputError(f"{what} {path} is not a regular file (it is a {kind})")
    return Path(path)


def read_small_file(path: str | Path, what: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``, refused (:class:`InputError` naming ``what``) past ``limit`` bytes.

    At most ``limit + 1`` bytes are read, in chunks (no buffer of the limit's size up front), whatever the file's
    size says (a ``/proc`` file says 0); a read the machine refuses raises its ``OSError`` with the file's name
    (``/proc/self/mem`` fails with a bare EIO).

    Example:
        >>> len(read_small_file(__file__, "module", 1 << 20)) > 100
        True
    """
    p = regular_file(path, what)
    too_large = InputError(f"{what} {p} is larger than {limit} bytes")
    if p.stat().st_size > limit:
        raise too_large
    chunks, n = [], 0
    try:
        with open(p, "rb") as f:
            while n <= limit and (chunk := f.read(min(limit + 1 - n, _CHUNK))):
                chunks.append(chunk)
                n += len(chunk)
    except OSError as exc:
        exc.filename = exc.filename or str(p)
        raise
    if n > limit:
        raise too_large
    return b"".join(chunks)


def package_folder(package: str) -> Path | None:
    """Where an installed package's files lie, without importing it (its data is all we want); None if absent.

    Example:
        >>> package_folder("latentmotion").name, package_folder("no_such_package_here")
        ('latentmotion', None)
    """
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
