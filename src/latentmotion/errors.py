"""Errors that mean "the user asked for something that cannot be done".

The CLI prints these as one line and exits with code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["InputError", "LatentMotionError", "UnknownNameError", "WeightsUnavailableError", "shown"]


def shown(text: object) -> str:
    r"""``text`` fit for a terminal, a log or a remote client: one line, control and other unprintable characters
    written as escapes (a stream's header, a path or a client's message may hold anything).

    Example:
        >>> shown("a\x00b\u202ec\nd")
        'a\\x00b\\u202ec d'
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in " ".join(str(text).split()))


class LatentMotionError(Exception):
    """Base class of every user-facing error of latentmotion."""


class UnknownNameError(LatentMotionError, KeyError):
    """A model, layer, preset or mode name that does not exist."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], hint: str = "") -> None:
        choices = list(choices)
        close = difflib.get_close_matches(name, choices, n=5, cutoff=0.4)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        elif choices and len(choices) <= 12:
            msg += f"; choose one of {', '.join(repr(c) for c in choices)}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsUnavailableError(LatentMotionError):
    """Trained weights were asked for but are not on this machine.

    ``missing`` is the path of the expected file, when there is one.
    """

    def __init__(self, msg: str, missing: str | None = None) -> None:
        super().__init__(msg)
        self.missing = missing


class InputError(LatentMotionError, ValueError):
    """A tensor, image, video or parameter that is malformed."""
