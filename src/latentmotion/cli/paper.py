"""Commands of the paper's experiments: models, layers, demo, flow, reproduce."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .._lists import parse_list
from ..defaults import DEFAULT_LAYER, DEFAULT_MODEL
from ._app import HELP, app, console

__all__ = ["demo", "flow", "layers", "models", "reproduce"]


@app.command()
def models() -> None:
    """List model names accepted by --model."""
    from ..models import list_models

    for n in list_models():
        console.print(n)


@app.command()
def layers(
    model: str = typer.Argument(..., help="model name, e.g. resnet34, or your own as package.module:factory"),
    all_nodes: bool = typer.Option(False, "--all", help="also list nodes that are not single-tensor cut points"),
) -> None:
    """List the cut points of MODEL with output shape, stride, offset and receptive field."""
    from ..models import list_layers, load_model

    rows = list_layers(load_model(model, weights="random"), all_nodes=all_nodes)
    t = Table(title=f"{model} cut points (224x224 input)")
    for col in ("layer", "shape (C,H,W)", "stride", "offset", "receptive field", "single tensor", "spatial grid"):
        t.add_column(col)
    for li in rows:
        grid = f"no: {li.no_grid}" if li.no_grid else f"yes, whole-frame context from {li.context}" if li.context else "yes"
        t.add_row(li.name, "x".join(map(str, li.shape)), str(li.stride[0]) if li.stride else "-", f"{li.offset[0]:g}" if li.offset else "-", str(li.rf[0]) if li.rf else "-", "yes" if li.single else "no", grid)
    Console(width=200).print(t)


@app.command()
def demo(
    out: Path = typer.Option(Path("results/demo"), help="output folder"),
    model: str = typer.Option(DEFAULT_MODEL, help=HELP["model"]),
    layer: str = typer.Option(DEFAULT_LAYER, help=HELP["layer"]),
    weights: str = typer.Option("imagenet", help=HELP["weights"]),
    image: str = typer.Option("chelsea", help="scikit-image photo name or image file"),
    seed: int = typer.Option(0, help=HELP["seed"]),
    motion: Optional[list[str]] = typer.Option(None, help="motion as 'tx=8,rot=5' (Affine parameters); repeatable; default: Fig. 4's set"),
    force: bool = typer.Option(False, help="replace a non-empty --out"),
) -> None:
    """Small real job: Fig. 4-style figure and NRMSE table for one model and layer."""
    from ..experiments.fig4 import DemoSettings
    from ..experiments.fig4 import demo as run_demo
    from ..motion import Affine

    motions = {m: Affine.parse(m) for m in motion} if motion else None
    r = run_demo(DemoSettings(model, layer, weights, image, seed, motions), out, force)
    t = Table(title=f"NRMSE, {model} {layer}, weights {r.weights}")
    for col in ("motion", "NRMSE exact", "NRMSE paper"):
        t.add_column(col)
    for name, e in r.errors.items():
        t.add_row(name, f"{e['exact']:.4f}", f"{e['paper']:.4f}")
    console.print(t)
    console.print(f"figure: {r.figure}")


@app.command()
def flow(
    out: Path = typer.Option(..., help="output folder"),
    video: str = typer.Option("bikes.mp4", help=HELP["video"]),
    frames: tuple[int, int] = typer.Option((60, 62), help="reference and current frame indices (0-based)"),
    model: str = typer.Option(DEFAULT_MODEL, help=HELP["model"]),
    layer: str = typer.Option(DEFAULT_LAYER, help=HELP["layer"]),
    weights: str = typer.Option("imagenet", help=HELP["weights"]),
    preset: str = typer.Option("text", help="text (paper's text: 31/+-11 and 3/+-5) or code (its code: 31/+-5 and 5/+-1)"),
    block: Optional[int] = typer.Option(None, help="input-space block side (overrides the preset)"),
    radius: Optional[int] = typer.Option(None, help="input-space search radius (overrides the preset)"),
    latent_block: Optional[int] = typer.Option(None, help="latent-space block side (overrides the preset)"),
    latent_radius: Optional[int] = typer.Option(None, help="latent-space search radius (overrides the preset)"),
    channels: Optional[str] = typer.Option(None, help="comma-separated channels to show (default: 4 most varied)"),
    seed: int = typer.Option(0, help=HELP["seed"]),
    force: bool = typer.Option(False, help="replace a non-empty --out"),
) -> None:
    """Fig. 2: block matching in input and latent space on two video frames."""
    from ..experiments.flowcheck import FlowSettings, flow_report, search_settings

    chans = None if channels is None else tuple(parse_list(channels, int, "--channels", "integers"))
    search = search_settings(preset, block, radius, latent_block, latent_radius)
    table = flow_report(FlowSettings(video, frames, model, layer, weights, search, chans, seed), out, force)
    console.print(table)
    console.print(f"figure: {out / 'fig2.png'}")


@app.command()
def reproduce(
    out: Path = typer.Option(..., help="output folder (refused if it exists and is not empty, unless --force)"),
    profile: str = typer.Option("quick", help="smoke, quick or paper"),
    models: Optional[list[str]] = typer.Option(None, "--models", help="name\\[@weights]\\[:layer,layer]; repeatable. Default: the profile's"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    seed: int = typer.Option(0, help="seed of every random choice (recorded in the report)"),
    image: str = typer.Option("chelsea", help="scikit-image photo name or image file"),
    batch: int = typer.Option(0, help="frames per forward pass (0: 32 on CPU, 128 on GPU)"),
    force: bool = typer.Option(False, help="replace a non-empty --out"),
) -> None:
    """Reproduce every figure and claim of the paper into OUT/report.md."""
    from ..experiments.profiles import get_profile, parse_target
    from ..experiments.reproduce import Settings, run

    prof = get_profile(profile)
    settings = Settings(prof, [parse_target(m) for m in (models or prof.targets)], device, seed, image, batch)
    result = run(settings, out, log=lambda m: console.print(m, style="dim"), force=force)
    for v in result.verdicts:
        console.print(f"{'holds' if v['holds'] else 'DOES NOT HOLD'}: {v['claim']}")
    console.print(f"report: {result.report}")
