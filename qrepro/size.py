"""Model-size accounting for quantized networks, and the analytic size model the search constrains.

Convention (METHOD.md), in bits::

    size = w_bits x (number of quantized weights)
         + 32 x (every full-precision weight and bias)
         + 32 x (the per-filter scales)
         + 32 x 2 per BatchNorm channel            (gamma, beta; include_bn=True)

divided by 8 for bytes and reported in MB = 2^20 bytes.  Running statistics of BatchNorm
are not counted: at deployment they fold into gamma and beta.  Every number in this
package that is a size carries :func:`describe` beside it.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, field
from typing import Sequence

import pandas as pd
import torch
import torch.nn as nn

from .prune import apply_kept, check_layers, n_keep, prune_groups
from .quantize import is_quantized

MB = 2**20


@dataclass(frozen=True)
class SizeConvention:
    """Which bits count.  ``include_bn``: count gamma and beta of every BatchNorm channel."""

    fp_bits: int = 32
    scale_bits: int = 32
    bn_params_per_channel: int = 2
    include_bn: bool = True

    def describe(self) -> str:
        bn = f"{self.fp_bits} x {self.bn_params_per_channel} bits per BatchNorm channel" if self.include_bn \
            else "BatchNorm not counted"
        return (f"size = k bits per quantized weight + {self.fp_bits} bits per full-precision weight/bias "
                f"+ {self.scale_bits} bits per scale factor + {bn}; MB = 2^20 bytes")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_CONVENTION = SizeConvention()


def _layer_bits(module: nn.Module, conv: SizeConvention) -> dict | None:
    """Bits of one leaf layer, split by kind, or None if the layer holds no parameters we count."""
    if is_quantized(module):
        spec = module.spec
        bias = module.bias.numel() if module.bias is not None else 0
        return {
            "kind": f"{spec.weight}-{spec.w_bits}bit",
            "params": module.weight.numel() + bias,
            "weight_bits": spec.w_bits * module.weight.numel(),
            "fp_bits": conv.fp_bits * bias,
            "scale_bits": conv.scale_bits * module.w_scale.numel(),
        }
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        n = module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
        return {"kind": "full-precision", "params": n, "weight_bits": 0, "fp_bits": conv.fp_bits * n, "scale_bits": 0}
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if not conv.include_bn:
            return None
        n = module.num_features * conv.bn_params_per_channel
        return {"kind": "batchnorm", "params": n, "weight_bits": 0, "fp_bits": conv.fp_bits * n, "scale_bits": 0}
    return None


def size_breakdown(model: nn.Module, convention: SizeConvention = DEFAULT_CONVENTION) -> pd.DataFrame:
    """One row per counted layer: kind, parameters, bits by part, bytes and MB."""
    rows = []
    for name, module in model.named_modules():
        bits = _layer_bits(module, convention)
        if bits is not None:
            rows.append({"layer": name, **bits})
    df = pd.DataFrame(rows, columns=["layer", "kind", "params", "weight_bits", "fp_bits", "scale_bits"])
    df["bytes"] = (df["weight_bits"] + df["fp_bits"] + df["scale_bits"]) / 8
    df["MB"] = df["bytes"] / MB
    df.attrs["convention"] = convention.describe()
    return df


def model_size_bytes(model: nn.Module, convention: SizeConvention = DEFAULT_CONVENTION) -> float:
    """The model's size in bytes under ``convention`` (see the module docstring)."""
    return float(size_breakdown(model, convention)["bytes"].sum())


def model_size_mb(model: nn.Module, convention: SizeConvention = DEFAULT_CONVENTION) -> float:
    return model_size_bytes(model, convention) / MB


def describe(convention: SizeConvention = DEFAULT_CONVENTION) -> str:
    return convention.describe()


@dataclass
class SizeModel:
    """Analytic size: ``base`` bytes; per layer its filter count and the bytes one of its filters
    takes alone; per pair of layers where one reads what the other writes (a chain of
    convolutions, not a ResNet's blocks) the bytes their shared weights take.

    With ``d_l = N_l - k_l`` filters removed, the size is exactly
    ``base - sum_l b_l d_l + sum_(l,m) B_lm d_l d_m`` (each weight belongs to one writer and one
    reader group, so the size is bilinear in the kept counts).
    """

    base: float
    channels: dict[str, int]
    bytes_per_filter: dict[str, float]
    interactions: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model, layers: Sequence[str] | None = None, convention=None,
                   mode: str = "block") -> "SizeModel":
        """Measure ``model``: bytes removed by pruning one filter of each layer (group of ``mode``),
        and of each pair that shares weights."""
        convention = convention or DEFAULT_CONVENTION
        groups = prune_groups(model, mode)
        layers = check_layers(groups, layers)
        base = model_size_bytes(model, convention)

        def without_one(*names):
            kept = {n: list(range(groups[n].channels - 1)) for n in names}
            return model_size_bytes(apply_kept(copy.deepcopy(model), kept, mode, "recompute", groups), convention)

        per = {name: base - without_one(name) for name in layers}
        shared = {}
        for a, b in itertools.combinations(layers, 2):
            ga, gb = groups[a], groups[b]
            if set(ga.readers) & set(gb.writers) or set(gb.readers) & set(ga.writers):
                shared[(a, b)] = without_one(a, b) - base + per[a] + per[b]
        return cls(base, {n: groups[n].channels for n in layers}, per, shared)

    @property
    def layers(self) -> list[str]:
        return list(self.channels)

    def weights(self, r_max: float = 1.0) -> torch.Tensor:
        """Bytes removed per unit of ratio, per layer: ``b_l N_l``, less, where layers share
        weights, ``r_max / 2 sum_m B_lm N_l N_m`` (``r_l r_m <= r_max (r_l + r_m) / 2`` for ratios up
        to ``r_max``), so that a linear constraint on these never admits a size above its bound."""
        w = {n: self.bytes_per_filter[n] * self.channels[n] for n in self.layers}
        for (a, b), shared in self.interactions.items():
            both = shared * self.channels[a] * self.channels[b] * r_max / 2
            w[a] -= both
            w[b] -= both
        return torch.tensor([w[n] for n in self.layers], dtype=torch.double)

    def linear_size(self, ratios: torch.Tensor, r_max: float = 1.0) -> torch.Tensor:
        """An upper bound of the size at ``ratios`` (each at most ``r_max``), linear in them; exact up to the
        rounding of filter counts where no two layers share weights."""
        return self.base - ratios.to(torch.double) @ self.weights(r_max)

    def exact_size(self, ratios: Sequence[float]) -> float:
        removed = {n: self.channels[n] - n_keep(self.channels[n], float(r)) for n, r in zip(self.layers, ratios)}
        size = self.base - sum(self.bytes_per_filter[n] * d for n, d in removed.items())
        return size + sum(shared * removed[a] * removed[b] for (a, b), shared in self.interactions.items())

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["interactions"]
        if self.interactions:  # absent where no layers share weights: a ResNet's journal header as it was
            out["interactions"] = [[a, b, v] for (a, b), v in self.interactions.items()]
        return out
