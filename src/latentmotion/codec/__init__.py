"""Motion-compensated predictive codec for sequences of feature tensors.

Example:
    >>> import torch
    >>> from latentmotion.codec import Encoder, StreamId, Tools, encode_sequence, decode_stream
    >>> xs = [torch.randn(8, 12, 12) for _ in range(3)]
    >>> enc = Encoder((8, 12, 12), step=0.1, tools=Tools.of(mode="block", subpel=4), stream=StreamId(weights="0123abcd"))
    >>> stream = encode_sequence(xs, enc)
    >>> _, out = decode_stream(stream)
    >>> all(torch.equal(a, b) for a, b in zip(out, enc.reconstructions, strict=True))
    True
"""

from .bitstream import BitstreamError, Header
from .config import MotionTools, ResidualTools, StreamId, Tools
from .core import MAX_Q, Decoder, Encoder, FrameStats, decode_stream, decode_work_nbytes, decoded_nbytes, encode_sequence, iter_decode, read_stream_header
from .prediction import MODE_NAMES, MODES

__all__ = ["MAX_Q", "MODES", "MODE_NAMES", "BitstreamError", "MotionTools", "ResidualTools", "StreamId", "Tools", "Decoder", "Encoder", "FrameStats", "Header", "decode_stream", "decode_work_nbytes", "decoded_nbytes", "encode_sequence", "iter_decode", "read_stream_header"]
