"""Feature codec against standard codecs and remote inference (issue 18): speed, the BD-rate goals, the anchor sweep.

Speed: resnet34 ``layer2.0.add`` (seeded random weights, the cost does not
depend on them) on 24 frames: 128x28x28 tensors of bikes.mp4's 224x224 crops,
and 128x90x160 tensors of bigbuckbunny.mp4's whole 1280x720 frames; encode +
decode tensors per second per configuration, beside libx265 (the ``x265_ldp``
anchor, QP 32) coding and decoding the same tensors in the same process.

``--rd``: ``codec eval`` (intra, intra_klt, block, klt and kltw against the default anchors: the
strongest x265 and SVT-AV1 set-ups on the features, and remote inference at
the network's input size and at the clip's size) for EfficientNet-Lite0
(``_blocks.4.add``, ``_blocks.10.add``) and torchvision's MobileNetV2
(``features.6.add``, ``features.13.add``), both with ImageNet weights, on four
clips of 96 frames; prints every goal.

``--anchors``: the x265 low-delay set-ups a practitioner might choose, on one
run (``--video``, ``--layer``), each against our ``block``: the sweep behind
the default anchor.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_codec.py [--rd | --anchors] [--frames 96] [--out DIR]
        [--force] [--configs intra,intra_klt,block,klt,kltw] [--with-anchors x265_ldp,remote_x265_net,...] [--clips vtest.avi] [--layers _blocks.10.add]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _util import Parser, median_time, run_main, table  # noqa: E402

import latentmotion as lm  # noqa: E402
from latentmotion._lists import parse_list  # noqa: E402  (the lists read as codec eval reads them)
from latentmotion.codec import Encoder, Tools, decode_stream, encode_sequence  # noqa: E402
from latentmotion.data import read_frames, video_path  # noqa: E402
from latentmotion.errors import InputError  # noqa: E402
from latentmotion.experiments.codec_anchors import code_features  # noqa: E402
from latentmotion.experiments.codec_eval import EvalSettings, check_settings, evaluate  # noqa: E402
from latentmotion.outputs import staged_folder  # noqa: E402
from latentmotion.pipeline import edge_features  # noqa: E402

N = 24
CLIPS = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4", "vtest.avi")
CONFIGS = ("intra", "intra_klt", "block", "klt", "kltw")
CUTS = {"efficientnet_lite0": ("_blocks.4.add", "_blocks.10.add"), "mobilenet_v2": ("features.6.add", "features.13.add")}
LAYERS = tuple(layer for cuts in CUTS.values() for layer in cuts)
#: the options that only some jobs read, and the jobs that read them (none: the speed test)
OPTIONS = {"configs": ("--rd",), "with_anchors": ("--rd",), "clips": ("--rd",), "layers": ("--rd",), "video": ("--anchors",), "layer": ("--anchors",),
           "frames": ("--rd", "--anchors"), "out": ("--rd", "--anchors"), "force": ("--rd", "--anchors")}
DEFAULTS = {"frames": 96, "video": "bikes.mp4", "layer": "_blocks.4.add"}  # of the options above left out
#: x265 low-delay set-ups of the anchor sweep: the old anchor, then one change at a time towards the default.
SWEEP = ("x265_ldp-pad8-framerange-noscenecut-medium", "x265_ldp-pad8-framerange-medium", "x265_ldp-pad8-medium", "x265_ldp-medium",
         "x265_ldp-pad8", "x265_ldp-noscenecut", "x265_ldp-framerange", "x265_ldp", "x265_ldp-veryslow")


def cpu_time(fn, repeats: int = 3) -> float:
    """Median CPU seconds of the process per call (what the work costs when the machine is shared)."""
    return median_time(fn, repeats, 1, time.process_time)


def speed_rows(feats: torch.Tensor, gray: list, split) -> tuple[list, float, float]:
    """Our modes and x265 on the same tensors: (rows, x265 wall s/tensor, x265 CPU s/tensor)."""
    n = len(feats)
    step = 0.5 * float(feats.pow(2).mean().sqrt())
    t_x265 = median_time(lambda: code_features(feats, "x265_ldp", 32), 3) / n
    c_x265 = cpu_time(lambda: code_features(feats, "x265_ldp", 32)) / n
    rows = []
    for mode, kw in (("zero", {}), ("block", {"subpel": 1}), ("block", {"subpel": 4}), ("input", {})):
        label = mode + ("" if not kw else " " + ",".join(f"{k}={v}" for k, v in kw.items()))

        def enc(mode=mode, kw=kw):
            e = Encoder.from_split(split, feats, step, Tools.of(mode=mode, **kw))
            return encode_sequence(list(feats), e, gray)

        stream = enc()
        t_enc = median_time(enc, 3) / n
        t_dec = median_time(lambda s=stream: decode_stream(s), 3) / n
        per = t_enc + t_dec
        cpu = (cpu_time(enc) + cpu_time(lambda s=stream: decode_stream(s))) / n
        rows.append((label, f"{t_enc * 1e3:.1f}", f"{t_dec * 1e3:.1f}", f"{1 / per:.1f}", f"{t_x265 / per:.2f}", f"{1 / cpu:.1f}", f"{c_x265 / cpu:.2f}", f"{8 * len(stream) / n / 1000:.1f}"))
    return rows, t_x265, c_x265


def speed() -> None:
    from latentmotion.pipeline import gray8

    split = lm.split_model(lm.load_model("resnet34", weights="random"), "layer2.0.add")
    clip = edge_features("bikes.mp4", split, 0, N)
    frames720 = read_frames(video_path("bigbuckbunny.mp4"), range(N))
    with torch.no_grad():
        cases = [("224x224 crops of bikes.mp4", clip.features, list(clip.gray)), ("1280x720 frames of bigbuckbunny.mp4", split.edge(frames720), list(gray8(frames720)))]
    for title, feats, gray in cases:
        rows, t_x265, c_x265 = speed_rows(feats, gray, split)
        print(f"{title}: {tuple(feats.shape[1:])} tensors, {N} frames, step 0.5 x rms, torch threads {torch.get_num_threads()}")
        print(f"x265_ldp (QP 32, encode + decode, same tensors): {t_x265 * 1e3:.1f} ms/tensor = {1 / t_x265:.1f} tensors/s wall, {1 / c_x265:.1f} per CPU-second")
        print(table(rows, ("mode", "encode ms", "decode ms", "tensors/s (enc+dec)", "speed vs x265", "tensors per CPU-s", "CPU vs x265", "kbit/frame")))
        print()
    print("goal: >= 100 tensors/s for encode + decode of 128x28x28")


def _fmt(v, iv=None) -> str:
    """A BD-rate, with its bootstrap interval where there is one."""
    return "n/a" if v is None else f"{v:+.1f} %" + (f" [{iv[0]:+.1f}, {iv[1]:+.1f}]" if iv else "")


HEADER = ("video", "model", "layer", "stride", "PSNR mode", "vs x265_ldp PSNR", "KL mode", "vs x265_ldp KL", "intra mode", "intra vs x265_intra", "vs remote net KL", "vs remote clip KL",
          "floor KL", "median p")


def runs(frames: int, configs: tuple[str, ...], anchors: tuple[str, ...] | None, clips: str | None = None, layers: str | None = None) -> list[EvalSettings]:
    """The settings of every run, or of those on the comma-separated ``clips`` and ``layers``, each checked as
    ``codec eval`` checks it (names, frames within the clip) before any run starts."""
    keep_v = CLIPS if clips is None else parse_list(clips, str, "--clips", "clip names")
    keep_l = LAYERS if layers is None else parse_list(layers, str, "--layers", "layer names")
    unknown = sorted(set(keep_v) - set(CLIPS)) + sorted(set(keep_l) - set(LAYERS))
    if unknown:
        raise InputError(f"no run on {', '.join(unknown)}; the clips are {', '.join(CLIPS)} and the layers {', '.join(LAYERS)}")
    todo = []
    for video, model, layer in ((v, m, lay) for v in CLIPS for m, cuts in CUTS.items() for lay in cuts if v in keep_v and lay in keep_l):
        st = EvalSettings(video=video, model=model, layer=layer, frames=frames, configs=configs)
        st = st if anchors is None else replace(st, anchors=anchors)
        check_settings(st)
        todo.append(st)
    return todo


def rd(todo: list[EvalSettings], out: Path) -> None:
    rows, summaries = [], []
    for st in todo:
        video, model, layer = st.video, st.model, st.layer
        s = evaluate(st, out / f"{video}_{model}_{layer}")
        summaries.append(s)
        g, f, c = s["goal"], s["noise_floor"], s["confidence"]
        rows.append((video, model, layer, s["stride"], g["best_psnr_mode"] or "n/a", _fmt(g["best_vs_x265_ldp_psnr"]), g["best_mode"] or "n/a", _fmt(g["best_vs_x265_ldp_kl"], g.get("best_vs_x265_ldp_kl_interval")),
                     g["intra_mode"] or "n/a", _fmt(g["intra_mode_vs_x265_intra_psnr"]), _fmt(g["best_vs_remote_net_kl"], g.get("best_vs_remote_net_kl_interval")),
                     _fmt(g["best_vs_remote_clip_kl"], g.get("best_vs_remote_clip_kl_interval")), f"{f['kl']:.1e}", f"{c['median_top1_probability']:.2f}"))
        print(table(rows[-1:], HEADER), flush=True)
    print()
    print(table(rows, HEADER))
    (out / "summaries.json").write_text(json.dumps(summaries, indent=1))
    print("goals: <= -25 % vs x265_ldp (PSNR and KL), <= 0 % intra vs x265_intra, <= -50 % KL vs remote inference at both sizes (stride 16);")
    print("brackets: 90 % intervals of the KL BD-rates under a block bootstrap of the frames")


def sweep_settings(frames: int, video: str, layer: str) -> EvalSettings:
    """The anchor sweep's settings on one run, checked as ``codec eval`` checks them."""
    st = EvalSettings(video=video, layer=layer, frames=frames, configs=("block",), anchors=SWEEP)
    check_settings(st)
    return st


def anchor_sweep(st: EvalSettings, out: Path) -> None:
    s = evaluate(st, out / f"sweep_{st.video}_{st.layer}")
    rows = [(a, _fmt(s["bd_rate_percent"].get(f"block_vs_{a}")), _fmt(s["bd_rate_percent_kl"].get(f"block_vs_{a}"))) for a in SWEEP]
    print(f"{st.video} {st.layer}, {st.frames} frames: block against each x265 low-delay set-up (the stronger the anchor, the larger the BD-rate)")
    print(table(rows, ("anchor", "block vs anchor, PSNR", "block vs anchor, KL")))


def main() -> None:
    ap = Parser()
    job = ap.add_mutually_exclusive_group()
    job.add_argument("--rd", action="store_true", help="run the BD-rate comparison (an hour on 2 cores) instead of the speed test")
    job.add_argument("--anchors", action="store_true", help="run the x265 anchor sweep on one clip and cut")
    ap.add_argument("--video", default=None, help=f"--anchors: the clip (default {DEFAULTS['video']})")
    ap.add_argument("--layer", default=None, help=f"--anchors: the cut of EfficientNet-Lite0 (default {DEFAULTS['layer']})")
    ap.add_argument("--frames", type=int, default=None, help=f"--rd, --anchors: frames of each clip, from its first (default {DEFAULTS['frames']})")
    ap.add_argument("--out", type=Path, default=None, help="--rd, --anchors: a new or empty folder for the reports (default: a new one in the "
                    "temp folder), published once every run has ended: an error or a signal leaves none (each run's row is printed as it ends)")
    ap.add_argument("--force", action="store_true", help="--rd, --anchors: replace a non-empty --out folder (once every run has ended)")
    ap.add_argument("--configs", default=None, help=f"--rd: our configurations, comma-separated (default {','.join(CONFIGS)})")
    ap.add_argument("--with-anchors", default=None, help="--rd: anchors, comma-separated (default: codec eval's; a subset saves time; "
                    "the goals read x265_ldp and x265_intra, and remote inference as the larger BD-rate of the remote anchors at each size)")
    ap.add_argument("--clips", default=None, help=f"--rd: only these clips, comma-separated (of {', '.join(CLIPS)})")
    ap.add_argument("--layers", default=None, help=f"--rd: only these cuts, comma-separated (of {', '.join(LAYERS)})")
    a = ap.parse_args()
    _check_modes(a)
    if not (a.rd or a.anchors):
        speed()
        return
    for name, value in DEFAULTS.items():  # only now: None meant "not given" to _check_modes
        setattr(a, name, value if getattr(a, name) is None else getattr(a, name))
    # every setting checked before the folder is made and the first run starts
    if a.rd:
        anchors = None if a.with_anchors is None else tuple(parse_list(a.with_anchors, str, "--with-anchors", "anchor names", empty=True))
        configs = CONFIGS if a.configs is None else tuple(parse_list(a.configs, str, "--configs", "configuration names"))
        todo = runs(a.frames, configs, anchors, a.clips, a.layers)
    else:
        todo = [sweep_settings(a.frames, a.video, a.layer)]
    out = a.out or Path(tempfile.gettempdir()) / f"bench_codec_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}"
    with staged_folder(out, a.force, tuple({video_path(st.video) for st in todo})) as stage:  # --force never deletes a clip
        if a.rd:
            rd(todo, stage)
        else:
            anchor_sweep(todo[0], stage)
    print("reports in", out)


def _check_modes(a) -> None:
    """Refuse an option the chosen job would ignore."""
    job = "--rd" if a.rd else "--anchors" if a.anchors else "the speed test"
    given = [name for name in OPTIONS if getattr(a, name) is not None and getattr(a, name) is not False]  # 0 == False: by identity
    wrong = [name for name in given if job not in OPTIONS[name]]
    if wrong:
        raise InputError(f"{', '.join('--' + n.replace('_', '-') for n in wrong)} do not go with {job}")


if __name__ == "__main__":
    run_main(main)
