"""Dynamic batching: batch sizes follow the limits, and batched answers equal one-at-a-time inference."""

from __future__ import annotations

import asyncio

import torch

from latentmotion.service.batcher import Batcher
from latentmotion.tasks import Classify


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()


def test_batches_respect_the_maximum_and_answer_like_single_calls():
    net, xs = _net(), torch.randn(21, 4, 9, 9)

    async def main():
        b = Batcher(max_batch=8, max_wait=0.05, max_queue=64)
        out = await asyncio.gather(*(b.infer(net, x, Classify(top_k=3)) for x in xs))
        await b.close()
        return b.batches, out

    batches, out = asyncio.run(main())
    assert sum(batches) == 21 and max(batches) == 8 and len(batches) == 3
    with torch.no_grad():
        p = net(xs).softmax(1)
    for i, o in enumerate(out):
        assert o.result.classes == p[i].topk(3).indices.tolist()
        assert torch.allclose(torch.tensor(o.result.scores), p[i].topk(3).values, atol=1e-6)


def test_a_lone_frame_waits_at_most_max_wait_and_shapes_never_mix():
    net = _net()

    async def main():
        b = Batcher(max_batch=16, max_wait=0.01)
        a = b.infer(net, torch.randn(4, 9, 9), Classify())
        c = b.infer(net, torch.randn(4, 12, 12), Classify())  # another shape: another queue
        out = await asyncio.wait_for(asyncio.gather(a, c), 10)
        await b.close()
        return out

    a, c = asyncio.run(main())
    assert a.batch == 1 and c.batch == 1


def test_a_failing_model_fails_only_its_batch():
    class Boom(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("device lost")

    async def main():
        b = Batcher(max_batch=4, max_wait=0.01)
        bad = await asyncio.gather(b.infer(Boom(), torch.randn(4, 9, 9), Classify()), return_exceptions=True)
        good = await b.infer(_net(), torch.randn(4, 9, 9), Classify())
        await b.close()
        return bad, good

    bad, good = asyncio.run(main())
    assert isinstance(bad[0], RuntimeError) and good.batch == 1


def test_a_failing_task_fails_only_its_own_frame_in_a_shared_batch():
    class Broken(Classify):
        def result(self, output):
            raise ValueError("this task breaks")

    async def main():
        b, net = Batcher(max_batch=8, max_wait=0.05), _net()
        xs = torch.randn(4, 4, 9, 9)
        out = await asyncio.gather(*(b.infer(net, x, Broken() if i == 1 else Classify()) for i, x in enumerate(xs)), return_exceptions=True)
        await b.close()
        return b.batches, out

    batches, out = asyncio.run(main())
    assert batches == [4]  # one batch: the broken frame shared it with three others
    assert isinstance(out[1], ValueError) and all(len(o.result.classes) == 5 for i, o in enumerate(out) if i != 1)
