"""The channel dependency graph of a CNN: which layers' channels must be removed together.

``channel_groups(model)`` traces the model with ``torch.fx`` (qrepro's quantized layers as
leaves) and follows every tensor's channel dimension through the graph.  A convolution or
linear layer starts new channels (it *writes* them); BatchNorm, activations, pooling,
dropout and depthwise convolutions carry them through; a residual sum (``a + b``) or a
channel-wise product (squeeze-and-excitation) *couples* its operands' channels into one
group; ``flatten`` turns each channel into a block of features a linear layer reads.  A
:class:`ChannelGroup` is one coupled set: its writers, the BatchNorms and depthwise
convolutions on it (sliced along with it) and its readers (which lose input channels).

A group cannot be pruned when it touches the model's input or output, or passes through
something the graph does not know (a concatenation, a grouped convolution, an unknown
layer or function): it is kept whole, with the reason recorded.  A model ``torch.fx`` cannot
trace (Python control flow on tensor values) is refused with one line.

Why torch.fx rather than Torch-Pruning's ``DependencyGraph``: the rules above are the whole
mechanism (one module, no dependency the GPU machines lack), and the quantized layers
(their frozen per-filter scales and codes) are ordinary leaves here instead of a custom
pruner registered with a tracer that does not know them (``docs/choices.md``).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import BadInput
from .quantize import is_quantized


class GraphError(BadInput):
    """A model whose channel dependencies cannot be traced."""


@dataclass
class ChannelGroup:
    """Channels that are removed together.

    ``writers``: convolutions / linear layers whose output channels these are; ``norms``:
    BatchNorms on them; ``through``: depthwise convolutions that carry them (sliced in and
    out); ``readers``: layers that read them, each with ``factors[reader]`` input features per
    channel (1, or ``H * W`` where a flatten came between); ``blocked``: why the group cannot
    be pruned (empty: it can).
    """

    name: str
    writers: list[str]
    norms: list[str] = field(default_factory=list)
    through: list[str] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)
    factors: dict[str, int] = field(default_factory=dict)
    channels: int = 0
    blocked: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.blocked and bool(self.writers)

    @property
    def coupled(self) -> bool:
        """Several layers write these channels (a residual stream)."""
        return len(self.writers) > 1


# layers and functions that keep the channel dimension as it is (element-wise, pooling, dropout)
CARRY_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                 nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d,
                 nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
CARRY_FUNCTIONS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.hardtanh,
                   F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.relu,
                   torch.sigmoid, torch.tanh, torch.clamp, F.sigmoid, F.tanh}
CARRY_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clamp", "clamp_", "contiguous", "clone", "float",
                 "to", "detach"}
# functions whose tensor operands share one channel space (broadcasting a (B, C, 1, 1) gate included)
COUPLE_FUNCTIONS = {operator.add, operator.iadd, operator.sub, operator.mul, operator.imul, torch.add, torch.mul,
                    torch.sub}
COUPLE_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_"}
SPATIAL_REDUCTIONS = {"mean", "sum", "amax"}  # x.mean((2, 3)): channels kept, the spatial dimensions gone
NON_TENSOR = {"size", "dim", "numel"}


class _Tracer(fx.Tracer):
    """``torch.fx``'s tracer with qrepro's quantized layers as leaves (their forward quantizes)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_quantized(m) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.Graph:
    """The ``torch.fx`` graph of ``model``; a model fx cannot trace is refused with one line."""
    try:
        return _Tracer().trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, NotImplementedError... on dynamic control flow
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GraphError(f"{type(model).__name__} cannot be traced by torch.fx ({type(err).__name__}: {first[:160]}); "
                         "qrepro prunes models whose forward has no Python control flow on tensor values: move "
                         "such branches out of forward") from None


class _Spaces:
    """Union-find over channel spaces, with what each one holds."""

    def __init__(self):
        self.parent: list[int] = []
        self.facts: list[dict] = []

    def new(self, blocked: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.facts.append({"norms": [], "through": [], "readers": [], "blocked": []})
        if blocked:
            self.facts[-1]["blocked"].append(blocked)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            if b < a:
                a, b = b, a
            self.parent[b] = a
            for k, v in self.facts[b].items():
                self.facts[a][k].extend(v)
        return a

    def add(self, i: int, kind: str, item):
        facts = self.facts[self.find(i)][kind]
        if item not in facts:
            facts.append(item)


@dataclass(frozen=True)
class _Value:
    """A tensor in the graph: its channel space and whether it was flattened (channels become
    blocks of features along dimension 1)."""

    space: int
    flat: bool = False


def _describe(target) -> str:
    return getattr(target, "__name__", None) or str(target)


def _build(model: nn.Module) -> tuple[_Spaces, dict[str, int], list[tuple[str, str]]]:
    """Propagate channel spaces through the traced graph: ``(spaces, {writer: its space}, (conv, bn) pairs)``."""
    graph = trace(model)
    spaces = _Spaces()
    values: dict[fx.Node, _Value | None] = {}
    out_space: dict[str, int] = {}  # a module called twice writes the same channels
    users = {n: len(n.users) for n in graph.nodes}
    pairs: list[tuple[str, str]] = []

    def tensors(node) -> list[_Value]:
        found = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(values.get(a)))
        return [v for v in found if v is not None]

    def block(vals, reason):
        for v in vals:
            spaces.add(v.space, "blocked", reason)

    def fresh(reason=None) -> _Value:
        return _Value(spaces.new(reason))

    def writes(name: str) -> _Value:
        if name in out_space:
            return _Value(out_space[name])
        out_space[name] = spaces.new()  # the writers of a group are read from out_space, in forward order
        return _Value(out_space[name])

    for node in graph.nodes:
        ins = tensors(node)
        first = values.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "placeholder":
            values[node] = fresh("the model's input")
        elif node.op == "get_attr":
            values[node] = fresh(f"a tensor attribute ({node.target}) used directly")
        elif node.op == "output":
            block(ins, "the model's output")
        elif node.op == "call_module":
            name, m = node.target, model.get_submodule(node.target)
            if first is None:
                values[node] = fresh(f"{name} reads no traced tensor")
            elif isinstance(m, nn.Conv2d):
                if first.flat:
                    block([first], f"{name} reads flattened features")
                if m.groups == 1:
                    spaces.add(first.space, "readers", (name, False))
                    values[node] = writes(name)
                elif m.groups == m.in_channels == m.out_channels:
                    spaces.add(first.space, "through", name)  # depthwise: one filter per channel
                    values[node] = first
                else:
                    reason = f"{name} is a grouped convolution (groups={m.groups}), which is not supported"
                    block([first], reason)
                    values[node] = fresh(reason)
            elif isinstance(m, nn.Linear):
                spaces.add(first.space, "readers", (name, first.flat))
                values[node] = writes(name)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                spaces.add(first.space, "norms", name)
                prev = node.args[0]
                if prev.op == "call_module" and users[prev] == 1 and isinstance(model.get_submodule(prev.target),
                                                                                 nn.Conv2d):
                    pairs.append((prev.target, name))
                values[node] = first
            elif isinstance(m, nn.Flatten):
                if m.start_dim != 1:
                    block([first], f"{name} flattens from dimension {m.start_dim}, not 1")
                values[node] = _Value(first.space, True)
            elif isinstance(m, CARRY_MODULES):
                values[node] = first
            else:
                reason = f"{name} ({type(m).__name__}) is a layer the dependency graph does not know"
                block(ins, reason)
                values[node] = fresh(reason)
        else:  # call_function, call_method
            target = node.target
            if not ins:
                values[node] = None  # sizes, shapes, constants
            elif target in NON_TENSOR or target is getattr:
                values[node] = None
            elif target in CARRY_FUNCTIONS or target in CARRY_METHODS:
                values[node] = first if first is not None else ins[0]
            elif target in (torch.flatten, "flatten"):
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                if start != 1:
                    block(ins, f"flatten from dimension {start}, not 1")
                values[node] = _Value(ins[0].space, True)
            elif target in ("view", "reshape") or target is torch.reshape:
                shape = node.args[1:] if target != torch.reshape else node.args[1]
                if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
                    shape = shape[0]
                if len(shape) == 2 and shape[-1] == -1:
                    values[node] = _Value(ins[0].space, True)  # x.view(x.size(0), -1)
                else:
                    block(ins, f"a {target} to {shape}")
                    values[node] = fresh(f"a {target}")
            elif target in SPATIAL_REDUCTIONS and _reduces_space_only(node):
                values[node] = first
            elif target in COUPLE_FUNCTIONS or target in COUPLE_METHODS:
                if len({v.flat for v in ins}) > 1:
                    block(ins, f"{_describe(target)} of flattened and unflattened tensors")
                s = ins[0].space
                for v in ins[1:]:
                    s = spaces.union(s, v.space)
                values[node] = _Value(s, ins[0].flat)
            else:
                reason = f"{_describe(target)} is an operation the dependency graph does not know"
                block(ins, reason)
                values[node] = fresh(reason)
    return spaces, out_space, pairs


def _reduces_space_only(node: fx.Node) -> bool:
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    return bool(dims) and all(d in (2, 3, -1, -2) for d in dims)


def _channels(model: nn.Module, name: str) -> int:
    m = model.get_submodule(name)
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def _in_features(model: nn.Module, name: str) -> int:
    m = model.get_submodule(name)
    return m.in_channels if isinstance(m, nn.Conv2d) else m.in_features


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names if "." in n] or [n.split(".") for n in names]
    prefix = []
    for tokens in zip(*parts):
        if len(set(tokens)) != 1:
            break
        prefix.append(tokens[0])
    return ".".join(prefix)


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """Every group of channels that has a writer, in forward order of its first writer.

    Names: a group one layer writes is named after that layer (``layer1.0.conv1``); a
    coupled group after the longest dotted prefix its nested writers share (``layer2``),
    or its first writer where that prefix is empty or names another group too.
    """
    spaces, out_space, _ = _build(model)
    order = list(out_space)
    roots: dict[int, list[str]] = {}
    for name in order:
        roots.setdefault(spaces.find(out_space[name]), []).append(name)
    groups, prefixes = [], {}
    for root, writers in roots.items():
        prefixes[root] = _common_prefix(writers) if len(writers) > 1 else writers[0]
    counts = {}
    for p in prefixes.values():
        counts[p] = counts.get(p, 0) + 1
    for root, writers in roots.items():
        facts = spaces.facts[root]
        name = prefixes[root] if prefixes[root] and counts[prefixes[root]] == 1 else writers[0]
        channels = _channels(model, writers[0])
        blocked = list(dict.fromkeys(facts["blocked"]))
        sizes = {_channels(model, w) for w in writers}
        if len(sizes) > 1:
            blocked.append(f"its writers have different widths {sorted(sizes)}")
        readers, factors = [], {}
        for reader, flat in facts["readers"]:
            n_in = _in_features(model, reader)
            factor = n_in // channels if flat and n_in % channels == 0 else 1
            if n_in != channels * factor:
                blocked.append(f"{reader} reads {n_in} features, not a multiple of the {channels} channels")
            readers.append(reader)
            factors[reader] = factor
        groups.append(ChannelGroup(name, list(writers), list(facts["norms"]), list(facts["through"]), readers,
                                   factors, channels, blocked))
    return groups


def conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """``{convolution: BatchNorm}`` for every convolution whose output goes only into that BatchNorm."""
    return dict(_build(model)[2])
