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

from .._lazy import lazy_exports

#: Where each public name lives, loaded on first use (PEP 562): ``latentmotion.codec.config`` and
#: ``.bitstream`` stay light (no torch, no numba) for the command line's start-up.
_EXPORTS = {
    **dict.fromkeys(("MODES", "MODE_NAMES", "BitstreamError", "Header"), "bitstream"),
    **dict.fromkeys(("MotionTools", "ResidualTools", "StreamId", "Tools"), "config"),
    **dict.fromkeys(("MAX_Q", "Decoder", "Encoder", "FrameStats", "decode_stream", "decode_work_nbytes", "decoded_nbytes",
                     "encode_sequence", "iter_decode", "read_stream_header"), "core"),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = sorted(_EXPORTS)
