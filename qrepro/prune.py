"""Physical filter removal for (quantized) CNNs, and BatchNorm re-estimation.

A pruned filter is removed: its output channel, and with it every channel the dependency
graph (:mod:`qrepro.graph`) couples to it: the BatchNorms and depthwise convolutions on
those channels, and the matching inputs of every layer that reads them.  What is pruned is
a group of :func:`qrepro.graph.channel_groups`, chosen by ``mode``:

* ``mode="block"`` (default): the groups one layer writes alone: a convolution's own
  filters, such as the first convolution of every ResNet basic block (``layer2.1.conv1``),
  MobileNetV2's expansions or every convolution of a plain CNN; every residual sum stays
  intact.
* ``mode="stage"``: the groups several layers write, coupled by residual sums (``layer2``:
  each block's last convolution, the stage's projection shortcut, or the stem for the first
  stage); every reader of the stream loses the matching inputs.

Conventions (parameters, stated here once):

* Filters kept per group: ``max(1, floor((1 - r) N))``, i.e. at least the fraction ``r``
  is removed, so a size bound computed from the continuous ratios is never exceeded.
* Scale factors (``scales="frozen"``, default): every quantized layer's scale (XNOR's
  per-filter ``alpha``, DoReFa's ``max|tanh(w)|``) is frozen at its pre-pruning value, so
  a pruned model computes exactly what the unpruned model computes with the removed
  channels masked out after quantization (binary and DoReFa; a ternary layer that loses inputs
  recomputes its threshold, ``0.7 mean|w|``, over those it keeps); fine-tuning and export keep
  the frozen scales.
  ``scales="recompute"`` recomputes them from the remaining weights instead.
"""
from __future__ import annotations

import copy
import math
from typing import Mapping

import torch
import torch.nn as nn

from .criteria import CRITERIA, LayerView, check_options, select_filters
from .device import model_device, to_device
from .errors import BadInput
from .graph import ChannelGroup, GraphError, channel_groups
from .quantize import conv_from, is_quantized, linear_from

MODES = ("block", "stage")
SCALE_CONVENTIONS = ("frozen", "recompute")


class PruneError(BadInput):
    """Bad pruning input: ratios, layer names, modes, kept indices."""


def prune_groups(model: nn.Module, mode: str = "block") -> dict[str, ChannelGroup]:
    """The prunable groups of ``model`` in ``mode`` by name, in forward order."""
    if mode not in MODES:
        raise PruneError(f"unknown pruning mode {mode!r}; accepted values: {', '.join(MODES)}")
    try:
        every = channel_groups(model)
    except GraphError as err:
        raise PruneError(str(err)) from None
    groups = {g.name: g for g in every if g.prunable and g.coupled == (mode == "stage")}
    if not groups:
        other = "stage" if mode == "block" else "block"
        why = "; ".join(f"{g.name}: {g.blocked[0]}" for g in every if g.blocked)[:300]
        raise PruneError(f"{type(model).__name__} has no prunable group in mode {mode!r}"
                         + (f" (try mode={other!r})" if any(g.prunable for g in every) else "")
                         + (f"; kept whole: {why}" if why else ""))
    return groups


def prunable_layers(model: nn.Module, mode: str = "block") -> list[str]:
    """Names accepted as keys of ``prune(model, {name: ratio})`` (block mode: the first
    convolution of every basic block; stage mode: ``layer1``, ``layer2``, ...)."""
    return list(prune_groups(model, mode))


def check_layers(groups: Mapping[str, ChannelGroup], layers) -> list[str]:
    """``layers`` (every group of ``groups`` when None or empty), each checked to be one of them."""
    layers = list(layers or groups)
    unknown = [n for n in layers if n not in groups]
    if unknown:
        raise PruneError(f"layers {', '.join(map(repr, unknown))} are not prunable layers of this model; its "
                         f"prunable layers: {', '.join(groups)}")
    return layers


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


def layer_view(model: nn.Module, group: ChannelGroup) -> LayerView:
    """The criterion's view of a group: quantized writers' codes (full-precision writers
    only if no writer is quantized), concatenated per channel; ``|gamma|`` summed over the
    group's BatchNorms (None without one)."""
    layers = [model.get_submodule(w) for w in group.writers]
    bns = [model.get_submodule(b) for b in group.norms if model.get_submodule(b).affine]
    quant = [c for c in layers if is_quantized(c)]
    chosen = quant or layers
    if quant:
        kinds = {c.spec.code_kind for c in quant}
        kind = kinds.pop() if len(kinds) == 1 else "levels"
        codes = torch.cat([c.weight_codes() for c in quant], 1)
    else:
        kind, codes = "float", torch.cat([c.weight.detach().flatten(1) for c in layers], 1)
    latent = torch.cat([c.weight.detach().flatten(1) for c in chosen], 1)
    gamma = sum(b.weight.detach().abs() for b in bns) if bns else None
    beta = sum(b.bias.detach() for b in bns) if bns else None
    return LayerView(group.name, codes, latent, kind, gamma, beta)


# --------------------------------------------------------------------------- slicing
def _replace(model: nn.Module, name: str, new: nn.Module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _rows(state: dict, keep: torch.Tensor, names=("weight", "bias")) -> dict:
    return {k: (v[keep] if k in names and v is not None and v.dim() else v) for k, v in state.items()}


def _slice_out(model: nn.Module, name: str, keep: torch.Tensor, depthwise: bool = False):
    """Keep the output channels ``keep`` of a writer (convolution or linear layer); a depthwise
    convolution keeps the same input channels too."""
    layer = model.get_submodule(name)
    spec = layer.spec if is_quantized(layer) else None
    keep = keep.to(layer.weight.device)
    if isinstance(layer, nn.Conv2d):
        sizes = {"in_channels": len(keep), "groups": len(keep)} if depthwise else {}
        new = conv_from(layer, spec, out_channels=len(keep), **sizes)
    else:
        new = linear_from(layer, spec, out_features=len(keep))
    scaled = ("weight", "bias", "w_scale") if spec is not None and spec.weight_quantizer.per_filter_scale(spec) \
        else ("weight", "bias")
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    new.load_state_dict(_rows(layer.state_dict(), keep, scaled))
    _replace(model, name, new)


def _slice_norm(model: nn.Module, name: str, keep: torch.Tensor):
    bn = model.get_submodule(name)
    ref = bn.weight if bn.affine else bn.running_mean
    new = type(bn)(len(keep), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats).to(device=ref.device, dtype=ref.dtype)
    keep = keep.to(ref.device)
    new.load_state_dict(_rows(bn.state_dict(), keep, ("weight", "bias", "running_mean", "running_var")))
    _replace(model, name, new)


def _slice_in(model: nn.Module, name: str, keep: torch.Tensor, factor: int = 1):
    """Keep the input channels ``keep`` of a reader; after a flatten each channel is ``factor``
    adjacent input features (``flatten`` lays ``(C, H, W)`` out channel-major)."""
    layer = model.get_submodule(name)
    spec = layer.spec if is_quantized(layer) else None
    keep = keep.to(layer.weight.device)
    if factor > 1:
        keep = (keep[:, None] * factor + torch.arange(factor, device=keep.device)).reshape(-1)
    if isinstance(layer, nn.Conv2d):
        new = conv_from(layer, spec, in_channels=len(keep))
    else:
        new = linear_from(layer, spec, in_features=len(keep))
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    state = layer.state_dict()
    state["weight"] = state["weight"][:, keep]
    new.load_state_dict(state)
    _replace(model, name, new)


def apply_kept(model: nn.Module, kept: Mapping[str, list[int]], mode: str = "block", scales: str = "frozen",
               groups: Mapping[str, ChannelGroup] | None = None):
    """Remove, in place, every channel not listed in ``kept`` (``{group: kept indices}``); ``groups``: the
    model's ``prune_groups(model, mode)`` where the caller has them (one trace, not two)."""
    if scales not in SCALE_CONVENTIONS:
        raise PruneError(f"unknown scale convention {scales!r}; accepted values: {', '.join(SCALE_CONVENTIONS)}")
    groups = groups if groups is not None else prune_groups(model, mode)
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
        for writer in g.writers:
            _slice_out(model, writer, keep)
        for layer in g.through:
            _slice_out(model, layer, keep, depthwise=True)
        for norm in g.norms:
            _slice_norm(model, norm, keep)
        for reader in g.readers:
            _slice_in(model, reader, keep, g.factors.get(reader, 1))
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
    return apply_kept(model, kept, mode, scales, groups)


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
