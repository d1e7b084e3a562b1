"""latentmotion._files: a small input file is read whole or refused, and a read the machine refuses names its file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from latentmotion._files import read_small_file
from latentmotion.errors import InputError


def test_reads_a_file_up_to_its_limit_and_refuses_one_byte_more(tmp_path):
    p = tmp_path / "token"
    p.write_bytes(b"x" * 16)
    assert read_small_file(p, "token file", 16) == b"x" * 16
    with pytest.raises(InputError, match=r"token file .*token is larger than 15 bytes"):
        read_small_file(p, "token file", 15)
    assert read_small_file(p, "token file", 1 << 40) == b"x" * 16  # a limit no memory holds: nothing of its size is allocated


def test_a_file_whose_size_says_nothing_is_still_held_to_the_limit():
    maps = Path("/proc/self/maps")  # st_size 0, yet kilobytes to read
    if not maps.exists() or maps.stat().st_size:
        pytest.skip("no /proc here")
    assert len(read_small_file(maps, "stream file", 1 << 20)) > 64
    with pytest.raises(InputError, match="larger than 64 bytes"):
        read_small_file(maps, "stream file", 64)


def test_a_refused_read_names_the_file():
    mem = "/proc/self/mem"  # reading at offset 0 fails with EIO, which names no file by itself
    if not os.path.exists(mem):
        pytest.skip("no /proc here")
    with pytest.raises(OSError) as err:
        read_small_file(mem, "stream file", 1 << 20)
    assert err.value.filename == mem and err.value.strerror


def test_what_is_no_regular_file_is_refused_as_what_it_is(tmp_path):
    with pytest.raises(InputError, match="is not a regular file .it is a folder"):
        read_small_file(tmp_path, "stream file", 10)
    with pytest.raises(InputError, match="does not exist"):
        read_small_file(tmp_path / "none", "stream file", 10)


def test_a_file_not_beginning_with_its_magic_is_refused_from_its_first_bytes(tmp_path):
    p = tmp_path / "s.lmf"
    p.write_bytes(b"LMFC" + b"\0" * 10)
    assert read_small_file(p, "stream file", 100, magic=b"LMFC")[:4] == b"LMFC"
    for head in (b"GIF89a" + b"\0" * 10, b"LM", b""):  # another file, one shorter than the magic, an empty one
        p.write_bytes(head)
        with pytest.raises(InputError, match="does not begin with b'LMFC': it is no stream file"):
            read_small_file(p, "stream file", 100, magic=b"LMFC")


def test_a_fifo_swapped_in_after_the_check_is_refused_once_open_without_blocking(tmp_path, monkeypatch):
    import latentmotion._files as files

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    monkeypatch.setattr(files, "regular_file", lambda path, what: Path(path))  # as if it were a file when checked
    with pytest.raises(InputError, match="not a regular file .it is a FIFO"):
        read_small_file(fifo, "stream file", 100)  # a blocking open would wait here for a writer


def test_a_file_past_the_memory_budget_is_refused_as_such(tmp_path, monkeypatch):
    import latentmotion._memory as memory

    p = tmp_path / "big"
    p.write_bytes(b"x" * 1000)
    monkeypatch.setattr(memory, "memory_budget", lambda: 500)
    with pytest.raises(InputError, match=r"larger than this process may hold \(500 bytes\)"):
        read_small_file(p, "stream file", 1 << 30)


def test_open_regular_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    from latentmotion._files import open_regular

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="weights file .* is not a regular file .it is a FIFO"):
        open_regular(fifo, "weights file")
    with open_regular(__file__, "module") as f:
        assert f.read(10) == Path(__file__).read_bytes()[:10]
