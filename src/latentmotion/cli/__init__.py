"""Command line: ``latentmotion COMMAND``.

One module per group of commands (``paper``, ``codec``, ``service``); each
command parses its options, calls one library function and prints. The
contract every command keeps (one-line errors with exit 2, exit 130 / 143 on
SIGINT / SIGTERM, nothing partial left in ``--out``) lives in ``_app``.
"""

from __future__ import annotations

import signal

from ._exit import fail, signal_word

__all__ = ["app", "main"]


def _early_exit(signum: int, _frame) -> None:
    """SIGINT or SIGTERM while the commands' modules load: nothing has started, so one line and the exit status."""
    fail(signal_word(signum), 128 + signum)


def main() -> None:
    """Entry point of the ``latentmotion`` script: the contract's signal handling from its first moment (the
    commands' modules take a few hundred milliseconds to import, and Python's own SIGINT would print a traceback)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _early_exit)
    from ._app import run_app  # which registers the commands

    run_app()


def __getattr__(name: str):
    if name == "app":  # the Typer app with every command registered
        from . import codec, paper, service  # noqa: F401
        from ._app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
