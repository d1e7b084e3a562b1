"""Dynamic batching of the cloud sub-model across streams.

Frames of every stream that use the same model and tensor shape wait in one
queue; a batch runs when it holds ``max_batch`` frames or when its oldest
frame has waited ``max_wait`` seconds, whichever comes first. Frames that
arrived while the model was busy have already waited, so the next batch fires
the moment the model is free. All batches run on one dedicated model thread
(one model call at a time, so torch's intra-op threads are not
oversubscribed) that takes its next batch itself: no event-loop round trip
between two batches, and the event loop stays free for network I/O. A total
bound on queued frames (``max_queue``) makes callers wait instead of growing
memory: that wait is the back-pressure that reaches the edges through gRPC
flow control.

Each frame carries its stream's task (:mod:`latentmotion.tasks`): the model
runs once on the batch, and each frame's task turns its row of the output into
that frame's result.

Example:
    >>> import asyncio, torch
    >>> from latentmotion.tasks import Classify
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> async def main():
    ...     b = Batcher(max_batch=8, max_wait=0.01)
    ...     outs = await asyncio.gather(*(b.infer(net, torch.ones(1, 2, 2), Classify(top_k=2)) for _ in range(5)))
    ...     await b.close()
    ...     return outs[0].batch, len(outs[0].result.classes)
    >>> asyncio.run(main())
    (5, 2)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

from ..tasks import Task

__all__ = ["Batcher", "Prediction", "run_tasks"]


@dataclass
class Prediction:
    """One frame's task result (e.g. :class:`~latentmotion.tasks.Classification`) and how its batch ran."""

    result: object
    batch: int
    infer_ms: float


@torch.no_grad()
def run_tasks(net: nn.Module, x: torch.Tensor, tasks: list[Task], device: str = "cpu") -> list:
    """Run ``net`` once on the batch ``x``; frame ``i``'s result is ``tasks[i].result`` of its row, or the
    exception that raised (one frame's task failing fails that frame alone, not the batch's other streams)."""
    out = net(x.to(device))
    results = []
    for i, task in enumerate(tasks):
        try:
            results.append(task.result(out[i]))
        except Exception as exc:  # noqa: BLE001
            results.append(exc)
    return results


@dataclass
class _Item:
    x: torch.Tensor
    task: Task
    future: asyncio.Future
    t: float
    loop: asyncio.AbstractEventLoop


def _settle(fut: asyncio.Future, result, exc: BaseException | None) -> None:
    if not fut.done():  # the stream may have been cancelled meanwhile
        fut.set_exception(exc) if exc is not None else fut.set_result(result)


class Batcher:
    """Gathers frames into batches per (model, shape) and runs them on one dedicated model thread.

    ``threads``: torch intra-op threads for the model (0: leave torch's setting).
    """

    def __init__(self, max_batch: int = 16, max_wait: float = 0.005, max_queue: int = 256, device: str = "cpu", threads: int = 0) -> None:
        self.max_batch, self.max_wait, self.device, self.threads = max_batch, max_wait, device, threads
        self._slots = asyncio.Semaphore(max_queue)
        self._queues: dict[tuple, deque] = {}  # (net, shape) -> frames waiting; guarded by _cv
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="latentmotion-model", daemon=True)
        self._thread.start()
        self.batches: list[int] = []  # sizes of the batches run, for reports

    async def infer(self, net: nn.Module, x: torch.Tensor, task: Task) -> Prediction:
        """``task``'s result on one tensor (C, H, W), run in the next batch of ``net``; waits while the queues are full."""
        async with self._slots:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            with self._cv:  # the key holds the module, so its identity cannot be reused
                self._queues.setdefault((net, tuple(x.shape)), deque()).append(_Item(x, task, fut, time.perf_counter(), loop))
                self._cv.notify()
            return await fut

    def _next(self) -> tuple[nn.Module, list[_Item]] | None:
        """Block until a queue is full or its oldest frame waited ``max_wait``; take its batch (None once closed)."""
        with self._cv:
            while not self._closed:
                now, wake = time.perf_counter(), None
                ready = []
                for key, q in self._queues.items():
                    if q:
                        due = q[0].t + self.max_wait
                        if len(q) >= self.max_batch or due <= now:
                            ready.append((q[0].t, key))
                        wake = due if wake is None else min(wake, due)
                if ready:
                    key = min(ready, key=lambda r: r[0])[1]  # the longest-waiting queue first: no stream starves
                    q = self._queues[key]
                    return key[0], [q.popleft() for _ in range(min(len(q), self.max_batch))]
                self._cv.wait(None if wake is None else wake - now)
        return None

    def _work(self) -> None:
        if self.threads:  # torch's intra-op threads, set where the model runs
            torch.set_num_threads(self.threads)
        while (batch := self._next()) is not None:
            self._run(*batch)

    def _run(self, net: nn.Module, items: list[_Item]) -> None:
        live = [it for it in items if not it.future.done()]  # a cancelled stream's frames are skipped
        if not live:
            return
        t = time.perf_counter()
        try:
            results = run_tasks(net, torch.stack([it.x for it in live]), [it.task for it in live], self.device)
        except Exception as exc:  # noqa: BLE001  (a model failure fails this batch's frames, not the server)
            for it in live:
                _post(it, None, exc)
            return
        ms = 1000 * (time.perf_counter() - t)
        self.batches.append(len(live))
        for it, result in zip(live, results, strict=True):
            _post(it, *((None, result) if isinstance(result, Exception) else (Prediction(result, len(live), ms), None)))

    def forget(self, net: nn.Module) -> None:
        """Drop the queues of a model the cache evicted (its frames in flight still finish)."""
        with self._cv:
            for key in [k for k, q in self._queues.items() if k[0] is net and not q]:
                del self._queues[key]

    async def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        await asyncio.to_thread(self._thread.join)  # a running batch finishes first


def _post(item: _Item, result, exc: BaseException | None) -> None:
    """Hand a result to the frame's event loop from the model thread."""
    try:
        item.loop.call_soon_threadsafe(_settle, item.future, result, exc)
    except RuntimeError:  # that loop is closed: nobody waits for this frame any more
        pass
