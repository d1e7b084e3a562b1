"""Commands of the edge-to-cloud service: serve, stream."""

from __future__ import annotations

import typer
from rich.table import Table

from ..errors import InputError
from ._app import app, console
from .codec import _edge_features


@app.command()
def serve(
    port: int = typer.Option(5050, min=0, max=65535, help="TCP port (0: any free port)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    weights: str = typer.Option("imagenet", help="weights of the cloud sub-model"),
    connections: int = typer.Option(1, help="edges to serve before exiting (0: forever)"),
) -> None:
    """Cloud side: decode coded features from an edge and finish inference."""
    from functools import lru_cache

    from ..models import load_model, split_model
    from ..transport import serve as run_server

    @lru_cache(maxsize=4)
    def load(model: str, layer: str):
        return split_model(load_model(model, weights), layer)

    n = run_server(host, port, load, connections, ready=lambda p: console.print(f"listening on {host}:{p}"))
    console.print(f"served {n} frames")


@app.command()
def stream(
    port: int = typer.Option(5050, min=0, max=65535),
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
    from ..codec import Encoder
    from ..transport import stream as run_stream

    split, clip = _edge_features(video, start, frames, model, layer, weights)
    fps = clip.fps
    enc = Encoder(tuple(clip.features.shape[1:]), step, mode, model=model, layer=layer, fps=fps, stride=split.stride, offset=split.offset)
    try:
        rep = run_stream(list(clip.features), enc, host, port, list(clip.gray))
    except OSError as exc:
        raise InputError(f"cannot reach the cloud at {host}:{port}: {exc}") from None
    t = Table(title=f"{rep.frames} frames to {host}:{port}")
    for col in ("frame", "type", "top-1", "score", "round trip ms"):
        t.add_column(col)
    for r, st, ms in zip(rep.results, enc.stats, rep.round_trip_ms):
        t.add_row(str(r["index"]), st.kind, str(r["top1"]), f"{r['score']:.3f}", f"{ms:.1f}")
    console.print(t)
    console.print(f"{rep.bytes_sent} bytes, {8 * rep.bytes_sent / rep.frames * fps / 1000:.1f} kbit/s at {fps:g} fps")
