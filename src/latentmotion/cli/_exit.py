"""How a command ends under the contract (``_app``'s docstring), without the parser's weight: one line on stderr and
the exit status.

``latentmotion.cli.main`` needs it before typer and rich are imported (about 130 ms), ``_app`` for every command,
and the benchmark scripts (``benchmarks/_util.py``) for theirs: :func:`run_contract` is the one runner of all.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from ..errors import LatentMotionError, shown


def signal_word(signum: int) -> str:
    """The line a signal ends a command with: ``interrupted`` (SIGINT) or ``terminated`` (SIGTERM)."""
    return "interrupted" if signum == signal.SIGINT else "terminated"


def fail(message: str, code: int) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``, deaf to a second signal meanwhile."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not turn the one line into a traceback
        signal.signal(sig, signal.SIG_IGN)
    print(message, file=sys.stderr)
    sys.exit(code)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``code`` is the exit status (128 + signal number)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.code = 128 + signum
        self.word = signal_word(signum)


_received: list[int] = []  # signals taken by _raise_interrupted in this run


def _raise_interrupted(signum: int, _frame) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def _raise_again(unraisable) -> None:
    """``sys.unraisablehook``: an :class:`Interrupted` raised where it cannot propagate (a ctypes callback, such as
    llvmlite's while numba compiles, swallows it) is signalled again a moment later, from a thread, to be raised once
    control is back in Python, where every ``finally`` runs (raised now, it would land in this hook or the callback
    again); anything else goes to the default hook."""
    if isinstance(unraisable.exc_value, Interrupted):
        import threading

        try:
            threading.Timer(0.01, os.kill, (os.getpid(), unraisable.exc_value.code - 128)).start()
        except RuntimeError:  # the interpreter is shutting down: no thread, and the exit follows anyway
            pass
        return
    _previous_hook[0](unraisable)


_previous_hook = [sys.unraisablehook]  # what run_contract's hook hands other exceptions to, and puts back


def _exit_at_once(signum: int, _frame) -> None:
    """After the command: the output is out; flush it, say the word, exit by the signal (no exception into shutdown)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing left to say on it
            pass
    try:
        os.write(2, f"{Interrupted(signum).word}\n".encode())
    except OSError:  # stderr closed or a broken pipe: the code still says it
        pass
    finally:
        os._exit(128 + signum)


def settle() -> None:
    """After the work: a signal says its word and exits at once (no exception into the interpreter's shutdown)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_at_once)


def one_line(exc: BaseException | str) -> str:
    return shown(exc) or type(exc).__name__


def run_contract(body: Callable[[], int], other: Callable[[Exception], None] | None = None) -> None:
    """Run ``body`` (which returns an exit code) under the contract: SIGINT/SIGTERM raise :class:`Interrupted`, and
    end it with their word and 130/143, even where the exception came out as another or was swallowed; a
    :class:`~latentmotion.errors.LatentMotionError` or an ``OSError`` (the machine refused) with one line and 2;
    ``other`` may end the run for any other exception (else it propagates)."""
    _received.clear()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupted)
    _previous_hook[0], sys.unraisablehook = sys.unraisablehook, _raise_again
    try:
        code = body()
        settle()
        if code:
            sys.exit(code)
    except Interrupted as exc:
        fail(exc.word, exc.code)
    except KeyboardInterrupt:  # raised by code rather than by our signal handler
        fail("interrupted", 130)
    except Exception as exc:
        _fail_for(exc, other)
        raise
    finally:
        sys.unraisablehook = _previous_hook[0]


def _fail_for(exc: Exception, other: Callable[[Exception], None] | None) -> None:
    """End the run for ``exc`` where the contract says how; return where it does not (a bug: its traceback shows)."""
    if _received:  # the signal's exception was replaced on its way out
        interrupted = Interrupted(_received[0])
        fail(interrupted.word, interrupted.code)
    if isinstance(exc, LatentMotionError):
        fail(f"error: {one_line(exc)}", 2)
    if other:
        other(exc)
    if not isinstance(exc, OSError):
        return
    where = f": {shown(exc.filename)}" if exc.filename else ""  # disk full, permissions: the machine refused (a name, one line)
    fail(f"error: {exc.strerror or one_line(exc)}{where}", 2)
