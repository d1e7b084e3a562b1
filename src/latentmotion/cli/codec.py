"""Commands of the feature codec: codec encode, decode, eval."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional

import typer

from .. import _memory
from .._lists import parse_list
from ..codec.config import MotionTools, Tools
from ..defaults import DEFAULT_LAYER, DEFAULT_MODEL, TASK_WEIGHT
from ..errors import InputError, shown
from ..outputs import staged_file, staged_folder
from ._app import HELP, MOTION_SKIP, app, config_options, console

__all__ = ["codec_app", "codec_decode", "codec_encode", "codec_eval", "codec_fit_transform"]

MAX_STREAM_FILE = 1 << 30  # a feature stream of this size would be hours of video
TENSOR_OVERHEAD = 1024  # bytes a decoded frame's tensor object holds besides its values (about 500 measured)
MAX_CLASSIFY_FRAMES = 4096  # about a minute of the default cloud on this machine's 2 cores


codec_app = typer.Typer(no_args_is_help=True, help="Motion-compensated predictive coding of feature-tensor sequences.")
app.add_typer(codec_app, name="codec")


def _model_split(model: str, layer: str, weights: str, seed: int = 0):
    """The whole model's weights fingerprint (the stream header's ``weights``) and the split."""
    from ..models import load_model, split_model, weights_fingerprint

    net = load_model(model, weights, seed)
    return weights_fingerprint(net), split_model(net, layer)


@codec_app.command("encode")
@config_options(MotionTools, skip=MOTION_SKIP)
def codec_encode(
    out: Path = typer.Option(..., help="stream file to write"),
    video: str = typer.Option("bikes.mp4", help=HELP["video"]),
    start: int = typer.Option(0, help="first frame"),
    frames: int = typer.Option(24, help=HELP["frames"]),
    model: str = typer.Option(DEFAULT_MODEL, help=HELP["model"]),
    layer: str = typer.Option(DEFAULT_LAYER, help=HELP["layer"]),
    weights: str = typer.Option("imagenet", help=HELP["weights"]),
    step: float = typer.Option(4.0, help="quantisation step (quality: smaller is better)"),
    seed: int = typer.Option(0, help=HELP["seed"]),
    transform: str = typer.Option("none", help="code the features' coordinates in the cut's shipped channel transform: none, klt (best feature PSNR) or kltw (weighted by the task)"),
    config: dict = None,  # noqa: RUF013 (the motion options, filled by config_options)
) -> None:
    """Run the edge sub-model on video frames and write the coded feature stream."""
    from ..codec import MAX_Q, Encoder, StreamId, encode_sequence
    from ..codec.limits import check_step
    from ..data import video_path
    from ..models import weights_inputs
    from ..models.transform import check_transform_choice, edge_transform
    from ..pipeline import check_clip_range, check_frame_range, edge_features

    check_step(step)  # every option before the model loads and the video is decoded
    tools = Tools(MotionTools(**config))
    check_transform_choice(transform, model, layer)
    check_frame_range(start, frames, start + frames, video)  # the numbers themselves, before the video is opened
    source = video_path(video)  # exists, and is a regular file (a FIFO would block)
    with staged_file(out, inputs=(source, *weights_inputs(weights))) as tmp:  # --out is checked before the frames are counted (a weights file is an input)
        check_clip_range(source, start, frames)  # before the model loads
        fingerprint, split = _model_split(model, layer, weights, seed)
        to_coordinates, fingerprint = edge_transform(transform, model, layer, fingerprint)  # before the clip: the stream names the transform
        clip = edge_features(video, split, start, frames)
        x = to_coordinates(clip.features)
        check_step(step, x, max_level=MAX_Q // 2)  # a residual spans twice the values
        enc = Encoder.from_split(split, x, step, tools, StreamId(model, weights=fingerprint, fps=clip.fps))
        stream = encode_sequence(list(x), enc, list(clip.gray))
        tmp.write_bytes(stream)
    fps = clip.fps
    kinds = "".join("I" if s.kind == "intra" else "P" for s in enc.stats)
    console.print(f"{shown(out)}: {len(stream)} bytes, {8 * len(stream) / frames:.0f} bits/frame ({8 * len(stream) / frames * fps / 1000:.1f} kbit/s at {fps:g} fps), frames {kinds}")


def _check_cloud_shape(split, head, task) -> None:
    """The service's rule, before any decoding: the cloud takes the cut's channels and at most a few
    times its nominal area, so a small stream cannot make ``--classify`` run a huge network pass;
    and its output must fit the task (a segmentation model's cannot be classified)."""
    from ..service.backends import fit_problem, probe_output

    kind, why = fit_problem(probe_output(split.cloud, split.feature_shape(), tuple(head.shape)), task)
    if kind == "shape_mismatch":
        raise InputError(f"the stream's tensors {tuple(head.shape)} do not fit {head.model} {head.layer}: {why}")
    if kind:
        raise InputError(f"--classify: {head.model} is not a classifier: {why}")


def _top1(split, task, x, header) -> list[int]:
    """The classification task's top class of each decoded tensor, the cloud run a few frames at a time (bounded memory)
    through the service's own :func:`~latentmotion.service.batcher.run_tasks`."""
    import contextlib
    import io

    from ..service.batcher import run_tasks

    try:  # torch.fx prints its own report of a failing call to stderr: keep it out of the one line
        with contextlib.redirect_stderr(io.StringIO()):
            results = [r for i in range(0, len(x), 8) for r in run_tasks(split.cloud, x[i : i + 8], [task] * len(x[i : i + 8]))]
    except RuntimeError as exc:
        raise InputError(f"the stream's tensors {tuple(x.shape[1:])} do not fit {header.model} {header.layer}: {str(exc).splitlines()[0]}") from None
    bad = next((r for r in results if isinstance(r, Exception)), None)
    if bad is not None:
        raise InputError(f"the cloud's output of {header.model} {header.layer} cannot be classified: {bad}")
    return [r.classes[0] for r in results]


SYNTHESIS_CHUNK = 16  # frames mapped back through a channel transform at a time


class _DecodePlan(NamedTuple):
    """What ``codec decode`` will do, settled before any decoding."""

    name: str | None  # the stream's channel transform, if any
    transform: object  # its ChannelTransform, or None
    split: object  # the cloud's split (with --classify), or None
    task: object  # the task scoring the cloud's output (with --classify), or None
    nbytes: int  # the decoded values' bytes


def _decode_checks(stream: Path, data: bytes, classify: bool, model: str, weights: str, seed: int) -> _DecodePlan:
    """Everything ``codec decode`` refuses, before any decoding, and what it will then do.

    The stream's transform and the memory its outputs need; with ``classify``, the model it may build, the
    frame count, the weights and the cloud's fit to the tensors.
    """
    from ..codec import decode_work_nbytes, decoded_nbytes, read_stream_header
    from ..models.transform import stream_transform

    head = read_stream_header(data)
    base, name, transform = stream_transform(head.model, head.layer, head.weights, head.shape[0])
    chunk = 0 if transform is None else 2 * SYNTHESIS_CHUNK * 4 * head.shape[0] * head.shape[1] * head.shape[2]  # a chunk's map and its temporary
    values = decoded_nbytes(data)  # reads every record's length: once
    frames = values // (4 * head.shape[0] * head.shape[1] * head.shape[2])
    # the frames, their stack, one frame's work, and each frame's tensor object (about 0.5 KB: it dominates tiny frames)
    need, budget = 2 * values + decode_work_nbytes(data) + chunk + TENSOR_OVERHEAD * frames, _memory.memory_budget()
    if need > budget:
        raise InputError(f"stream {stream} needs {need / 2**30:.1f} GiB to decode; this process may hold {budget / 2**30:.1f} GiB")
    if not classify:
        return _DecodePlan(name, transform, None, None, values)
    from ..tasks import Classify

    if head.model != model:  # the stream's bytes never choose what gets built (a factory would import and run code)
        raise InputError(f"the stream names the model {head.model!r}; --classify builds only --model ({model}): pass --model {head.model} to allow it")
    if frames > MAX_CLASSIFY_FRAMES:  # the network's time is not bounded by the stream's bytes as decoding is
        raise InputError(f"the stream holds {frames} frames; --classify runs the cloud on at most {MAX_CLASSIFY_FRAMES}")
    mine, split = _model_split(head.model, head.layer, weights, seed)
    if base != mine:
        raise InputError(f"the stream was encoded with weights {base or '(unnamed)'}, but --weights {weights} are {mine}: decoding with other weights is refused")
    task = Classify(top_k=1)
    _check_cloud_shape(split, head, task)  # quiet: probe_output keeps torch.fx's report of a failing line off stderr
    return _DecodePlan(name, transform, split, task, values)


@codec_app.command("decode")
def codec_decode(
    stream: Path = typer.Argument(..., help="stream file from `codec encode`"),
    out: Optional[Path] = typer.Option(None, help="write the decoded tensors (N, C, H, W) to this .pt file"),
    classify: bool = typer.Option(False, help="run the cloud sub-model named in the header and print top-1 classes"),
    weights: str = typer.Option("imagenet", help="weights of the cloud model (with --classify); must be the weights the stream was encoded with"),
    seed: int = typer.Option(0, help="seed of random weights (with --classify)"),
    model: str = typer.Option(DEFAULT_MODEL, help="with --classify: the one network a stream may make it build (a stream naming another is refused before anything is built; a package.module:factory only when named here)"),
) -> None:
    """Decode a stream; optionally finish inference in the cloud sub-model (refused if its weights differ from the edge's)."""
    import contextlib

    import torch

    from .._files import read_small_file
    from ..codec import decode_stream
    from ..codec.bitstream import MAGIC as STREAM_MAGIC
    from ..models import weights_inputs

    data = read_small_file(stream, "stream file", MAX_STREAM_FILE, magic=STREAM_MAGIC)  # a FIFO, a huge file, no stream: refused early
    name, transform, split, task, values = _decode_checks(stream, data, classify, model, weights, seed)
    room = values + (1 << 20)  # the file: the values and torch's archive around them (well under a MiB)
    with staged_file(out, inputs=(stream, *(weights_inputs(weights) if classify else ())), nbytes=room) if out is not None else contextlib.nullcontext() as tmp:  # nothing written unless all succeeds
        header, tensors = decode_stream(data)
        if not tensors:
            raise InputError(f"stream file {stream} holds a header but no frames")
        x = torch.stack(tensors)
        if transform is not None:  # the coordinates back to the cut's features, in place a few frames at a time (no third copy)
            with torch.no_grad():
                for i in range(0, len(x), SYNTHESIS_CHUNK):
                    x[i : i + SYNTHESIS_CHUNK] = transform.decode(x[i : i + SYNTHESIS_CHUNK])
        top = None if split is None else _top1(split, task, x, header)
        if tmp is not None:
            try:
                torch.save(x, tmp)  # straight to the staged file: no third copy of the tensors in memory
            except (OSError, RuntimeError) as exc:  # torch's writer reports a full disk as a RuntimeError
                raise InputError(f"cannot write {out}: {getattr(exc, 'strerror', None) or 'the write failed (is the disk full?)'}") from None
    through = "" if transform is None else f" (coded through its {name} transform)"
    console.print(f"{shown(stream)}: {len(tensors)} tensors {tuple(x.shape[1:])} of {shown(header.model)} {shown(header.layer)}, step {header.step:g}{through}")
    if out is not None:
        console.print(f"decoded tensors: {shown(out)}")
    if top is not None:
        console.print("top-1 classes: " + " ".join(map(str, top)))


@codec_app.command("eval")
def codec_eval(
    out: Path = typer.Option(..., help="output folder"),
    video: str = typer.Option("bikes.mp4", help=HELP["video"]),
    start: int = typer.Option(0, help="first frame (0-23 of bikes.mp4: the camera moves)"),
    frames: int = typer.Option(24, help=HELP["frames"]),
    model: str = typer.Option(DEFAULT_MODEL, help=HELP["model"]),
    layer: str = typer.Option(DEFAULT_LAYER, help=HELP["layer"]),
    weights: str = typer.Option("imagenet", help=HELP["weights"]),
    steps: Optional[str] = typer.Option(None, help="comma-separated quantisation steps, relative to the features' RMS (default: 0.088 to 2.83 in factors of sqrt 2)"),
    configs: str = typer.Option("intra,zero,block,input", help="comma-separated configurations (intra, zero, block, block_int, input, klt, kltw, intra_klt)"),
    anchors: Optional[str] = typer.Option(None, help="comma-separated anchors, base[-modifier...] ('' for none; default: the strongest feature anchors and remote inference, docs/codec.md)"),
    qps: str = typer.Option("", help="comma-separated QPs for every anchor (default: each anchor family's own range)"),
    seed: int = typer.Option(0, help="seed of random weights (--weights random) and of the bootstrap of the KL intervals (recorded in summary.json)"),
    transform_file: Optional[Path] = typer.Option(None, help="channel transform file for klt and intra_klt, from `codec fit-transform` (default: the one shipped for the cut)"),
    force: bool = typer.Option(False, help="overwrite a non-empty --out"),
) -> None:
    """Rate-distortion and task fidelity (KL, with its noise floor) of every configuration and anchor; BD-rates; report."""
    from ..codec.limits import check_step
    from ..data import video_path
    from ..experiments.codec_anchors import DEFAULT_ANCHORS, parse_anchor
    from ..experiments.codec_eval import STEPS, EvalSettings, check_settings, evaluate, verdict
    from ..experiments.reproduce import progress_bar
    from ..models import weights_inputs
    from ..pipeline import check_frame_range

    step_list = STEPS if steps is None else tuple(check_step(s) for s in parse_list(steps, float, "--steps", "numbers"))
    qp_list = tuple(parse_list(qps, int, "--qps", "integers", empty=True))
    cfgs = tuple(parse_list(configs, str, "--configs", "configuration names"))
    anchor_list = DEFAULT_ANCHORS if anchors is None else tuple(parse_list(anchors, str, "--anchors", empty=True))
    check_frame_range(start, frames, start + frames, video)  # the numbers themselves, before the video is opened
    source = video_path(video)
    st = EvalSettings(video, model, layer, weights, start, frames, step_list, cfgs, anchor_list, qp_list, seed, transform=str(transform_file or ""))
    check_settings(st)  # and the frames past the clip, and the transform files: before the model loads
    inputs = (source, *weights_inputs(weights), *([transform_file] if transform_file else []))
    with staged_folder(out, force, inputs=inputs) as stage, progress_bar() as bar:
        task = bar.add_task("encoding", total=len(cfgs) * len(step_list) + sum(len(st.anchor_qps(parse_anchor(a))) for a in anchor_list))
        summary = evaluate(st, stage, progress=lambda n: bar.advance(task, n))
    console.print(verdict(summary))
    console.print(f"report: {out / 'report.md'}")


@codec_app.command("fit-transform")
def codec_fit_transform(
    out: Path = typer.Option(..., help="transform file to write (.pt); the shipped ones are src/latentmotion/models/transforms/MODEL__LAYER.pt (klt) and MODEL__LAYER__task.pt (kltw)"),
    model: str = typer.Option(DEFAULT_MODEL, help=HELP["model"]),
    layer: str = typer.Option("_blocks.10.add", help=HELP["layer"]),
    seed: int = typer.Option(0, help="seed of the random photo crops (and of the classes drawn for the Fisher information, from the same generator)"),
    crops: int = typer.Option(16, help="random crops per photo"),
    task_weight: float = typer.Option(0.0, help=f"weight the KLT by the cloud's Fisher information to this power (0: plain KLT, the `klt` files; {TASK_WEIGHT}: the `kltw` files)"),
) -> None:
    """Fit a cut's channel transform (KLT across channels, the `klt` and `kltw` configurations) on photos and clips the evaluation does not use."""
    from ..experiments.reproduce import progress_bar
    from ..models.transform import FitSettings, fit_channel_transform, save_transform

    if not 1 <= crops <= 1000:
        raise InputError("--crops must lie in 1..1000")
    if not 0 <= task_weight <= 2:
        raise InputError("--task-weight must lie in 0..2")
    with staged_file(out) as tmp, progress_bar() as bar:
        task = bar.add_task("edge features of the fitting images", total=None)
        t, record = fit_channel_transform(FitSettings(model, layer, seed, crops, task_weight=task_weight), progress=lambda n: bar.advance(task, n))
        save_transform(t, record, tmp)
    kind = f"KLT weighted by the task (Fisher information ^ {task_weight:g})" if task_weight > 0 else "KLT"
    console.print(f"{shown(out)}: {kind} of {model} {layer}, {record['images']} images, first quarter of the components holds {100 * record['energy_of_first_quarter']:.0f} % of the energy")
