"""Trace a network with torch.fx and probe every node at two input sizes.

Only public torch.fx API is used. The tracer looks inside every module except
torch's own built-in layers (``nn.Conv2d``, ``nn.ReLU``, ...), whose geometry
:mod:`.geometry` knows; torchvision's blocks (``Conv2dNormActivation``,
``SqueezeExcitation``, ``Permute``, ...) are traced through, so no block hides
a stride.

Node names follow torchvision's feature-extraction convention: the module path
plus the operation, with ``_1``, ``_2`` ... for repeats inside one module, e.g.
``"layer2.0.add"`` or ``"features.3.block.2.avgpool"``.

Each node is probed at two inputs, (2, 3, 224, 224) and (1, 3, 288, 288): a
stride must agree with the change of shape between them, and a shape value
(``x.size(0)``) is known to follow the batch only if it does so at both.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import fx, nn

from ..errors import InputError

__all__ = ["PROBES", "Traced", "probe", "trace", "traced"]

PROBES = ((2, 224), (1, 288))  # (batch, side) of the two probe inputs
FAILED = "failed"  # the node could not run at this probe size (the model refuses it)


# While it traces, torch.fx patches nn.Module.__call__ and __getattr__ for the whole process: two traces at
# once would restore each other's patches, so one traces at a time.
_FX_PATCH = threading.Lock()


class QualnameTracer(fx.Tracer):
    """fx tracer that records each node's module path and traces into non-torch modules.

    Only the tracing thread is traced: other threads running their own modules meanwhile (a server
    classifying frames while it prepares another split) pass straight through the process-wide patch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = ""
        self.qualname: dict[fx.Node, str] = {}
        self._count: dict[str, int] = defaultdict(int)
        self._thread: int | None = None

    def trace(self, root, concrete_args=None):
        with _FX_PATCH:
            self._thread = threading.get_ident()
            try:
                return super().trace(root, concrete_args)
            finally:
                self._thread = None

    def _foreign(self) -> bool:
        return threading.get_ident() != self._thread

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return attr_val if self._foreign() else super().getattr(attr, attr_val, parameter_proxy_cache)

    def call_module(self, m: nn.Module, forward, args, kwargs):
        if self._foreign():
            return forward(*args, **kwargs)
        outer = self.current
        try:
            self.current = self.path_of_module(m)
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.current = outer

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, *rest, **kw):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, *rest, **kw)
        node = proxy.node
        base = self.current if kind == "call_module" else ".".join(p for p in (self.current, node.name) if p)
        base = re.sub(r"(.)_[0-9]+$", r"\1", base)  # fx numbers globally; names are numbered per module
        n = self._count[base]
        self._count[base] += 1
        self.qualname[node] = base if n == 0 else f"{base}_{n}"
        return proxy


def trace(net: nn.Module) -> tuple[fx.GraphModule, dict[fx.Node, str]]:
    """Trace ``net`` in eval mode; returns the graph module and each node's name."""
    tracer = QualnameTracer()
    was_training = net.training
    net.eval()
    try:
        graph = tracer.trace(net)
    except Exception as exc:  # fx raises many kinds for untraceable Python
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot trace {type(net).__name__} with torch.fx: {first}") from None
    finally:
        net.train(was_training)
    return fx.GraphModule(tracer.root, graph, type(net).__name__), tracer.qualname


def _summary(v):
    """What a probe keeps of a value: a tensor's shape, a tuple of those, or the value itself."""
    if isinstance(v, torch.Tensor):
        return ("tensor", tuple(v.shape))
    if isinstance(v, (tuple, list)) and v and all(isinstance(e, torch.Tensor) for e in v):
        return ("tensors", tuple(tuple(e.shape) for e in v))
    return ("value", v)


class _Probe(fx.Interpreter):
    """Runs the graph once, recording each node's summary; a node that fails is FAILED, and so are its users."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.seen: dict[fx.Node, object] = {}

    def run_node(self, n: fx.Node):
        if any(self.seen.get(a) == FAILED for a in n.all_input_nodes):
            out = FAILED
        else:
            try:
                out = super().run_node(n)
            except Exception:  # the model refuses this size (an assertion, a fixed window size)
                out = FAILED
        self.seen[n] = FAILED if out is FAILED else _summary(out)
        return out


def probe(gm: fx.GraphModule, batch: int, side: int) -> dict[fx.Node, object]:
    """Summary of every node for an input (batch, 3, side, side) of the module's dtype and device."""
    p = next(iter(gm.parameters()), None)
    x = torch.zeros(batch, 3, side, side, dtype=p.dtype if p is not None else torch.float32, device=p.device if p is not None else "cpu")
    pr = _Probe(gm)
    with torch.no_grad():
        pr.run(x)  # never raises: failing nodes are recorded as FAILED
    return pr.seen


@dataclass
class Traced:
    """A traced network with both probes.

    Attributes:
        gm: the graph module (shares parameters with the traced network).
        nodes: nodes in execution order.
        names: node -> feature-extraction name.
        by_name: name -> node.
        probes: one summary dict per entry of :data:`PROBES`.
        free: nodes computable without the input (parameters, constants).
    """

    gm: fx.GraphModule
    nodes: list[fx.Node]
    names: dict[fx.Node, str]
    by_name: dict[str, fx.Node]
    probes: tuple[dict, dict]
    free: set[fx.Node]

    def shape(self, n: fx.Node, k: int = 0) -> tuple[int, ...] | None:
        """Tensor shape of ``n`` at probe ``k``, or None when it is not a tensor or failed."""
        s = self.probes[k].get(n)
        return s[1] if isinstance(s, tuple) and s[0] == "tensor" else None

    def is_tensor(self, n: fx.Node) -> bool:
        s = self.probes[0].get(n)
        return isinstance(s, tuple) and s[0] in ("tensor", "tensors")


def traced(net: nn.Module) -> Traced:
    """Trace and probe ``net`` (see module docstring)."""
    gm, names = trace(net)
    nodes = list(gm.graph.nodes)
    for n in nodes:
        names.setdefault(n, n.name)
    free: set[fx.Node] = set()
    for n in nodes:
        if n.op == "get_attr" or (n.op in ("call_function", "call_method", "call_module") and all(a in free for a in n.all_input_nodes)):
            free.add(n)
    modes = {m: m.training for m in net.modules()}
    gm.eval()  # probes must not update BatchNorm statistics of a model in training mode
    try:
        probes = tuple(probe(gm, b, s) for b, s in PROBES)
    finally:
        for m, training in modes.items():
            m.training = training
    by_name = {names[n]: n for n in nodes if n.op != "output"}
    return Traced(gm, nodes, names, by_name, probes, free)  # type: ignore[arg-type]
