"""Every command keeps the CLI contract (issue 12), checked on real processes.

* Bad input: exit 2, exactly one line on stderr (``error: ...``), no
  traceback, ``--out`` untouched (absent stays absent, an existing one keeps
  its content) and no staging entry left beside it.
* Interruption: SIGINT -> 130 and ``interrupted``, SIGTERM -> 143 and
  ``terminated``, sent once the command is at work; nothing published.

The commands are enumerated from the Typer app: a new command without a row
in :data:`BAD` fails :func:`test_every_command_has_rows`. The default run takes
one row per command (the first); ``-m slow`` runs the whole table.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from latentmotion.cli import app

SENTINEL = "old content, must survive"


def _commands(group, prefix=()) -> list[str]:
    import typer.main

    cmd = typer.main.get_command(group) if not hasattr(group, "commands") else group
    out = []
    for name, sub in sorted(cmd.commands.items()):
        if hasattr(sub, "commands"):
            out += _commands(sub, prefix + (name,))
        else:
            out.append(" ".join(prefix + (name,)))
    return out


def _bomb_png() -> bytes:
    """118 bytes or so of PNG whose header claims 13000 x 13000 pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 13000, 13000, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


#: Per command: (arguments, text the one-line error must contain). ``{out}``
#: is a fresh path, ``{old}`` an existing folder holding SENTINEL, ``{file}``
#: an existing file, ``{tmp}`` the test's folder. The first row of each
#: command runs by default, the others with ``-m slow``.
BAD: dict[str, list[tuple[tuple[str, ...], str]]] = {
    "models": [(("--bogus",), "No such option")],
    "layers": [(("resnet43",), "did you mean 'resnet34'"), ((), "Missing argument")],
    "demo": [
        (("--motion", "tx=1e300", "--out", "{out}"), "translation must be at most"),
        (("--out", "{old}"), "--force"),
        (("--out", "{file}"), "not a folder"),
        (("--out", "{file}/sub/out"), "not a folder"),
        (("--out", "/proc/no/such/folder"), "cannot create folder"),
        (("--image", "{tmp}/bomb.png", "--out", "{out}"), "13000x13000"),
        (("--image", "{tmp}/bomb.png", "--out", "{old}", "--force"), "13000x13000"),
        (("--layer", "_blocks.4.ad", "--out", "{out}"), "_blocks.4.add"),
        (("--seed", "x", "--out", "{out}"), "--seed"),
        (("--motion", "", "--out", "{out}"), "empty"),
        (("--image", "{tmp}/fifo.png", "--out", "{out}"), "not a regular file"),
    ],
    "flow": [
        (("--channels", ",", "--out", "{out}"), "--channels"),
        (("--frames", "0", "99999999999", "--out", "{out}"), "out of range"),
        (("--latent-block", "4", "--out", "{old}", "--force"), "odd"),
        (("--out", "{file}"), "not a folder"),
        (("--radius", "1000000000", "--out", "{out}"), "radius"),
        (("--radius", "2000", "--out", "{out}"), "radius"),
        (("--latent-radius", "100000", "--out", "{out}"), "radius"),
    ],
    "reproduce": [
        (("--batch", "-1", "--profile", "smoke", "--out", "{out}"), "--batch"),
        (("--device", "tpu", "--out", "{out}"), "--device"),
        (("--profile", "smoke", "--image", "{tmp}/bomb.png", "--out", "{out}"), "13000x13000"),
        (("--profile", "smoke", "--image", "{tmp}/small.png", "--out", "{old}", "--force"), "smaller than the frame"),
        (("--profile", "smoke", "--out", "/proc/no/such/folder"), "cannot create folder"),
    ],
    "codec encode": [
        (("--step", "1e39", "--out", "{out}"), "float32"),
        (("--frames", "99999999999999999999", "--out", "{out}"), "out of range"),
        (("--step", "1e-30", "--frames", "1", "--out", "{out}"), "too small"),
        (("--out", "{old}"), "is a folder"),
        (("--out", "{tmp}/no/such/x.bin"), "does not exist"),
        (("--frames", "0", "--out", "{out}"), "at least 1"),
        (("--out", "/proc/x.bin"), "cannot write"),
        # refused before the model loads: the missing video would be the error otherwise
        (("--mode", "bogus", "--video", "{tmp}/missing.mp4", "--out", "{out}"), "unknown motion mode"),
        (("--subpel", "3", "--video", "{tmp}/missing.mp4", "--out", "{out}"), "subpel"),
        (("--intra-period", "-1", "--video", "{tmp}/missing.mp4", "--out", "{out}"), "intra period"),
        (("--frames", "-1", "--video", "{tmp}/missing.mp4", "--out", "{out}"), "at least 1"),
        (("--video", "{tmp}/fifo.mp4", "--out", "{out}"), "not a regular file"),
        (("--out", "{tmp}/fifo.mp4"), "not a regular file"),
        (("--video", "{tmp}/afile", "--out", "{tmp}/afile"), "is the command's input"),  # would replace the video it reads
        (("--weights", "{tmp}/afile", "--out", "{tmp}/afile"), "is the command's input"),  # would replace the weights it loads
        (("--transform", "bogus", "--video", "{tmp}/missing.mp4", "--out", "{out}"), "--transform must be"),
        (("--transform", "klt", "--layer", "_blocks.0._bn2", "--video", "{tmp}/missing.mp4", "--out", "{out}"), "no channel transform"),
    ],
    "codec decode": [
        (("{tmp}/header_only.lmc", "--out", "{out}"), "no frames"),
        (("{tmp}/garbage.lmc", "--out", "{out}"), ""),
        (("{tmp}/missing.lmc",), "does not exist"),
        (("{tmp}",), "not a regular file"),
        (("{tmp}/header_only.lmc", "--out", "{old}"), "is a folder"),
        (("{tmp}/misfit.lmc", "--classify", "--out", "{tmp}/x.pt"), "do not fit"),
        (("{tmp}/garbage.lmc", "--out", "{file}"), ""),
        (("{tmp}/factory.lmc", "--classify"), "builds only --model (efficientnet_lite0)"),
        (("{tmp}/vith.lmc", "--classify", "--weights", "random"), "pass --model vit_h_14 to allow it"),
        (("{tmp}/work_bomb.lmc", "--out", "{out}"), "too short"),
        (("{tmp}/misfit.lmc", "--out", "{tmp}/fifo.mp4"), "not a regular file"),
        (("{tmp}/fifo.mp4",), "not a regular file"),
        (("/proc/self/mem",), "/proc/self/mem"),  # a read the machine refuses (EIO) names its file
        (("{tmp}/unknown_transform.lmc", "--out", "{out}"), "unknown channel transform"),
        (("{tmp}/climbing_transform.lmc", "--out", "{out}"), "name no shipped channel transform"),
        (("{tmp}/other_transform.lmc", "--out", "{out}"), "another klt transform"),
        (("{tmp}/misfit.lmc", "--out", "{tmp}/misfit.lmc"), "is the command's input"),  # would replace the stream it reads
    ],
    "codec eval": [
        (("--configs", ",", "--out", "{out}"), "--configs"),
        (("--frames", "0", "--out", "{out}"), "at least 1"),
        (("--steps", "1,2,x,4", "--out", "{out}"), "--steps"),
        (("--steps", "1,2,4,1e39", "--out", "{out}"), "float32"),
        (("--out", "{file}"), "not a folder"),
        (("--anchors", "x265_ldp-pad16", "--out", "{out}"), "modifier"),
        (("--anchors", "x265_ldp,x265_ldp-slow", "--out", "{out}"), "twice"),
        (("--anchors", "x265_ldp", "--qps", "20,30,40,52", "--out", "{out}"), "0..51"),
        (("--configs", "klt", "--layer", "_blocks.0._bn2", "--anchors", "", "--out", "{out}"), "fit-transform"),
        (("--configs", "intra_klt", "--transform-file", "{tmp}/missing.pt", "--anchors", "", "--out", "{out}"), "does not exist"),
        (("--configs", "intra,kltw", "--transform-file", "{tmp}/afile", "--anchors", "", "--out", "{out}"), "name neither"),  # never silently unused
        (("--configs", "klt", "--transform-file", "{tmp}/afile", "--anchors", "", "--out", "{out}"), "not a channel transform"),
        (("--weights", "{old}/w.pt", "--anchors", "", "--out", "{old}", "--force"), "holds the command's input"),  # --force would delete them
    ],
    "codec fit-transform": [
        (("--crops", "0", "--out", "{out}"), "--crops"),
        (("--out", "{old}"), "folder"),
        (("--layer", "nosuch", "--out", "{out}"), "unknown layer"),
    ],
    "serve": [
        (("--insecure", "--port", "70000"), "--port"),
        (("--port", "0"), "needs --cert, --key and --tokens"),
        (("--insecure", "--host", "0.0.0.0"), "only on loopback"),
        (("--insecure", "--idle-timeout", "inf"), "at most 1e6"),
        (("--insecure", "--weights", "{tmp}/missing.pt"), "missing.pt does not exist"),
        (("--insecure", "--weights", "lite0w"), "not imagenet, random or a state-dict path"),  # was accepted, then every stream refused
        (("--insecure", "--models", ","), "--models needs at least one"),  # was an empty allowlist: any model
        (("--insecure", "--models", "efficientnet_lite", "--port", "0"), "--models: unknown model"),  # was accepted: every stream refused
    ],
    "stream": [
        (("--insecure", "--port", "70000"), "--port"),
        (("--insecure", "--frames", "0"), "at least 1"),
        (("--insecure", "--step", "1e300"), "float32"),
        (("--insecure", "--port", "1", "--frames", "1", "--retries", "1"), "gave up on the cloud"),
        (("--insecure", "--port", "1", "--retries", "1000000"), "--retries 1000000 exceeds 100"),  # would retry for days
    ],
}

#: (command and arguments, signal, exit code, where the output goes). Commands
#: with a short start-up; each is signalled once its staging entry exists
#: (it has passed every check and is at work) and a moment more has passed.
INTERRUPT = [
    (("reproduce", "--profile", "smoke", "--out", "{out}"), signal.SIGINT, 130),  # demo ends in ~5 s on an idle machine: too close to the signal
    (("reproduce", "--profile", "smoke", "--out", "{old}", "--force"), signal.SIGTERM, 143),
    (("codec", "encode", "--frames", "24", "--out", "{out}"), signal.SIGINT, 130),
    (("flow", "--out", "{out}"), signal.SIGTERM, 143),
]


def _env() -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}


def _cmd(args) -> list[str]:
    return [sys.executable, "-m", "latentmotion.cli", *args]


@pytest.fixture
def place(tmp_path):
    """A folder with the inputs the rows name, an existing --out and a plain file."""
    import numpy as np
    import skimage.io

    (tmp_path / "bomb.png").write_bytes(_bomb_png())
    skimage.io.imsave(tmp_path / "small.png", np.zeros((64, 64, 3), np.uint8), check_contrast=False)
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text(SENTINEL)
    (tmp_path / "afile").write_text(SENTINEL)
    (tmp_path / "garbage.lmc").write_bytes(b"LMC\x00" + os.urandom(64))
    (tmp_path / "header_only.lmc").write_bytes(_header_only_stream())
    (tmp_path / "misfit.lmc").write_bytes(_misfit_stream())
    (tmp_path / "factory.lmc").write_bytes(_misfit_stream("os:abort"))  # must never be imported
    (tmp_path / "vith.lmc").write_bytes(_misfit_stream("vit_h_14"))  # a huge network the stream's bytes must not make us build
    (tmp_path / "work_bomb.lmc").write_bytes(_work_bomb_stream())
    (tmp_path / "unknown_transform.lmc").write_bytes(_misfit_stream(weights="+pca-0123"))
    (tmp_path / "climbing_transform.lmc").write_bytes(_misfit_stream("../../tmp/x", weights="+klt-0123"))  # never a path out of the package
    (tmp_path / "other_transform.lmc").write_bytes(_misfit_stream(weights="+klt-0123456789ab", channels=40))
    (tmp_path / "long.lmc").write_bytes(_long_stream())
    for name in ("fifo.mp4", "fifo.png"):  # never opened: a reader would block
        os.mkfifo(tmp_path / name)
    return tmp_path


def _header_only_stream() -> bytes:
    from latentmotion.codec import Encoder, StreamId, Tools

    return Encoder((4, 8, 8), 1.0, Tools.of(mode="zero"), stream=StreamId(model="efficientnet_lite0", layer="_blocks.4.add")).header_bytes()


def _misfit_stream(model: str = "efficientnet_lite0", weights: str = "", channels: int = 4) -> bytes:
    """A valid stream whose tensors (4, 8, 8) cannot enter the cloud model its header names (``weights``: a suffix
    naming a channel transform; ``channels``: 40 fit the cut, for a transform check that must fail on its own)."""
    import torch

    from latentmotion.codec import Encoder, StreamId, Tools, encode_sequence
    from latentmotion.models import load_model, weights_fingerprint

    fp = weights_fingerprint(load_model(model)) if model == "efficientnet_lite0" else ""  # right weights: the shape is what fails
    enc = Encoder((channels, 8, 8), 1.0, Tools.of(mode="zero"), stream=StreamId(model=model, layer="_blocks.4.add", weights=fp + weights))
    return encode_sequence([torch.zeros(channels, 8, 8)], enc)


def _work_bomb_stream() -> bytes:
    """Issue 20 item 3: 6,183 bytes claiming one 1x4096x4096 frame with block 1 and mblock 1 (all skipped)."""
    from latentmotion.codec import Encoder, Tools
    from latentmotion.codec.bitstream import write_frame

    enc = Encoder((1, 4096, 4096), 1.0, Tools.of(mode="zero", block=1, mblock=1))
    head = enc.header_bytes()
    return head + write_frame(struct.pack("<IBB", 0, 0, 16) + bytes(6183 - len(head) - 14))


def _long_stream(frames: int = 60) -> bytes:
    """A valid stream that takes seconds to decode, nearly all of it inside the numba kernels:
    all-zero records of the smallest accepted size, 1x1024x1024 tensors with block 1 and mblock 1."""
    from latentmotion.codec import Encoder, Tools
    from latentmotion.codec.bitstream import write_frame

    enc = Encoder((1, 1024, 1024), 1.0, Tools.of(mode="zero", block=1, mblock=1))
    size = max(14, enc.header.min_record())
    return enc.header_bytes() + b"".join(write_frame(struct.pack("<IBB", i, min(i, 1), 16) + bytes(size - 14)) for i in range(frames))


def _fill(args, tmp: Path) -> list[str]:
    names = {"out": tmp / "new_out", "old": tmp / "old", "file": tmp / "afile", "tmp": tmp}
    return [a.format(**names) for a in args]


def _snapshot(tmp: Path) -> dict[str, str]:
    """Every entry under ``tmp`` with its content (files) so a change shows."""
    return {str(p.relative_to(tmp)): (p.read_bytes().hex() if p.is_file() else "dir") for p in sorted(tmp.rglob("*"))}


def _check_one_line(r, code: int, needle: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-2000:]
    assert needle in lines[0], lines[0]


def test_every_command_has_rows():
    commands = _commands(app)
    assert {"demo", "reproduce", "codec encode"} <= set(commands)
    missing = [c for c in commands if not BAD.get(c)]
    assert not missing, f"commands without a bad-input row in BAD: {missing}"
    assert not set(BAD) - set(commands), "rows for commands that no longer exist"


def test_every_command_with_out_has_a_row_against_an_existing_one():
    """Commands writing --out are tried on an existing folder or file, which must survive."""
    import typer.main

    def params(cmd_path: str):
        cmd = typer.main.get_command(app)
        for part in cmd_path.split():
            cmd = cmd.commands[part]
        return {p.name for p in cmd.params}

    writers = [c for c in _commands(app) if "out" in params(c)]
    assert {"demo", "flow", "reproduce", "codec encode", "codec eval"} <= set(writers)
    lacking = [c for c in writers if not any("{old}" in a or "{file}" in a for args, _ in BAD.get(c, []) for a in args)]
    assert not lacking, f"no row tries an existing --out: {lacking}"


def _rows(all_rows: bool):
    for cmd, rows in BAD.items():
        for i, (args, needle) in enumerate(rows if all_rows else rows[:1]):
            yield pytest.param(cmd, args, needle, id=f"{cmd}-{i}")


def _run_bad(cmd: str, args, needle: str, tmp: Path) -> None:
    before = _snapshot(tmp)
    r = subprocess.run(_cmd([*cmd.split(), *_fill(args, tmp)]), check=False, capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp)
    _check_one_line(r, 2, needle)
    assert r.stderr.startswith("error: ") or "Usage" in r.stderr
    assert _snapshot(tmp) == before, "the command changed files although it failed"


@pytest.mark.parametrize("cmd,args,needle", list(_rows(False)))
def test_bad_input_is_one_line_and_leaves_out_untouched(cmd, args, needle, place):
    _run_bad(cmd, args, needle, place)


@pytest.mark.slow
@pytest.mark.parametrize("cmd,args,needle", list(_rows(True)))
def test_bad_input_full_table(cmd, args, needle, place):
    _run_bad(cmd, args, needle, place)


def _wait_for_work(p: subprocess.Popen, tmp: Path, limit: float = 240, settle: float = 1.5) -> None:
    """Until a staging entry (folder or file) exists beside the output, then ``settle`` seconds longer."""
    t0 = time.monotonic()
    while not any(".staging-" in q.name or ".part-" in q.name for q in tmp.iterdir()):
        assert p.poll() is None, p.communicate()[1][-2000:]
        assert time.monotonic() - t0 < limit, "the command never started its work"
        time.sleep(0.05)
    time.sleep(settle)


def _interrupt(args, sig, code, tmp: Path, settle: float = 1.5) -> None:
    before = _snapshot(tmp)
    p = subprocess.Popen(_cmd(_fill(args, tmp)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp)
    try:
        _wait_for_work(p, tmp, settle=settle)
        assert p.poll() is None, "finished before the signal; pick a longer job"
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    r = subprocess.CompletedProcess(p.args, p.returncode, "", err)
    _check_one_line(r, code, "interrupted" if sig == signal.SIGINT else "terminated")
    assert _snapshot(tmp) == before, "interrupted run left or changed files"


def test_interruption_inside_a_numba_kernel(place):
    """Issue 20 item 5: a SIGINT that lands in a kernel surfaced as ``SystemError: CPUDispatcher(...) returned a
    result with an exception set`` and a traceback; it must end as any interruption does. The stream decodes
    for about 15 s; the signal comes 5 s after the staging file, once the frames are being decoded."""
    _interrupt(("codec", "decode", "{tmp}/long.lmc", "--out", "{tmp}/x.pt"), signal.SIGINT, 130, place, settle=5.0)


@pytest.mark.parametrize("sig,word,code", [(signal.SIGINT, "interrupted", 130), (signal.SIGTERM, "terminated", 143)])
@pytest.mark.parametrize("surfaces_as", ["SystemError", "InputError"])
def test_a_signal_that_surfaces_as_another_error_still_exits_by_the_signal(sig, word, code, surfaces_as, monkeypatch, capsys):
    """The handler ran, but its exception came out wrapped: as numba's SystemError (issue 20 item 5), or as a
    library's one-line error (PyAV's "Interrupted system call", item 6). The exit follows the signal."""
    from latentmotion.cli import _app, _exit
    from latentmotion.errors import InputError

    def command(*_a, **_k):
        try:
            _exit._raise_interrupted(sig, None)  # what the signal does
        except BaseException:
            raise (SystemError("returned a result with an exception set") if surfaces_as == "SystemError" else InputError("cannot decode video: Interrupted system call")) from None

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(_app, "app", command)
    try:
        with pytest.raises(SystemExit) as exc:
            _app.run_app([])
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    assert exc.value.code == code and capsys.readouterr().err == word + "\n"


def test_serve_drains_and_exits_0_on_sigterm(tmp_path):
    """A server asked to stop while idle drains (nothing to drain) and exits 0, as the service's contract says."""
    p = subprocess.Popen([sys.executable, "-u", "-m", "latentmotion.cli", "serve", "--insecure", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    try:
        line = p.stdout.readline()
        assert "listening" in line, (line, p.stderr.read() if p.poll() is not None else "")
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_interruption_during_start_up_is_clean(tmp_path):
    """A signal while torch is being imported: held until the imports are done, then the usual exit."""
    p = subprocess.Popen(_cmd(["demo", "--out", str(tmp_path / "o")]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    try:
        time.sleep(1.0)  # the handlers are installed within ~0.2 s; torch takes longer to import
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    _check_one_line(subprocess.CompletedProcess(p.args, p.returncode, "", err), 130, "interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,sig,code", INTERRUPT[:2], ids=["reproduce-SIGINT", "reproduce-force-SIGTERM"])
def test_interruption_exits_130_or_143_and_publishes_nothing(args, sig, code, place):
    _interrupt(args, sig, code, place)


@pytest.mark.parametrize("sig,word,code", [(signal.SIGINT, "interrupted", 130), (signal.SIGTERM, "terminated", 143)])
def test_a_signal_during_shutdown_after_the_output_still_exits_by_it(sig, word, code):
    """A signal raised from an exit hook, after the command printed its result: the word and the code, no traceback."""
    prog = (f"import atexit, os; atexit.register(lambda: os.kill(os.getpid(), {int(sig)})); "
            "from latentmotion.cli._app import run_app; run_app(['models'])")
    r = subprocess.run([sys.executable, "-c", prog], check=False, capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == code and "efficientnet_lite0" in r.stdout  # the output came out whole first
    assert r.stderr.strip().splitlines()[-1] == word and "Traceback" not in r.stderr and "Exception ignored" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args,sig,code", INTERRUPT[2:], ids=["encode-SIGINT", "flow-SIGTERM"])
def test_interruption_more_commands(args, sig, code, place):
    _interrupt(args, sig, code, place)


@pytest.mark.slow  # tests/test_outputs.py checks the same in-process in the default run
def test_force_replaces_the_old_folder_whole(place):
    """--force publishes only the new run's files: nothing of the old folder is mixed in."""
    r = subprocess.run(_cmd(["demo", "--out", str(place / "old"), "--force", "--motion", "tx=8"]), check=False, capture_output=True, text=True, timeout=300, env=_env(), cwd=place)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (place / "old").iterdir()) == ["fig4.png"]
    assert not [p for p in place.iterdir() if p.name.startswith(".")]


def test_a_failed_write_of_the_decoded_tensors_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """torch.save reports a full disk as a RuntimeError (its zip writer's), not an OSError: still one line, exit 2."""
    import torch

    from latentmotion.cli import _app

    (tmp_path / "s.lmc").write_bytes(_misfit_stream())

    def full_disk(*_a, **_k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SystemExit) as exc:
        _app.run_app(["codec", "decode", str(tmp_path / "s.lmc"), "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: cannot write") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.lmc"]


def test_decode_counts_each_frames_tensor_object_against_memory(tmp_path, monkeypatch):
    """Tiny frames cost their tensor objects more than their values: a stream of many is refused by what those hold."""
    import torch

    from latentmotion import _memory
    from latentmotion.cli import codec as cli_codec
    from latentmotion.codec import Encoder, Tools, decode_work_nbytes, decoded_nbytes, encode_sequence
    from latentmotion.errors import InputError

    data = encode_sequence(list(torch.zeros(3000, 1, 1, 1)), Encoder((1, 1, 1), 0.1, Tools.of(mode="zero")))
    values = 2 * decoded_nbytes(data) + decode_work_nbytes(data)
    monkeypatch.setattr(_memory, "memory_budget", lambda: values + 3000 * cli_codec.TENSOR_OVERHEAD - 1)
    with pytest.raises(InputError, match="needs"):
        cli_codec._decode_checks(tmp_path / "s.lmc", data, False, "", "", 0)
    monkeypatch.setattr(_memory, "memory_budget", lambda: values + 3000 * cli_codec.TENSOR_OVERHEAD)
    cli_codec._decode_checks(tmp_path / "s.lmc", data, False, "", "", 0)


def test_decoded_tensors_larger_than_the_free_disk_are_refused_before_decoding(tmp_path, monkeypatch, capsys):
    """A few hundred bytes of all-skip frames decode to megabytes: where the disk cannot hold them, the decode is
    refused before it starts (one line, exit 2, nothing left), and one byte more of room lets it through. The room
    asked about is that of the folder the file lands in: through a link, the link's target's folder."""
    import shutil

    import torch

    from latentmotion.cli import _app
    from latentmotion.codec import Encoder, Tools, decode_stream, decoded_nbytes, encode_sequence

    data = encode_sequence(list(torch.zeros(64, 8, 32, 32)), Encoder((8, 32, 32), 0.1, Tools.of(mode="zero")))
    (tmp_path / "s.lmc").write_bytes(data)
    need = decoded_nbytes(data) + (1 << 20)
    assert len(data) * 1000 < decoded_nbytes(data)  # the stream is tiny against what it decodes to
    (tmp_path / "disk").mkdir()
    (tmp_path / "x.pt").symlink_to(tmp_path / "disk" / "x.pt")  # --out through a link into another folder
    usage, asked, decoded = shutil.disk_usage(tmp_path), [], []

    def disk_usage(path, free):
        asked.append(Path(path))
        return usage._replace(free=free)

    monkeypatch.setattr("latentmotion.codec.decode_stream", lambda d: decoded.append(1) or decode_stream(d))
    args = ["codec", "decode", str(tmp_path / "s.lmc"), "--out", str(tmp_path / "x.pt")]
    monkeypatch.setattr(shutil, "disk_usage", lambda p: disk_usage(p, need - 1))
    with pytest.raises(SystemExit) as exc:
        _app.run_app(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: cannot write") and "MiB free" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "s.lmc", "x.pt"] and not any((tmp_path / "disk").iterdir()) and not decoded
    monkeypatch.setattr(shutil, "disk_usage", lambda p: disk_usage(p, need))
    _app.run_app(args)  # returns: exit 0
    assert asked == [tmp_path / "disk"] * 2
    assert torch.load(tmp_path / "x.pt").shape == (64, 8, 32, 32) and decoded
    assert (tmp_path / "disk" / "x.pt").stat().st_size <= need


def test_a_signal_swallowed_by_a_ctypes_callback_is_raised_again_once_back_in_python(capsys):
    """numba compiles through llvmlite's ctypes callbacks: a signal whose exception is raised inside one was
    printed as "Exception ignored" with a traceback, and lost. It is signalled again and raised in Python."""
    import ctypes

    from latentmotion.cli import _exit

    old = signal.signal(signal.SIGTERM, _exit._raise_interrupted), sys.unraisablehook
    sys.unraisablehook = _exit._raise_again
    after = []
    try:
        callback = ctypes.CFUNCTYPE(None)(lambda: os.kill(os.getpid(), signal.SIGTERM))
        with pytest.raises(_exit.Interrupted) as exc:
            callback()
            for _ in range(1000):  # signalled again 10 ms later: taken at the next bytecode boundary after it
                after.append(1)
                time.sleep(0.001)
        assert exc.value.code == 143 and len(after) < 1000
    finally:
        signal.signal(signal.SIGTERM, old[0])
        sys.unraisablehook = old[1]
    assert "Exception ignored" not in capsys.readouterr().err


@pytest.mark.parametrize("args", [[], ["codec"]])
def test_no_command_shows_the_help_and_says_so_in_one_line(args):
    r = subprocess.run(_cmd(args), check=False, capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 2 and "Usage" in r.stdout
    _check_one_line(r, 2, "missing command")
