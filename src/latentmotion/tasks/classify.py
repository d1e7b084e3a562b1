"""Image classification: the top-k classes of the cloud's softmax.

The result travels in ``Result.classes`` and ``Result.scores`` (fields 2 and
3 of ``cloud.proto``, what every edge has always read). Its scores are the
task-fidelity measures of ``latentmotion codec eval``:

* ``kl``: mean KL divergence of the decoded softmax from the uncompressed one
  (:func:`latentmotion.metrics.kl_divergence`, float64), ``task_db = -10 log10 KL``;
* ``top1_agreement``: share of frames whose top class is the uncompressed one;
  ``top1_confident``: the same on the frames whose uncompressed top probability
  is at least ``confident`` (NaN when there is none);
* ``top5_overlap``: mean share of the uncompressed top 5 among the decoded top 5.

Example:
    >>> import torch
    >>> from latentmotion.service import cloud_pb2 as pb
    >>> task = Classify(top_k=2)
    >>> r = task.result(torch.tensor([0.0, 3.0, 1.0]))
    >>> r.classes, [round(s, 3) for s in r.scores]
    ([1, 2], [0.844, 0.114])
    >>> msg = pb.Result(seq=0)
    >>> task.express(r, msg)
    >>> task.read(msg) == r
    True
    >>> ref = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
    >>> s = task.score(ref, torch.tensor([[0.0, 3.0, 1.5], [0.0, 2.0, 0.0]]))
    >>> s["top1_agreement"], s["top5_overlap"], round(s["kl"], 4)
    (0.5, 1.0, 0.6877)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import torch

from ..metrics import kl_divergence, task_db

__all__ = ["Classification", "Classify"]


class Classification(NamedTuple):
    """Top-k class indices, best first, and their softmax probabilities."""

    classes: list[int]
    scores: list[float]


@dataclass(frozen=True)
class Classify:
    """Classification task; ``top_k``: classes per result; ``confident``: threshold of ``top1_confident``."""

    top_k: int = 5
    confident: float = 0.5
    name: ClassVar[str] = "classify"
    metrics: ClassVar[tuple[str, ...]] = ("kl", "task_db", "top1_agreement", "top1_confident", "top5_overlap")

    def check(self, shape: tuple[int, ...]) -> str:
        if len(shape) != 1:
            return f"classification needs one score per class, (classes,) per frame; the cloud sub-model gives {tuple(shape)}"
        return ""

    def result(self, output: torch.Tensor) -> Classification:
        s, c = output.softmax(0).topk(min(self.top_k, output.shape[0]))
        return Classification(c.tolist(), s.tolist())

    def express(self, result: Classification, msg) -> None:
        msg.classes[:] = result.classes
        msg.scores[:] = result.scores

    def read(self, msg) -> Classification:
        return Classification(list(msg.classes), list(msg.scores))

    def top1(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top class of each frame and its probability (float64 softmax)."""
        top, cls = outputs.double().softmax(1).max(1)
        return cls, top

    def score(self, reference: torch.Tensor, decoded: torch.Tensor) -> dict[str, float]:
        cls, top = self.top1(reference)
        confident = top >= self.confident
        kl = float(kl_divergence(reference, decoded).mean())
        agree = decoded.argmax(1) == cls
        k = min(5, reference.shape[1])
        ref5, dec5 = reference.topk(k, 1).indices, decoded.topk(k, 1).indices
        return {
            "kl": kl,
            "task_db": task_db(kl),
            "top1_agreement": float(agree.float().mean()),
            "top1_confident": float(agree[confident].float().mean()) if confident.any() else float("nan"),
            "top5_overlap": float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(dec5, ref5, strict=True)])),
        }

    def confidence(self, outputs: torch.Tensor) -> dict:
        """How sure the classifier is on these frames: median top-1 probability and the share of confident frames."""
        _, top = self.top1(outputs)
        return {"median_top1_probability": float(top.median()), "confident_share": float((top >= self.confident).double().mean()), "threshold": self.confident}
