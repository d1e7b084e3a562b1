"""The task protocol: what the cloud does with the output of its sub-model.

A task is a small object (a frozen dataclass of its per-stream options) with
five members. ``output`` below is the cloud sub-model's raw output for **one**
frame, without the batch axis (logits ``(K,)`` for a classifier, ``(K, H, W)``
for a dense model), on whatever device the model ran on; ``outputs`` are
batches ``(N, ...)`` of those.

* ``name``: the task's name in :data:`latentmotion.tasks.TASKS`, what an edge
  puts in ``Open.task``;
* ``check(shape) -> str``: ``''`` when outputs of that per-frame shape fit the
  task, else why not (the server refuses a stream whose model does not fit
  before any frame runs);
* ``result(output) -> R``: (a) one frame's output turned into the task's
  result, a small value on the CPU that compares with ``==`` where it holds
  plain numbers (a named tuple);
* ``express(result, msg)`` and ``read(msg) -> R``: (b) the result written into,
  and read back from, a ``latentmotion.service.v1.Result`` protobuf message;
  ``read(msg)`` of a message ``express`` wrote gives the same result (exactly,
  for outputs in float32: classification's scores travel as float32).
  Fields of ``Result`` other than the task's own are left alone;
* ``score(reference, decoded) -> dict[str, float]``: (c) a batch of outputs
  computed from decoded (coded) features scored against the outputs of the
  uncompressed features, frame by frame in the same order; the keys are
  ``metrics``, in that order, each a plain ``float``.

A result that is not a list of classes (a label map, boxes, a caption) goes in
``Result.outputs``, named tensors (:func:`put_tensor`, :func:`get_tensor`),
so no new protocol field is needed for a new task.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["DTYPES", "Task", "get_tensor", "put_tensor"]

#: Element types a ``Tensor`` message may carry (numpy names, little-endian on the wire).
DTYPES = {"uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64, "float32": torch.float32}


@runtime_checkable
class Task(Protocol):
    """What the cloud does with the decoded features (see the module's docstring for the convention)."""

    name: str
    metrics: tuple[str, ...]

    def check(self, shape: tuple[int, ...]) -> str: ...

    def result(self, output: torch.Tensor) -> Any: ...

    def express(self, result: Any, msg: Any) -> None: ...

    def read(self, msg: Any) -> Any: ...

    def score(self, reference: torch.Tensor, decoded: torch.Tensor) -> dict[str, float]: ...


def put_tensor(msg, t: torch.Tensor) -> None:
    """Write a CPU tensor into a ``Tensor`` message: shape, numpy dtype name, row-major little-endian bytes.

    Example:
        >>> from latentmotion.service import cloud_pb2 as pb
        >>> m = pb.Tensor()
        >>> put_tensor(m, torch.tensor([[1, 2], [3, 4]], dtype=torch.uint8))
        >>> list(m.shape), m.dtype, m.data
        ([2, 2], 'uint8', b'\\x01\\x02\\x03\\x04')
        >>> get_tensor(m).tolist()
        [[1, 2], [3, 4]]
    """
    name = str(t.dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"a Tensor message carries {', '.join(DTYPES)}, not {name}")
    a = t.detach().cpu().contiguous().numpy()
    msg.shape[:] = list(a.shape)
    msg.dtype = name
    msg.data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def get_tensor(msg) -> torch.Tensor:
    """The tensor a ``Tensor`` message holds; ``ValueError`` when its type, shape and bytes disagree."""
    if msg.dtype not in DTYPES:
        raise ValueError(f"Tensor message of unknown dtype {msg.dtype!r}")
    dt = np.dtype(msg.dtype).newbyteorder("<")
    shape = tuple(msg.shape)
    if math.prod(shape) * dt.itemsize != len(msg.data):  # Python integers: no product wraps around
        raise ValueError(f"Tensor message of shape {shape} and dtype {msg.dtype} holds {len(msg.data)} bytes")
    a = np.frombuffer(msg.data, dtype=dt).astype(dt.newbyteorder("="), copy=True)
    return torch.from_numpy(a).reshape(shape)
