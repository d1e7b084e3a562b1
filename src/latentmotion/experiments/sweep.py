"""Fig. 5 / Fig. 6 measurements: NRMSE of Eq. 12 predictions over many motions.

For each model the edge runs once per frame up to its deepest requested layer
and returns every requested layer (`models.edge_multi`, the split's own tracer), so a
sweep costs one forward pass per motion whatever the number of layers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import WeightsUnavailableError
from ..metrics import nrmse
from ..models import ImageNetModel, Split, edge_multi, load_model, split_model
from ..motion import Affine, predict_features, render_pair
from .profiles import Target

__all__ = ["ALIGNS", "LoadedTarget", "SweepResult", "load_target", "resolve_device", "run_sweep"]

ALIGNS = ("exact", "paper")


@dataclass
class LoadedTarget:
    target: Target
    model: ImageNetModel
    splits: dict[str, Split]
    extractor: nn.Module
    note: str = ""  # what happened to the weights asked for


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from ..errors import InputError

        raise InputError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


def load_target(target: Target, seed: int, device: torch.device) -> LoadedTarget:
    """Load the model; ``auto`` weights fall back to seeded random init, loudly."""
    note = ""
    if target.weights == "auto":
        try:
            model = load_model(target.model, "imagenet", seed)
        except WeightsUnavailableError as exc:
            model = load_model(target.model, "random", seed)
            note = f"ImageNet weights not found (`{exc.missing}`), so **seeded random initialisation** instead"
    else:
        model = load_model(target.model, target.weights, seed)
    splits = {layer: split_model(model, layer) for layer in target.layers}
    extractor = edge_multi(model, target.layers).to(device)
    return LoadedTarget(target, model, splits, extractor, note)


@dataclass
class SweepResult:
    rows: list[dict] = field(default_factory=list)
    forward_s: float = 0.0  # time inside the edge forward passes
    frames: int = 0


@torch.inference_mode()
def run_sweep(
    targets: list[LoadedTarget],
    source: torch.Tensor,
    items: list[tuple[str, float, Affine]],
    device: torch.device,
    batch: int,
    progress: Callable[[int], None] | None = None,
    mask: str = "paper",
) -> SweepResult:
    """NRMSE for every motion, model, layer and alignment.

    Each batch of frames is rendered once and fed to every model.
    ``progress(n)`` is told of every n frames done by one model.
    """
    res = SweepResult()
    src = source.to(device)
    ref_frame = render_pair(src, [Affine()]).reference
    refs = [lt.extractor(ref_frame) for lt in targets]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        motions = [m for _, _, m in chunk]
        frames = render_pair(src, motions).current
        for lt, ref in zip(targets, refs, strict=True):
            sync()
            t = time.perf_counter()
            cur = lt.extractor(frames)
            sync()
            res.forward_s += time.perf_counter() - t
            for layer, split in lt.splits.items():
                for align in ALIGNS:
                    pred, valid = predict_features(ref[layer], motions, split, align=align, mask=mask)
                    err = nrmse(pred, cur[layer], valid).cpu().tolist()
                    for (transform, value, m), e in zip(chunk, err, strict=True):
                        res.rows.append(
                            {
                                "model": lt.target.model,
                                "weights": lt.model.weights,
                                "trained": lt.model.trained,
                                "layer": layer,
                                "stride": split.stride[0],
                                "transform": transform,
                                "value": value,
                                "alignment": align,
                                "nrmse": e,
                                **dict(zip(("tx", "ty", "sx", "sy", "shx", "shy", "rot"), m.as_tuple(), strict=True)),
                            }
                        )
            if progress:
                progress(len(chunk))
        res.frames += len(chunk)
    return res
