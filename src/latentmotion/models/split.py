"""Split a network into edge and cloud sub-models at one layer (Fig. 1).

Layer names are torchvision's feature-extraction node names
(:func:`torchvision.models.feature_extraction.get_graph_node_names`), e.g.
``"layer2.0.add"`` for ResNet-34 or ``"features.transition2.pool"`` for
DenseNet-121. A layer is a valid cut point when the edge sends exactly one
tensor: every value computed before it that is still needed after it must be
that layer's output (parameters and constants are copied to both sides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import fx, nn

from ..errors import InputError, UnknownNameError
from .geometry import Geometry, propagate
from .zoo import ImageNetModel

PROBE_SIZE = 224  # input size used to list shapes


@dataclass(frozen=True)
class LayerInfo:
    """One candidate cut point.

    Attributes:
        name: node name.
        shape: (C, H, W) of its output for a 224x224 input.
        stride, offset, rf: see :class:`Split`; ``None`` where the grid does not
            map to the input (after global pooling, for instance).
        single: whether cutting here sends a single tensor.
    """

    name: str
    shape: tuple[int, ...]
    stride: tuple[int, int] | None
    offset: tuple[float, float] | None
    rf: tuple[int, int] | None
    single: bool


@dataclass(frozen=True)
class Split:
    """A network cut into edge and cloud sub-models.

    Attributes:
        edge: maps images (N, 3, H, W) in [0, 1] to the layer's tensor.
        cloud: maps that tensor to the network's output.
        layer: node name of the cut.
        stride: (sy, sx) input pixels per latent pixel.
        offset: (oy, ox): latent index (v, u) sits at input coordinate
            ``(sy * v + oy, sx * u + ox)``, pixel centres at integer coordinates.
        rf: (ry, rx) receptive-field extent in input pixels.
    """

    edge: nn.Module
    cloud: nn.Module
    layer: str
    stride: tuple[int, int]
    offset: tuple[float, float]
    rf: tuple[int, int]

    def latent_to_input(self, v: float, u: float) -> tuple[float, float]:
        """Input coordinate (y, x) of latent index (v, u)."""
        return (self.stride[0] * v + self.offset[0], self.stride[1] * u + self.offset[1])

    def border(self) -> tuple[int, int]:
        """Latent pixels at each border whose receptive field can reach outside the frame."""
        return tuple(math.ceil(((r - 1) / 2 - o) / s) if (r - 1) / 2 > o else 0 for r, o, s in zip(self.rf, self.offset, self.stride))  # type: ignore[return-value]


# --------------------------------------------------------------------------- tracing


@dataclass
class _Traced:
    gm: fx.GraphModule
    nodes: list[fx.Node]
    names: dict[fx.Node, str]
    by_name: dict[str, fx.Node]
    single: dict[fx.Node, bool]
    free: set[fx.Node]  # nodes computable without the input (parameters, constants)


def _tracer() -> fx.Tracer:
    from torchvision.models import feature_extraction as fe

    kwargs = fe._set_default_tracer_kwargs(None) if hasattr(fe, "_set_default_tracer_kwargs") else {}
    return fe.NodePathTracer(**kwargs)


def _trace(net: nn.Module) -> _Traced:
    tracer = _tracer()
    was_training = net.training
    net.eval()
    try:
        graph = tracer.trace(net)
    except Exception as exc:  # fx raises many kinds for untraceable Python
        raise InputError(f"cannot trace {type(net).__name__} with torch.fx: {exc}") from None
    finally:
        net.train(was_training)
    gm = fx.GraphModule(tracer.root, graph, type(net).__name__)
    nodes = list(gm.graph.nodes)
    names = {n: tracer.node_to_qualname.get(n, n.name) for n in nodes}
    index = {n: i for i, n in enumerate(nodes)}
    free = set()
    for n in nodes:
        if n.op == "get_attr" or (n.op not in ("placeholder", "output") and all(a in free for a in n.all_input_nodes) and n.all_input_nodes):
            free.add(n)
    # A prefix cut after node i is single-tensor when no earlier input-dependent
    # node is used after i.
    single: dict[fx.Node, bool] = {}
    reach = -1
    for i, n in enumerate(nodes):
        if n.op != "output" and n not in free:
            last = max((index[u] for u in n.users), default=i)
            single[n] = reach <= i and n.op not in ("placeholder",)
            reach = max(reach, last)
        else:
            single[n] = False
    by_name = {names[n]: n for n in nodes if n.op not in ("output",)}
    return _Traced(gm, nodes, names, by_name, single, free)


@lru_cache(maxsize=8)
def _probe(net: nn.Module) -> tuple[_Traced, dict[fx.Node, tuple[int, ...]], dict]:
    t = _trace(net)
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        p = next(iter(net.parameters()), torch.empty(0))
        ShapeProp(t.gm).propagate(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, dtype=p.dtype, device=p.device))
    shapes = {}
    for n in t.nodes:
        meta = n.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            shapes[n] = tuple(meta.shape[1:])
    return t, shapes, propagate(t.gm)


def _bare(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    if isinstance(model, ImageNetModel):
        return model.net, model.normalize
    return model, None


def list_layers(model: nn.Module, all_nodes: bool = False) -> list[LayerInfo]:
    """Cut points of ``model`` in execution order, with shape, stride, offset.

    Only 4-D tensors with a known grid are listed unless ``all_nodes``.
    """
    net, _ = _bare(model)
    t, shapes, geo = _probe(net)
    out = []
    for n in t.nodes:
        if n.op in ("placeholder", "output", "get_attr") or n in t.free:
            continue
        g = geo.get(n)
        grid = isinstance(g, Geometry)
        shape = shapes.get(n)
        if not all_nodes and not (grid and shape is not None and len(shape) == 3 and t.single[n]):
            continue
        out.append(
            LayerInfo(
                name=t.names[n],
                shape=shape or (),
                stride=g.stride if grid else None,
                offset=g.offset if grid else None,
                rf=g.rf if grid else None,
                single=t.single[n],
            )
        )
    return out


def _nearest_single(t: _Traced, node: fx.Node, geo) -> list[str]:
    i = t.nodes.index(node)
    ok = [j for j, n in enumerate(t.nodes) if t.single[n] and isinstance(geo.get(n), Geometry)]
    before = [j for j in ok if j < i][-1:]
    after = [j for j in ok if j > i][:1]
    return [t.names[t.nodes[j]] for j in before + after]


def _pruned(gm: fx.GraphModule) -> fx.GraphModule:
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def split_model(model: nn.Module, layer: str) -> Split:
    """Cut ``model`` after ``layer`` into edge and cloud sub-models.

    ``cloud(edge(x))`` computes ``model(x)``. Stride, offset and receptive field
    are derived from the kernels, strides and paddings on the path to the layer.

    Example:
        >>> from latentmotion import load_model
        >>> s = split_model(load_model("efficientnet_lite0"), "_blocks.3.add")
        >>> s.stride
        (8, 8)
    """
    net, normalize = _bare(model)
    t, shapes, geo = _probe(net)
    if layer not in t.by_name:
        choices = [li.name for li in list_layers(model)]
        raise UnknownNameError("layer", layer, choices, hint=f"see `latentmotion layers {getattr(model, 'name', '')}`".strip())
    node = t.by_name[layer]
    if node in t.free or node.op in ("placeholder", "get_attr"):
        raise InputError(f"layer {layer!r} does not depend on the input; it cannot be a cut point")
    if not t.single[node]:
        near = _nearest_single(t, node, geo)
        raise InputError(
            f"cutting at {layer!r} would send several tensors to the cloud (it lies inside a block); "
            f"nearest single-tensor layers: {', '.join(repr(n) for n in near)}"
        )
    g = geo[node]
    if not isinstance(g, Geometry):
        raise InputError(f"layer {layer!r} has no spatial grid tied to the input ({g}); choose an earlier layer")

    edge_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    stop = t.nodes.index(node)
    for n in t.nodes[: stop + 1]:
        env[n] = edge_graph.node_copy(n, lambda a: env[a])
    edge_graph.output(env[node])
    edge = _pruned(fx.GraphModule(t.gm, edge_graph, "Edge"))

    cloud_graph = fx.Graph()
    cenv: dict[fx.Node, fx.Node] = {node: cloud_graph.placeholder("features")}

    def lookup(a: fx.Node) -> fx.Node:
        if a not in cenv:  # a free node from the edge side: recompute it here
            cenv[a] = cloud_graph.node_copy(a, lookup)
        return cenv[a]

    for n in t.nodes[stop + 1 :]:
        cenv[n] = cloud_graph.node_copy(n, lookup)
    cloud = _pruned(fx.GraphModule(t.gm, cloud_graph, "Cloud"))
    edge_mod: nn.Module = nn.Sequential(normalize, edge) if normalize is not None else edge
    return Split(edge=edge_mod.eval(), cloud=cloud.eval(), layer=layer, stride=g.stride, offset=g.offset, rf=g.rf)
