"""Shared pieces of the command line: the Typer app, the console, output-folder rules."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Motion in the latent space of CNNs (collaborative intelligence).")
console = Console()


def prepare_out(out: Path, force: bool, create: bool = True) -> Path:
    """Refuse an existing non-empty output folder unless ``force``; create it unless ``create`` is False."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"--out {out} exists and is not empty; pass --force to overwrite")
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def parse_motion(text: str):
    """'tx=8,rot=5' -> Affine(tx=8, rot=5)."""
    from dataclasses import fields

    from ..motion import Affine

    names = {f.name for f in fields(Affine)}
    kw = {}
    for part in filter(None, text.split(",")):
        key, eq, val = part.partition("=")
        key = key.strip()
        if not eq or key not in names:
            raise InputError(f"motion {text!r}: expected name=value pairs with names from {', '.join(sorted(names))}")
        try:
            kw[key] = float(val)
        except ValueError:
            raise InputError(f"motion {text!r}: {val!r} is not a number") from None
    return Affine(**kw)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name and rename, so no partial file is left behind."""
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
