"""Structure figures of issue 19, counted from the source (no imports): before/after a refactor.

    python benchmarks/count_structure.py

Prints the longest parameter lists, how many places build an ``Encoder`` from its parts
(and how many use ``Encoder.from_split``), where the bitstream's limits are written as
literals in the codec and its command, and how often the default model and cut are spelled
out. Run it on an old checkout to compare: ``python benchmarks/count_structure.py OLD_ROOT``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sys

ROOT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("src/latentmotion/**/*.py"), *ROOT.glob("benchmarks/*.py")])
LIMITS = {"4096": r"\b4096\b", "65535/65536": r"\b6553[56]\b", "2^24": r"1 << 24|\b16777216\b|2\*\*24"}


def code_lines(path: Path) -> list[str]:
    """Lines without comments and docstrings (limits written in prose do not count)."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    return [line.split("#")[0] for i, line in enumerate(path.read_text().splitlines(), 1) if i not in skip]


def main() -> None:
    params = []
    for path in SOURCES:
        if path.name.endswith("_pb2.py") or path.name == "count_structure.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - (1 if a.args and a.args[0].arg in ("self", "cls") else 0)
                params.append((n, f"{path.relative_to(ROOT)}:{node.name}"))
    params.sort(reverse=True)
    print("longest parameter lists:")
    for n, name in params[:8]:
        print(f"  {n:3d}  {name}")
    counts = {"Encoder( built": 0, "Encoder.from_split(": 0, **{f"limit {k}": 0 for k in LIMITS}, '"efficientnet_lite0"': 0, '"_blocks.4.add"': 0}
    places = {k: [] for k in LIMITS}
    for path in SOURCES:
        if path.name.endswith("_pb2.py") or path.name == "count_structure.py":
            continue
        text = "\n".join(code_lines(path))
        counts["Encoder( built"] += len(re.findall(r"(?<![\w.])Encoder\(", text))
        counts["Encoder.from_split("] += text.count("Encoder.from_split(")
        if "latentmotion/codec/" in str(path) or str(path).endswith("cli/codec.py"):  # the codec and its command
            for k, pat in LIMITS.items():
                n = len(re.findall(pat, text))
                counts[f"limit {k}"] += n
                places[k] += [str(path.relative_to(ROOT))] * bool(n)
        counts['"efficientnet_lite0"'] += text.count('"efficientnet_lite0"')
        counts['"_blocks.4.add"'] += text.count('"_blocks.4.add"')
    for k, v in counts.items():
        print(f"{k:>24}: {v}")
    for k, v in places.items():
        print(f"{'limit ' + k + ' in':>24}: {', '.join(v)}")


if __name__ == "__main__":
    main()
