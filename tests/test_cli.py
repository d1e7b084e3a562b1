"""Command line: useful output, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentmotion.cli", *args], capture_output=True, text=True, timeout=600)


def test_layers_lists_stride_and_offset():
    r = run("layers", "densenet121")
    assert r.returncode == 0
    row = next(line for line in r.stdout.splitlines() if "features.transition2.pool" in line)
    assert "256x14x14" in row and " 16 " in row and " 6 " in row


@pytest.mark.parametrize(
    "args,needle",
    [
        (("layers", "resnet43"), "did you mean 'resnet34'"),
        (("demo", "--model", "resnet34", "--weights", "imagenet", "--out", "{tmp}/a"), "resnet34-b627a593.pth"),
        (("demo", "--layer", "_blocks.4.ad", "--out", "{tmp}/b"), "_blocks.4.add"),
        (("demo", "--weights", "{tmp}/missing.pth", "--out", "{tmp}/c"), "does not exist"),
        (("demo", "--image", "no_such_photo", "--out", "{tmp}/d"), "unknown image"),
        (("demo", "--motion", "tx=nan", "--out", "{tmp}/e"), "finite"),
        (("demo", "--motion", "spin=3", "--out", "{tmp}/f"), "name=value"),
        (("demo", "--image", "{tmp}/small.png", "--out", "{tmp}/g"), "smaller than the frame"),
        (("demo", "--image", "{tmp}/broken.png", "--out", "{tmp}/h"), "cannot read image"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, needle, tmp_path, monkeypatch):
    import numpy as np
    import skimage.io

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    skimage.io.imsave(tmp_path / "small.png", np.zeros((64, 64, 3), np.uint8), check_contrast=False)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    r = run(*(a.format(tmp=tmp_path) for a in args))
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_existing_output_folder_is_refused(tmp_path):
    (tmp_path / "x").write_text("keep me")
    r = run("demo", "--out", str(tmp_path))
    assert r.returncode == 2 and "--force" in r.stderr
    assert (tmp_path / "x").read_text() == "keep me"


def test_flow_command_writes_figure_and_table(tmp_path):
    r = run("flow", "--out", str(tmp_path / "f"), "--frames", "60", "61", "--radius", "6", "--latent-block", "5")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "f" / "fig2.png").stat().st_size > 10_000
    md = (tmp_path / "f" / "flow.md").read_text()
    assert "joint_vs_input" in md and "block 31, radius 6; latent space: block 5, radius 5" in md


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--frames", "0", "999"), "out of range"),
        (("--video", "{tmp}/nope.mp4"), "neither a file"),
        (("--video", "{tmp}/bad.mp4"), "cannot decode"),
        (("--preset", "fast"), "preset"),
        (("--block", "301"), "larger than the frame"),
        (("--latent-block", "41"), "latent search (block 41, radius 5): block 41 is larger than the frame 28x28"),
        (("--radius", "-1"), "non-negative"),
        (("--latent-block", "4"), "odd"),
    ],
)
def test_flow_bad_input(args, needle, tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    r = run("flow", "--out", str(tmp_path / "o"), *(a.format(tmp=tmp_path) for a in args))
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
