"""Command line: ``latentmotion COMMAND``.

One module per group of commands (``paper``, ``codec``, ``service``); each
command parses its options, calls one library function and prints. The
contract every command keeps (one-line errors with exit 2, exit 130 / 143 on
SIGINT / SIGTERM, nothing partial left in ``--out``) lives in ``_app``.
"""

from __future__ import annotations

from . import codec, paper, service  # noqa: F401  (register the commands)
from ._app import app, run_app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``latentmotion`` script."""
    run_app()
