"""How a command ends under the contract, without the parser's weight: one line on stderr and the exit status.

``latentmotion.cli.main`` needs it before typer and rich are imported (about 130 ms), and ``_app`` for every end.
"""

from __future__ import annotations

import signal
import sys
from typing import NoReturn


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
