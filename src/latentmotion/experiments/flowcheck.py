"""Fig. 2: block matching in input space and in feature channels, and how well they agree.

Input motion is estimated on 8-bit grayscale frames (exact integer matching),
latent motion on the edge tensors, per channel and jointly. The input field is
pooled to the latent grid (box average over one stride, sampled where each
latent element sits: ``stride * u + offset``) and compared with the latent
field times the stride: end-point error (EPE) in input pixels, and the share
of positions within one latent pixel (EPE <= stride).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import read_frames, video_path
from ..defaults import DEFAULT_LAYER, DEFAULT_MODEL
from ..errors import InputError
from ..estimation import block_match, check_search
from ..models import Split
from ..motion import Affine, flow_from_affine, render_pair, sample
from ..pipeline import check_clip_range, gray8
from .fig4 import top_channels
from .plotting import pyplot, save

__all__ = ["PRESETS", "FlowSettings", "FlowStats", "analyse_pair", "flow_report", "search_settings", "synthetic_flow_summary", "video_pair"]

#: Side of the frames block matching sees (centre-cropped and resized, as the network's input).
FRAME_SIDE = 224

#: Block sizes and search ranges of Fig. 2: the paper's text and its code.
PRESETS = {
    "text": {"input": (31, 11), "latent": (3, 5)},
    "code": {"input": (31, 5), "latent": (5, 1)},
}


def to_latent_grid(field: torch.Tensor, split: Split, latent_size: tuple[int, int], valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool an input-space field (2, H, W) to the latent grid: (2, h, w) and a validity mask (h, w)."""
    s = split.stride[0]
    f = field[None].float()
    v = (valid if valid is not None else torch.ones(field.shape[-2:], dtype=torch.bool))[None, None].float()
    num = F.avg_pool2d(f * v, s, stride=1, padding=s // 2, count_include_pad=False)[..., : field.shape[-2], : field.shape[-1]]
    den = F.avg_pool2d(v, s, stride=1, padding=s // 2, count_include_pad=False)[..., : field.shape[-2], : field.shape[-1]]
    hl, wl = latent_size
    ys, xs = torch.meshgrid(torch.arange(hl, dtype=torch.float64), torch.arange(wl, dtype=torch.float64), indexing="ij")
    at = torch.stack([xs * split.stride[1] + split.offset[1], ys * split.stride[0] + split.offset[0]], -1)[None]
    pooled = sample(num / den.clamp_min(1e-9), at, "bilinear", None).warped[0]
    cover = sample(den, at, "bilinear", None).warped[0, 0] > 0.999
    return pooled, cover


def _fit_mask(h: int, w: int, block: int) -> torch.Tensor:
    b = block // 2
    m = torch.zeros(h, w, dtype=torch.bool)
    m[b : h - b, b : w - b] = True
    return m


@dataclass
class FlowStats:
    epe_mean: float  # input pixels
    epe_median: float
    within_one_latent: float  # share of positions with EPE <= stride
    n: int


def compare(latent_field: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, stride: int) -> FlowStats:
    """EPE of ``stride * latent_field`` against a reference field on the latent grid."""
    epe = torch.linalg.vector_norm(latent_field * stride - reference, dim=0)[mask]
    if epe.numel() == 0:
        return FlowStats(float("nan"), float("nan"), float("nan"), 0)
    return FlowStats(float(epe.mean()), float(epe.median()), float((epe <= stride).float().mean()), int(epe.numel()))


def search_settings(preset: str = "text", block: int | None = None, radius: int | None = None, latent_block: int | None = None, latent_radius: int | None = None) -> dict[str, tuple[int, int]]:
    """(block, radius) for the input and latent searches: a preset, with any value overridden."""
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    (bi, ri), (bl, rl) = PRESETS[preset]["input"], PRESETS[preset]["latent"]
    pick = lambda v, d: d if v is None else v  # noqa: E731
    search = {"input": (pick(block, bi), pick(radius, ri)), "latent": (pick(latent_block, bl), pick(latent_radius, rl))}
    for space, (b, r) in search.items():  # before any work; a latent frame is smaller than the input frame
        try:
            useful = check_search(b, r, FRAME_SIDE, FRAME_SIDE)
        except InputError as e:
            raise InputError(f"{space} search: {e}") from None
        if r > useful:
            raise InputError(f"{space} search radius {r} is longer than the frame allows: at most {useful} (block {b} in {FRAME_SIDE}x{FRAME_SIDE} input frames)")
    return search


def _match(space: str, ref: torch.Tensor, cur: torch.Tensor, block: int, radius: int, channels: str = "joint") -> torch.Tensor:
    try:
        return block_match(ref, cur, block, radius, channels=channels)  # type: ignore[arg-type]
    except InputError as e:
        raise InputError(f"{space} search (block {block}, radius {radius}): {e}") from None


@torch.no_grad()
def analyse_pair(frames: torch.Tensor, split: Split, search: str | dict[str, tuple[int, int]] = "text", channels: list[int] | None = None, truth: torch.Tensor | None = None) -> dict:
    """Fields and statistics for one frame pair (2, 3, H, W) in [0, 1].

    ``search`` is a preset name or :func:`search_settings`' result.
    """
    search = search_settings(search) if isinstance(search, str) else search
    (bi, ri), (bl, rl) = search["input"], search["latent"]
    g = gray8(frames)
    h, w = g.shape[-2:]
    input_field = _match("input", g[0], g[1], bi, ri)
    feats = split.edge(frames)
    ref_f, cur_f = feats[0], feats[1]
    joint = _match("latent", ref_f, cur_f, bl, rl)
    chans = channels if channels is not None else top_channels(ref_f, 4)
    if any(c < 0 or c >= ref_f.shape[0] for c in chans):
        raise InputError(f"channels must lie in 0..{ref_f.shape[0] - 1}, got {chans}")
    each = _match("latent", ref_f[chans], cur_f[chans], bl, rl, "each") if chans else torch.zeros(0, 2, *ref_f.shape[-2:])
    latent_size = tuple(ref_f.shape[-2:])
    pooled, cover = to_latent_grid(input_field, split, latent_size, _fit_mask(h, w, bi))
    lmask = cover & _fit_mask(*latent_size, bl)
    stats = {"joint_vs_input": compare(joint, pooled, lmask, split.stride[0])}
    for i, c in enumerate(chans):
        stats[f"channel {c} vs input"] = compare(each[i], pooled, lmask, split.stride[0])
    if truth is not None:
        gt, _ = to_latent_grid(truth, split, latent_size)
        stats["input_vs_truth"] = compare(input_field, truth, _fit_mask(h, w, bi), 1)
        stats["joint_vs_truth"] = compare(joint, gt, _fit_mask(*latent_size, bl), split.stride[0])
    return {"input": input_field, "joint": joint, "each": each, "channels": chans, "features": feats, "pooled": pooled, "stats": stats}


def figure(frames: torch.Tensor, res: dict, split: Split, path: Path, title: str) -> None:
    plt = pyplot()
    from torchvision.utils import flow_to_image

    chans = res["channels"]
    ncol = 4 + len(chans)
    fig, axes = plt.subplots(1, ncol, figsize=(2.9 * ncol, 3.3))
    img = lambda t: t.permute(1, 2, 0).numpy()  # noqa: E731
    axes[0].imshow(img(frames[0]))
    axes[0].set_title("reference frame", fontsize=8)
    axes[1].imshow(img(frames[1]))
    step = 12
    f = res["input"]
    ys, xs = np.mgrid[0 : f.shape[1] : step, 0 : f.shape[2] : step]
    axes[1].quiver(xs, ys, f[0, ::step, ::step].numpy(), f[1, ::step, ::step].numpy(), color="yellow", angles="xy", scale_units="xy", scale=0.5, width=0.004)
    axes[1].set_title("current frame + input motion (x2)", fontsize=8)
    axes[2].imshow(img(flow_to_image(f.float())))
    axes[2].set_title("input field (colour code)", fontsize=8)
    axes[3].imshow(img(flow_to_image(res["joint"].float() * split.stride[0])))
    axes[3].set_title(f"joint latent field x stride {split.stride[0]}", fontsize=8)
    for i, c in enumerate(chans):
        ax = axes[4 + i]
        ax.imshow(res["features"][1, c].numpy(), cmap="gray")
        e = res["each"][i]
        hh, ww = e.shape[-2:]
        yy, xx = np.mgrid[0:hh, 0:ww]
        ax.quiver(xx, yy, e[0].numpy(), e[1].numpy(), color="red", angles="xy", scale_units="xy", scale=1, width=0.006)
        st = res["stats"][f"channel {c} vs input"]
        ax.set_title(f"channel {c}: EPE {st.epe_mean:.1f} px", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    save(fig, path)


def stats_table(stats: dict) -> list[tuple]:
    return [(k, v.epe_mean, v.epe_median, f"{v.within_one_latent:.0%}", v.n) for k, v in stats.items()]


def video_pair(video: str, a: int, b: int, size: int = FRAME_SIDE) -> torch.Tensor:
    """Frames ``a`` and ``b`` of ``video`` as (2, 3, size, size) in [0, 1]; a frame past the clip is refused from its
    packets counted, before anything is decoded."""
    path = video_path(video)
    check_clip_range(path, max(a, b), 1)
    return read_frames(path, [a, b], size=size)


FLOW_TABLE_HEADER = ("field", "mean EPE (input px)", "median EPE", "within one latent px", "n")


@dataclass(frozen=True)
class FlowSettings:
    """``latentmotion flow``: one frame pair, one model and layer, the search settings.

    ``search`` is :func:`search_settings`' result; ``channels`` ``None`` shows
    the 4 most varied channels.
    """

    video: str = "bikes.mp4"
    frames: tuple[int, int] = (60, 62)
    model: str = DEFAULT_MODEL
    layer: str = DEFAULT_LAYER
    weights: str = "imagenet"
    search: dict = field(default_factory=search_settings)
    channels: tuple[int, ...] | None = None
    seed: int = 0


def flow_report(st: FlowSettings, out: Path, force: bool = False) -> str:
    """Fig. 2 for one frame pair: writes ``out/fig2.png`` and ``out/flow.md`` (published at once).

    Returns the statistics table (markdown) that ``flow.md`` holds.

    Example:
        >>> import tempfile, pathlib
        >>> st = FlowSettings(frames=(60, 61), search=search_settings("code"))
        >>> table = flow_report(st, pathlib.Path(tempfile.mkdtemp()) / "f")
        >>> table.splitlines()[2].startswith("| joint_vs_input")
        True
    """
    from ..models import load_model, split_model, weights_inputs
    from ..outputs import staged_folder
    from .report import md_table

    out = Path(out)
    with staged_folder(out, force, inputs=(video_path(st.video), *weights_inputs(st.weights))) as stage:
        pair = video_pair(st.video, *st.frames)  # before the model loads: a bad frame index costs no model
        m = load_model(st.model, weights=st.weights, seed=st.seed)
        split = split_model(m, st.layer)
        res = analyse_pair(pair, split, st.search, None if st.channels is None else list(st.channels))
        (bi, ri), (bl, rl) = st.search["input"], st.search["latent"]
        where = f"{Path(st.video).name} frames {st.frames[0]}, {st.frames[1]}"
        figure(pair, res, split, stage / "fig2.png", f"{where} — {st.model} [{m.weights}] {st.layer}; input block {bi} r {ri}, latent block {bl} r {rl}")
        table = md_table(FLOW_TABLE_HEADER, stats_table(res["stats"]))
        settings = f"Input space: block {bi}, radius {ri}; latent space: block {bl}, radius {rl}."
        (stage / "flow.md").write_text(f"# Block matching, {st.video} frames {st.frames}\n\n{settings}\n\n{table}\n\n![Fig. 2](fig2.png)\n")
    return table


def synthetic_flow_summary(lt, layer: str, source: torch.Tensor, n_pairs: int, seed: int, out: Path | None = None, preset: str = "text") -> dict:
    """Block matching on rendered pairs with exact motion: errors against ground truth."""
    from ..experiments.report import md_table

    split = lt.splits[layer]
    rng = np.random.default_rng(seed + 7)
    acc: dict[str, list] = {"input_vs_truth": [], "joint_vs_truth": [], "joint_vs_input": []}
    for _ in range(n_pairs):
        m = Affine(tx=float(rng.uniform(-10, 10)), ty=float(rng.uniform(-10, 10)), rot=float(rng.uniform(-3, 3)), sx=float(rng.uniform(0.98, 1.02)), sy=float(rng.uniform(0.98, 1.02)))
        pair = render_pair(source, [m])
        frames = torch.cat([pair.reference, pair.current]).cpu()
        truth = flow_from_affine(m, (224, 224))[0]
        res = analyse_pair(frames, _cpu_split(lt, layer), preset, channels=[], truth=truth)
        for k in acc:
            acc[k].append(res["stats"][k])
    agg = {k: FlowStats(float(np.mean([s.epe_mean for s in v])), float(np.median([s.epe_median for s in v])), float(np.mean([s.within_one_latent for s in v])), int(sum(s.n for s in v))) for k, v in acc.items()}
    extra = ""
    if out is not None:
        frames = video_pair("bikes.mp4", 60, 62)
        res = analyse_pair(frames, _cpu_split(lt, layer), preset)
        figure(frames, res, split, out / "fig2.png", f"Fig. 2: bikes.mp4 frames 60, 62 — {lt.target.model} {layer}, preset '{preset}'")
        extra = "\n\nReal video (`bikes.mp4`, frames 60 and 62), latent fields against the input field pooled to the latent grid:\n\n" + md_table(FLOW_TABLE_HEADER, stats_table(res["stats"])) + "\n\n![Fig. 2](fig2.png)"
    s = split.stride[0]
    joint = agg["joint_vs_truth"]
    return {
        "holds": bool(joint.within_one_latent >= 0.5),
        "numbers": f"{n_pairs} rendered pairs, {lt.target.model} {layer} (stride {s}): joint latent field x {s} within one latent pixel of the true motion at {joint.within_one_latent:.0%} of positions (mean EPE {joint.epe_mean:.1f} px); input field mean EPE {agg['input_vs_truth'].epe_mean:.2f} px",
        "stats": {k: vars(v) for k, v in agg.items()},
        "markdown": f"Preset `{preset}` ({PRESETS[preset]}). Synthetic pairs rendered from the source photo with known affine motion ({n_pairs} pairs, seeded):\n\n"
        + md_table(("comparison", "mean EPE (input px)", "median EPE", "within one latent px", "n"), stats_table(agg))
        + extra,
    }


def _cpu_split(lt, layer: str) -> Split:
    split = lt.splits[layer]
    return Split(split.edge.cpu(), split.cloud, split.layer, split.stride, split.offset, split.rf)
