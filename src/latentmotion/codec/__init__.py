"""Motion-compensated predictive codec for sequences of feature tensors.

Example:
    >>> import torch
    >>> from latentmotion.codec import Encoder, encode_sequence, decode_stream
    >>> xs = [torch.randn(8, 12, 12) for _ in range(3)]
    >>> enc = Encoder((8, 12, 12), step=0.1, mode="block", weights="0123abcd")
    >>> stream = encode_sequence(xs, enc)
    >>> _, out = decode_stream(stream)
    >>> all(torch.equal(a, b) for a, b in zip(out, enc.reconstructions, strict=True))
    True
"""

from .bitstream import BitstreamError, Header
from .core import Decoder, Encoder, FrameStats, decode_stream, decode_work_nbytes, decoded_nbytes, encode_sequence, iter_decode, read_stream_header
from .prediction import MODE_NAMES, MODES

__all__ = ["MODES", "MODE_NAMES", "BitstreamError", "Decoder", "Encoder", "FrameStats", "Header", "decode_stream", "decode_work_nbytes", "decoded_nbytes", "encode_sequence", "iter_decode", "read_stream_header"]
