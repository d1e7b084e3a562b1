"""The task seam (issue 19): the registry, classification's scores as codec eval has always computed them,
results through protobuf messages, and the second task, semantic segmentation, on a real torchvision model:
an exact split and latent-space motion prediction at its cut."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

import latentmotion as lm
from latentmotion.metrics import kl_divergence
from latentmotion.models.zoo import SEGMENTATION_MODELS
from latentmotion.service import cloud_pb2 as pb
from latentmotion.tasks import TASKS, Classification, Classify, Segment, Task, get_tensor, make_task, mean_iou, put_tensor

from .conftest import model
from .test_motion import check_translation_by_stride_is_exact

SEG, SEG_LAYER = "lraspp_mobilenet_v3_large", "backbone.3.add"  # stride 4, no whole-frame context before it


def test_registry_builds_tasks_with_the_options_they_take():
    assert set(TASKS) == {"classify", "segment"} and all(isinstance(make_task(n), Task) for n in TASKS)
    assert make_task("", top_k=3) == Classify(top_k=3) and make_task("segment", top_k=3) == Segment()
    with pytest.raises(lm.UnknownNameError, match="segment"):
        make_task("segmnet")


def test_classification_scores_are_codec_evals_measures_exactly():
    """The values codec eval has always written (rd.csv, summaries), recomputed here by their definitions."""
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(12, 1000, generator=g) * 3
    dec = ref + torch.randn(12, 1000, generator=g)
    s = Classify().score(ref, dec)
    p = ref.double().softmax(1)
    top, cls = p.max(1)
    agree = dec.argmax(1) == cls
    kl = float(kl_divergence(ref, dec).mean())
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(dec.topk(5, 1).indices, ref.topk(5, 1).indices)])
    assert list(s) == list(Classify.metrics)
    assert s == {"kl": kl, "task_db": -10 * math.log10(kl), "top1_agreement": float(agree.float().mean()),
                 "top1_confident": float(agree[top >= 0.5].float().mean()), "top5_overlap": float(overlap)}


def test_results_round_trip_through_the_result_message():
    msg = pb.Result(seq=1)
    c = Classify(top_k=3).result(torch.tensor([0.1, 5.0, -1.0, 2.0]))
    Classify().express(c, msg)
    back = pb.Result.FromString(msg.SerializeToString())
    assert c.classes == [1, 3, 0] and Classify().read(back) == c and isinstance(c, Classification)
    labels = torch.randint(0, 300, (5, 7), generator=torch.Generator().manual_seed(1))
    seg = Segment().result(torch.nn.functional.one_hot(labels, 300).permute(2, 0, 1).float())
    assert seg.labels.dtype == torch.int16 and torch.equal(seg.labels.long(), labels)  # 300 classes do not fit uint8
    Segment().express(seg, msg)
    back = pb.Result.FromString(msg.SerializeToString())
    assert Segment().read(back) == seg and list(back.classes) == [1, 3, 0]  # a task's fields leave the others alone
    with pytest.raises(ValueError, match="no label map"):
        Segment().read(pb.Result(seq=2))


def test_tensor_messages_refuse_what_does_not_add_up():
    m = pb.Tensor()
    put_tensor(m, torch.arange(6, dtype=torch.int32).reshape(2, 3))
    assert m.data == np.arange(6, dtype="<i4").tobytes() and get_tensor(m).tolist() == [[0, 1, 2], [3, 4, 5]]
    m.data = m.data[:-1]
    with pytest.raises(ValueError, match="holds 23 bytes"):
        get_tensor(m)
    with pytest.raises(ValueError, match="unknown dtype"):
        get_tensor(pb.Tensor(shape=[1], dtype="object", data=b"x"))
    with pytest.raises(ValueError, match="carries"):
        put_tensor(pb.Tensor(), torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="holds 0 bytes"):  # 2^64 elements: an int64 product wraps to 0
        get_tensor(pb.Tensor(shape=[65536] * 4, dtype="uint8", data=b""))


def test_segmentation_scores_count_pixels_and_classes():
    ref = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])
    dec = torch.tensor([[0, 1, 1, 1], [2, 2, 2, 0]])
    # class 0: 1 common of 3; class 1: 2 of 3; class 2: 3 of 4
    assert mean_iou(ref, dec, 3) == pytest.approx((1 / 3 + 2 / 3 + 3 / 4) / 3)
    logits = lambda lab: torch.nn.functional.one_hot(lab, 4).permute(2, 0, 1)[None].float()  # noqa: E731
    assert Segment().score(logits(ref), logits(dec)) == {"pixel_agreement": 6 / 8, "miou": mean_iou(ref, dec, 4)}
    assert Segment().check((21, 8, 8)) == "" and "(1000,)" in Segment().check((1000,)) and "(21, 8, 8)" in Classify().check((21, 8, 8))


def test_segmentation_model_is_torchvisions_and_splits_exactly():
    """Random weights, labelled so; the wrapper's one-tensor output is torchvision's "out"; edge then cloud is the whole model."""
    m = model(SEG)
    assert m.task == "segment" and m.weights == "random (seed 0)" and not m.trained
    tv = torchvision.models.get_model(SEG, weights=None, weights_backbone=None).eval()
    tv.load_state_dict(m.net.state_dict())
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    s = lm.split_model(m, SEG_LAYER)
    with torch.no_grad():
        whole = m(x)
        assert torch.equal(whole, tv(m.normalize(x))["out"]) and whole.shape == (2, 21, 224, 224)
        assert torch.equal(s.cloud(s.edge(x)), whole)
    assert s.stride == (4, 4) and s.context is None


def test_translation_by_stride_multiples_is_exact_at_the_segmentation_cut():
    """test_motion's sharpest check of Eq. 12, at the segmentation model's cut."""
    check_translation_by_stride_is_exact(lm.split_model(model(SEG), SEG_LAYER))  # half a stride: clearly worse, too


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(SEGMENTATION_MODELS) - {SEG}))
def test_every_segmentation_model_is_torchvisions(name):
    m = lm.load_model(name, weights="random")
    tv = torchvision.models.get_model(name, weights=None, weights_backbone=None).eval()
    tv.load_state_dict(m.net.state_dict())
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(m(x), tv(m.normalize(x))["out"])
