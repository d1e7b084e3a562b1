"""Names of a package loaded on first use (PEP 562), so importing it does not wait for torch.

Example:
    >>> getattr_, dir_ = lazy_exports("latentmotion", {"psnr": "metrics"}, {})
    >>> getattr_("psnr").__name__
    'psnr'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``: name ``n`` is imported from its
    submodule ``exports[n]`` on first use and kept in ``namespace`` (the package's globals), so later
    look-ups skip the function."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
