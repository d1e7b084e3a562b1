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
