"""The codec's settings in one place: stream identity, motion tools and residual tools.

Every default lives here; the :class:`~latentmotion.codec.core.Encoder`, the
commands (``codec encode`` and ``stream`` make their motion options from
:class:`MotionTools`' fields, defaults and help) and the service read them
from these classes. The module is light (no torch) for the command line. The settings a stream header stores are checked by
:func:`latentmotion.codec.bitstream.header_problem` (the bitstream's own
limits) when the encoder builds its header; :func:`Tools.of` checks them too, so
a command can refuse them before it loads a model.

Example:
    >>> t = Tools.of(mode="zero", rdoq=0.0)
    >>> t.motion.mode, t.residual.rdoq, t.residual.block
    ('zero', 0.0, 4)
    >>> Tools.of(subpel=3)
    Traceback (most recent call last):
    ...
    latentmotion.errors.InputError: subpel must be 1 or 4, got 3
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ..errors import InputError
from .bitstream import MAX_GAIN, MIN_GAIN, MODES, tools_problem

__all__ = ["MotionTools", "ResidualTools", "StreamId", "Tools"]

MAX_CASCADE = 64  # positions of a quality cascade (HM's longest low-delay GOPs have 8)


@dataclass(frozen=True)
class StreamId:
    """What a stream says it carries: the network, the cut, the weights' identity, the frame rate."""

    model: str = ""
    layer: str = ""
    weights: str = ""  # e.g. latentmotion.models.weights_fingerprint
    fps: float = 25.0


@dataclass(frozen=True)
class MotionTools:
    """How frames are predicted.

    mode: ``zero``, ``block`` or ``input`` (:data:`latentmotion.codec.bitstream.MODE_NAMES`);
    mblock, search, subpel: tile side of the vectors, search radius (latent px), precision (1 or 4);
    intra_period: force intra every N frames (0: first frame only); rd: also try intra where
    prediction fails (a scene cut); bi: let tiles average predictions from the last two frames; lam: Lagrange multiplier of these decisions (step-unit squared
    error per bit).
    """

    mode: str = field(default="block", metadata={"help": "motion mode: zero, block or input"})
    mblock: int = field(default=2, metadata={"help": "tile side of the motion vectors, latent px"})
    search: int = field(default=4, metadata={"help": "motion search radius, latent px"})
    subpel: int = field(default=4, metadata={"help": "motion vector precision: 1 or 4"})
    intra_period: int = field(default=0, metadata={"help": "force intra every N frames (0: first frame only)"})
    rd: bool = field(default=True, metadata={"help": "also try intra where prediction fails (a scene cut)"})
    bi: bool = field(default=True, metadata={"help": "also predict tiles from the average of the last two frames"})
    lam: float = field(default=1.0, metadata={"help": "Lagrange multiplier of motion and frame-type decisions"})


@dataclass(frozen=True)
class ResidualTools:
    """How residuals are quantised.

    block: tile side of the coded-tile (skip) flags; pstep: the step of predicted frames relative
    to the stream's (intra) step, as x265's ``ipratio`` (a predicted frame inherits its reference's
    quality, so a coarser one costs less than it loses); cascade: each predicted frame's step about
    ``pstep`` by its position ``i`` after the last intra frame, in sixths of an octave (HEVC's QP units),
    repeating: its gain byte is ``round(16 pstep 2^(cascade[i % len(cascade)] / 6))`` within 16..255
    (:meth:`gain`; at most 64 offsets, each within -12..12; () for none). The default has the spacing of HM's
    low-delay QP offsets (5, 4, 5, 1 on frames 1-4 of each four, before HM 16's QP-dependent model): every fourth
    frame finer, a reference the next ones inherit;
    rdoq: Lagrange multiplier of rate-distortion-optimised quantisation (0: off; squared error in steps
    per bit in a predicted frame at ``pstep`` itself, offset 0; every frame, intra included, weighs its levels with
    that multiplier in its own level units, ``rdoq (16 / g)^2`` squared levels per bit with ``g = round(16 pstep)``
    (:meth:`base_gain`, the gain before the cascade), so an all-intra stream depends on ``pstep`` too); deadzone:
    rounding offsets (intra, inter) before it (0.5: plain rounding); wm: extra weight of each tile's
    mean error in it.
    """

    block: int = 4
    pstep: float = 2.0
    rdoq: float = 0.6
    deadzone: tuple[float, float] = (0.5, 0.5)
    wm: float = 0.5
    # 96-frame runs against cascade (): feature PSNR BD-rate -2.8 to -8.1 % on four runs, KL -12.4 to +0.3 % (kltw);
    # docs/codec.md section 7, "A quality cascade over predicted frames"
    cascade: tuple[float, ...] = (-2.0, 2.0, 1.0, 2.0)

    def __post_init__(self) -> None:
        for f in ("deadzone", "cascade"):
            if isinstance(getattr(self, f), list):  # e.g. from JSON: settings stay hashable and compare equal
                object.__setattr__(self, f, tuple(getattr(self, f)))

    def base_gain(self) -> int:
        """The gain byte of ``pstep`` itself, before the cascade: the level unit of RDOQ's lambda in every frame."""
        return round(MIN_GAIN * self.pstep)  # MIN_GAIN: one whole step

    def gain(self, position: int) -> int:
        """The gain byte of a predicted frame ``position`` frames after the last intra frame (a level is ``gain / 16``
        steps).

        Example:
            >>> [ResidualTools().gain(i) for i in range(1, 9)]
            [40, 36, 40, 25, 40, 36, 40, 25]
            >>> ResidualTools(pstep=1.5, cascade=()).gain(7)
            24
        """
        o = self.cascade[position % len(self.cascade)] if self.cascade else 0.0
        return min(MAX_GAIN, max(MIN_GAIN, round(MIN_GAIN * self.pstep * 2 ** (o / 6))))


@dataclass(frozen=True)
class Tools:
    """Motion and residual tools together; :meth:`of` builds them from flat keywords."""

    motion: MotionTools = field(default_factory=MotionTools)
    residual: ResidualTools = field(default_factory=ResidualTools)

    def __post_init__(self) -> None:
        m, r = self.motion, self.residual
        if m.mode not in MODES:
            raise InputError(f"unknown motion mode {m.mode!r}; choose one of {', '.join(MODES)}")
        problem = tools_problem(r.block, m.mblock, m.search, m.subpel, m.intra_period)
        problem = problem or _pstep_problem(r.pstep) or _cascade_problem(r.cascade)
        if problem:
            raise InputError(problem)

    @classmethod
    def of(cls, **flat) -> Tools:
        """Tools from keywords named as the fields of :class:`MotionTools` and :class:`ResidualTools`."""
        parts = {}
        for kind in (MotionTools, ResidualTools):
            names = {f.name for f in fields(kind)}
            parts[kind] = kind(**{k: flat.pop(k) for k in list(flat) if k in names})
        if flat:
            raise InputError(f"unknown coding setting(s): {', '.join(sorted(flat))}")
        return cls(parts[MotionTools], parts[ResidualTools])

    def flat(self) -> dict:
        """The inverse of :meth:`of`."""
        return {f.name: getattr(part, f.name) for part in (self.motion, self.residual) for f in fields(part)}


def _pstep_problem(pstep: float) -> str | None:
    """What is wrong with a P-frame step ratio (``round(16 pstep)`` is a gain byte before the cascade), or None."""
    top = MAX_GAIN / MIN_GAIN
    if not (math.isfinite(pstep) and 1 <= pstep <= top):
        return f"pstep (the P-frame step relative to the intra step) must lie in 1..{top:g}, got {pstep:g}"
    return None


def _cascade_problem(cascade: tuple) -> str | None:
    """What is wrong with a quality cascade (QP offsets of predicted frames by position), or None."""
    if not isinstance(cascade, tuple):
        return f"cascade must be a tuple or list of QP offsets, got {type(cascade).__name__}"
    if len(cascade) > MAX_CASCADE:
        return f"cascade holds at most {MAX_CASCADE} QP offsets, got {len(cascade)}"
    for o in cascade:  # numbers, not flags; NaN, inf and huge integers fail the range
        if isinstance(o, bool) or not isinstance(o, (int, float)) or not -12 <= o <= 12:
            return f"cascade offsets must be numbers within -12..12 (sixths of an octave), got {str(o)[:20]!r}"
    return None
