"""Comma-separated lists as every command reads them: one rule for options, model specs and benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .errors import InputError

T = TypeVar("T")


def parse_list(text: str, convert: Callable[[str], T], option: str, kind: str = "values", empty: bool = False) -> list[T]:
    """Items of a comma-separated ``text``, stripped, blank ones dropped, each through ``convert``.

    Refuses (:class:`~latentmotion.errors.InputError`, naming ``option`` and the ``kind`` of item) items
    ``convert`` rejects with ``ValueError``, and an empty list unless ``empty``.

    Example:
        >>> parse_list("1, 2,,4", int, "--steps")
        [1, 2, 4]
        >>> parse_list(" , ", str, "--anchors", empty=True)
        []
    """
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items and not empty:
        raise InputError(f"{option} needs at least one of the comma-separated {kind}, got {text!r}")
    try:
        return [convert(s) for s in items]
    except ValueError:
        raise InputError(f"{option} must be comma-separated {kind}, got {text!r}") from None
