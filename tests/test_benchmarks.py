"""The benchmark scripts keep the commands' contract: a bad setting is one line and exit 2, before any output.

Each case starts a process that imports torch (about 5 s): four in the default run, the rest behind ``slow``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(args: tuple[str, ...], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_codec.py"), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--rd", "--configs", "bogus"), "unknown codec configuration 'bogus'"),  # checked by codec eval's rule, before the first run
        pytest.param(("--rd", "--clips", "nope.mp4"), "no run on nope.mp4", marks=pytest.mark.slow),
        (("--rd", "--with-anchors", "x265_ldp", "--frames", "100000", "--clips", "bikes.mp4"), "out of range"),
        (("--anchors", "--frames", "0"), "at least 1"),  # 0 is a value given, not the default
        pytest.param(("--configs", "block"), "--configs do not go with the speed test", marks=pytest.mark.slow),
        (("--frames", "0"), "--frames do not go with the speed test"),  # 0 == False: ran the speed test
        (("--rd", "--video", "carphone_pristine.mp4"), "--video do not go with --rd"),
        pytest.param(("--rd", "--anchors"), "not allowed with", marks=pytest.mark.slow),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2_before_any_folder(args, needle, tmp_path):
    r = _bench(args, tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []  # no report folder in the temp folder
