"""A channel transform at the cut: the features' Karhunen-Loève transform (KLT) across channels.

The channels of a feature tensor are strongly correlated: on EfficientNet-Lite0
``_blocks.10.add`` 16 of 112 principal components hold 40 % of the energy.
Standard codecs on tiled features code each channel apart; the edge can
instead send, at every position, the features' coordinates in the principal
basis, ``z = V^T (f - mean)``, ordered by variance, and the cloud maps them
back, ``f = V z + mean``. The map is orthonormal, so squared error is the same
in both domains and a uniform quantiser spends its bits where the energy is.
It acts on each position alone, so motion is untouched: Eq. 12 holds for
``z`` as for ``f``, and the motion-compensated codec codes ``z`` unchanged
(decoding stays integer-defined; the transform runs outside it, like the
cloud sub-model).

**Weighted by the task** (the ``kltw`` configuration): squared error is not
what the cloud feels. To second order, a small error ``d`` at one position
changes the cloud's output distribution by ``KL = d^T M d / 2``, with ``M`` the
Fisher information of the cloud's softmax about that position's channels
(:func:`fisher_information`; no labels needed: the classes are drawn from the
cloud's own output). Fitting the KLT to ``A f`` with ``A = M^(alpha/2)`` and
coding ``z = V^T (A f - mean)`` makes the squared error of ``z`` equal
``d^T M^alpha d``: with ``alpha = 1`` the task's own measure, smaller ``alpha``
a blend with plain squared error (``alpha = 0`` is the plain KLT). The cloud
decodes ``f = A^-1 (V z + mean)``; ``basis`` then holds the analysis
``A^T V`` and ``synthesis`` the ``A^-1 V``.

The basis is fitted, without labels, on material the codec evaluation does not
use: random crops of real photos (OpenCV's samples and scikit-image's) and the
frames of ``FIT_VIDEOS``. One command fits it with a seed (``latentmotion
codec fit-transform``); the fitted files ship in the package (``transforms/``).

Example:
    >>> import torch
    >>> t = ChannelTransform.fit(torch.randn(4, 6, 5, 5))
    >>> f = torch.randn(2, 6, 5, 5)
    >>> bool(torch.allclose(t.decode(t.encode(f)), f, atol=1e-5))
    True
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .._files import open_regular
from ..defaults import DEFAULT_MODEL, TASK_WEIGHT
from ..errors import InputError
from .fingerprint import weights_fingerprint

if TYPE_CHECKING:
    from .split import Split

__all__ = [
    "TRANSFORMS", "ChannelTransform", "FIT_VIDEOS", "FitSettings", "check_transform_choice", "edge_transform", "fisher_information", "fit_channel_transform", "load_transform",
    "matrix_power", "network_fingerprint", "save_transform", "stream_transform", "stream_weights", "transform_path",
]

#: Clips the transforms are fitted on (with photos): none of them is in the codec evaluation.
FIT_VIDEOS = ("Megamind.avi", "tree.avi")
WEIGHTS_DIR = Path(__file__).with_name("transforms")
#: the channel transforms a stream may code through, by name: weighted by the task?
TRANSFORMS = {"klt": False, "kltw": True}
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]{0,99}")  # model and layer names a stream may use to find a shipped transform


class ChannelTransform(nn.Module):
    """``encode``: (N, C, H, W) -> principal coordinates, highest variance first; ``decode``: back.

    Attributes (buffers): ``mean`` (C,); ``basis`` (C, C), the analysis: ``z = basis^T (f - mean)``
    (for the plain KLT orthonormal columns, column k the k-th principal direction); ``synthesis``
    (C, C): ``f = synthesis z + mean`` (the plain KLT's is ``basis``); ``variance`` (C,) of each coordinate.
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, variance: torch.Tensor, synthesis: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("basis", basis.float())
        self.register_buffer("variance", variance.float())
        if synthesis is not None:  # only then: a plain KLT keeps the state (and the fingerprint) it always had
            self.register_buffer("synthesis", synthesis.float())

    @classmethod
    def fit(cls, features: torch.Tensor, metric: torch.Tensor | None = None) -> ChannelTransform:
        """The KLT of (N, C, H, W) features, every position of every sample one observation (float64 maths).

        ``metric`` (C, C, symmetric positive definite): the KLT of ``A f`` instead, ``A`` its square root,
        so that the squared error of the coordinates is ``d^T metric d`` of the features' error ``d``.
        """
        if metric is not None:
            root = matrix_power(metric, 0.5)
            t = cls.fit(torch.einsum("cd,ndhw->nchw", root, features.double()))
            basis, mean = t.basis.double(), t.mean.double()
            return cls(torch.linalg.solve(root, mean), root.T @ basis, t.variance, torch.linalg.solve(root, basis))
        c = features.shape[1]
        x = features.transpose(0, 1).reshape(c, -1).double()
        mean = x.mean(1)
        cov = torch.cov(x - mean[:, None], correction=0)
        var, vec = torch.linalg.eigh(cov)
        order = var.argsort(descending=True)
        vec = vec[:, order]
        vec = vec * torch.where(vec[vec.abs().argmax(0), torch.arange(c)] < 0, -1.0, 1.0)  # sign: largest entry positive
        return cls(mean, vec, var[order].clamp_min(0))

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ck,nchw->nkhw", self.basis, features - self.mean[:, None, None])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        synthesis = self.synthesis if hasattr(self, "synthesis") else self.basis
        out = torch.einsum("ck,nkhw->nchw", synthesis, z)
        out += self.mean[:, None, None]  # in place: the same additions, no second copy
        return out


def matrix_power(m: torch.Tensor, p: float, floor: float = 0.0) -> torch.Tensor:
    """``m^p`` (float64) of a symmetric positive semi-definite matrix, its eigenvalues first raised to ``floor`` times the largest."""
    ev, u = torch.linalg.eigh(m.double())
    return u @ torch.diag(ev.clamp_min(max(0.0, floor * float(ev.max()))).pow(p)) @ u.T


def fisher_information(split: Split, frames: torch.Tensor, g: torch.Generator, samples: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The edge features of ``frames`` and the sum over them of the cloud's Fisher information per position (C, C).

    Per image: ``sum over positions p of E_y[grad_p log q(y) grad_p log q(y)^T]``, ``q`` the cloud's softmax and
    ``y`` drawn from it (``samples`` draws, seeded by ``g``): no labels. ``KL(q, q(f + d)) ~ d^T M d / 2`` for an
    error ``d`` at one position, ``M`` this sum divided by the number of images and of positions.
    """
    with torch.no_grad():
        f = split.edge(frames)
    f.requires_grad_(True)
    logp = torch.log_softmax(split.cloud(f), 1)
    y = torch.multinomial(logp.detach().exp(), samples, replacement=True, generator=g)
    fisher = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
    for k in range(samples):
        (grad,) = torch.autograd.grad(logp.gather(1, y[:, k : k + 1]).sum(), f, retain_graph=k < samples - 1)
        grad = grad.double()
        fisher += torch.einsum("nchw,ndhw->cd", grad, grad) / samples
    return f.detach(), fisher


@dataclass(frozen=True)
class FitSettings:
    model: str = DEFAULT_MODEL
    layer: str = "_blocks.10.add"
    seed: int = 0
    crops_per_photo: int = 16
    frames_per_video: int = 270  # every other frame of the first ones
    task_weight: float = 0.0  # alpha: 0 the plain KLT; > 0 weighted by the cloud's Fisher information to the power alpha


def transform_path(model: str, layer: str, weighted: bool = False) -> Path:
    """The shipped transform of a cut: ``MODEL__LAYER.pt`` (KLT) or ``MODEL__LAYER__task.pt`` (weighted by the task)."""
    return WEIGHTS_DIR / f"{model}__{layer}{'__task' if weighted else ''}.pt"


def _random_crops(img: torch.Tensor, n: int, g: torch.Generator, size: int = 224) -> torch.Tensor:
    """``n`` square crops of 35-100 % of the shorter side at random places, resized, half of them mirrored."""
    import torch.nn.functional as F

    h, w = img.shape[-2:]
    out = []
    for _ in range(n):
        side = int(min(h, w) * (0.35 + 0.65 * float(torch.rand(1, generator=g))))
        y0, x0 = int(torch.randint(h - side + 1, (1,), generator=g)), int(torch.randint(w - side + 1, (1,), generator=g))
        crop = F.interpolate(img[None, :, y0 : y0 + side, x0 : x0 + side], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        out.append(crop.flip(-1) if float(torch.rand(1, generator=g)) < 0.5 else crop)
    return torch.stack(out).clamp(0, 1)


def _fit_frames(st: FitSettings, g: torch.Generator):
    """Batches of fitting images: photo crops, then every other frame of the fitting clips."""
    from ..data import OPENCV_PHOTOS, SKIMAGE_PHOTOS, load_image, read_frames, video_info, video_path

    for name in OPENCV_PHOTOS + SKIMAGE_PHOTOS:
        yield _random_crops(load_image(name), st.crops_per_photo, g)
    for name in FIT_VIDEOS:
        path = video_path(name)
        n = min(st.frames_per_video, video_info(path)[0])
        for i in range(0, n, 64):
            yield read_frames(path, range(i, min(i + 64, n), 2), size=224)


def fit_channel_transform(st: FitSettings, progress=None) -> tuple[ChannelTransform, dict]:
    """Fit the (task-weighted, with ``st.task_weight > 0``) KLT of one cut on the fitting material; returns it and a record of the run."""
    from . import load_model, split_model

    g = torch.Generator().manual_seed(st.seed)
    net = load_model(st.model)  # the record names its weights: the basis holds for them only
    split = split_model(net, st.layer)
    feats, fisher = [], 0.0
    for frames in _fit_frames(st, g):
        if st.task_weight > 0:
            f, m = fisher_information(split, frames, g)
            fisher = fisher + m
        else:
            with torch.no_grad():
                f = split.edge(frames)
        feats.append(f)
        if progress:
            progress(len(frames))
    feats = torch.cat(feats)
    metric = _task_metric(fisher / len(feats), st.task_weight) if st.task_weight > 0 else None
    t = ChannelTransform.fit(feats, metric)
    energy = torch.cumsum(t.variance, 0) / t.variance.sum()
    record = {"settings": asdict(st), "weights": weights_fingerprint(net), "images": len(feats),
              "energy_of_first_quarter": float(energy[len(energy) // 4 - 1])}
    return t, record


def _task_metric(m: torch.Tensor, alpha: float) -> torch.Tensor:
    """``m^alpha``, its eigenvalues floored at 1e-6 of the largest (a direction the cloud ignores still gets a
    finite step), scaled to determinant 1 (steps stay relative to the coordinates' RMS)."""
    a = matrix_power(m, alpha, floor=1e-6)
    return a / torch.linalg.slogdet(a)[1].div(len(a)).exp()


def save_transform(t: ChannelTransform, record: dict, path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"state": t.state_dict(), "record": record}, buf)
    path.write_bytes(buf.getvalue())


def load_transform(model: str, layer: str, path: Path | None = None, weights: str | None = None, channels: int | None = None,
                   weighted: bool = False) -> ChannelTransform:
    """The shipped (or given) transform of a cut (``weighted``: the one weighted by the task); a clear error where none was fitted.

    ``weights`` (a :func:`~latentmotion.models.weights_fingerprint`) and ``channels``, when
    given, must be those the basis was fitted on: a basis of other weights would decode
    into the wrong features without a sound.
    """
    given, path = path is not None, path or transform_path(model, layer, weighted)
    try:
        found = path.is_file()
    except OSError:  # e.g. a name too long for the file system: no such file either
        found = False
    if not found and given:
        raise InputError(f"channel transform file {path} does not exist or is not a regular file")
    if not found:
        raise InputError(f"no channel transform for {model} {layer} ({path}); fit one with `latentmotion codec fit-transform --model {model} --layer {layer}{f' --task-weight {TASK_WEIGHT}' if weighted else ''} --out FILE`")
    try:
        with open_regular(path, "channel transform file") as f:  # a FIFO swapped in since the check cannot block the open
            blob = torch.load(f, map_location="cpu", weights_only=True)
        s, record = blob["state"], blob["record"]
        t, fitted, cut = ChannelTransform(s["mean"], s["basis"], s["variance"], s.get("synthesis")).eval(), record.get("weights"), record["settings"]
        cut = (cut["model"], cut["layer"])
    except InputError:
        raise
    except Exception as exc:  # a damaged or foreign file: one line
        raise InputError(f"{path} is not a channel transform file ({type(exc).__name__})") from None
    if cut != (model, layer):  # another cut of as many channels would decode into the wrong features without a sound
        raise InputError(f"{path} was fitted for {cut[0]} {cut[1]}, not {model} {layer}")
    if hasattr(t, "synthesis") != weighted:  # coded as the other kind, its rows would carry the wrong name and RDOQ
        raise InputError(f"{path} is {'a plain KLT' if weighted else 'weighted by the task (kltw)'}, not {'weighted by the task' if weighted else 'a plain KLT'}")
    if channels is not None and t.basis.shape[0] != channels:
        raise InputError(f"{path} transforms {t.basis.shape[0]} channels, but the {model} {layer} tensors to map have {channels}")
    if weights is not None and fitted != weights:
        raise InputError(f"{path} was fitted on weights {fitted}, but {model} has weights {weights}: refit it with `latentmotion codec fit-transform`")
    return t


def stream_weights(fingerprint: str, name: str, t: ChannelTransform) -> str:
    """What a stream of ``t``'s coordinates names as its weights: the network's and the transform's identity,
    ``FINGERPRINT+NAME-TRANSFORMPRINT`` (so a decoder without this very transform refuses the stream).

    Example:
        >>> t = ChannelTransform.fit(torch.randn(4, 6, 5, 5))
        >>> stream_weights("0123abcd", "klt", t).startswith("0123abcd+klt-")
        True
    """
    return f"{fingerprint}+{name}-{weights_fingerprint(t)[:12]}"


def check_transform_choice(name: str, model: str, layer: str) -> None:
    """Refuse, before any work, an edge's ``--transform`` that is neither ``none`` nor a shipped transform of the cut.

    Example:
        >>> check_transform_choice("none", "any_model", "any.layer")
        >>> check_transform_choice("dct", "efficientnet_lite0", "_blocks.4.add")
        Traceback (most recent call last):
        ...
        latentmotion.errors.InputError: --transform must be none or one of klt, kltw, got 'dct'
    """
    if name != "none":
        load_transform(model, layer, weighted=_weighted(name))  # its one-line error where none is shipped


def _weighted(name: str) -> bool:
    """Whether the transform an edge's ``--transform name`` asks for is weighted by the task; InputError for no such name."""
    if name not in TRANSFORMS:
        raise InputError(f"--transform must be none or one of {', '.join(TRANSFORMS)}, got {name!r}")
    return TRANSFORMS[name]


def edge_transform(name: str, model: str, layer: str, fingerprint: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """What an edge codes for ``--transform name``: the map of features (N, C, H, W) to the cut's shipped transform
    coordinates (the identity for ``none``), and the weights a stream of them names (:func:`stream_weights`).
    Checked against the network's ``fingerprint``: call it once the model is loaded, before any frame is decoded.

    Example:
        >>> encode, w = edge_transform("none", "efficientnet_lite0", "_blocks.4.add", "0123abcd")
        >>> x = torch.randn(2, 40, 7, 7)
        >>> encode(x) is x, w
        (True, '0123abcd')
    """
    if name == "none":
        return (lambda x: x), fingerprint
    t = load_transform(model, layer, weights=fingerprint, weighted=_weighted(name))  # loaded once, checked against the weights
    return t.encode, stream_weights(fingerprint, name, t)


def network_fingerprint(weights: str) -> str:
    """The network's fingerprint in a stream's weights (``FINGERPRINT`` or ``FINGERPRINT+NAME-PRINT``).

    Example:
        >>> network_fingerprint("0123abcd+kltw-0123456789ab"), network_fingerprint("0123abcd")
        ('0123abcd', '0123abcd')
    """
    return weights.partition("+")[0]


def stream_transform(model: str, layer: str, weights: str, channels: int) -> tuple[str, str | None, ChannelTransform | None]:
    """A stream's network fingerprint, and the name and shipped transform its ``weights`` names (None, None if none).

    The transform is the one shipped for the stream's model and cut; InputError where the stream names an
    unknown transform, a model or layer that is no plain name (the stream's bytes never choose a path), a cut
    with no shipped transform, or another transform than the shipped one. Decoded coordinates go back through
    it in float32: the features are the same to rounding on every machine, not bit for bit as the codec's output.
    """
    base = network_fingerprint(weights)
    if base == weights:
        return base, None, None
    tail = weights[len(base) + 1 :]
    name, _, print_ = tail.partition("-")
    if name not in TRANSFORMS:
        raise InputError(f"the stream names an unknown channel transform {tail!r}; known: {', '.join(TRANSFORMS)}")
    if not print_:  # 'FP+klt': a known name, but which fitted transform is not said
        raise InputError(f"the stream names the channel transform {name!r} without its fingerprint ({name}-FINGERPRINT)")
    if not all(_PLAIN.fullmatch(s) for s in (model, layer)):
        raise InputError(f"the stream's model {model!r} and layer {layer!r} name no shipped channel transform")
    t = load_transform(model, layer, weights=base, channels=channels, weighted=TRANSFORMS[name])
    if print_ != weights_fingerprint(t)[:12]:
        raise InputError(f"the stream was coded through another {name} transform ({print_!r}) than the one shipped for {model} {layer} ({weights_fingerprint(t)[:12]})")
    return base, name, t
