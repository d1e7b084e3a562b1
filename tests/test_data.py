"""latentmotion.data: image files are sized from their header before decoding."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import skimage.io

from latentmotion.data import MAX_IMAGE_PIXELS, check_image_size, load_image
from latentmotion.errors import InputError


def _png_header(w: int, h: int) -> bytes:
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_a_tiny_file_claiming_a_huge_picture_is_refused_unread(tmp_path, recwarn):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header(13000, 13000))
    assert p.stat().st_size < 200
    with pytest.raises(InputError, match="13000x13000"):
        load_image(p)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def test_size_comes_from_the_header_and_matches_the_decoded_image(tmp_path):
    p = tmp_path / "a.png"
    skimage.io.imsave(p, np.zeros((37, 53, 3), np.uint8), check_contrast=False)
    assert check_image_size(p) == (37, 53) == tuple(load_image(p).shape[-2:])
    with pytest.raises(InputError, match="megapixels"):
        check_image_size(p, max_pixels=37 * 53 - 1)
    assert MAX_IMAGE_PIXELS >= 24_000_000  # a 24-megapixel camera photo is accepted


def test_a_fifo_is_refused_before_it_is_opened(tmp_path):
    """Issue 20 item 6: opening a FIFO blocks until a writer comes; stat first, refuse anything but a regular file."""
    import os

    from latentmotion.data import video_path

    for name in ("fifo.png", "fifo.mp4"):
        os.mkfifo(tmp_path / name)
    with pytest.raises(InputError, match="not a regular file"):
        load_image(tmp_path / "fifo.png")
    with pytest.raises(InputError, match="not a regular file"):
        video_path(str(tmp_path / "fifo.mp4"))
    with pytest.raises(InputError, match="not a regular file"):
        video_path(str(tmp_path))
