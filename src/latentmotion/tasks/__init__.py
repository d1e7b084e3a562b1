"""Tasks: what the cloud does with the decoded features, one module per task.

The protocol every task follows (:class:`Task`: ``check``, ``result``,
``express``/``read``, ``score``) is written down in :mod:`.base`. Tasks are
found by name in :data:`TASKS`; the service, ``latentmotion codec decode
--classify`` and ``codec eval`` all go through it. To add one: write
``latentmotion/tasks/<name>.py`` with a frozen dataclass following
:class:`Task` (its fields are its per-stream options), and add it to
:data:`TASKS` below; its results travel in ``Result.outputs`` (named tensors,
:func:`put_tensor`), so ``cloud.proto`` need not change.

Example (what a server does with one frame of a stream that asked for ``classify``):
    >>> import torch
    >>> from latentmotion.service import cloud_pb2 as pb
    >>> task = make_task("classify", top_k=1)
    >>> msg = pb.Result(seq=3)
    >>> task.express(task.result(torch.tensor([0.5, 2.0, 0.0])), msg)
    >>> list(msg.classes), task.read(msg).classes
    ([1], [1])
    >>> make_task("segment", top_k=1)  # options a task does not take are left out
    Segment()
    >>> sorted(TASKS), isinstance(task, Task)
    (['classify', 'segment'], True)
"""

from __future__ import annotations

import dataclasses

from ..errors import UnknownNameError
from .base import DTYPES, Task, get_tensor, put_tensor
from .classify import Classification, Classify
from .segment import Segment, Segmentation, mean_iou

__all__ = ["DTYPES", "TASKS", "Classification", "Classify", "Segment", "Segmentation", "Task", "get_tensor", "make_task", "mean_iou", "put_tensor"]

#: Task name (``Open.task`` on the wire; ``""`` means ``classify``) -> its class.
TASKS: dict[str, type] = {"classify": Classify, "segment": Segment}


def make_task(name: str = "classify", **options) -> Task:
    """The task registered as ``name`` (``""``: ``classify``) with the ``options`` it takes.

    Options the task has no field for are left out, so a caller may pass its
    defaults (the server's ``top_k``) whatever task a stream asks for.
    Raises :class:`~latentmotion.errors.UnknownNameError` for an unknown name.
    """
    name = name or "classify"
    if name not in TASKS:
        raise UnknownNameError("task", name, TASKS)
    cls = TASKS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in fields})
