"""What a path is, asked before anything opens it, and asked again once it is open: a FIFO blocks whoever opens
it until the other end comes, and a device or a socket is no file to read or replace. Symbolic links are
followed (the kind is the kind of what they point to)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import InputError

__all__ = ["file_kind", "open_regular", "package_folder", "read_small_file", "regular_file"]

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
    return _kind(mode)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


def regular_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a regular file; else :class:`InputError` (``what``: how the message names it)."""
    kind = file_kind(path)
    if kind is None:
        raise InputError(f"{what} {path} does not exist")
    if kind != "file":
        raise InputError(f"{what} {path} is not a regular file (it is a {kind})")
    return Path(path)


def open_regular(path: str | Path, what: str) -> BinaryIO:
    """``path`` opened for reading without blocking, and refused (:class:`InputError` naming ``what``) unless what is
    open is a regular file: a FIFO swapped in after a check cannot block the open, and a ``/proc`` file that would
    block a read fails it (EAGAIN) instead.

    Example:
        >>> with open_regular(__file__, "module") as f:
        ...     len(f.read(10))
        10
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{what} {path} is not a regular file (it is a {_kind(mode)})")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_small_file(path: str | Path, what: str, limit: int, magic: bytes = b"") -> bytearray:
    """The bytes of the regular file ``path`` (one buffer, no second copy), refused (:class:`InputError` naming
    ``what``) past ``limit`` bytes or this process's memory budget, or if they do not begin with ``magic``.

    The file is opened by :func:`open_regular` (no FIFO swapped in after the check can block it) and read in chunks,
    at most ``limit + 1`` bytes whatever its size says (a ``/proc`` file says 0), and ``magic`` is checked on the
    first; a read the machine refuses raises its ``OSError`` with the file's name (``/proc/self/mem``: a bare EIO).

    Example:
        >>> len(read_small_file(__file__, "module", 1 << 20)) > 100
        True
    """
    from ._memory import memory_budget

    p = regular_file(path, what)
    cap = limit if limit <= _CHUNK else min(limit, memory_budget())  # a token file is read even at a cgroup's limit
    no_magic = InputError(f"{what} {p} does not begin with {magic!r}: it is no {what}")
    buf = bytearray()
    try:
        with open_regular(p, what) as f:
            size = os.fstat(f.fileno()).st_size
            while size <= cap and len(buf) <= cap and (chunk := os.read(f.fileno(), min(cap + 1 - len(buf), _CHUNK))):
                buf += chunk
                if buf[: len(magic)] != magic[: len(buf)]:
                    raise no_magic
    except OSError as exc:
        exc.filename = exc.filename or str(p)
        raise
    if max(len(buf), size) > cap:
        raise InputError(f"{what} {p} is larger than {limit} bytes" if cap == limit else f"{what} {p} is larger than this process may hold ({cap} bytes)")
    if not buf.startswith(magic):  # shorter than its magic
        raise no_magic
    return buf


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
