"""Fig. 4: actual, predicted and masked-difference channels for a few motions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..defaults import DEFAULT_LAYER, DEFAULT_MODEL
from ..metrics import nrmse
from ..models import Split
from ..motion import Affine, predict_features, render_pair
from .plotting import pyplot, save

__all__ = ["FIG4_MOTIONS", "DemoResult", "DemoSettings", "demo", "fig4", "top_channels"]

#: The motions of Fig. 4 (translation, rotation, scaling, shear) plus one affine.
FIG4_MOTIONS: dict[str, Affine] = {
    "translation": Affine(tx=12, ty=-20),
    "rotation": Affine(rot=8),
    "scaling": Affine(sx=1.1, sy=1.1),
    "shear": Affine(shx=8),
    "affine": Affine(tx=-10, ty=6, sx=0.97, sy=1.03, shx=3, shy=-2, rot=-6),
}


def top_channels(features: torch.Tensor, k: int = 3) -> list[int]:
    """The k channels with the largest spatial variance (the most visible ones)."""
    var = features.flatten(-2).var(-1).reshape(-1)
    return var.argsort(descending=True)[:k].tolist()


@torch.no_grad()
def fig4(source: torch.Tensor, split: Split, motions: dict[str, Affine], out: Path, title: str, channels: int = 3, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Draw Fig. 4 into ``out`` (PNG) and return NRMSE per motion and alignment."""
    plt = pyplot()

    names = list(motions)
    pair = render_pair(source, [motions[n] for n in names])
    edge = split.edge.to(device)
    ref = edge(pair.reference.to(device)).cpu()
    cur = edge(pair.current.to(device)).cpu()
    errors: dict[str, dict[str, float]] = {}
    preds = {}
    for align in ("exact", "paper"):
        pred, valid = predict_features(ref, [motions[n] for n in names], split, align=align)
        err = nrmse(pred, cur, valid)
        for i, n in enumerate(names):
            errors.setdefault(n, {})[align] = float(err[i])
        preds[align] = (pred, valid)
    pred, valid = preds["exact"]
    chans = top_channels(ref[0], channels)
    cols = 1 + 3 * len(chans)
    fig, axes = plt.subplots(len(names), cols, figsize=(1.6 * cols, 1.7 * len(names)), squeeze=False)
    for i, n in enumerate(names):
        axes[i, 0].imshow(pair.current[i].permute(1, 2, 0).numpy())
        axes[i, 0].set_ylabel(f"{n}\nNRMSE {errors[n]['exact']:.4f}", fontsize=7)
        for j, c in enumerate(chans):
            a, p = cur[i, c], pred[i, c]
            lo, hi = float(a.min()), float(a.max())
            d = torch.where(valid[i, 0], (p - a).abs(), torch.full_like(a, float("nan")))
            for k, (img, cmap, vr) in enumerate(((a, "viridis", (lo, hi)), (p, "viridis", (lo, hi)), (d, "magma", (0, hi - lo)))):
                ax = axes[i, 1 + 3 * j + k]
                ax.imshow(img.numpy(), cmap=cmap, vmin=vr[0], vmax=vr[1])
                if i == 0:
                    ax.set_title(f"ch {c} " + ("actual", "predicted", "|difference|")[k], fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("current frame", fontsize=7)
    fig.suptitle(title, fontsize=9)
    save(fig, out)
    return errors


@dataclass(frozen=True)
class DemoSettings:
    """One model, one layer, one photo: the small job of ``latentmotion demo``.

    ``motions`` maps a label to an :class:`Affine`; ``None`` means :data:`FIG4_MOTIONS`.
    """

    model: str = DEFAULT_MODEL
    layer: str = DEFAULT_LAYER
    weights: str = "imagenet"
    image: str = "chelsea"
    seed: int = 0
    motions: dict[str, Affine] | None = None


@dataclass
class DemoResult:
    """NRMSE per motion label and alignment, the figure's path and the run's labels."""

    errors: dict[str, dict[str, float]]
    figure: Path
    weights: str
    stride: int


def demo(st: DemoSettings, out: Path, force: bool = False) -> DemoResult:
    """Draw Fig. 4 into ``out/fig4.png`` for one model and layer, published at once.

    Example:
        >>> import tempfile, pathlib
        >>> r = demo(DemoSettings(motions={"right": Affine(tx=8)}), pathlib.Path(tempfile.mkdtemp()) / "d")
        >>> sorted(r.errors["right"]), r.figure.name
        (['exact', 'paper'], 'fig4.png')
    """
    from ..data import load_image
    from ..models import load_model, split_model, weights_inputs
    from ..outputs import staged_folder

    out = Path(out)
    with staged_folder(out, force, inputs=(st.image, *weights_inputs(st.weights))) as stage:  # a photo's file and what the weights are read from
        src = load_image(st.image)
        m = load_model(st.model, weights=st.weights, seed=st.seed)
        s = split_model(m, st.layer)
        title = f"{st.model} [{m.weights}] {st.layer} (stride {s.stride[0]})"
        errors = fig4(src, s, st.motions or FIG4_MOTIONS, stage / "fig4.png", title)
    return DemoResult(errors, out / "fig4.png", m.weights, s.stride[0])
