"""Dynamic batching of the cloud sub-model across streams.

Frames of every stream that use the same model and tensor shape wait in one
queue; a batch runs when it holds ``max_batch`` frames or when its oldest
frame has waited ``max_wait`` seconds, whichever comes first. All batches run
on one worker thread (one model call at a time, so torch's intra-op threads
are not oversubscribed); the event loop stays free for network I/O. A total
bound on queued frames (``max_queue``) makes callers wait instead of growing
memory: that wait is the back-pressure that reaches the edges through gRPC
flow control.

Example:
    >>> import asyncio, torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> async def main():
    ...     b = Batcher(max_batch=8, max_wait=0.01)
    ...     outs = await asyncio.gather(*(b.infer(net, torch.ones(1, 2, 2), k=2) for _ in range(5)))
    ...     await b.close()
    ...     return outs[0].batch, len(outs[0].classes)
    >>> asyncio.run(main())
    (5, 2)
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Batcher", "Prediction", "top_k"]


@dataclass
class Prediction:
    """Top-k of one frame and how its batch ran."""

    classes: list[int]
    scores: list[float]
    batch: int
    infer_ms: float


@torch.no_grad()
def top_k(net: nn.Module, x: torch.Tensor, k: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax top-k (scores, classes) of ``net`` on a batch ``x``, both on the CPU."""
    p = net(x.to(device)).softmax(1)
    s, c = p.topk(min(k, p.shape[1]), dim=1)
    return s.cpu(), c.cpu()


@dataclass
class _Item:
    x: torch.Tensor
    k: int
    future: asyncio.Future
    t: float


class Batcher:
    """Gathers frames into batches per (model, shape) and runs them on one worker thread."""

    def __init__(self, max_batch: int = 16, max_wait: float = 0.005, max_queue: int = 256, device: str = "cpu") -> None:
        self.max_batch, self.max_wait, self.device = max_batch, max_wait, device
        self._slots = asyncio.Semaphore(max_queue)
        self._queues: dict[tuple, asyncio.Queue] = {}
        self._tasks: dict[tuple, asyncio.Task] = {}
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="latentmotion-model")
        self.batches: list[int] = []  # sizes of the batches run, for reports

    async def infer(self, net: nn.Module, x: torch.Tensor, k: int = 5) -> Prediction:
        """Classify one tensor (C, H, W) in the next batch of ``net``; waits while the queues are full."""
        async with self._slots:
            key = (net, tuple(x.shape))  # the key holds the module, so its identity cannot be reused
            if key not in self._queues:
                self._queues[key] = asyncio.Queue()
                self._tasks[key] = asyncio.get_running_loop().create_task(self._run(net, self._queues[key]))
            fut = asyncio.get_running_loop().create_future()
            self._queues[key].put_nowait(_Item(x, k, fut, time.perf_counter()))
            return await fut

    async def _gather(self, queue: asyncio.Queue) -> list[_Item]:
        items = [await queue.get()]
        deadline = items[0].t + self.max_wait
        while len(items) < self.max_batch:
            if not queue.empty():
                items.append(queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                items.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
        return items

    async def _run(self, net: nn.Module, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._gather(queue)
            live = [it for it in items if not it.future.done()]  # a cancelled stream's frames are skipped
            if not live:
                continue
            k = max(it.k for it in live)
            t = time.perf_counter()
            try:
                s, c = await loop.run_in_executor(self._worker, top_k, net, torch.stack([it.x for it in live]), k, self.device)
            except Exception as exc:  # noqa: BLE001  (a model failure fails this batch's frames, not the server)
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(exc)
                continue
            ms = 1000 * (time.perf_counter() - t)
            self.batches.append(len(live))
            for i, it in enumerate(live):
                if not it.future.done():
                    it.future.set_result(Prediction(c[i, : it.k].tolist(), s[i, : it.k].tolist(), len(live), ms))

    def forget(self, net: nn.Module) -> None:
        """Stop the queues of a model the cache evicted (its frames in flight still finish)."""
        for key in [k for k in self._queues if k[0] is net]:
            if self._queues[key].empty():
                self._tasks.pop(key).cancel()
                del self._queues[key]

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._worker.shutdown(wait=True)
