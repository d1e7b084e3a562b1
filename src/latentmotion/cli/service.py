"""Commands of the edge-to-cloud service: serve, stream (see docs/service.md)."""

from __future__ import annotations

import logging
import os
import signal
import sys

import typer

from .._files import read_small_file
from .._lists import parse_list
from ..codec.config import MotionTools, Tools
from ..defaults import DEFAULT_LAYER, DEFAULT_MODEL
from ..errors import InputError
from ..service.auth import address
from ..service.config import ServerConfig
from ._app import HELP, MOTION_SKIP, app, config_options, console

__all__ = ["serve", "stream"]


def _logs(level: int = logging.INFO) -> None:
    """One JSON line per event on stderr."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)


def _allowed(models: str, preload: list[str]) -> tuple[str, ...]:
    """The --models allowlist ('any': none), with every preloaded model on it."""
    if models.strip() == "any":
        return ()
    listed = parse_list(models, str, "--models", "model names ('any' for every registry model)")  # '' is no allowlist: refused
    return tuple(dict.fromkeys(listed + [p.rsplit(":", 1)[0] for p in preload]))


@app.command()
@config_options(ServerConfig, skip=("models", "preload"))
def serve(
    models: str = typer.Option(DEFAULT_MODEL, help="comma-separated models edges may use ('any': every registry model, which lets a client make the server build large networks; a package.module:factory only when listed)"),
    preload: list[str] = typer.Option(None, help="MODEL:LAYER to load before serving (repeatable)"),  # noqa: B008
    config: dict = None,  # noqa: RUF013 (the options of ServerConfig, filled by config_options)
) -> None:
    """Cloud side: decode edges' coded features and finish inference in batches (until SIGINT/SIGTERM)."""
    from ..service import serve as run_server

    weights = config["weights"]
    if weights not in ("imagenet", "random"):
        from ..models.zoo import load_state_file, weights_file

        path = weights_file(weights)  # what load_model will take for a file, on every stream
        if path is None:
            raise InputError(f"--weights {weights}: not imagenet, random or a state-dict path (one with a '/' or ending in .pt or .pth)")
        load_state_file(path)  # a missing file, a folder, a FIFO or no state dict is refused now, not on every stream
    _logs()
    cfg = ServerConfig(**config, models=_allowed(models, preload or ()), preload=tuple(preload or ()))
    host = cfg.host
    code = run_server(cfg, ready=lambda p: console.print(f"listening on {address(host, p)}", soft_wrap=True), stopping=_say_stopping)
    if code:  # the drain timed out: 130/143 like an interrupted job, and the stopping line was its one line
        sys.exit(code)


def _say_stopping(signum: int, streams: int) -> None:
    """The one line a signal gets: a serve asked to stop drains first (exit 0 when that completes)."""
    print(f"stopping on {signal.Signals(signum).name}: draining {streams} stream{'' if streams == 1 else 's'}", file=sys.stderr, flush=True)


def _token(token_file: str | None) -> str | None:
    """The bearer token: from a file (never the command line, which other users can read), else $LATENTMOTION_TOKEN."""
    if token_file:
        # Surrounding whitespace (the newline `base64 > edge1.token` writes) is not part of the token, as in the
        # hashing line of docs/service.md; undecodable bytes become U+FFFD, which EdgeOptions.check refuses.
        token = read_small_file(token_file, "token file", 4096).decode("utf-8", errors="replace").strip()
        if not token:  # sent as no token at all (and $LATENTMOTION_TOKEN passed over): the cloud would refuse it later
            raise InputError(f"token file {token_file} holds no token")
        return token
    return os.environ.get("LATENTMOTION_TOKEN")


@app.command()
@config_options(MotionTools, skip=MOTION_SKIP)
def stream(
    port: int = typer.Option(5050, min=0, max=65535),
    host: str = typer.Option("127.0.0.1"),
    video: str = typer.Option("bikes.mp4", help=HELP["video"]),
    start: int = typer.Option(0, help="first frame"),
    frames: int = typer.Option(24, help=HELP["frames"]),
    model: str = typer.Option(DEFAULT_MODEL, help=HELP["model"]),
    layer: str = typer.Option(DEFAULT_LAYER, help=HELP["layer"]),
    weights: str = typer.Option("imagenet", help="imagenet, random (seed 0, as serve's) or a state_dict path: the cloud's own"),
    step: float = typer.Option(4.0, help="quantisation step"),
    ca: str = typer.Option(None, help="CA certificate to trust (PEM; the server's own if self-signed)"),
    token_file: str = typer.Option(None, help="file holding this edge's token (default: $LATENTMOTION_TOKEN)"),
    insecure: bool = typer.Option(False, help="plaintext, no TLS (loopback only)"),
    realtime: bool = typer.Option(False, help="pace frames at the video's frame rate"),
    window: int = typer.Option(8, help="frames in flight"),
    retries: int = typer.Option(5, help="reconnection attempts in a row without a result (at most 100)"),
    seed: int = typer.Option(0, help="seed of the reconnection jitter"),
    task: str = typer.Option("", help="what the cloud does with the features: classify, segment (default: the model's own task)"),
    transform: str = typer.Option("none", help="code the features' coordinates in the cut's shipped channel transform: none, klt or kltw (the cloud maps them back)"),
    verbose: bool = typer.Option(False, help="log every event (reconnections) as JSON lines on stderr"),
    config: dict = None,  # noqa: RUF013 (the motion options, filled by config_options)
) -> None:
    """Edge side: run the edge sub-model on video, code the features and stream them to a cloud over gRPC."""
    from ..codec.limits import check_step
    from ..service import EdgeOptions, VideoSource, stream_video

    check_step(step)  # before the model runs: a step the stream cannot hold is the user's error
    tools = Tools(MotionTools(**config))  # refused here, before the model loads
    _logs(logging.INFO if verbose else logging.WARNING)  # a failure is still one line; its retries with --verbose
    opts = EdgeOptions(insecure=insecure, ca=ca, token=_token(token_file), window=window, max_retries=retries, seed=seed, task=task)
    src = VideoSource(video, start, frames, model, layer, weights, step, tools, transform)
    target = address(host, port)
    rep, fps = stream_video(target, src, opts, realtime)
    s = rep.summary(fps)
    console.print(
        f"{s['frames']} frames to {target}: {s['kbit_s']:.1f} kbit/s at {fps:g} fps, latency p50 {s['p50_ms']:.1f} ms "
        f"p99 {s['p99_ms']:.1f} ms, mean batch {s['mean_batch']:.1f}, lost {s['lost']}, reconnects {s['reconnects']}",
        soft_wrap=True,
    )
    if rep.lost:
        raise typer.Exit(1)
