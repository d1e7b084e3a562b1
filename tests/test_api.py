"""The public surface (issue 19): a narrow ``__all__`` in every public module, no private name imported across packages.

A module is public when its file name does not start with ``_`` (a package's ``__init__`` counts as the package);
the generated protobuf modules (``cloud_pb2*``) are skipped. A module's package is the folder it lives in: the
top-level modules (``latentmotion/data.py``, ``latentmotion/_files.py``) belong to ``latentmotion``. A private
*module* (``from .. import _files``, ``from .._files import regular_file``) may be imported from anywhere; a private
*name* (``from ..experiments.reproduce import _progress``) only within its own package.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import latentmotion

ROOT = Path(latentmotion.__file__).parent


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {_dotted(p): p for p in sorted(ROOT.rglob("*.py"))}
PUBLIC = sorted(m for m in SOURCES if not m.rsplit(".", 1)[-1].startswith("_") and not m.rsplit(".", 1)[-1].startswith("cloud_pb2"))


def _package(module: str) -> str:
    """The package a module belongs to: itself for a package, else its parent."""
    return module if SOURCES[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of the module an ``import from`` reads from."""
    if node.level == 0:
        return node.module or ""
    base = _package(module).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _defines_all(tree: ast.Module) -> bool:
    for n in tree.body:
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _tree(module: str) -> ast.Module:
    return ast.parse(SOURCES[module].read_text(encoding="utf-8"), filename=str(SOURCES[module]))


def test_the_module_lists_are_not_empty():
    assert {"latentmotion", "latentmotion.motion", "latentmotion.models.split", "latentmotion.experiments.reproduce"} <= set(PUBLIC)
    assert "latentmotion._files" not in PUBLIC and "latentmotion.cli._app" not in PUBLIC
    assert not any("cloud_pb2" in m for m in PUBLIC)


@pytest.mark.parametrize("module", PUBLIC)
def test_public_module_defines_all(module):
    assert _defines_all(_tree(module)), f"{SOURCES[module]} has no __all__"


@pytest.mark.parametrize("module", PUBLIC)
def test_every_name_in_all_exists(module):
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    if names is None:
        pytest.skip("no __all__: test_public_module_defines_all fails")
    assert all(isinstance(n, str) for n in names) and len(set(names)) == len(names), f"{module}.__all__ has repeats or non-strings"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"
    private = [n for n in names if _private(n)]
    assert not private, f"{module}.__all__ lists private names: {private}"


def _cross_package_private(module: str, tree: ast.Module) -> list[str]:
    """Each private name ``module`` imports from a module of another package."""
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = _resolve(module, node)
        if source not in SOURCES:  # outside latentmotion
            continue
        for alias in node.names:
            if not _private(alias.name) or f"{source}.{alias.name}" in SOURCES:  # a public name, or a (private) module
                continue
            if _package(source) != _package(module):
                bad.append(f"line {node.lineno}: {alias.name} from {source}")
    return bad


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_private_name_is_imported_from_another_package(module):
    bad = _cross_package_private(module, _tree(module))
    assert not bad, f"{module} imports private names of another package: {bad}"


def test_the_import_check_flags_only_what_it_should():
    cases = {
        "from ..experiments.reproduce import _progress": True,  # a private name of another package
        "from latentmotion.experiments.reproduce import _progress": True,
        "from .._files import regular_file": False,  # a public name of a private module
        "from .. import _files": False,  # a private module
        "from ._app import app, console": False,  # the same package
        "from ..errors import InputError": False,
        "from ..models import __doc__": False,  # a dunder
    }
    for code, flagged in cases.items():
        assert bool(_cross_package_private("latentmotion.cli.codec", ast.parse(code))) == flagged, code
    assert not _cross_package_private("latentmotion.estimation", ast.parse("from ._bm_kernel import _helper"))  # both in latentmotion
    assert _cross_package_private("latentmotion.estimation", ast.parse("from .cli._app import _helper"))


APPLICATIONS = ("latentmotion.cli", "latentmotion.experiments", "latentmotion.__main__")  # __main__: the command line's entry


def _imports(module: str, tree: ast.Module) -> list[str]:
    """Every latentmotion module ``module`` imports (at any depth of its code)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            src = _resolve(module, node)
            out += [src] + [f"{src}.{a.name}" for a in node.names if f"{src}.{a.name}" in SOURCES]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return [m for m in out if m.startswith("latentmotion")]


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if not m.startswith(APPLICATIONS)))
def test_the_library_never_imports_an_application(module):
    """Layers: models, motion, metrics, estimation, codec, service, tasks below experiments, benchmarks and cli."""
    bad = [m for m in _imports(module, _tree(module)) if m.startswith(APPLICATIONS)]
    assert not bad, f"{module} (library) imports {bad}"
