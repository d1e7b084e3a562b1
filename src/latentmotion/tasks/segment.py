"""Semantic segmentation: a class label at every pixel of the cloud's output.

The cloud sub-model gives class scores ``(K, H, W)`` per frame; the result is
their argmax, a label map ``(H, W)`` in the smallest integer type that holds
``K`` labels (``uint8`` up to 256 classes). It travels as the named tensor
``labels`` in ``Result.outputs`` (``cloud.proto``). Scores against the
uncompressed output, over all pixels of all frames:

* ``pixel_agreement``: share of pixels whose decoded label is the uncompressed one;
* ``miou``: mean intersection over union of the two label maps, over the classes
  that occur in either (the uncompressed labels taken as ground truth).

Example:
    >>> import torch
    >>> from latentmotion.service import cloud_pb2 as pb
    >>> task = Segment()
    >>> ref = torch.zeros(1, 3, 2, 2); ref[0, 1, 0] = 1.0       # class 1 in the top row, 0 below
    >>> r = task.result(ref[0])
    >>> r.labels.tolist(), r.labels.dtype
    ([[1, 1], [0, 0]], torch.uint8)
    >>> msg = pb.Result(seq=0)
    >>> task.express(r, msg)
    >>> task.read(msg) == r
    True
    >>> dec = ref.clone(); dec[0, 1, 0, 1] = -1.0                 # one pixel of the top row flips to class 0
    >>> task.score(ref, dec)
    {'pixel_agreement': 0.75, 'miou': 0.5833333333333333}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import get_tensor, put_tensor

__all__ = ["Segment", "Segmentation", "label_dtype", "mean_iou"]


def label_dtype(classes: int) -> torch.dtype:
    """Smallest integer type of a label map of ``classes`` classes."""
    return torch.uint8 if classes <= 256 else torch.int16 if classes <= 32768 else torch.int32


@dataclass(frozen=True, eq=False)
class Segmentation:
    """A label map (H, W); equal when the maps are (same type, same labels)."""

    labels: torch.Tensor

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Segmentation) and self.labels.dtype == other.labels.dtype and torch.equal(self.labels, other.labels)

    __hash__ = None  # type: ignore[assignment]


def mean_iou(reference: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    """Mean IoU of two label maps of one shape over the classes present in either (NaN when empty)."""
    conf = torch.bincount(reference.flatten().long() * classes + labels.flatten().long(), minlength=classes * classes).reshape(classes, classes).double()
    inter = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else float("nan")


@dataclass(frozen=True)
class Segment:
    """Semantic segmentation task (no options)."""

    name: ClassVar[str] = "segment"
    metrics: ClassVar[tuple[str, ...]] = ("pixel_agreement", "miou")

    def check(self, shape: tuple[int, ...]) -> str:
        if len(shape) != 3:
            return f"segmentation needs class scores at every pixel, (classes, H, W) per frame; the cloud sub-model gives {tuple(shape)}"
        return ""

    def result(self, output: torch.Tensor) -> Segmentation:
        return Segmentation(output.argmax(0).to(label_dtype(output.shape[0])).cpu())

    def express(self, result: Segmentation, msg) -> None:
        put_tensor(msg.outputs["labels"], result.labels)

    def read(self, msg) -> Segmentation:
        if "labels" not in msg.outputs:
            raise ValueError("the result carries no label map (a cloud that does not know the segment task?)")
        return Segmentation(get_tensor(msg.outputs["labels"]))

    def score(self, reference: torch.Tensor, decoded: torch.Tensor) -> dict[str, float]:
        ref, dec = reference.argmax(1), decoded.argmax(1)
        return {"pixel_agreement": float((ref == dec).double().mean()), "miou": mean_iou(ref, dec, reference.shape[1])}
