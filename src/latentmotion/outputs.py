"""Writing results so that nothing partial or stale is ever left behind.

Conventions:

* A result folder is built in a hidden sibling ``.<name>.staging-<pid>`` and
  published by renaming it onto ``out`` only when everything succeeded. With
  ``force`` an existing ``out`` is replaced whole, swapped in one step on
  Linux (``renameat2``), elsewhere moved aside then removed: old and new
  files are never mixed.
* A single file is written to ``.<name>.part-<pid>`` beside it and renamed (a name
  over 200 bytes is cut to 40 characters and a hash of it in these siblings).
* Only a regular file (``staged_file``) or a folder (``staged_folder``) is
  ever replaced: a FIFO, a device or a socket given as ``out`` is refused. A
  symbolic link is followed: what it points to is replaced, the link stays.
* Every check on the destination (a file where a folder is expected, a
  missing or unwritable parent) runs before the caller's work starts, by
  creating the staging entry itself.
* SIGINT and SIGTERM are held off during the final renames, so an
  interruption publishes all or nothing.
* Staging left by a killed process (its pid no longer runs) is removed the
  next time the same ``out`` is prepared; an old ``out`` it had moved aside
  is put back.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with staged_folder(out) as stage:
    ...     _ = (stage / "report.md").write_text("done")
    >>> sorted(p.name for p in out.iterdir())
    ['report.md']
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

from ._files import file_kind
from .errors import InputError

__all__ = ["signals_held", "staged_file", "staged_folder", "write_atomic"]

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _sibling(out: Path, tag: str, pid: int | None = None) -> Path:
    return out.with_name(f".{_stage_name(out)}.{tag}-{os.getpid() if pid is None else pid}")


def _stage_name(out: Path) -> str:
    """``out``'s name in its staging siblings: a long name is cut and told apart by its hash, so that a sibling
    (a dot, the name, ``.staging-`` and a pid) fits the file system's 255 bytes wherever ``out``'s name does."""
    raw = os.fsencode(out.name)
    if len(raw) <= 200:
        return out.name
    return f"{out.name[:40]}~{hashlib.sha256(raw).hexdigest()[:16]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _sweep_stale(out: Path) -> None:
    """Remove staging entries of ``out`` left by processes that no longer run."""
    if not out.parent.is_dir():
        return
    for tag in ("staging", "part", "old"):
        for p in out.parent.glob(f".{glob.escape(_stage_name(out))}.{tag}-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
                continue
            if tag == "old" and not out.exists():
                os.replace(p, out)  # killed between the two renames of a publish: the old content comes back
            else:
                _remove(p)


def _make_parents(out: Path) -> list[Path]:
    """Create the missing parent folders of ``out``; return them, deepest first, for cleanup."""
    made: list[Path] = []
    p = out.parent
    while not p.exists():
        made.append(p)
        p = p.parent
    if not p.is_dir():
        raise InputError(f"cannot write {out}: {p} is not a folder")
    for d in reversed(made):
        try:
            d.mkdir()
        except OSError as exc:
            _remove_empty(made)
            raise InputError(f"cannot create folder {d}: {exc.strerror}") from None
    return made


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # deepest first
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM until the block is done: they are recorded, and the first is raised again right after.

    Handlers are swapped rather than the signals masked: a mask holds only the thread that sets it, and the kernel
    hands a process-wide signal to any thread that does not block it (torch's and numba's workers), after which
    CPython runs the Python handler in the main thread at once. Off the main thread (where no handler can be set, and
    none runs) the block just runs.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, _frame: got.append(signum)) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: a handler set from C
        if got:
            signal.raise_signal(got[0])


def _absolute(out: Path | str) -> Path:
    """``out`` made absolute and normalised (``.`` and ``..`` resolved), a symbolic link followed to what it
    points to: staging sits beside the entry that is replaced, and a link is never replaced by a copy."""
    p = Path(os.path.abspath(out))
    if not p.name:
        raise InputError(f"--out {out} names no file or folder that could be replaced")
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _check_folder_out(out: Path, force: bool, inputs: tuple[Path | str | None, ...]) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"--out {out} exists and is not empty; pass --force to replace it")
    if out.is_dir():  # replacing it deletes what it holds: never the command's inputs, nor the folder it runs in
        real = Path(os.path.realpath(out))
        for what, src in (("the current folder", Path.cwd()), *(("the command's input", Path(i)) for i in inputs if i is not None)):
            inside = Path(os.path.realpath(src))
            if inside == real or real in inside.parents:
                raise InputError(f"--out {out} holds {what} {src}: replacing it would delete it; give another folder")


@contextlib.contextmanager
def staged_folder(out: Path | str, force: bool = False, inputs: tuple[Path | str | None, ...] = ()) -> Iterator[Path]:
    """Yield an empty staging folder; publish it as ``out`` when the block succeeds.

    Refuses (:class:`InputError`, before the block runs) an ``out`` that is a
    file, a non-empty folder without ``force``, an existing folder that holds one of
    the command's ``inputs`` or the current folder, or that cannot be created.
    On any exception, ``KeyboardInterrupt`` included, the staging folder and
    any parent folders created for it are removed and ``out`` is untouched.
    """
    out = _absolute(out)
    _sweep_stale(out)  # first: it may bring back an old ``out``
    _check_folder_out(out, force, inputs)
    made = _make_parents(out)
    stage = _sibling(out, "staging")
    try:
        stage.mkdir()
    except OSError as exc:
        _remove_empty(made)
        raise InputError(f"cannot write into {out.parent}: {exc.strerror}") from None
    try:
        yield stage
        with signals_held():
            _publish(stage, out)
    except BaseException:
        with signals_held():  # a second signal must not leave a half-removed staging folder
            _remove(stage)
            _remove_empty(made)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _publish(stage: Path, out: Path) -> None:
    """``stage`` becomes ``out``; an existing ``out`` is swapped out in one step where the OS can."""
    if not out.exists():
        os.replace(stage, out)
        return
    if _exchange(stage, out):
        _remove(stage)  # now holds the old content
        return
    old = _sibling(out, "old")  # a crash between these renames is repaired by _sweep_stale
    os.replace(out, old)
    os.replace(stage, out)
    _remove(old)


@contextlib.contextmanager
def staged_file(path: Path | str, inputs: tuple[Path | str | None, ...] = (), nbytes: int = 0) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The destination is checked first: a folder, a FIFO, a device, a missing
    parent folder, an unwritable one, one of the command's ``inputs`` (which
    the output would replace; None entries are skipped) or a file system with less than ``nbytes`` free
    (the size the caller will write, when it knows it) raise :class:`InputError`
    before the block runs.
    """
    path = _absolute(path)
    _sweep_stale(path)
    for src in (i for i in inputs if i is not None):
        with contextlib.suppress(OSError):  # an input that does not exist is its own command's error
            if os.path.samefile(src, path):
                raise InputError(f"--out {path} is the command's input {src}: give another file name")
    kind = file_kind(path)
    if kind == "folder":
        raise InputError(f"--out {path} is a folder; give a file name")
    if kind not in (None, "file"):
        raise InputError(f"--out {path} is not a regular file (it is a {kind}); only a regular file is replaced")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    if nbytes:
        _check_room(path, nbytes)
    tmp = _sibling(path, "part")
    try:
        tmp.touch()
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        yield tmp
        with signals_held():
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_room(path: Path, nbytes: int) -> None:
    """InputError where the file system of ``path``'s folder (``path`` absolute, links followed: :func:`_absolute`)
    has less than ``nbytes`` free: a result too large for the disk is refused before the work that makes it, not
    after it has filled the disk. The staged file sits beside ``path``, and an old ``path`` stays until the rename.
    """
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    if nbytes > free:
        raise InputError(f"cannot write {path}: it needs {_size(nbytes)} and its file system has {_size(free)} free")


def _size(n: int) -> str:
    """A byte count in the unit that fits it.

    Example:
        >>> _size(512), _size(3 << 20), _size(27_600_000_000), _size(1 << 80)
        ('512 B', '3.0 MiB', '25.7 GiB', '1099511627776.0 TiB')
    """
    unit = next((u for u in range(4, 0, -1) if n >= 1 << (10 * u)), 0)
    return f"{n} B" if unit == 0 else f"{n / (1 << (10 * unit)):.1f} {'KMGT'[unit - 1]}iB"


def write_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`staged_file`."""
    with staged_file(path, nbytes=len(data)) as tmp:
        tmp.write_bytes(data)
