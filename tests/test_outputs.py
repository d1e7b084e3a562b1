"""latentmotion.outputs: published whole or not at all (issue 12)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from latentmotion.errors import InputError
from latentmotion.outputs import staged_file, staged_folder, write_atomic


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_folder_is_published_on_success_and_nothing_else_remains(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    with staged_folder(out) as stage:
        assert not out.exists() and stage.parent == out.parent
        (stage / "x.txt").write_text("1")
    assert _entries(out) == ["x.txt"] and _entries(out.parent) == ["run"]


def test_error_leaves_nothing_not_even_created_parents(tmp_path):
    out = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(RuntimeError), staged_folder(out) as stage:
        (stage / "half.txt").write_text("partial")
        raise RuntimeError("boom")
    assert _entries(tmp_path) == []


def test_keyboard_interrupt_keeps_the_old_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_folder(out, force=True) as stage:
        (stage / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert _entries(out) == ["old.txt"] and _entries(tmp_path) == ["run"]


def test_force_replaces_whole_even_when_names_collide(tmp_path):
    out = tmp_path / "run"
    (out / "figs").mkdir(parents=True)
    (out / "figs" / "old.png").write_text("old")
    (out / "stale.md").write_text("old")
    with staged_folder(out, force=True) as stage:
        (stage / "figs").mkdir()
        (stage / "figs" / "new.png").write_text("new")
    assert _entries(out) == ["figs"] and _entries(out / "figs") == ["new.png"]
    assert _entries(tmp_path) == ["run"]


@pytest.mark.parametrize("case,needle", [("file", "not a folder"), ("full", "--force"), ("under_file", "not a folder")])
def test_refusals_come_before_the_block_runs(tmp_path, case, needle):
    (tmp_path / "f").write_text("keep")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "k").write_text("keep")
    out = {"file": tmp_path / "f", "full": tmp_path / "full", "under_file": tmp_path / "f" / "sub" / "run"}[case]
    ran = []
    with pytest.raises(InputError, match=needle), staged_folder(out):
        ran.append(1)
    assert not ran and _entries(tmp_path) == ["f", "full"]


def test_stale_staging_of_a_dead_process_is_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True).stdout.strip()
    (tmp_path / f".run.staging-{dead}").mkdir()
    (tmp_path / f".run.staging-{dead}" / "half").write_text("x")
    with staged_folder(tmp_path / "run") as stage:
        (stage / "ok").write_text("1")
    assert _entries(tmp_path) == ["run"]


def test_single_file_is_renamed_into_place_or_absent(tmp_path):
    p = tmp_path / "s.bin"
    write_atomic(p, b"abc")
    assert p.read_bytes() == b"abc" and _entries(tmp_path) == ["s.bin"]
    with pytest.raises(ValueError), staged_file(p) as tmp:
        tmp.write_bytes(b"partial")
        raise ValueError
    assert p.read_bytes() == b"abc" and _entries(tmp_path) == ["s.bin"]


@pytest.mark.parametrize("where,needle", [("dir", "is a folder"), ("missing/x.bin", "does not exist")])
def test_single_file_refusals(tmp_path, where, needle):
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError, match=needle):
        write_atomic(tmp_path / where, b"x")
    assert _entries(tmp_path) == ["dir"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_parent_is_one_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot write"), staged_folder(ro / "run"):
            pass
    finally:
        ro.chmod(0o700)


def test_relative_and_root_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    monkeypatch.chdir(tmp_path / "w")
    with staged_folder("../run") as stage:
        (stage / "x").write_text("1")
    assert _entries(tmp_path) == ["run", "w"]
    with pytest.raises(InputError, match="names no"), staged_folder("/"):
        pass


def test_old_content_moved_aside_by_a_killed_publish_comes_back(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True).stdout.strip()
    aside = tmp_path / f".run.old-{dead}"
    aside.mkdir()
    (aside / "old.txt").write_text("old")
    with pytest.raises(InputError, match="--force"), staged_folder(tmp_path / "run"):
        pass
    assert _entries(tmp_path) == ["run"] and (tmp_path / "run" / "old.txt").read_text() == "old"


def test_force_swaps_in_one_step_where_the_os_can(tmp_path, monkeypatch):
    """With the exchange unavailable the two-rename path gives the same result."""
    from latentmotion import outputs

    for exchange in (outputs._exchange, lambda a, b: False):
        monkeypatch.setattr(outputs, "_exchange", exchange)
        out = tmp_path / "run"
        out.mkdir(exist_ok=True)
        (out / "stale").write_text("old")
        with staged_folder(out, force=True) as stage:
            (stage / "new").write_text("new")
        assert _entries(out) == ["new"] and _entries(tmp_path) == ["run"]
        (out / "new").unlink()


# ----------------------------------------------------------------- special files (issue 20, item 7)


def _device_node(path):
    """A character device (the null device's numbers) at ``path``; None where this process may not make one."""
    import stat

    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError:
        return None
    return path


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_single_file_refuses_what_is_not_a_regular_file(tmp_path, kind):
    import stat

    p = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(p)
    elif _device_node(p) is None:
        pytest.skip("cannot create a device node here")
    ran = []
    with pytest.raises(InputError, match="not a regular file"), staged_file(p):
        ran.append(1)
    mode = os.lstat(p).st_mode
    assert not ran and (stat.S_ISFIFO(mode) if kind == "fifo" else stat.S_ISCHR(mode))
    assert _entries(tmp_path) == ["special"]


def test_folder_refuses_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "f")
    with pytest.raises(InputError, match="not a folder"), staged_folder(tmp_path / "f", force=True):
        pass
    assert _entries(tmp_path) == ["f"]


def test_a_symlinked_out_is_followed_and_stays_a_link(tmp_path):
    (tmp_path / "real.bin").write_bytes(b"old")
    (tmp_path / "link.bin").symlink_to("real.bin")
    write_atomic(tmp_path / "link.bin", b"new")
    assert (tmp_path / "link.bin").is_symlink() and (tmp_path / "real.bin").read_bytes() == b"new"
    (tmp_path / "real_dir").mkdir()
    (tmp_path / "real_dir" / "stale").write_text("old")
    (tmp_path / "link_dir").symlink_to("real_dir")
    with staged_folder(tmp_path / "link_dir", force=True) as stage:
        (stage / "new").write_text("new")
    assert (tmp_path / "link_dir").is_symlink() and _entries(tmp_path / "real_dir") == ["new"]
    assert _entries(tmp_path) == ["link.bin", "link_dir", "real.bin", "real_dir"]


def test_a_symlink_to_a_special_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to("fifo")
    with pytest.raises(InputError, match="not a regular file"):
        write_atomic(tmp_path / "link", b"x")
    assert (tmp_path / "link").is_symlink() and _entries(tmp_path) == ["fifo", "link"]


def test_force_never_replaces_a_folder_that_holds_an_input_or_the_current_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    clip = out / "clip.mp4"
    clip.write_bytes(b"video")
    with pytest.raises(InputError, match="input"), staged_folder(out, force=True, inputs=(clip,)):
        pass
    monkeypatch.chdir(out / "sub")
    with pytest.raises(InputError, match="current folder"), staged_folder(out, force=True):
        pass
    monkeypatch.chdir(tmp_path)
    with staged_folder(out, force=True, inputs=(tmp_path / "elsewhere.mp4",)) as stage:  # neither: replaced as before
        (stage / "report.md").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]


def test_force_follows_links_when_it_looks_for_inputs_inside_the_folder(tmp_path):
    """Links resolved both ways: an ``out`` that links to the folder holding the clip, and a clip given through a
    link elsewhere whose target lies inside ``out``, are refused; a link inside ``out`` to a clip elsewhere is not
    what replacing ``out`` deletes, so it is allowed (and the clip survives)."""
    real = tmp_path / "real"
    real.mkdir()
    clip = real / "clip.mp4"
    clip.write_bytes(b"video")
    (tmp_path / "out").symlink_to(real)
    with pytest.raises(InputError, match="input"), staged_folder(tmp_path / "out", force=True, inputs=(clip,)):
        pass
    (tmp_path / "alias.mp4").symlink_to(clip)
    with pytest.raises(InputError, match="input"), staged_folder(real, force=True, inputs=(tmp_path / "alias.mp4",)):
        pass
    assert clip.read_bytes() == b"video"
    elsewhere = tmp_path / "clip2.mp4"
    elsewhere.write_bytes(b"video2")
    (real / "link.mp4").symlink_to(elsewhere)
    clip.unlink()
    with staged_folder(real, force=True, inputs=(real / "link.mp4",)) as stage:
        (stage / "report.md").write_text("new")
    assert sorted(p.name for p in real.iterdir()) == ["report.md"] and elsewhere.read_bytes() == b"video2"


def test_a_name_near_the_file_systems_limit_is_written_and_its_stale_staging_swept(tmp_path):
    """A 253-byte file name is valid, though ``.NAME.part-PID`` would not be: the staging sibling cuts the name and
    tells it apart by its hash; a sibling a killed process left is still found and removed."""
    out = tmp_path / ("b" * 250 + ".pt")
    write_atomic(out, b"x")
    assert out.read_bytes() == b"x" and _entries(tmp_path) == [out.name]
    from latentmotion.outputs import _sibling

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True).stdout.strip()
    stale = _sibling(out, "part", int(dead))
    assert len(stale.name) < 255 < len(f".{out.name}.part-{dead}")
    stale.write_bytes(b"left")
    write_atomic(out, b"y")
    assert out.read_bytes() == b"y" and _entries(tmp_path) == [out.name]


def test_a_name_with_glob_characters_sweeps_only_its_own_staging(tmp_path):
    """``a[1].pt``'s stale siblings are found by an escaped pattern: ``.a1.pt.part-PID`` (another file's, which
    ``[1]`` unescaped would match) is left alone."""
    from latentmotion.outputs import _sibling

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True).stdout)
    out = tmp_path / "a[1].pt"
    decoy, stale = tmp_path / f".a1.pt.part-{dead}", _sibling(out, "part", dead)
    decoy.write_bytes(b"not ours")
    stale.write_bytes(b"ours")
    write_atomic(out, b"x")
    assert _entries(tmp_path) == sorted([decoy.name, out.name]) and decoy.read_bytes() == b"not ours"


def test_a_signal_during_a_held_block_comes_after_it_even_from_another_thread():
    """A mask would hold the main thread only: a signal sent while a worker thread runs could reach the handler
    inside the block (torch's and numba's threads block nothing)."""
    import os
    import signal
    import threading

    from latentmotion.outputs import signals_held

    class Stop(Exception):
        pass

    def stop(_signum, _frame):
        raise Stop

    go = threading.Event()
    t = threading.Thread(target=lambda: go.wait(10) and os.kill(os.getpid(), signal.SIGTERM))
    t.start()  # before the block: it blocks no signal, as a worker pool started earlier would not
    old = signal.signal(signal.SIGTERM, stop)
    steps = []
    try:
        with pytest.raises(Stop):
            with signals_held():
                go.set()
                t.join()
                for _ in range(1000):  # bytecodes in the main thread: where CPython would run the handler
                    steps.append(1)
                steps.append("end")
        assert steps[-1] == "end" and len(steps) == 1001  # the block ran whole, then the signal came
        assert signal.getsignal(signal.SIGTERM) is stop  # the handler is back
    finally:
        signal.signal(signal.SIGTERM, old)
