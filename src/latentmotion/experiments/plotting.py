"""The matplotlib set-up every figure shares: files only, no display needed.

Example:
    >>> import tempfile, pathlib
    >>> plt = pyplot()
    >>> fig, ax = plt.subplots()
    >>> _ = ax.plot([0, 1], [0, 1])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "line.png"
    >>> save(fig, path)
    >>> path.stat().st_size > 0
    True
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["pyplot", "save"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (works without a display, in any thread)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path | str, dpi: int = 110) -> None:
    """Lay out, write ``fig`` as an image file and free it (figures are not kept open)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
