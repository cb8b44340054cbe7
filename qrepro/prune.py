"""Physical filter removal for (quantized) residual networks, and BatchNorm re-estimation.

A pruned filter is removed: its output channel, its BatchNorm channel and the matching
input channel of every layer that reads it.  What is pruned is a :class:`PruneGroup`:

* ``mode="block"`` (default): the first convolution of every basic block
  (``layer2.1.conv1``); its only reader is the block's second convolution, so every
  residual sum stays intact.
* ``mode="stage"``: the channels of a residual stage as one coupled group (``layer2``):
  every layer that writes into the stage's residual stream (each block's ``conv2``, the
  stage's projection shortcut, or the stem for the first stage) loses the same channels,
  and every layer that reads it (each block's ``conv1``, the next stage's first block and
  projection, or the classifier) loses the matching inputs.

Why our own code rather than Torch-Pruning's dependency graph: the models here are
residual networks of a known layout, whose couplings fit in the forty lines of
:func:`prune_groups`; the criterion needs the *quantized* codes, the frozen scales and the
BatchNorm of each group, which we read directly; and a dependency tracer would have to
learn our quantized layers' extra buffers (``w_scale``).  A model of another layout needs
its own ``prune_groups``.

Conventions (parameters, stated here once):

* Filters kept per group: ``max(1, floor((1 - r) N))``, i.e. at least the fraction ``r``
  is removed, so a size bound computed from the continuous ratios is never exceeded.
* Scale factors (``scales="frozen"``, default): every quantized layer's scale (XNOR's
  per-filter ``alpha``, DoReFa's ``max|tanh(w)|``) is frozen at its pre-pruning value, so
  a pruned model computes exactly what the unpruned model computes with the removed
  channels masked out after quantization; fine-tuning and export keep the frozen scales.
  ``scales="recompute"`` recomputes them from the remaining weights instead.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn as nn

from .criteria import CRITERIA, LayerView, check_options, select_filters
from .device import model_device, to_device
from .errors import BadInput
from .quantize import conv_from, is_quantized, linear_from

MODES = ("block", "stage")


class PruneError(BadInput):
    """Bad pruning input: ratios, layer names, modes, kept indices."""
SCALE_CONVENTIONS = ("frozen", "recompute")


@dataclass
class PruneGroup:
    """Channels that must be removed together.  ``writers``: ``(conv, bn)`` names producing
    the channels; ``readers``: names of convolutions / linear layers consuming them."""

    name: str
    writers: list[tuple[str, str]]
    readers: list[str]
    channels: int = 0


def _blocks(model: nn.Module) -> list[tuple[str, list[str]]]:
    """``[(stage_name, [block names])]`` for models laid out as ``layer{k}.{i}`` basic blocks."""
    stages = []
    k = 1
    while hasattr(model, f"layer{k}"):
        stage = getattr(model, f"layer{k}")
        names = [f"layer{k}.{i}" for i in range(len(stage))]
        for n in names:
            b = model.get_submodule(n)
            if not all(hasattr(b, a) for a in ("conv1", "bn1", "conv2", "bn2")):
                raise PruneError(f"{n} is not a basic block (conv1/bn1/conv2/bn2); prune.py supports ResNets of "
                                 "basic blocks only")
        stages.append((f"layer{k}", names))
        k += 1
    if not stages:
        raise PruneError("the model has no layer1, layer2, ...: prune.py supports ResNets of basic blocks "
                         "(qrepro.models.resnet20 / resnet18)")
    return stages


def prune_groups(model: nn.Module, mode: str = "block") -> dict[str, PruneGroup]:
    """The prunable groups of ``model`` by name, in forward order."""
    if mode not in MODES:
        raise PruneError(f"unknown pruning mode {mode!r}; accepted values: {', '.join(MODES)}")
    stages = _blocks(model)
    groups: dict[str, PruneGroup] = {}
    if mode == "block":
        for _, blocks in stages:
            for b in blocks:
                conv = model.get_submodule(f"{b}.conv1")
                groups[f"{b}.conv1"] = PruneGroup(f"{b}.conv1", [(f"{b}.conv1", f"{b}.bn1")], [f"{b}.conv2"],
                                                  conv.out_channels)
        return groups
    for s, (stage, blocks) in enumerate(stages):
        first = model.get_submodule(blocks[0])
        if first.downsample is not None:
            writers = [(f"{blocks[0]}.downsample.0", f"{blocks[0]}.downsample.1")]
        elif s == 0:
            writers = [("conv1", "bn1")]  # the stem feeds the first stage through identity shortcuts
        else:
            raise PruneError(f"{stage} has no projection shortcut: its channels are coupled with the previous "
                             "stage's, which stage mode does not merge")
        writers += [(f"{b}.conv2", f"{b}.bn2") for b in blocks]
        # block 0 of a stage with a projection reads the previous stage's channels, not this stage's
        readers = [f"{b}.conv1" for b in (blocks if first.downsample is None else blocks[1:])]
        if s + 1 < len(stages):
            nxt = stages[s + 1][1][0]
            readers.append(f"{nxt}.conv1")
            if model.get_submodule(nxt).downsample is not None:
                readers.append(f"{nxt}.downsample.0")
        else:
            readers.append(_classifier_name(model))
        channels = model.get_submodule(writers[-1][0]).out_channels
        groups[stage] = PruneGroup(stage, writers, readers, channels)
    return groups


def _classifier_name(model: nn.Module) -> str:
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise PruneError("stage mode needs a final linear classifier")
    return linears[-1]


def prunable_layers(model: nn.Module, mode: str = "block") -> list[str]:
    """Names accepted as keys of ``prune(model, {name: ratio})`` (block mode: the first
    convolution of every basic block; stage mode: ``layer1``, ``layer2``, ...)."""
    return list(prune_groups(model, mode))


def n_keep(channels: int, ratio: float) -> int:
    """Filters kept when pruning ``ratio`` of ``channels``: ``max(1, floor((1 - r) N))``."""
    return max(1, math.floor((1.0 - ratio) * channels + 1e-9))


def check_ratios(model: nn.Module, ratios, mode: str = "block") -> dict[str, float]:
    """Normalize ``ratios`` (one float, or ``{name: ratio}``) to one ratio per group, validated."""
    names = prunable_layers(model, mode)

    def number(r, n):
        if isinstance(r, bool) or not isinstance(r, (int, float)):
            raise PruneError(f"pruning ratio for {n} must be a number in [0, 1), got {r!r}; pass one number or "
                             "{layer name: ratio}")
        return float(r)

    if isinstance(ratios, Mapping):
        unknown = [k for k in ratios if k not in names]
        if unknown:
            raise PruneError(f"not prunable in mode {mode!r}: {', '.join(map(str, unknown))}; "
                             f"prunable layers: {', '.join(names)}")
        out = {n: number(ratios.get(n, 0.0), n) for n in names}
    else:
        out = {n: number(ratios, "every layer") for n in names}
    for n, r in out.items():
        if not (0.0 <= r < 1.0) or math.isnan(r):
            raise PruneError(f"pruning ratio for {n} must be in [0, 1), got {r}")
    return out


def layer_view(model: nn.Module, group: PruneGroup) -> LayerView:
    """The criterion's view of a group: quantized writers' codes (full-precision writers
    only if no writer is quantized), concatenated per channel; ``|gamma|`` summed."""
    convs = [model.get_submodule(c) for c, _ in group.writers]
    bns = [model.get_submodule(b) for _, b in group.writers]
    quant = [c for c in convs if is_quantized(c)]
    chosen = quant or convs
    if quant:
        kinds = {c.spec.code_kind for c in quant}
        kind = kinds.pop() if len(kinds) == 1 else "levels"
        codes = torch.cat([c.weight_codes() for c in quant], 1)
    else:
        kind, codes = "float", torch.cat([c.weight.detach().flatten(1) for c in convs], 1)
    latent = torch.cat([c.weight.detach().flatten(1) for c in chosen], 1)
    gamma = sum(b.weight.detach().abs() for b in bns)
    beta = sum(b.bias.detach() for b in bns)
    return LayerView(group.name, codes, latent, kind, gamma, beta)


# --------------------------------------------------------------------------- slicing
def _replace(model: nn.Module, name: str, new: nn.Module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _slice_out(model: nn.Module, conv_name: str, bn_name: str, keep: torch.Tensor):
    conv = model.get_submodule(conv_name)
    spec = conv.spec if is_quantized(conv) else None
    new = conv_from(conv, spec, out_channels=len(keep)).to(device=conv.weight.device, dtype=conv.weight.dtype)
    keep = keep.to(conv.weight.device)
    state = conv.state_dict()
    state["weight"] = state["weight"][keep]
    if conv.bias is not None:
        state["bias"] = state["bias"][keep]
    if spec is not None and spec.weight_quantizer.per_filter_scale(spec):
        state["w_scale"] = state["w_scale"][keep]
    new.load_state_dict(state)
    _replace(model, conv_name, new)
    bn = model.get_submodule(bn_name)
    new_bn = type(bn)(len(keep), eps=bn.eps, momentum=bn.momentum, affine=bn.affine).to(
        device=bn.weight.device, dtype=bn.weight.dtype)
    bstate = bn.state_dict()
    for k in ("weight", "bias", "running_mean", "running_var"):
        bstate[k] = bstate[k][keep]
    new_bn.load_state_dict(bstate)
    _replace(model, bn_name, new_bn)


def _slice_in(model: nn.Module, name: str, keep: torch.Tensor):
    layer = model.get_submodule(name)
    spec = layer.spec if is_quantized(layer) else None
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise PruneError(f"{name}: grouped convolutions are not supported")
        new = conv_from(layer, spec, in_channels=len(keep))
    else:
        new = linear_from(layer, spec, in_features=len(keep))
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    keep = keep.to(layer.weight.device)
    state = layer.state_dict()
    state["weight"] = state["weight"][:, keep]
    new.load_state_dict(state)
    _replace(model, name, new)


def apply_kept(model: nn.Module, kept: Mapping[str, list[int]], mode: str = "block", scales: str = "frozen"):
    """Remove, in place, every channel not listed in ``kept`` (``{group: kept indices}``)."""
    if scales not in SCALE_CONVENTIONS:
        raise PruneError(f"unknown scale convention {scales!r}; accepted values: {', '.join(SCALE_CONVENTIONS)}")
    groups = prune_groups(model, mode)
    if scales == "frozen":
        for m in model.modules():
            if is_quantized(m) and not m.is_frozen:
                m.freeze_scale()
    unknown = [k for k in kept if k not in groups]
    if unknown:
        raise PruneError(f"kept channels name unknown group(s) {', '.join(map(repr, unknown))}; groups in mode "
                         f"{mode!r}: {', '.join(groups)}")
    for name, idx in kept.items():
        n = groups[name].channels
        idx = list(idx)
        if not idx or len(set(idx)) != len(idx) or any(not isinstance(i, int) or not 0 <= i < n for i in idx):
            raise PruneError(f"kept channels of {name} must be distinct indices in [0, {n}), at least one; got "
                             f"{str(idx)[:80]}")
    for name, idx in kept.items():
        g = groups[name]
        keep = torch.as_tensor(list(idx), dtype=torch.long)
        if len(keep) == g.channels:
            continue
        for conv_name, bn_name in g.writers:
            _slice_out(model, conv_name, bn_name, keep)
        for reader in g.readers:
            _slice_in(model, reader, keep)
    previous = getattr(model, "pruned", None) or {}
    if previous and previous.get("mode") not in (None, mode):
        raise PruneError(f"the model was pruned in mode {previous['mode']!r}; prune it again in the same mode")
    record = {"mode": mode, "scales": scales, "kept": {k: [int(i) for i in v] for k, v in kept.items()}}
    if previous:  # pruning twice: compose the kept indices so they refer to the original channels
        for k, v in record["kept"].items():
            if k in previous["kept"]:
                record["kept"][k] = [previous["kept"][k][i] for i in v]
        record["kept"] = {**previous["kept"], **record["kept"]}
    model.pruned = record
    return model


def prune(model: nn.Module, ratios, criterion: str = "redundancy", mode: str = "block", scales: str = "frozen",
          criterion_options: dict | None = None, inplace: bool = False) -> nn.Module:
    """Physically remove filters: ``ratios`` is one float for every group or
    ``{group name: ratio}`` (missing names: 0), each in ``[0, 1)``.

    Returns the smaller model (a copy unless ``inplace``) with ``.pruned`` recording the
    mode, the scale convention and, per group, the kept channel indices.
    """
    if criterion not in CRITERIA:
        raise PruneError(f"unknown criterion {criterion!r}; registered: {', '.join(CRITERIA)}")
    check_options(criterion, criterion_options or {})
    if scales not in SCALE_CONVENTIONS:
        raise PruneError(f"unknown scale convention {scales!r}; accepted values: {', '.join(SCALE_CONVENTIONS)}")
    per_group = check_ratios(model, ratios, mode)
    model = model if inplace else copy.deepcopy(model)
    groups = prune_groups(model, mode)
    kept = {}
    for name, r in per_group.items():
        g = groups[name]
        k = n_keep(g.channels, r)
        kept[name] = select_filters(layer_view(model, g), k, criterion, **(criterion_options or {})).keep.tolist()
    return apply_kept(model, kept, mode, scales)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, batches: int = 20) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on ``batches`` batches of
    ``loader`` (a cumulative average, no gradient step); the model is left in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the batches seen
    model.train()
    device = model_device(model)
    seen = 0
    for x, _ in loader:
        if seen >= batches:
            break
        model(to_device(x, device))
        seen += 1
    if seen == 0:
        raise PruneError("recalibrate_batchnorm: the loader yielded no batches")
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    model.eval()
    return model
