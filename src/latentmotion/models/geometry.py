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

Explicit padding shifts the grid by ``-s * p``. Every tensor also carries which
of its axes are (y, x): permutes, transposes, reshapes and slices move them, so
channels-last blocks (ConvNeXt, Swin's patch embedding) keep their grid.

Every node gets one of:

* :class:`Geometry` -- a grid tied to the input by stride and offset;
  ``context`` names the first node that mixes in a whole-frame value (global
  pooling in squeeze-and-excitation): the grid stands, but no element is
  independent of the frame's border.
* :class:`NoGrid` -- no grid, with the reason (attention over tokens, a reshape
  that merges the spatial axes, an operation this module does not know).
* :data:`CONST` (parameters, shape values) or :class:`Global` (spatially
  constant but input-dependent, e.g. a pooled vector).

Unknown operations on a grid give :class:`NoGrid`, never a guess, and every
derived stride is checked against the change of shape between the two probe
inputs of :mod:`.trace`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import fx, nn

from .trace import PROBES, Traced


@dataclass(frozen=True)
class Geometry:
    """Placement of a feature grid on the input grid, per axis (y, x).

    ``dims`` are the tensor axes of (y, x); ``context`` is the node that made every
    element depend on the whole frame, or None.
    """

    stride: tuple[int, int]
    offset: tuple[float, float]
    rf: tuple[int, int]
    dims: tuple[int, int] = (2, 3)
    context: str | None = None

    def then(self, k: tuple[int, int], t: tuple[int, int], p: tuple[int, int], d: tuple[int, int]) -> Geometry:
        """Geometry after a sliding window of kernel k, stride t, leading pad p, dilation d."""
        return replace(
            self,
            stride=tuple(s * ti for s, ti in zip(self.stride, t)),
            offset=tuple(o + s * (di * (ki - 1) / 2 - pi) for o, s, ki, pi, di in zip(self.offset, self.stride, k, p, d)),
            rf=tuple(r + s * di * (ki - 1) for r, s, ki, di in zip(self.rf, self.stride, k, d)),
        )

    def padded(self, top: int, left: int) -> Geometry:
        return replace(self, offset=(self.offset[0] - self.stride[0] * top, self.offset[1] - self.stride[1] * left))


@dataclass(frozen=True)
class NoGrid:
    """The tensor has no spatial grid tied to the input; ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class Global:
    """Spatially constant but computed from the whole input (``source`` node)."""

    source: str


CONST = "const"
INPUT = Geometry((1, 1), (0.0, 0.0), (1, 1))
Value = Geometry | NoGrid | Global | str

_POINTWISE = {
    # activations, arithmetic and identity-like operations: each output element depends only on the same position
    "relu", "relu_", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "hardtanh",
    "sigmoid", "sigmoid_", "tanh", "softplus", "exp", "log", "sqrt", "rsqrt", "neg", "abs", "clamp", "clamp_", "clip",
    "add", "add_", "iadd", "sub", "isub", "mul", "mul_", "imul", "truediv", "div", "div_", "itruediv", "pow", "floordiv",
    "dropout", "dropout2d", "alpha_dropout", "contiguous", "clone", "detach", "to", "float", "half", "double", "type", "type_as",
    "where", "maximum", "minimum", "cat", "concat", "batch_norm", "local_response_norm", "expand_as",
}
_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.LocalResponseNorm,
)
# Functions from outside torch whose effect is known: torchvision's stochastic depth scales whole
# samples (identity in eval), so it is pointwise on the grid.
_FOREIGN = {"torchvision.ops.stochastic_depth.stochastic_depth": "dropout"}
# Operations known to mix values across positions, with the reason users see.
_MIXING = {
    "shifted_window_attention": "attention within (shifted) windows mixes positions",
    "scaled_dot_product_attention": "attention over tokens mixes positions",
    "multi_head_attention_forward": "attention over tokens mixes positions",
    "roll": "a cyclic shift wraps the grid around the border",
}
_RESHAPES = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze"}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp"}
_SPLITS = {"chunk", "split", "tensor_split"}
_WHOLE_FRAME_NORMS = (nn.GroupNorm, nn.InstanceNorm2d)


def _op(node: fx.Node, modules: dict[str, nn.Module]):
    """The module of a call_module node, else the operation's name ('conv2d', 'permute', ...); None for foreign functions."""
    if node.op == "call_module":
        return modules[node.target]
    if node.op == "call_method":
        return node.target
    where = getattr(node.target, "__module__", None) or "torch"
    fn = getattr(node.target, "__name__", "")
    known = _FOREIGN.get(f"{where}.{fn}") or (fn if fn in _MIXING else None)
    if known:
        return known
    if where.startswith(("torch", "_operator", "operator", "builtins")) or node.target is getattr:
        return getattr(node.target, "__name__", str(node.target))
    return None


def _describe(op, node: fx.Node) -> str:
    if isinstance(op, nn.Module):
        return type(op).__name__
    return op if isinstance(op, str) else getattr(node.target, "__name__", str(node.target))


def _arg(node: fx.Node, i: int, key: str, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(key, default)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _ndim(t: Traced, n) -> int | None:
    s = t.shape(n) if isinstance(n, fx.Node) else None
    return len(s) if s is not None else None


def _conv_padding(pad, k: tuple[int, int], d: tuple[int, int]) -> tuple[int, int]:
    if pad == "same":
        return tuple((di * (ki - 1)) // 2 for ki, di in zip(k, d))  # type: ignore[return-value]
    return (0, 0) if pad == "valid" else _pair(pad)


def _window(t: Traced, node: fx.Node, op) -> tuple | None:
    """(kernel, stride, pad, dilation) of a sliding-window operation, or None if ``op`` is not one."""
    if isinstance(op, nn.Conv2d):
        k, d = _pair(op.kernel_size), _pair(op.dilation)
        return k, _pair(op.stride), _conv_padding(op.padding, k, d), d
    if isinstance(op, (nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(op.kernel_size)
        return k, _pair(op.stride or k), _pair(op.padding), _pair(getattr(op, "dilation", 1))
    if op == "conv2d":
        w = t.shape(_arg(node, 1, "weight"))
        k, d = (w[-2], w[-1]), _pair(_arg(node, 5, "dilation", 1))
        return k, _pair(_arg(node, 3, "stride", 1)), _conv_padding(_arg(node, 4, "padding", 0), k, d), d
    if op in ("max_pool2d", "avg_pool2d"):
        k = _pair(_arg(node, 1, "kernel_size"))
        d = _pair(_arg(node, 4, "dilation", 1)) if op == "max_pool2d" else (1, 1)
        return k, _pair(_arg(node, 2, "stride") or k), _pair(_arg(node, 3, "padding", 0)), d
    return None


def _pads(op, node: fx.Node) -> list[int] | None:
    """F.pad-style list (last axis first) of a padding operation, or None if ``op`` is not one."""
    if isinstance(op, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):
        p = op.padding
        return list(p) if isinstance(p, (tuple, list)) else [p] * 4
    if op == "pad":
        return list(_arg(node, 1, "pad", ()))
    return None


def _sliding(t: Traced, node: fx.Node, op, g: Value) -> Value | None:
    """Convolutions, pooling windows and padding."""
    window, pads = _window(t, node, op), _pads(op, node)
    if window is None and pads is None:
        return None
    if not isinstance(g, Geometry):
        return g
    nd = _ndim(t, node.args[0])
    if window is not None:
        if g.dims != (nd - 2, nd - 1):
            return NoGrid(f"{t.names[node]} slides a window over axes that are not the spatial grid")
        return g.then(*window)
    lead = {nd - 1 - i // 2: pads[i] for i in range(0, len(pads), 2)}  # axis -> leading pad
    return g.padded(lead.get(g.dims[0], 0), lead.get(g.dims[1], 0))


def _dims_list(node: fx.Node, start: int) -> list[int]:
    rest = node.args[start:]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        return list(rest[0])
    if not rest:
        return list(node.kwargs.get("dims", ()))
    return list(rest)


def _reshaped_dims(t: Traced, node: fx.Node, g: Geometry) -> tuple[int, int] | None:
    """New (y, x) axes after a reshape, if both axes survive unmerged at both probe sizes."""
    found = set()
    for k in range(len(PROBES)):
        src, out = t.shape(node.args[0], k), t.shape(node, k)
        if src is None or out is None or g.dims[1] != g.dims[0] + 1:
            return None
        y = g.dims[0]
        before, after = _prod(src[:y]), _prod(src[y + 2 :])
        hits = {j for j in range(len(out) - 1) if _prod(out[:j]) == before and out[j : j + 2] == src[y : y + 2] and _prod(out[j + 2 :]) == after}
        found = hits if k == 0 else found & hits
    return (min(found), min(found) + 1) if found else None


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


def _moved(t: Traced, node: fx.Node, op, g: Value) -> Value | None:
    """Permutes, transposes, reshapes and slices: the grid follows its axes."""
    if op not in ("permute", "transpose", "swapaxes", "getitem") and op not in _RESHAPES and not isinstance(op, (nn.Flatten, nn.Unflatten)):
        return None
    if not isinstance(g, Geometry):
        return g
    name = t.names[node]
    nd = _ndim(t, node.args[0])
    if op == "getitem":
        if not t.is_tensor(node.args[0]) or t.probes[0][node.args[0]][0] == "tensors":
            return g  # one of the tensors of a split along channels
        return _sliced(t, node, g)
    if op == "permute":
        perm = [d % nd for d in _dims_list(node, 1)]
        return replace(g, dims=(perm.index(g.dims[0]), perm.index(g.dims[1])))
    if op in ("transpose", "swapaxes"):
        a, b = (int(d) % nd for d in node.args[1:3])
        swap = {a: b, b: a}
        return replace(g, dims=(swap.get(g.dims[0], g.dims[0]), swap.get(g.dims[1], g.dims[1])))
    dims = _reshaped_dims(t, node, g)
    if dims is None:
        return NoGrid(f"{name} merges or splits the spatial axes (tokens, not a grid)")
    return replace(g, dims=dims)


def _sliced(t: Traced, node: fx.Node, g: Geometry) -> Value:
    """Indexing a tensor: channel selections keep the grid; anything touching y or x drops it."""
    idx = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    nd = _ndim(t, node.args[0])
    if any(i is Ellipsis for i in idx):
        e = idx.index(Ellipsis)
        idx = idx[:e] + (slice(None),) * (nd - len(idx) + 1 + sum(i is None for i in idx)) + idx[e + 1 :]
    axis, out_axis, where = 0, 0, {}
    for i in idx:
        if i is None:
            out_axis += 1
            continue
        if axis in g.dims and i != slice(None):
            return NoGrid(f"{t.names[node]} indexes the spatial grid")
        if not isinstance(i, int):
            where[axis] = out_axis
            out_axis += 1
        axis += 1
    for a in range(axis, nd):
        where[a] = out_axis + a - axis
    return replace(g, dims=(where[g.dims[0]], where[g.dims[1]]))


def _reduced(t: Traced, node: fx.Node, op, g: Value) -> Value | None:
    """Global pooling and reductions: over both spatial axes gives a Global value."""
    name = t.names[node]
    if isinstance(op, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or op in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        if not isinstance(g, Geometry):
            return g
        out = op.output_size if isinstance(op, nn.Module) else _arg(node, 1, "output_size")
        return Global(name) if _pair(out) == (1, 1) else NoGrid(f"{name} pools to a fixed size, whatever the input size")
    if op not in _REDUCTIONS:
        return None
    if not isinstance(g, Geometry):
        return g
    nd = _ndim(t, node.args[0])
    dims = _arg(node, 1, "dim")
    if dims is None:
        return Global(name)
    dims = {int(d) % nd for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
    if set(g.dims) <= dims:
        return Global(name)
    if dims & set(g.dims):
        return NoGrid(f"{name} reduces one spatial axis")
    if _arg(node, 2, "keepdim", False):
        return g
    return replace(g, dims=tuple(d - sum(r < d for r in dims) for d in g.dims))  # type: ignore[arg-type]


def _last_axes_only(t: Traced, node: fx.Node, op, g: Value) -> Value | None:
    """Linear, LayerNorm, softmax, batch norm: pointwise unless the axes they mix are spatial."""
    if isinstance(op, nn.Linear) or op == "linear":
        mixed = {-1}
    elif isinstance(op, nn.LayerNorm) or op == "layer_norm":
        shape = op.normalized_shape if isinstance(op, nn.Module) else _arg(node, 1, "normalized_shape")
        mixed = {-1 - i for i in range(len(shape) if isinstance(shape, (tuple, list)) else 1)}
    elif isinstance(op, (nn.Softmax, nn.LogSoftmax)) or op in ("softmax", "log_softmax"):
        dim = op.dim if isinstance(op, nn.Module) else _arg(node, 1, "dim")
        mixed = {int(dim)} if dim is not None else {0}
    elif isinstance(op, nn.modules.batchnorm._BatchNorm) or op == "batch_norm":
        mixed = {1}  # per-channel affine: position 1 must be the channels
    elif isinstance(op, _WHOLE_FRAME_NORMS) or op in ("group_norm", "instance_norm"):
        return replace(g, context=g.context or t.names[node]) if isinstance(g, Geometry) else g
    else:
        return None
    if not isinstance(g, Geometry):
        return g
    nd = _ndim(t, node.args[0])
    if {d % nd for d in mixed} & set(g.dims):
        return NoGrid(f"{t.names[node]} ({_describe(op, node)}) mixes values across the spatial grid (attention or tokens)")
    return g


def _combined(t: Traced, node: fx.Node, op, geo: dict) -> Value | None:
    """Pointwise operations: all grid inputs must share one grid; constants may only broadcast over it."""
    if not (op in _POINTWISE or isinstance(op, _POINTWISE_MODULES)):
        return None
    name = t.names[node]
    ins = [a for a in node.all_input_nodes if t.is_tensor(a)]
    grids = [geo[a] for a in ins if isinstance(geo[a], Geometry)]
    bad = next((geo[a] for a in ins if isinstance(geo[a], NoGrid)), None)
    if bad is not None:
        return bad
    glob = next((geo[a].source for a in ins if isinstance(geo[a], Global)), None)
    if not grids:
        return Global(glob) if glob else CONST
    out_nd = _ndim(t, node)
    ends = {(g.stride, g.offset, tuple(d - _ndim(t, a) for d in g.dims)) for a, g in ((a, geo[a]) for a in ins) if isinstance(g, Geometry)}
    if len(ends) > 1:
        return NoGrid(f"{name} combines tensors on different grids")
    if op in ("cat", "concat"):
        dim = _arg(node, 1, "dim", 0)
        if int(dim) % out_nd in {out_nd + e for e in next(iter(ends))[2]}:
            return NoGrid(f"{name} concatenates along a spatial axis")
    dims = tuple(out_nd + e for e in next(iter(ends))[2])
    for a in ins:
        s = t.shape(a)
        if geo[a] == CONST and s is not None and any(len(s) - out_nd + d >= 0 and s[len(s) - out_nd + d] > 1 for d in dims):
            return NoGrid(f"{name} adds a position-dependent constant ({t.names[a]}, e.g. a positional embedding)")
    context = next((g.context for g in grids if g.context), None) or glob
    rf = tuple(max(g.rf[i] for g in grids) for i in range(2))
    return replace(grids[0], rf=rf, dims=dims, context=context)


def _rule(t: Traced, node: fx.Node, geo: dict, modules: dict) -> Value:
    """Geometry of one node from its inputs'."""
    if node.op == "placeholder":
        return INPUT
    if node in t.free or node.op in ("get_attr", "output") or not t.is_tensor(node):
        return CONST
    op = _op(node, modules)
    first = next((a for a in node.args if isinstance(a, fx.Node)), None)
    g = geo.get(first, CONST) if first is not None else CONST
    if op is not None:
        if op in _SPLITS:
            dim = _arg(node, 2, "dim", 0)
            return NoGrid(f"{t.names[node]} splits a spatial axis") if isinstance(g, Geometry) and int(dim) % _ndim(t, first) in g.dims else g
        for rule in (_sliding, _moved, _reduced, _last_axes_only):
            out = rule(t, node, op, g)
            if out is not None:
                return out
        out = _combined(t, node, op, geo)
        if out is not None:
            return out
    ins = [geo.get(a, CONST) for a in node.all_input_nodes]
    grid_in = next((v for v in ins if isinstance(v, (Geometry, NoGrid))), None)
    if grid_in is None:  # an unknown operation on constants or pooled vectors keeps them spatially constant
        return next((v for v in ins if isinstance(v, Global)), CONST)
    if isinstance(grid_in, NoGrid):
        return grid_in
    if isinstance(op, nn.MultiheadAttention) or op in _MIXING:
        return NoGrid(f"{t.names[node]}: {_MIXING.get(op, 'attention over tokens mixes positions')}")
    return NoGrid(f"{t.names[node]} ({_describe(op, node)}) is not known to keep the spatial grid")


def _checked(t: Traced, node: fx.Node, g: Value) -> Value:
    """A derived stride must equal the change of input size over the change of shape between the probes."""
    if not isinstance(g, Geometry) or t.probes[0].get(node, ("",))[0] != "tensor":
        return g
    a, b = t.shape(node, 0), t.shape(node, 1)
    grow = PROBES[1][1] - PROBES[0][1]
    if b is None:
        return NoGrid(f"{t.names[node]}: the network refuses a {PROBES[1][1]}x{PROBES[1][1]} input here, so its stride cannot be checked")
    for axis, s in zip(g.dims, g.stride):
        if s * (b[axis] - a[axis]) != grow:
            return NoGrid(f"{t.names[node]}: derived stride {s} disagrees with the shape ({a[axis]} -> {b[axis]} for {PROBES[0][1]} -> {PROBES[1][1]} pixels)")
    return g


def propagate(t: Traced) -> dict[fx.Node, Value]:
    """Geometry of every node of a traced and probed network (see module docstring)."""
    modules = dict(t.gm.named_modules())
    geo: dict[fx.Node, Value] = {}
    for node in t.nodes:
        geo[node] = _checked(t, node, _rule(t, node, geo, modules))
    return geo


__all__ = ["CONST", "Geometry", "Global", "NoGrid", "propagate"]
