"""Motion models and motion compensation of images and feature tensors (Eq. 12).

Conventions (the single place they are written down):

* Coordinates: pixel centres at integer coordinates; ``x`` to the right
  (column index), ``y`` down (row index). A frame of width ``W`` spans
  ``[-0.5, W - 0.5]`` and its centre is ``((W - 1) / 2, (H - 1) / 2)``.
  ``grid_sample`` is always called with ``align_corners=False``, which is the
  same convention.
* Motion maps the reference frame onto the current one: content at point
  ``p`` of the reference appears at ``A(p)`` of the current frame. So ``tx > 0``
  moves content right, ``ty > 0`` moves it down and ``rot > 0`` turns it
  counter-clockwise as seen on screen.
* :class:`Affine` is ``A(p) = L (p - c) + c + t`` with ``c`` the frame centre,
  ``L = R(rot) @ diag(sx, sy) @ [[1, tan shx], [tan shy, 1]]`` and
  ``R(a) = [[cos a, sin a], [-sin a, cos a]]`` (y down), angles in degrees,
  translation in input pixels.
* Dense flow: a tensor (2, H, W) or (N, 2, H, W) holding (dx, dy) in pixels,
  forward from reference to current and sampled on the current frame's grid:
  the content now at ``(x, y)`` came from ``(x - dx, y - dy)``. This is what
  block matching returns and what backward warping needs.
* Warping is backward: ``out(q) = ref(A^-1(q))``, bilinear or bicubic, zero
  outside the reference.
* Latent space (Eq. 12): with a split's stride ``s`` and offset ``o`` (latent
  index ``u`` sits at input coordinate ``s u + o``), ``align="exact"``
  conjugates the input motion by that map; ``align="paper"`` reproduces the
  original code: the same linear part about the tensor's centre and the
  translation divided by the stride.

Masks mark what can be predicted:

* ``"paper"`` (as the original): warp an all-ones tensor the same way and keep
  elements where it is non-zero.
* ``"strict"``: keep only elements whose every interpolation tap lies inside
  the reference. An element that mixes in zero padding is biased toward 0, so
  it measures the border rule, not the motion model.
* ``"receptive"`` (feature tensors only): ``"strict"``, and in addition the
  receptive field of the predicted element and of every tap stays inside the
  input frame, so no convolution's zero padding reaches them. This is the
  region where Eq. 12 can be exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple, Union

import torch
import torch.nn.functional as F

from .errors import InputError

__all__ = [
    "MAX_TRANSLATION",
    "SCALE_RANGE",
    "Affine",
    "FramePair",
    "Motion",
    "Warped",
    "check_image",
    "flow_from_affine",
    "interior_mask",
    "latent_matrix",
    "predict_features",
    "render_pair",
    "sample",
    "warp_image",
]

#: Largest |translation| in pixels and the scale range: beyond them float32
#: sampling coordinates lose whole pixels (or overflow to NaN), so such a
#: motion is refused instead of producing a table of NaN.
MAX_TRANSLATION = 1e5
SCALE_RANGE = (1e-3, 1e3)

Align = Literal["exact", "paper"]
Mode = Literal["bilinear", "bicubic"]
MaskKind = Literal["paper", "strict", "receptive"]


@dataclass(frozen=True)
class Affine:
    """Seven-parameter affine motion about the frame centre (see module docstring).

    Args:
        tx, ty: translation in input pixels (x right, y down).
        sx, sy: scale factors (> 0).
        shx, shy: shear angles in degrees (|angle| < 90).
        rot: rotation in degrees, counter-clockwise on screen.

    Example:
        >>> Affine(tx=8).apply_to_points(torch.tensor([[10.0, 5.0]]), (224, 224))
        tensor([[18.,  5.]], dtype=torch.float64)
    """

    tx: float = 0.0
    ty: float = 0.0
    sx: float = 1.0
    sy: float = 1.0
    shx: float = 0.0
    shy: float = 0.0
    rot: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"motion parameter {f.name} must be a finite number, got {v!r}")
        if not (SCALE_RANGE[0] <= self.sx <= SCALE_RANGE[1] and SCALE_RANGE[0] <= self.sy <= SCALE_RANGE[1]):
            raise InputError(f"scale factors must lie in [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}], got sx={self.sx}, sy={self.sy}")
        if max(abs(self.tx), abs(self.ty)) > MAX_TRANSLATION:
            raise InputError(f"translation must be at most {MAX_TRANSLATION:g} pixels, got tx={self.tx:g}, ty={self.ty:g}")
        if abs(self.shx) >= 90 or abs(self.shy) >= 90:
            raise InputError(f"shear angles must lie strictly between -90 and 90 degrees, got {self.shx}, {self.shy}")
        if abs(self.linear().det()) < 1e-9:
            raise InputError(f"motion {self} is singular")

    @classmethod
    def parse(cls, text: str) -> Affine:
        """``"tx=8,rot=5"`` -> ``Affine(tx=8, rot=5)``; names are the fields, values numbers.

        Example:
            >>> Affine.parse("tx=8, rot=5")
            Affine(tx=8.0, ty=0.0, sx=1.0, sy=1.0, shx=0.0, shy=0.0, rot=5.0)
        """
        names = [f.name for f in fields(cls)]
        kw: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, eq, val = (x.strip() for x in part.partition("="))
            if not eq or key not in names or key in kw:
                raise InputError(f"motion {text!r}: expected name=value pairs with distinct names from {', '.join(names)}")
            try:
                kw[key] = float(val)
            except ValueError:
                raise InputError(f"motion {text!r}: {val!r} is not a number") from None
        if not kw:
            raise InputError(f"motion {text!r} is empty; give name=value pairs such as tx=8,rot=5")
        return cls(**kw)

    def linear(self) -> torch.Tensor:
        """The 2x2 linear part L = R @ S @ Sh, float64, acting on (x, y)."""
        a = math.radians(self.rot)
        rot = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64)
        scale = torch.diag(torch.tensor([self.sx, self.sy], dtype=torch.float64))
        shear = torch.tensor([[1.0, math.tan(math.radians(self.shx))], [math.tan(math.radians(self.shy)), 1.0]], dtype=torch.float64)
        return rot @ scale @ shear

    def matrix(self, size: tuple[int, int]) -> torch.Tensor:
        """Forward map as a 2x3 float64 matrix on pixel coordinates of a (H, W) frame."""
        h, w = size
        c = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
        lin = self.linear()
        t = torch.tensor([self.tx, self.ty], dtype=torch.float64)
        return torch.cat([lin, (c - lin @ c + t)[:, None]], dim=1)

    def apply_to_points(self, xy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Where reference points (..., 2) as (x, y) land in the current frame."""
        m = self.matrix(size)
        return xy.to(torch.float64) @ m[:, :2].T + m[:, 2]

    def as_tuple(self) -> tuple[float, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


Motion = Union[Affine, Sequence[Affine], torch.Tensor]


class Warped(NamedTuple):
    """A motion-compensated batch and the mask of what it can predict.

    ``warped``: (N, C, H, W). ``valid``: (N, 1, H, W) bool.
    """

    warped: torch.Tensor
    valid: torch.Tensor


class FramePair(NamedTuple):
    """Frames rendered from one source photo: reference (1, 3, S, S), current (N, 3, S, S)."""

    reference: torch.Tensor
    current: torch.Tensor


# --------------------------------------------------------------------------- helpers


def _as_batch(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise InputError(f"{what} must have shape (C, H, W) or (N, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{what} must be a floating-point tensor, got {x.dtype}")
    return x


def check_image(x: torch.Tensor, what: str = "image") -> torch.Tensor:
    """Validate RGB in [0, 1] and return it as (N, 3, H, W)."""
    x = _as_batch(x, what)
    if x.shape[1] != 3:
        raise InputError(f"{what} must have 3 (RGB) channels, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError(f"{what} holds NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"{what} must hold values in [0, 1], got [{lo:.3g}, {hi:.3g}] (divide 8-bit images by 255)")
    return x


def _pixel_grid(h: int, w: int, device, dtype=torch.float64) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys], dim=-1)  # (H, W, 2) as (x, y)


def _affines(motion: Motion) -> list[Affine] | None:
    if isinstance(motion, Affine):
        return [motion]
    if isinstance(motion, Sequence) and not isinstance(motion, (str, bytes)):
        if len(motion) == 0 or not all(isinstance(m, Affine) for m in motion):
            raise InputError("motion must be an Affine, a non-empty sequence of Affine, or a flow tensor (2, H, W)")
        return list(motion)
    if isinstance(motion, torch.Tensor):
        return None
    raise InputError(f"motion must be an Affine, a sequence of Affine or a flow tensor, got {type(motion).__name__}")


def _check_flow(flow: torch.Tensor) -> torch.Tensor:
    if flow.dim() == 3:
        flow = flow[None]
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise InputError(f"flow must have shape (2, H, W) or (N, 2, H, W), got {tuple(flow.shape)}")
    if not torch.isfinite(flow).all():
        raise InputError("flow holds NaN or infinite values")
    return flow


def _source_points(motion: Motion, grid: torch.Tensor, matrix, flow_on_grid, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Source points (N, H, W, 2) of every ``grid`` point under ``motion``: the one place that
    tells an :class:`Affine` (or a sequence) from a dense flow.

    ``matrix(affine)`` gives the forward 2x3 map on the grid's coordinates;
    ``flow_on_grid(flow)`` turns a checked flow (N, 2, H0, W0) into (N, 2, H, W)
    displacements in grid units. ``shift`` is added to every source point.
    """
    affs = _affines(motion)
    if affs is not None:
        return _inverse_points(torch.stack([matrix(a) for a in affs]).to(grid.device), grid, shift)
    flow = flow_on_grid(_check_flow(motion).to(grid.device)).to(grid.dtype)
    src = grid[None] - flow.permute(0, 2, 3, 1)
    return src if shift is None else src + shift


def _inverse_points(matrices: torch.Tensor, grid: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Source points A^-1(q) for forward maps (N, 2, 3) over a grid (H, W, 2).

    The inverse is formed in float64; applying it runs in ``grid.dtype``
    (integer shifts stay exact in float32, other coordinates within 1e-4 px).
    """
    lin, t = matrices[:, :, :2], matrices[:, :, 2]
    inv = torch.linalg.inv(lin.double())
    bias = -(inv @ t.double()[..., None])[..., 0]
    if shift is not None:  # a constant added to every source point, folded into the bias
        bias = bias + shift.to(bias)
    h, w, _ = grid.shape
    flat = grid.reshape(1, h * w, 2).expand(matrices.shape[0], -1, -1)
    out = torch.baddbmm(bias[:, None, :].to(grid.dtype), flat, inv.transpose(1, 2).to(grid.dtype))
    return out.reshape(-1, h, w, 2)


def sample(img: torch.Tensor, src: torch.Tensor, mode: Mode = "bicubic", mask: MaskKind | None = "paper") -> Warped:
    """Sample ``img`` (N or 1, C, H, W) at pixel coordinates ``src`` (N, Ho, Wo, 2) as (x, y).

    Zero outside ``img``; ``align_corners=False`` with pixel centres at integers.
    ``mask=None`` skips the mask (``valid`` is then all true).
    """
    if mode not in ("bilinear", "bicubic"):
        raise InputError(f"interpolation must be 'bilinear' or 'bicubic', got {mode!r}")
    if mask not in ("paper", "strict", None):
        raise InputError(f"mask must be 'paper' or 'strict' here, got {mask!r}")
    n = src.shape[0]
    h, w = img.shape[-2:]
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=src.dtype, device=src.device)
    grid = torch.addcmul(torch.tensor(-1.0, dtype=src.dtype, device=src.device), src + 0.5, scale).to(img.dtype)
    if img.shape[0] == 1 and n > 1:
        img = img.expand(n, -1, -1, -1)
    out = F.grid_sample(img, grid, mode=mode, padding_mode="zeros", align_corners=False)
    if mask is None:
        valid = torch.ones((n, 1) + tuple(src.shape[1:3]), dtype=torch.bool, device=img.device)
    elif mask == "paper":
        ones = torch.ones((n, 1, h, w), dtype=img.dtype, device=img.device)
        valid = F.grid_sample(ones, grid, mode=mode, padding_mode="zeros", align_corners=False).abs() > 1e-6
    else:
        reach = 1.0 if mode == "bicubic" else 0.0  # taps beyond floor/ceil
        x, y = src[..., 0], src[..., 1]
        valid = ((x >= reach) & (x <= w - 1 - reach) & (y >= reach) & (y <= h - 1 - reach))[:, None]
    return Warped(out, valid)


# --------------------------------------------------------------------------- images


def flow_from_affine(motion: Affine | Sequence[Affine], size: tuple[int, int]) -> torch.Tensor:
    """Dense forward flow (N, 2, H, W) equivalent to affine motion(s) on a (H, W) frame.

    ``flow(q) = q - A^-1(q)`` so that warping by the flow equals warping by ``A``.
    """
    affs = _affines(motion)
    if affs is None:
        raise InputError("flow_from_affine takes an Affine or a sequence of Affine, not a flow")
    grid = _pixel_grid(*size, device="cpu")
    src = _inverse_points(torch.stack([a.matrix(size) for a in affs]), grid)
    return (grid[None] - src).permute(0, 3, 1, 2).float()


def warp_image(img: torch.Tensor, motion: Motion, mode: Mode = "bicubic", mask: MaskKind = "paper") -> Warped:
    """Move an image (or any (N, C, H, W) tensor) by ``motion`` about its centre.

    Args:
        img: (C, H, W) or (N, C, H, W); a single image is moved by every motion.
        motion: an :class:`Affine`, a sequence of them (batch of N) or a dense
            forward flow (2, H, W) / (N, 2, H, W) in pixels.
        mode: ``"bilinear"`` or ``"bicubic"``.
        mask: ``"paper"`` or ``"strict"`` (see module docstring).

    Returns:
        :class:`Warped` with ``warped`` (N, C, H, W) and ``valid`` (N, 1, H, W).

    Example:
        >>> img = torch.zeros(1, 8, 8); img[0, 2, 3] = 1
        >>> out, valid = warp_image(img, Affine(tx=2, ty=1))
        >>> (out[0, 0] > 0.99).nonzero().tolist()
        [[3, 5]]
    """
    img = _as_batch(img, "image")
    h, w = img.shape[-2:]
    grid = _pixel_grid(h, w, img.device, img.dtype)

    def same_size(flow: torch.Tensor) -> torch.Tensor:
        if flow.shape[-2:] != (h, w):
            raise InputError(f"flow size {tuple(flow.shape[-2:])} does not match the image size {(h, w)}")
        return flow.to(img.dtype)

    src = _source_points(motion, grid, lambda a: a.matrix((h, w)), same_size)
    if img.shape[0] not in (1, src.shape[0]):
        raise InputError(f"{img.shape[0]} images but {src.shape[0]} motions")
    return sample(img, src, mode, mask)


def render_pair(source: torch.Tensor, motion: Motion, size: int = 224, mode: Mode = "bicubic") -> FramePair:
    """Render a reference frame and moved current frames from one larger photo.

    The reference is the ``size`` x ``size`` centre crop of ``source``; each
    current frame shows the same scene moved by ``motion`` about the crop's
    centre, sampled from the whole photo, so real content enters the frame
    instead of black (as the paper's original code did). Values are clamped to
    [0, 1] after bicubic interpolation.

    Args:
        source: RGB photo (3, H0, W0) in [0, 1], larger than ``size``.
        motion: as in :func:`warp_image` (a flow is given on the crop's grid).

    Example:
        >>> from latentmotion.data import load_image
        >>> pair = render_pair(load_image("chelsea"), [Affine(tx=8), Affine(rot=5)])
        >>> pair.current.shape
        torch.Size([2, 3, 224, 224])
    """
    src_img = check_image(source, "source image")
    if src_img.shape[0] != 1:
        raise InputError("render_pair takes one source photo (3, H, W)")
    h0, w0 = src_img.shape[-2:]
    if h0 < size or w0 < size:
        raise InputError(f"source image {h0}x{w0} is smaller than the frame size {size}")
    shift = torch.tensor([(w0 - 1) / 2 - (size - 1) / 2, (h0 - 1) / 2 - (size - 1) / 2], dtype=src_img.dtype, device=src_img.device)
    grid = _pixel_grid(size, size, src_img.device, src_img.dtype)
    src = _source_points(motion, grid, lambda a: a.matrix((size, size)), lambda f: f.to(src_img.dtype), shift)
    y0, x0 = (h0 - size) / 2, (w0 - size) / 2
    if y0.is_integer() and x0.is_integer():  # the reference is a plain crop
        ref = src_img[..., int(y0) : int(y0) + size, int(x0) : int(x0) + size].clone()
    else:
        ref = sample(src_img, (grid + shift)[None], mode, None).warped.clamp_(0, 1)
    cur = sample(src_img, src, mode, None).warped.clamp_(0, 1)
    return FramePair(ref, cur)


# --------------------------------------------------------------------------- latent space


def latent_matrix(motion: Affine, stride: tuple[int, int], offset: tuple[float, float], latent_size: tuple[int, int], input_size: tuple[int, int], align: Align = "exact") -> torch.Tensor:
    """The 2x3 forward map of ``motion`` on latent index coordinates (Eq. 12).

    ``exact``: ``S^-1 (A(S u + o) - o)`` with ``S = diag(sx, sy)``, offset ``o``.
    ``paper``: linear part about the tensor centre, translation divided by stride.
    """
    s = torch.tensor([stride[1], stride[0]], dtype=torch.float64)  # (x, y)
    if align == "exact":
        o = torch.tensor([offset[1], offset[0]], dtype=torch.float64)
        m = motion.matrix(input_size)
        lin = m[:, :2] / s[:, None] * s[None, :]
        t = (m[:, :2] @ o + m[:, 2] - o) / s
        return torch.cat([lin, t[:, None]], dim=1)
    if align == "paper":
        scaled = Affine(motion.tx / stride[1], motion.ty / stride[0], motion.sx, motion.sy, motion.shx, motion.shy, motion.rot)
        return scaled.matrix(latent_size)
    raise InputError(f"align must be 'exact' or 'paper', got {align!r}")


def predict_features(
    ref_features: torch.Tensor,
    motion: Motion,
    split,
    align: Align = "exact",
    mode: Mode = "bicubic",
    mask: MaskKind = "paper",
    input_size: tuple[int, int] | None = None,
) -> Warped:
    """Predict the current frame's feature tensor by moving the reference's (Eq. 12).

    Every channel is moved by the input motion scaled to the layer's grid.

    Args:
        ref_features: (C, h, w) or (1, C, h, w) tensor of the reference frame.
        motion: input-space motion: :class:`Affine` (or a sequence, batch N) or
            a dense forward flow (2, H, W) / (N, 2, H, W) on the input grid.
        split: anything with ``stride`` (sy, sx) and ``offset`` (oy, ox), such
            as a :class:`~latentmotion.models.Split`; a split without a spatial
            grid (``stride`` None: tokens, pooled vectors) raises :class:`InputError`.
        align: ``"exact"`` (uses stride and offset) or ``"paper"``.
        mask: ``"paper"``, ``"strict"`` or ``"receptive"`` (module docstring);
            ``"receptive"`` needs ``split.rf``.
        input_size: (H, W) of the input frames; default stride times latent size.

    Returns:
        :class:`Warped`: predictions (N, C, h, w) and valid mask (N, 1, h, w).
    """
    feats = _as_batch(ref_features, "reference features")
    if feats.shape[0] != 1:
        raise InputError("predict_features takes the features of one reference frame")
    if align not in ("exact", "paper"):
        raise InputError(f"align must be 'exact' or 'paper', got {align!r}")
    _need_grid(split)
    hl, wl = feats.shape[-2:]
    stride, offset = tuple(split.stride), tuple(split.offset)
    size_in = input_size or (hl * stride[0], wl * stride[1])
    grid = _pixel_grid(hl, wl, feats.device)
    s = torch.tensor([stride[1], stride[0]], dtype=torch.float64, device=feats.device)
    o = torch.tensor([offset[1], offset[0]], dtype=torch.float64, device=feats.device)

    def latent_flow(flow: torch.Tensor) -> torch.Tensor:
        at = grid * s + (o if align == "exact" else (s - 1) / 2)  # input point of each latent cell
        fl = sample(flow.double(), at[None].expand(flow.shape[0], -1, -1, -1), "bilinear").warped
        return fl / s[None, :, None, None]

    src = _source_points(motion, grid, lambda a: latent_matrix(a, stride, offset, (hl, wl), size_in, align), latent_flow)
    if mask != "receptive":
        return sample(feats, src, mode, mask)
    out = sample(feats, src, mode, "strict")
    (ylo, yhi), (xlo, xhi) = _interior_range(split, (hl, wl), size_in)
    reach = 1.0 if mode == "bicubic" else 0.0
    x, y = src[..., 0], src[..., 1]
    taps_in = (x >= xlo + reach) & (x <= xhi - reach) & (y >= ylo + reach) & (y <= yhi - reach)
    here = interior_mask(split, (hl, wl), size_in).to(feats.device)
    return Warped(out.warped, out.valid & taps_in[:, None] & here[None, None])


def _need_grid(split) -> None:
    """Motion is only defined on a spatial grid: refuse token or pooled cuts instead of guessing a stride."""
    if getattr(split, "stride", None) is None or getattr(split, "offset", None) is None:
        why = getattr(split, "no_grid", None) or "it has no stride and offset"
        raise InputError(f"cannot predict features at layer {getattr(split, 'layer', '?')!r}: no spatial grid ({why})")


def _interior_range(split, latent_size: tuple[int, int], input_size: tuple[int, int]) -> list[tuple[float, float]]:
    """Per axis (y, x): latent index range whose receptive field lies inside the input.

    Empty when the split mixes a whole-frame value into every element (``split.context``, e.g.
    squeeze-and-excitation): then no element is independent of the border.
    """
    if getattr(split, "context", None):
        return [(0, -1), (0, -1)]
    out = []
    for s, o, r, lim in zip(split.stride, split.offset, split.rf, input_size, strict=True):
        half = (r - 1) / 2
        out.append((math.ceil((half - o) / s), math.floor((lim - 1 - half - o) / s)))
    return out


def interior_mask(split, latent_size: tuple[int, int], input_size: tuple[int, int] | None = None) -> torch.Tensor:
    """(h, w) bool: latent elements whose receptive field lies inside the input frame."""
    _need_grid(split)
    hl, wl = latent_size
    size_in = input_size or (hl * split.stride[0], wl * split.stride[1])
    (ylo, yhi), (xlo, xhi) = _interior_range(split, latent_size, size_in)
    ys, xs = torch.arange(hl), torch.arange(wl)
    return ((ys >= ylo) & (ys <= yhi))[:, None] & ((xs >= xlo) & (xs <= xhi))[None, :]
