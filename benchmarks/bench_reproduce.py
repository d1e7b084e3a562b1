"""Wall time of `latentmotion reproduce` against its pure forward-pass time (issue 3).

Runs a profile in-process (default quick; `--profile paper` on a GPU) and
prints the total wall time, the time spent inside edge forward passes over the
same frames, and their ratio (target <= 1.3 on the CPU for quick).

    .venv/bin/python benchmarks/bench_reproduce.py [--profile quick] [--device auto]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _util import Parser, run_main, table  # noqa: E402

from latentmotion.experiments.profiles import get_profile, parse_target  # noqa: E402
from latentmotion.experiments.reproduce import Settings, run  # noqa: E402


def main() -> None:
    ap = Parser()
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    prof = get_profile(args.profile)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        run(Settings(prof, [parse_target(m) for m in prof.targets], args.device), Path(d) / "out", log=lambda m: None)
        wall = time.perf_counter() - t
        timing = json.loads((Path(d) / "out" / "summary.json").read_text())["timing"]
        device = json.loads((Path(d) / "out" / "summary.json").read_text())["device"]
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"profile {args.profile} on {name}, torch {torch.__version__}")
    print(table([("total wall time", f"{wall:.1f}", f"{wall / timing['forward_s']:.2f}"), ("edge forward passes", f"{timing['forward_s']:.1f}", "1.00")], ("part", "seconds", "ratio to forward")))


if __name__ == "__main__":
    run_main(main)
