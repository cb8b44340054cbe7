"""Model-size accounting for quantized networks.

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

from dataclasses import asdict, dataclass

import pandas as pd
import torch.nn as nn

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
