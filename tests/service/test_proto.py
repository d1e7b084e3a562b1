"""The checked-in generated protobuf module matches cloud.proto."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentmotion import service

SRC = Path(service.__file__).resolve().parents[2]  # the folder holding latentmotion/


def test_generated_module_matches_the_proto(tmp_path):
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools (test extra) regenerates the module")
    rel = "latentmotion/service/cloud.proto"
    rc = protoc.main(["protoc", f"-I{SRC}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", str(SRC / rel)])
    assert rc == 0
    for name in ("cloud_pb2.py", "cloud_pb2.pyi"):
        fresh = (tmp_path / "latentmotion/service" / name).read_text()
        assert fresh == (SRC / "latentmotion/service" / name).read_text(), f"{name} is stale: regenerate it (see docs/service.md)"


def test_messages_round_trip():
    pb = service.cloud_pb2
    m = pb.CloudMessage(result=pb.Result(seq=7, classes=[3, 1], scores=[0.5, 0.25], batch=4))
    back = pb.CloudMessage.FromString(m.SerializeToString())
    assert back.WhichOneof("kind") == "result" and list(back.result.classes) == [3, 1] and back.result.seq == 7


def _before_tasks():
    """Result and Open as edges and clouds from before the task fields know them: today's schema less every
    field added since (Open.task, Result.task, Result.outputs, the Tensor message), in a pool of its own."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto()
    service.cloud_pb2.DESCRIPTOR.CopyToProto(fd)
    fd.name = "before_tasks.proto"
    added = {"Open": {"task"}, "Result": {"task", "outputs"}}
    for msg in fd.message_type:
        keep = [f for f in msg.field if f.name not in added.get(msg.name, ())]
        del msg.field[:]
        msg.field.extend(keep)
        if msg.name == "Result":
            del msg.nested_type[:]  # the map entry of outputs
    keep = [m for m in fd.message_type if m.name != "Tensor"]
    del fd.message_type[:]
    fd.message_type.extend(keep)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"latentmotion.service.v1.{n}")) for n in ("Result", "Open")}


def test_fields_are_only_added_and_old_peers_read_new_messages():
    pb = service.cloud_pb2
    numbers = {f.name: f.number for f in pb.Result.DESCRIPTOR.fields}
    assert numbers == {"seq": 1, "classes": 2, "scores": 3, "server_ms": 4, "decode_ms": 5, "infer_ms": 6, "batch": 7, "error": 8, "task": 9, "outputs": 10}
    assert {f.name: f.number for f in pb.Open.DESCRIPTOR.fields} == {"header": 1, "weights": 2, "top_k": 3, "edge_id": 4, "task": 5}
    old = _before_tasks()
    seg = pb.Result(seq=4, task="segment", batch=2)
    seg.outputs["labels"].CopyFrom(pb.Tensor(shape=[2, 2], dtype="uint8", data=bytes(4)))
    back = old["Result"].FromString(seg.SerializeToString())  # an old edge skips the fields it does not know
    assert back.seq == 4 and back.batch == 2 and not back.classes and not back.error
    cls = old["Result"].FromString(pb.Result(seq=5, classes=[7], scores=[0.5], task="classify").SerializeToString())
    assert list(cls.classes) == [7] and list(cls.scores) == [0.5]
    opened = pb.Open.FromString(old["Open"](header=b"h", weights="w", top_k=3).SerializeToString())
    assert opened.task == "" and opened.top_k == 3  # an old edge's stream: the cloud classifies it
