"""What measured figures depend on besides their settings: software versions, threads and the CPU.

The standard codecs come with PyAV's FFmpeg build (its x265 and SVT-AV1), the
features and the task with torch (and its thread count, which orders float
sums), our encoder's float decisions with numpy and numba. Reports record
:func:`environment` beside their figures, so that a figure measured again
elsewhere can say what differed.

Example:
    >>> env = environment()
    >>> sorted(env) == sorted(FIELDS)
    True
    >>> describe(env).startswith("PyAV ")
    True
"""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["FIELDS", "describe", "environment"]

FIELDS = ("python", "torch", "torch_threads", "numpy", "numba", "av", "libavcodec", "machine", "cpu")


def environment() -> dict:
    """Versions, torch's thread count, the machine and its CPU (Linux names it; elsewhere it is "")."""
    import av
    import numba
    import numpy as np
    import torch

    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
            "numba": numba.__version__, "av": av.__version__, "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "machine": platform.machine(), "cpu": cpu}


def describe(env: dict | None) -> str:
    """One sentence for a report (after "Environment: "); ``None``, a summary written before environments were
    recorded, reads "not recorded"."""
    if not env:
        return "not recorded."
    return (f"PyAV {env['av']} (libavcodec {env['libavcodec']}, whose x265 and SVT-AV1 code the anchors), torch {env['torch']} "
            f"({env['torch_threads']} threads), numpy {env['numpy']}, numba {env['numba']}, Python {env['python']}, {env['cpu'] or env['machine']}.")
