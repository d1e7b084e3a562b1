"""Split a network into edge and cloud sub-models at one layer (Fig. 1).

Layer names follow torchvision's feature-extraction convention (see
:mod:`.trace`), e.g. ``"layer2.0.add"`` for ResNet-34 or
``"features.transition2.pool"`` for DenseNet-121; ``latentmotion layers MODEL``
lists them. Any ``nn.Module`` that torch.fx can trace may be split.

A layer is a valid cut point when the edge sends exactly one tensor: every
value computed before it that is still needed after it must be that layer's
output. Parameters and constants are copied to both sides, and shape values
read before the cut (``bs = x.size(0)`` ... ``x.view(bs, -1)``) are recomputed
on the cloud side from the cut tensor, provided the axes they read have the
same size in the cut tensor at both probe inputs (batch 2 at 224x224, batch 1
at 288x288). Only when a real tensor must cross is the cut refused.

Edge and cloud are deep copies: changing them (``split.edge.double()``,
``.to(device)``) never touches the caller's model, at the cost of one extra
copy of the parameters each side uses.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import fx, nn

from ..errors import InputError, UnknownNameError
from .geometry import Geometry, NoGrid, propagate
from .trace import PROBES, Traced, traced
from .zoo import ImageNetModel

__all__ = ["LayerInfo", "Split", "edge_multi", "list_layers", "split_model"]


@dataclass(frozen=True)
class LayerInfo:
    """One candidate cut point.

    Attributes:
        name: node name.
        shape: shape of the edge's output without the batch axis for a 224x224
            input: (C, H, W) for a grid (channels-last layers are permuted at the cut).
        stride, offset, rf: see :class:`Split`; ``None`` where there is no grid.
        single: whether cutting here sends a single tensor.
        no_grid: why the tensor has no spatial grid tied to the input, or None.
        context: the node that makes every element depend on the whole frame
            (global pooling in squeeze-and-excitation), or None.
    """

    name: str
    shape: tuple[int, ...]
    stride: tuple[int, int] | None
    offset: tuple[float, float] | None
    rf: tuple[int, int] | None
    single: bool
    no_grid: str | None = None
    context: str | None = None


@dataclass(frozen=True)
class Split:
    """A network cut into edge and cloud sub-models.

    Attributes:
        edge: maps images (N, 3, H, W) in [0, 1] to the layer's tensor, spatial
            axes last: (N, C, h, w) for a grid.
        cloud: maps that tensor to the network's output.
        layer: node name of the cut.
        stride: (sy, sx) input pixels per latent pixel; None without a grid.
        offset: (oy, ox): latent index (v, u) sits at input coordinate
            ``(sy * v + oy, sx * u + ox)``, pixel centres at integer coordinates.
        rf: (ry, rx) receptive-field extent in input pixels (local part).
        no_grid: why there is no spatial grid (then stride, offset, rf are None).
        context: node that mixes a whole-frame value into every element, or None;
            then no element is free of the frame's border.
    """

    edge: nn.Module
    cloud: nn.Module
    layer: str
    stride: tuple[int, int] | None
    offset: tuple[float, float] | None
    rf: tuple[int, int] | None
    no_grid: str | None = None
    context: str | None = None

    @torch.no_grad()
    def feature_shape(self, size: int = 224) -> tuple[int, ...]:
        """The edge's tensor shape for one ``size`` x ``size`` input, batch axis left out: (C, h, w) for a grid
        (one pass of a black frame)."""
        return tuple(self.edge(torch.zeros(1, 3, size, size)).shape[1:])

    def latent_to_input(self, v: float, u: float) -> tuple[float, float]:
        """Input coordinate (y, x) of latent index (v, u)."""
        self._need_grid()
        return (self.stride[0] * v + self.offset[0], self.stride[1] * u + self.offset[1])

    def border(self) -> tuple[int, int]:
        """Latent pixels at each border whose receptive field can reach outside the frame."""
        self._need_grid()
        if self.context is not None:  # every element sees the whole frame: no border width means anything
            raise InputError(f"the split at {self.layer!r} mixes in a whole-frame context ({self.context}): every element depends on the border")
        return tuple(math.ceil(((r - 1) / 2 - o) / s) if (r - 1) / 2 > o else 0 for r, o, s in zip(self.rf, self.offset, self.stride))  # type: ignore[return-value]

    def _need_grid(self) -> None:
        if self.stride is None:
            raise InputError(f"the split at {self.layer!r} has no spatial grid: {self.no_grid}")


# --------------------------------------------------------------------------- which cuts send one tensor


def _shape_read(n: fx.Node) -> tuple[fx.Node, set[int] | None] | None:
    """(tensor, axes read) when ``n`` reads a tensor's shape; None axes = all of them."""
    if n.op == "call_method" and n.target in ("size", "dim") and n.args:
        d = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        return n.args[0], (set() if n.target == "dim" else {d} if isinstance(d, int) else None)
    if n.op == "call_function" and n.target is getattr and n.args[1] in ("shape", "ndim", "dtype", "device"):
        if n.args[1] != "shape":
            return n.args[0], set()
        idx = [u.args[1] for u in n.users if u.op == "call_function" and u.target is operator.getitem]
        if len(idx) == len(n.users) and all(isinstance(i, int) for i in idx):
            return n.args[0], set(idx)
        return n.args[0], None
    return None


def _preserved(t: Traced, src: fx.Node, cut: fx.Node, axes: set[int] | None) -> bool:
    """Whether ``cut`` has the same size as ``src`` along ``axes`` at both probes."""
    for k in range(len(PROBES)):
        a, b = t.shape(src, k), t.shape(cut, k)
        if a is None or b is None:
            return False
        want = range(len(a)) if axes is None else [d % len(a) for d in axes]
        if (axes is None or not axes) and len(a) != len(b):
            return False
        if any(d >= len(b) or a[d] != b[d] for d in want):
            return False
    return True


def _recomputable(t: Traced, v: fx.Node, cut: fx.Node) -> bool:
    """Whether the non-tensor value ``v`` can be recomputed from ``cut``'s shape alone."""
    if v in t.free:
        return True
    read = _shape_read(v)
    if read is not None:
        return read[0] is cut or _preserved(t, read[0], cut, read[1])
    return not t.is_tensor(v) and all(_recomputable(t, a, cut) for a in v.all_input_nodes)


def _crossing(t: Traced, n: fx.Node, cut: fx.Node, after: int, index: dict) -> str | None:
    """Why value ``n``, live across the cut, cannot be rebuilt on the cloud side (None if it can)."""
    if t.is_tensor(n):
        later = [u for u in n.users if index[u] > after]
        if all((r := _shape_read(u)) is not None and _preserved(t, n, cut, r[1]) for u in later):
            return None
        return f"tensor {t.names[n]!r} is also needed after the cut"
    if _recomputable(t, n, cut):
        return None
    return f"value {t.names[n]!r} does not follow from the cut tensor's shape"


def blockers(t: Traced) -> dict[fx.Node, str | None]:
    """For each node, why a cut after it would send more than one tensor (None: it sends one)."""
    index = {n: i for i, n in enumerate(t.nodes)}
    last = {n: max((index[u] for u in n.users), default=i) for i, n in enumerate(t.nodes)}
    live: set[fx.Node] = set()
    out: dict[fx.Node, str | None] = {}
    for i, n in enumerate(t.nodes):
        if n not in t.free and n.op != "output":
            live.add(n)
        live = {m for m in live if last[m] > i}
        if n.op in ("placeholder", "get_attr", "output") or n in t.free:
            out[n] = "it does not depend on the input" if n.op != "placeholder" else "it is the input"
            continue
        out[n] = next((r for m in sorted(live - {n}, key=index.get) if (r := _crossing(t, m, n, i, index))), None)
    return out


# --------------------------------------------------------------------------- listing


@lru_cache(maxsize=4)
def _analysis(net: nn.Module) -> tuple[Traced, dict, dict]:
    t = traced(net)
    return t, propagate(t), blockers(t)


def _bare(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    if isinstance(model, ImageNetModel):
        return model.net, model.normalize
    return model, None


def _grid_order(t: Traced, g: Geometry, n: fx.Node) -> list[int] | None:
    """Axis order that puts (y, x) last, or None if they already are."""
    nd = len(t.shape(n))
    if g.dims == (nd - 2, nd - 1):
        return None
    return [d for d in range(nd) if d not in g.dims] + list(g.dims)


def _info(t: Traced, n: fx.Node, g, why: str | None) -> LayerInfo:
    shape = t.shape(n) or ()
    if isinstance(g, Geometry):
        order = _grid_order(t, g, n)
        if order is not None:
            shape = tuple(shape[d] for d in order)
        return LayerInfo(t.names[n], tuple(shape[1:]), g.stride, g.offset, g.rf, why is None, None, g.context)
    reason = g.reason if isinstance(g, NoGrid) else "spatially constant (after global pooling)"
    return LayerInfo(t.names[n], tuple(shape[1:]), None, None, None, why is None, reason)


def list_layers(model: nn.Module, all_nodes: bool = False) -> list[LayerInfo]:
    """Cut points of ``model`` in execution order, with shape and geometry or the reason there is none.

    Lists every single-tensor cut (``all_nodes``: every tensor-valued node).

    Example:
        >>> from latentmotion import load_model
        >>> [li.stride for li in list_layers(load_model("resnet18", weights="random")) if li.name == "layer2.0.add"]
        [(8, 8)]
    """
    net, _ = _bare(model)
    t, geo, why = _analysis(net)
    return [
        _info(t, n, geo[n], why[n])
        for n in t.nodes
        if t.shape(n) is not None and n not in t.free and n.op != "placeholder" and (all_nodes or why[n] is None)
    ]


# --------------------------------------------------------------------------- splitting


def _nearest_single(t: Traced, node: fx.Node, why: dict) -> list[str]:
    i = t.nodes.index(node)
    ok = [j for j, n in enumerate(t.nodes) if why[n] is None and t.shape(n) is not None]
    before = [j for j in ok if j < i][-1:]
    after = [j for j in ok if j > i][:1]
    return [t.names[t.nodes[j]] for j in before + after]


def _module(t: Traced, graph: fx.Graph, name: str) -> fx.GraphModule:
    """A pruned graph module that owns deep copies of the parameters it uses."""
    gm = fx.GraphModule(t.gm, graph, name)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return copy.deepcopy(gm).eval()


def _edge_graph(t: Traced, cuts: list[tuple[fx.Node, list[int] | None]]) -> fx.Graph:
    """The graph up to the last cut; outputs each cut (permuted to (N, C, H, W) where ``order`` says), one or a tuple."""
    last = max(t.nodes.index(node) for node, _ in cuts)
    graph, env, kept = fx.Graph(), {}, {}
    for i, n in enumerate(t.nodes[: last + 1]):
        env[n] = graph.node_copy(n, lambda a: env[a])
        if i < last and any(n is node for node, _ in cuts):  # later in-place ops (ReLU(inplace=True)) would change it
            kept[n] = graph.call_method("clone", (env[n],))
    outs = [kept.get(node, env[node]) for node, _ in cuts]
    outs = [o if order is None else graph.call_method("permute", (o, *order)) for o, (_, order) in zip(outs, cuts, strict=True)]
    graph.output(outs[0] if len(outs) == 1 else tuple(outs))
    return graph


def _cloud_graph(t: Traced, node: fx.Node, order: list[int] | None) -> fx.Graph:
    graph = fx.Graph()
    feats = graph.placeholder("features")
    feats = graph.call_method("clone", (feats,))  # in-place ops after the cut (ReLU(inplace=True)) must not change the caller's tensor
    restored = feats if order is None else graph.call_method("permute", (feats, *[order.index(d) for d in range(len(order))]))
    env: dict[fx.Node, fx.Node] = {node: restored}

    def lookup(a: fx.Node) -> fx.Node:
        if a not in env:  # from the edge side: a tensor only read for its shape, or a value to recompute
            env[a] = restored if t.is_tensor(a) and a not in t.free else graph.node_copy(a, lookup)
        return env[a]

    for n in t.nodes[t.nodes.index(node) + 1 :]:
        env[n] = graph.node_copy(n, lookup)
    return graph


def split_model(model: nn.Module, layer: str, require_grid: bool = True) -> Split:
    """Cut ``model`` after ``layer`` into edge and cloud sub-models.

    ``cloud(edge(x))`` computes ``model(x)``. Stride, offset and receptive field
    are derived through every operation on the path to the layer
    (:mod:`.geometry`). ``model`` is any traceable ``nn.Module`` taking (N, 3, H, W).

    A layer without a spatial grid (tokens, pooled vectors) is refused with the
    reason, since motion and the codec need a grid; ``require_grid=False``
    splits there anyway for plain edge/cloud inference (stride, offset and rf
    are then None and ``no_grid`` says why).

    Example:
        >>> from latentmotion import load_model
        >>> s = split_model(load_model("efficientnet_lite0"), "_blocks.4.add")
        >>> s.stride
        (8, 8)
    """
    net, normalize = _bare(model)
    t, geo, why = _analysis(net)
    node = t.by_name.get(layer)
    if node is None or t.shape(node) is None:
        choices = [li.name for li in list_layers(model)]
        raise UnknownNameError("layer", layer, choices, hint=f"see `latentmotion layers {getattr(model, 'name', '')}`".strip())
    if node in t.free or node.op in ("placeholder", "get_attr"):
        raise InputError(f"layer {layer!r} does not depend on the input; it cannot be a cut point")
    if why[node] is not None:
        near = ", ".join(repr(n) for n in _nearest_single(t, node, why))
        raise InputError(f"cutting at {layer!r} would send several tensors to the cloud ({why[node]}); nearest single-tensor layers: {near}")
    g = geo[node]
    if require_grid and not isinstance(g, Geometry):
        raise InputError(f"layer {layer!r} has no spatial grid ({_info(t, node, g, None).no_grid}); choose an earlier layer (see `latentmotion layers`)")
    order = _grid_order(t, g, node) if isinstance(g, Geometry) else None
    edge: nn.Module = _module(t, _edge_graph(t, [(node, order)]), "Edge")
    if normalize is not None:
        edge = nn.Sequential(copy.deepcopy(normalize), edge).eval()
    cloud = _module(t, _cloud_graph(t, node, order), "Cloud")
    if isinstance(g, Geometry):
        return Split(edge, cloud, layer, g.stride, g.offset, g.rf, None, g.context)
    return Split(edge, cloud, layer, None, None, None, _info(t, node, g, None).no_grid)


class _Named(nn.Module):
    """Wraps a module returning a tuple so that it returns ``{layer: tensor}``."""

    def __init__(self, body: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.body, self.names = body, names

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.body(x)
        return dict(zip(self.names, out if len(self.names) > 1 else (out,), strict=True))


def edge_multi(model: nn.Module, layers: list[str] | tuple[str, ...]) -> nn.Module:
    """One edge sub-model that returns ``{layer: features}`` for several cuts in one forward pass.

    Each output equals ``split_model(model, layer).edge(x)`` (same tracer, same
    (N, C, H, W) layout); the shared part of the network runs once.

    Example:
        >>> import torch
        >>> from latentmotion import load_model
        >>> m = load_model("efficientnet_lite0")
        >>> f = edge_multi(m, ["_blocks.2.add", "_blocks.4.add"]).eval()
        >>> {k: tuple(v.shape) for k, v in f(torch.rand(1, 3, 224, 224)).items()}
        {'_blocks.2.add': (1, 24, 56, 56), '_blocks.4.add': (1, 40, 28, 28)}
    """
    net, normalize = _bare(model)
    t, geo, _ = _analysis(net)
    cuts = []
    for layer in layers:
        split_model(model, layer)  # the same checks and errors as a single cut
        node = t.by_name[layer]
        g = geo[node]
        cuts.append((node, _grid_order(t, g, node) if isinstance(g, Geometry) else None))
    body: nn.Module = _module(t, _edge_graph(t, cuts), "EdgeMulti")
    if normalize is not None:
        body = nn.Sequential(copy.deepcopy(normalize), body)
    return _Named(body, tuple(layers)).eval()
