from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Open(_message.Message):
    __slots__ = ("header", "weights", "top_k", "edge_id", "task")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    header: bytes
    weights: str
    top_k: int
    edge_id: str
    task: str
    def __init__(self, header: _Optional[bytes] = ..., weights: _Optional[str] = ..., top_k: _Optional[int] = ..., edge_id: _Optional[str] = ..., task: _Optional[str] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("seq", "record")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    seq: int
    record: bytes
    def __init__(self, seq: _Optional[int] = ..., record: _Optional[bytes] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class EdgeMessage(_message.Message):
    __slots__ = ("open", "frame")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    open: Open
    frame: Frame
    def __init__(self, open: _Optional[_Union[Open, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("seq", "classes", "scores", "server_ms", "decode_ms", "infer_ms", "batch", "error", "task", "outputs")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    INFER_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    classes: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    server_ms: float
    decode_ms: float
    infer_ms: float
    batch: int
    error: str
    task: str
    outputs: _containers.MessageMap[str, Tensor]
    def __init__(self, seq: _Optional[int] = ..., classes: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., server_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., infer_ms: _Optional[float] = ..., batch: _Optional[int] = ..., error: _Optional[str] = ..., task: _Optional[str] = ..., outputs: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("kind", "seq", "reason")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INTRA: _ClassVar[Request.Kind]
        SLOW_DOWN: _ClassVar[Request.Kind]
    INTRA: Request.Kind
    SLOW_DOWN: Request.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kind: Request.Kind
    seq: int
    reason: str
    def __init__(self, kind: _Optional[_Union[Request.Kind, str]] = ..., seq: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class CloudMessage(_message.Message):
    __slots__ = ("result", "request")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    result: Result
    request: Request
    def __init__(self, result: _Optional[_Union[Result, _Mapping]] = ..., request: _Optional[_Union[Request, _Mapping]] = ...) -> None: ...
