"""A short, stable identity of a network's weights, so edge and cloud can check they match."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["weights_fingerprint"]


def weights_fingerprint(module: nn.Module) -> str:
    """First 16 hex digits of SHA-256 over the state dict (names, dtypes, shapes, values), in name order.

    Two modules with equal parameters and buffers give the same fingerprint on
    every machine; any changed value changes it. The values are hashed as
    little-endian bytes of their own dtype, so nothing is rounded.

    Example:
        >>> import torch
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> b.load_state_dict(a.state_dict())
        <All keys matched successfully>
        >>> weights_fingerprint(a) == weights_fingerprint(b)
        True
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
