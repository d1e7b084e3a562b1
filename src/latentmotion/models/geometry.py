"""Where each latent element sits on the input grid, derived from the graph.

Convention (used across latentmotion): pixel centres are at integer
coordinates, x to the right and y down. A layer with stride ``s`` and offset
``o`` places latent index ``u`` (along one axis) at input coordinate
``s * u + o``, the centre of its receptive field. ``rf`` is the receptive
field's full extent in input pixels.

Rules per operation, for kernel ``k``, stride ``t``, left/top padding ``p`` and
dilation ``d`` (one axis)::

    s' = s * t
    o' = o + s * (d * (k - 1) / 2 - p)
    rf' = rf + s * d * (k - 1)

Explicit padding layers shift the grid by ``-s * p``. Pointwise operations keep
the geometry of their spatial inputs; inputs that are spatially constant
(global pooling, as in squeeze-and-excitation) are ignored when combining.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn


@dataclass(frozen=True)
class Geometry:
    """Placement of a feature grid on the input grid, per axis (y, x)."""

    stride: tuple[int, int]
    offset: tuple[float, float]
    rf: tuple[int, int]

    def then(self, k: tuple[int, int], t: tuple[int, int], p: tuple[int, int], d: tuple[int, int]) -> Geometry:
        """Geometry after a sliding window of kernel k, stride t, leading pad p, dilation d."""
        return Geometry(
            stride=tuple(s * ti for s, ti in zip(self.stride, t)),  # type: ignore[arg-type]
            offset=tuple(o + s * (di * (ki - 1) / 2 - pi) for o, s, ki, pi, di in zip(self.offset, self.stride, k, p, d)),  # type: ignore[arg-type]
            rf=tuple(r + s * di * (ki - 1) for r, s, ki, di in zip(self.rf, self.stride, k, d)),  # type: ignore[arg-type]
        )

    def padded(self, top: int, left: int) -> Geometry:
        return Geometry(self.stride, (self.offset[0] - self.stride[0] * top, self.offset[1] - self.stride[1] * left), self.rf)


INPUT = Geometry((1, 1), (0.0, 0.0), (1, 1))
GLOBAL = "global"  # spatially constant tensor (broadcast over the grid)
UNKNOWN = "unknown"  # the grid no longer maps to the input by stride and offset


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _arg(node: fx.Node, i: int, key: str, default):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(key, default)


def _same_pad(k: tuple[int, int], d: tuple[int, int]) -> tuple[int, int]:
    return tuple((di * (ki - 1)) // 2 for ki, di in zip(k, d))  # type: ignore[return-value]


_SPATIAL_UNKNOWN_MODULES = (nn.Upsample, nn.ConvTranspose2d, nn.PixelShuffle, nn.PixelUnshuffle, nn.Flatten, nn.Linear)
_GLOBAL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PAD_MODULES = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)


def propagate(gm: fx.GraphModule) -> dict[fx.Node, Geometry | str]:
    """Geometry of every node of a traced network (see module docstring)."""
    geo: dict[fx.Node, Geometry | str] = {}
    modules = dict(gm.named_modules())

    def weight_shape(n) -> tuple[int, int]:
        if isinstance(n, fx.Node) and n.op == "get_attr":
            w = operator.attrgetter(n.target)(gm)
            return (int(w.shape[-2]), int(w.shape[-1]))
        raise ValueError("conv weight is not a parameter")

    def spatial_input(node: fx.Node):
        first = node.args[0] if node.args else next(iter(node.kwargs.values()))
        return geo.get(first, GLOBAL) if isinstance(first, fx.Node) else GLOBAL

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            geo[node] = INPUT
            continue
        if node.op in ("get_attr", "output"):
            geo[node] = GLOBAL
            continue
        target = modules.get(node.target) if node.op == "call_module" else node.target
        g_in = spatial_input(node) if (node.args or node.kwargs) else GLOBAL
        window = None  # (k, t, p, d)
        try:
            if isinstance(target, nn.Conv2d):
                pad = target.padding
                k, d = _pair(target.kernel_size), _pair(target.dilation)
                p = _same_pad(k, d) if pad == "same" else (0, 0) if pad == "valid" else _pair(pad)
                window = (k, _pair(target.stride), p, d)
            elif isinstance(target, (nn.MaxPool2d, nn.AvgPool2d)):
                k = _pair(target.kernel_size)
                window = (k, _pair(target.stride or k), _pair(target.padding), _pair(getattr(target, "dilation", 1)))
            elif target in (F.conv2d, torch.conv2d):
                k = weight_shape(_arg(node, 1, "weight", None))
                d = _pair(_arg(node, 5, "dilation", 1))
                pad = _arg(node, 4, "padding", 0)
                p = _same_pad(k, d) if pad == "same" else (0, 0) if pad == "valid" else _pair(pad)
                window = (k, _pair(_arg(node, 3, "stride", 1)), p, d)
            elif target in (F.max_pool2d, F.avg_pool2d, torch.max_pool2d):
                k = _pair(_arg(node, 1, "kernel_size", None))
                t = _arg(node, 2, "stride", None)
                window = (k, _pair(t or k), _pair(_arg(node, 3, "padding", 0)), _pair(_arg(node, 4, "dilation", 1)) if target in (F.max_pool2d, torch.max_pool2d) else (1, 1))
            elif isinstance(target, _PAD_MODULES):
                left, _, top, _ = target.padding if len(target.padding) == 4 else (target.padding[0],) * 4
                geo[node] = g_in.padded(top, left) if isinstance(g_in, Geometry) else g_in
                continue
            elif target is F.pad:
                pad = list(_arg(node, 1, "pad", ()))
                left = pad[0] if pad else 0
                top = pad[2] if len(pad) >= 4 else 0
                geo[node] = g_in.padded(top, left) if isinstance(g_in, Geometry) else g_in
                continue
            elif isinstance(target, _GLOBAL_MODULES) or target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
                out = _arg(node, 1, "output_size", None) if not isinstance(target, nn.Module) else target.output_size
                geo[node] = GLOBAL if _pair(out) == (1, 1) else UNKNOWN
                continue
            elif isinstance(target, _SPATIAL_UNKNOWN_MODULES) or target in (F.interpolate, torch.flatten, F.linear):
                geo[node] = UNKNOWN
                continue
        except (ValueError, TypeError, AttributeError):
            geo[node] = UNKNOWN
            continue
        if window is not None:
            geo[node] = g_in.then(*window) if isinstance(g_in, Geometry) else g_in
            continue
        # Pointwise or channel-wise: combine the geometry of all spatial inputs.
        ins = {geo[a] for a in node.all_input_nodes if geo.get(a, GLOBAL) != GLOBAL}
        grids = [g for g in ins if isinstance(g, Geometry)]
        if UNKNOWN in ins or len({(g.stride, g.offset) for g in grids}) > 1:
            geo[node] = UNKNOWN
        elif grids:  # branches on one grid: the widest receptive field wins
            rf = tuple(max(g.rf[i] for g in grids) for i in range(2))
            geo[node] = Geometry(grids[0].stride, grids[0].offset, rf)  # type: ignore[arg-type]
        else:
            geo[node] = GLOBAL
    return geo
