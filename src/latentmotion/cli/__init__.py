"""Command line: ``latentmotion COMMAND``. User errors print one line and exit 2.

One module per group of commands (``paper``, ``codec``, ``service``); each
command parses its options, calls the library and prints.
"""

from __future__ import annotations

import sys

import typer

from ..errors import LatentMotionError
from . import codec, paper, service  # noqa: F401  (register the commands)
from ._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except LatentMotionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # usage errors of the (vendored) click parser
        if hasattr(exc, "exit_code") and hasattr(exc, "show"):
            exc.show()
            sys.exit(exc.exit_code)
        if hasattr(exc, "exit_code"):  # Exit(code)
            sys.exit(exc.exit_code)
        raise

