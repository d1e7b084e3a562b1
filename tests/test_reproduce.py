"""`latentmotion reproduce --profile smoke`: results checked against properties (issue 3)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

import latentmotion as lm
from latentmotion.errors import InputError
from latentmotion.experiments import reproduce as rep
from latentmotion.experiments.profiles import get_profile, parse_target
from latentmotion.experiments.report import in_plot_range

FIGURES = ("section2.png", "fig2.png", "fig4.png", "fig5_exact.png", "fig5_paper.png", "fig6.png")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "reproduce", "--profile", "smoke", "--out", str(out), "--seed", "3"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((out / "nrmse.csv").read_text().splitlines()))
    for row in rows:
        row["nrmse"], row["value"], row["stride"] = float(row["nrmse"]), float(row["value"]), int(row["stride"])
    return out, rows, json.loads((out / "summary.json").read_text())


def test_every_figure_is_written(smoke):
    out, _, _ = smoke
    for f in FIGURES:
        assert (out / f).stat().st_size > 5_000, f
    assert not list(out.parent.glob(".*staging*")) and not list(out.glob(".*staging*"))


def test_report_states_weights_first_and_seed(smoke):
    out, _, summary = smoke
    md = (out / "report.md").read_text()
    head = md.split("## Verdicts")[0]
    assert "efficientnet-lite0-57934424.pth" in head and "random (seed 3)" in head
    assert "seed 3" in head and summary["seed"] == 3
    for f in FIGURES:
        assert f"]({f})" in md


def test_translation_dips_at_multiples_of_the_stride(smoke):
    _, rows, _ = smoke
    for layer in ("_blocks.4.add",):
        for weights in {r["weights"] for r in rows}:
            pts = {r["value"]: r["nrmse"] for r in rows if r["layer"] == layer and r["weights"] == weights and r["transform"] == "tx" and r["alignment"] == "exact"}
            for m in (-16.0, -8.0, 8.0, 16.0):
                assert pts[m] < min(pts.get(m - 4, np.inf), pts.get(m + 4, np.inf)), (weights, m)


def test_zero_at_identity(smoke):
    _, rows, _ = smoke
    ident = [r["nrmse"] for r in rows if r["transform"] in ("tx", "rot", "shx") and r["value"] == 0]
    assert ident and max(ident) < 1e-6
    moved = [r["nrmse"] for r in rows if r["transform"] == "rot" and abs(r["value"]) >= 5]
    assert min(moved) > 1e-3


def test_band_from_eq14_and_csv_json_agree(smoke):
    _, rows, summary = smoke
    assert (summary["band"]["low"], summary["band"]["high"]) == lm.hevc_band()
    vals = defaultdict(list)
    for r in rows:
        if in_plot_range(r):
            vals[(r["weights"], r["layer"], r["transform"], r["alignment"])].append(r["nrmse"])
    n = 0
    for e in summary["layers"]:
        for t, by_align in e["transforms"].items():
            for a, st in by_align.items():
                v = vals[(e["weights"], e["layer"], t, a)]
                assert st["n"] == len(v)
                assert st["median"] == pytest.approx(float(np.median(v)), rel=1e-6)
                n += 1
    assert n == len(vals)
    assert len(rows) == sum(st["n"] for e in summary["layers"] for t in e["transforms"].values() for st in t.values()) + sum(
        1 for r in rows if not in_plot_range(r)
    )


def test_verdicts_are_computed(smoke):
    _, _, summary = smoke
    claims = {v["claim"]: v for v in summary["verdicts"]}
    assert any("Eq. 14" in c and v["holds"] for c, v in claims.items())
    assert any("Zero motion" in c and v["holds"] for c, v in claims.items())
    assert any("Fig. 2" in c for c in claims)
    assert all(isinstance(v["holds"], bool) and v["numbers"] for v in claims.values())


def test_interrupted_run_leaves_no_report(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rep, "run_sweep", boom)
    st = rep.Settings(get_profile("smoke"), [parse_target("efficientnet_lite0:_blocks.4.add")])
    with pytest.raises(KeyboardInterrupt):
        rep.run(st, tmp_path / "o", log=lambda m: None)
    assert not (tmp_path / "o").exists()
    assert not list(tmp_path.iterdir())  # no staging left beside it either


def test_reproduce_refuses_non_empty_out_and_bad_options(tmp_path):
    (tmp_path / "keep").write_text("x")
    for args, needle in (
        ((), "--force"),
        (("--profile", "huge"), "unknown profile"),
        (("--models", "resnet34:layer9.add"), "unknown layer"),
        (("--device", "tpu"), "--device"),
    ):
        out = tmp_path if not args else tmp_path / "new"
        r = subprocess.run([sys.executable, "-m", "latentmotion.cli", "reproduce", "--out", str(out), *args], capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)


def test_progress_in_a_log_is_on_stderr_and_a_failed_block_says_nothing_more():
    """stdout carries only results: progress goes to stderr, prints inside the block stay on stdout. In a pipe
    (no terminal) a task says when it completes; a block that fails adds nothing (its one-line error stands alone),
    and one that ends well says where every task stood, a task without a total too."""
    prog = """
from latentmotion.experiments.reproduce import progress_bar
with progress_bar() as bar:
    bar.advance(bar.add_task("done", total=1), 1)
    bar.advance(bar.add_task("counted", total=None), 5)
    print("result")
try:
    with progress_bar() as bar:
        bar.advance(bar.add_task("failing", total=2), 1)
        raise ValueError
except ValueError:
    pass
"""
    r = subprocess.run([sys.executable, "-c", prog], check=True, capture_output=True, text=True, timeout=120)
    assert r.stdout == "result\n"
    assert r.stderr.splitlines() == ["done: 1/1 (100 %), 0:00:00 elapsed", "counted: 5, 0:00:00 elapsed"]


def test_a_model_spec_with_a_colon_needs_layers_after_it():
    """'name:' (a blank layer list) was read as the model's default layers, while 'name:,' was refused."""
    assert parse_target("resnet34").layers == parse_target("resnet34@auto").layers != ()
    assert parse_target("resnet34:layer1.0.add").layers == ("layer1.0.add",)
    for spec in ("resnet34:", "resnet34:,", "resnet34@random:", "resnet34@random: ", "my.nets:build:", "my.nets:build@random:"):
        with pytest.raises(InputError, match="layer names"):
            parse_target(spec)
