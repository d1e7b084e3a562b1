"""What the benchmark scripts share: timing (median of repeats, warm-up first), tables, and the commands' contract."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import NoReturn

from latentmotion.cli._exit import run_contract
from latentmotion.errors import InputError


class Parser(argparse.ArgumentParser):
    """argparse under the commands' contract: a bad option is an :class:`InputError`, which :func:`run_main` ends
    with one line and exit 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main`` as every ``latentmotion`` command runs (``latentmotion.cli._exit.run_contract``):
    user errors one line and exit 2, SIGINT and SIGTERM one line and 130 / 143, every ``finally`` run on the way."""
    run_contract(lambda: main() or 0)


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds per call by ``clock`` (``time.process_time``: CPU seconds, what the work costs on a shared machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times)


def table(rows: list[tuple], header: tuple[str, ...]) -> str:
    cols = list(zip(header, *rows))
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths))] + [line(r) for r in rows])
