"""Edge-to-cloud service throughput and latency on loopback (issue 11).

EfficientNet-Lite0 (trained) cut at ``_blocks.4.add``; 24 frames of bikes.mp4,
cycled into one stream as long as the longest edge's run, are coded once (block
motion, step 4; the codec numbers its frames, so records cannot be replayed in
a loop) and the pre-coded records are streamed by 1, 4 and 16 concurrent edges (plaintext gRPC on 127.0.0.1,
the edges in a separate process so they do not share the server's
interpreter). Each edge keeps ``ceil(2 * max_batch / edges)`` frames in flight:
enough, all edges together, to fill one batch while the previous one runs, and
no more (more in flight only adds queueing delay).

For each edge count it prints aggregate frames/s, latency p50/p99 seen by the
edges (send -> result), the mean model batch, lost frames (must be 0) and the
ratio of the aggregate to the cloud sub-model's own batched throughput
(batches of ``max_batch`` decoded tensors, no network, no decoding), measured
in the same process just before and just after (their mean). The baseline runs
the same prepared module the server runs (:class:`ServedModel`: channels-last,
frozen TorchScript); the plain eager sub-model's rate is printed beside it. It also prints the
CPU time per frame of the server process and of the edges' process: on one
machine the edges take cores the cloud would otherwise have. Targets at 16 edges: ratio >= 0.7 and
p99 < 250 ms (2 cores).

    .venv/bin/python benchmarks/bench_service.py [--frames 256] [--max-batch 8] [--device auto]
"""

from __future__ import annotations

import asyncio
import copy
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _util import Parser, run_main, table

from latentmotion.errors import InputError

MODEL, LAYER, VIDEO, N, STEP = "efficientnet_lite0", "_blocks.4.add", "bikes.mp4", 24, 4.0


class PrecodedCoder:
    """Replays pre-coded records: item i is record i (record 0 is intra; a reconnect restarts from it)."""

    def __init__(self, header: bytes, records: list[bytes], weights: str) -> None:
        self.header, self.records, self.weights = header, records, weights

    def restart(self) -> bytes:
        return self.header

    def code(self, item: int, intra: bool) -> bytes:
        return self.records[item]


def _edges(target: str, header: bytes, records: list[bytes], weights: str, edges: int, per_edge: int, window: int) -> dict:
    """Run ``edges`` concurrent edges (in the child process) and pool their reports."""
    torch.set_num_threads(1)
    from latentmotion.service import EdgeOptions, stream_edge

    cpu = time.process_time()

    async def main():
        coders = [PrecodedCoder(header, records, weights) for _ in range(edges)]
        t = time.perf_counter()
        reps = await asyncio.gather(*(stream_edge(target, c, range(per_edge), EdgeOptions(insecure=True, window=window, seed=i)) for i, c in enumerate(coders)))
        return reps, time.perf_counter() - t

    reps, seconds = asyncio.run(main())
    return {
        "answered": sum(len(r.results) for r in reps),
        "lost": sum(len(r.lost) for r in reps),
        "latency": [v for r in reps for v in r.latency_ms],
        "seconds": seconds,
        "cpu": time.process_time() - cpu,
    }


def _cloud_alone(cloud: torch.nn.Module, xs: torch.Tensor, batch: int, device: str, repeats: int = 10) -> float:
    """Frames/s of the cloud sub-model on full batches of decoded tensors (median of ``repeats``)."""
    xb = torch.cat([xs] * math.ceil(batch / len(xs)))[:batch].to(device)
    times = []
    with torch.no_grad():
        cloud(xb)
        for _ in range(repeats):
            t = time.perf_counter()
            cloud(xb)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return batch / float(np.median(times))


def _server(max_batch: int, device: str):
    from latentmotion.service import CloudServer, ServerConfig

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    cfg = ServerConfig(port=0, insecure=True, max_batch=max_batch, max_wait_ms=5.0, device=device, max_pending=64)

    async def make():
        return CloudServer(cfg)

    srv = asyncio.run_coroutine_threadsafe(make(), loop).result()
    port = asyncio.run_coroutine_threadsafe(srv.start(), loop).result()
    return srv, loop, f"127.0.0.1:{port}"


def main() -> None:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=256, help="frames per edge count, all edges together")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--edges", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    if min(args.edges) < 1 or args.frames < 1 or args.max_batch < 1:
        raise InputError("--edges, --frames and --max-batch must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: no CUDA device here")
    import latentmotion as lm
    from latentmotion.codec import Encoder, StreamId, Tools
    from latentmotion.pipeline import edge_features
    from latentmotion.service.backends import ServedModel

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    net = lm.load_model(MODEL)
    split = lm.split_model(net, LAYER)
    clip = edge_features(VIDEO, split, 0, N)
    enc = Encoder.from_split(split, clip.features, STEP, Tools.of(mode="block"), StreamId(MODEL, fps=clip.fps))
    longest = max(1, args.frames // min(args.edges))  # frames of the longest edge run
    header, records = enc.header_bytes(), [enc.encode(clip.features[i % N]) for i in range(max(longest, 4))]
    recon = torch.stack(enc.reconstructions)
    weights = lm.models.weights_fingerprint(net)
    eager = split.cloud.to(device).eval()
    cloud = ServedModel(copy.deepcopy(eager), tuple(recon.shape[1:]), device)  # what the server runs
    load = os.getloadavg()[0]

    srv, loop, target = _server(args.max_batch, device)
    torch.set_num_threads(srv.config.resolved_threads())  # the baseline runs with the server model's threads
    ctx = mp.get_context("spawn")
    rows = []
    with ctx.Pool(1, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:  # Ctrl-C: the parent's one line only
        pool.apply(_edges, (target, header, records, weights, 1, 4, 1))  # warm-up: the server loads its model
        for e in args.edges:
            before = _cloud_alone(cloud, recon, args.max_batch, device)
            batches_before = len(srv.backend.batcher.batches)
            window = max(1, math.ceil(2 * args.max_batch / e))
            cpu = time.process_time()
            r = pool.apply(_edges, (target, header, records, weights, e, max(1, args.frames // e), window))
            cpu = time.process_time() - cpu
            batches = srv.backend.batcher.batches[batches_before:]
            alone = (before + _cloud_alone(cloud, recon, args.max_batch, device)) / 2  # the machine's load drifts
            plain = _cloud_alone(eager, recon, args.max_batch, device)
            fps = r["answered"] / r["seconds"]
            lat = np.array(r["latency"])
            rows.append((
                e, window, r["answered"], f"{fps:.1f}", f"{np.percentile(lat, 50):.0f}", f"{np.percentile(lat, 99):.0f}",
                f"{np.mean(batches):.1f}", r["lost"], f"{alone:.1f}", f"{fps / alone:.2f}", f"{plain:.1f}",
                f"{1000 * cpu / r['answered']:.0f}", f"{1000 * r['cpu'] / r['answered']:.0f}",
            ))  # fmt: skip
    asyncio.run_coroutine_threadsafe(srv.drain(5), loop).result()
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"service on loopback, {MODEL} {LAYER}, block motion step {STEP}, max batch {args.max_batch}, device {name}")
    print(f"load average (1 min) before {load:.2f}, after {os.getloadavg()[0]:.2f}; served graph: {'frozen TorchScript' if cloud.graph is not None else 'eager'}")
    head = ("edges", "window", "frames", "frames/s", "p50 ms", "p99 ms", "mean batch", "lost", "cloud alone f/s", "ratio", "eager alone f/s", "server cpu ms/f", "edges cpu ms/f")
    print(table(rows, head))
    last = dict(zip(head, rows[-1]))
    print(f"targets at {last['edges']} edges: ratio >= 0.7: {float(last['ratio']) >= 0.7}; p99 < 250 ms: {float(last['p99 ms']) < 250}; lost == 0: {last['lost'] == 0}")
    print("cpu ms/f: CPU time per answered frame of the server process (decode, model, gRPC) and of the edges' process, which share the cores")
    if any(r[7] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
