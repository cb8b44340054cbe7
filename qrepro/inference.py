"""An inference-only copy of a (pruned) quantized network, fused: ``fuse_for_inference(model)``.

What a quantized layer recomputes at every forward in the training form, the fused form
computes once:

* **weights pre-quantized**: ``alpha * sign(w)`` (XNOR / BNN) or DoReFa's k-bit levels, with the
  frozen or current scale, as :meth:`QConv2d.quantized_weight` gives them in eval mode;
* **BatchNorm folded**: a convolution whose output goes only into a BatchNorm (found by the
  dependency graph, :func:`qrepro.graph.conv_bn_pairs`, in any traceable CNN) becomes one convolution with
  weights ``W_q * gamma / sigma`` and bias ``beta - gamma mu / sigma``; the BatchNorm becomes
  an identity;
* **scales folded**: the per-filter ``alpha`` sits inside those weights;
* the input quantizer stays (it depends on the input), without the straight-through bookkeeping
  (DoReFa's ``1 / (2^k - 1)`` moves into the weights);
* activations in channels-last (NHWC) layout, what oneDNN's and cuDNN's convolutions prefer;
* ResNet basic blocks run as one module (:class:`FusedBasicBlock`) that works in place on the
  tensors it made itself;
* a convolution with few filters (at most half a vector register: 8 float32 filters on AVX-512)
  computes ``f`` adjacent output columns as ``f`` times as many filters of one convolution
  (:func:`fold_factors`): oneDNN fills its vectors along the filters, so 8 of them leave half of
  every vector empty, and pruning leaves layers that narrow.

The result computes what the model computes in eval mode, up to float rounding (to 1e-9 in
float64, ``tests/test_inference.py``); in float32 a value within rounding of a sign's or a
round's threshold may land on the other side, as any reordering of the arithmetic allows.  A
pruned model and an unpruned one fuse alike, so the multiply-accumulates that pruning removes
show in the time (``benchmarks/benchmark.py --sections inference``).  The copy cannot be trained,
pruned again or saved as a checkpoint: keep the model for that.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from .errors import BadInput
from .graph import GraphError, conv_bn_pairs
from .models import BasicBlock
from .quantize import ActivationQuantizer, _set_module, is_quantized


class InferenceError(BadInput):
    """A model that cannot be fused for inference."""


# float32 lanes of a vector register, by torch.backends.cpu.get_cpu_capability(); where a
# capability is missing (AVX2 and others were not measured), no convolution is folded
FLOAT32_LANES = {"AVX512": 16}
FOLDS = (4, 2)  # the column-folding factors tried, largest first (larger ones add too many zero taps)


def fold_factors(out_channels: int, lanes: int | None = None) -> tuple[int, ...]:
    """The factors ``f`` by which a stride-1 convolution with ``out_channels`` filters may fold its
    output columns into filters: ``f * out_channels`` still fits one vector of ``lanes`` floats
    (this CPU's by default), so the folded convolution's vectors are fuller.

    Folding by ``f`` computes output columns ``f w' + j`` (``j < f``) as filters ``j * out_channels + c``
    of a convolution with stride ``f`` along the width and kernel width ``k + f - 1``, whose filter
    ``(j, c)`` is filter ``c`` shifted ``j`` columns right between zeros.  In channels-last layout
    the folded output *is* the unfolded one, byte for byte: no copy.  It does ``(k + f - 1) / k``
    times the multiply-accumulates (the zeros), and pays only where the filters fill less than half a
    vector (``python benchmarks/benchmark.py --sections inference``, its column-folding table; the
    figures are in docs/speed.md).
    """
    lanes = FLOAT32_LANES.get(torch.backends.cpu.get_cpu_capability(), 0) if lanes is None else lanes
    return tuple(f for f in FOLDS if f * out_channels <= lanes)


def fold_weight(weight: torch.Tensor, bias: torch.Tensor | None, f: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weights ``(f N, C, k, k + f - 1)`` and bias ``(f N,)`` of the column-folded convolution
    (:func:`fold_factors`)."""
    n, c, kh, kw = weight.shape
    folded = weight.new_zeros(f * n, c, kh, kw + f - 1)
    for j in range(f):
        folded[j * n:(j + 1) * n, :, :, j:j + kw] = weight
    return folded, None if bias is None else bias.repeat(f)


class _FusedLayer(nn.Module):
    """Fixed weights and bias (buffers) and the layer's input quantizer without straight-through
    bookkeeping; DoReFa's ``1 / (2^k - 1)`` moves from the input into the weights (the layer is
    linear), so the input becomes the integer levels: one pass fewer."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, act: ActivationQuantizer | None,
                 a_bits: int | None):
        super().__init__()
        self.act, self.a_bits = act, a_bits
        if act is not None and act.step(a_bits) != 1:
            weight = weight / act.step(a_bits)
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def quantize_input(self, x: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """``scratch``: ``x`` has no other user and may be overwritten (no allocation)."""
        return x if self.act is None else self.act.integers(x, self.a_bits, scratch)


class FusedConv2d(_FusedLayer):
    """``conv2d(quantize_input(x), W, b)`` with fixed ``W`` and ``b``."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None,
                 act: ActivationQuantizer | None, a_bits: int | None, fold: bool = True):
        if conv.padding_mode != "zeros":
            raise InferenceError(f"{conv}: padding_mode {conv.padding_mode!r} cannot be fused, only 'zeros'")
        super().__init__(weight, bias, act, a_bits)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        foldable = (fold and self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                    and not isinstance(self.padding, str) and self.weight.shape[-1] > 1)
        self.folds = fold_factors(self.weight.shape[0]) if foldable else ()
        for f in self.folds:
            w, b = fold_weight(self.weight, self.bias, f)
            self.register_buffer(f"weight_fold{f}", w)
            self.register_buffer(f"bias_fold{f}", b)

    def forward(self, x, scratch: bool = False):
        channels_last = self.weight.is_contiguous(memory_format=torch.channels_last)
        if channels_last and not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # the first layer; later ones get it so
        x = self.quantize_input(x, scratch)
        if channels_last and x.device.type == "cpu":
            width = x.shape[-1] + 2 * self.padding[1] - self.weight.shape[-1] + 1  # the output's
            for f in self.folds:
                if width % f == 0:
                    return self._folded(x, f)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def _folded(self, x: torch.Tensor, f: int) -> torch.Tensor:
        y = F.conv2d(x, getattr(self, f"weight_fold{f}"), getattr(self, f"bias_fold{f}"), (1, f), self.padding)
        n, _, h, w = y.shape  # channels-last (n, h, w, f N) is (n, h, f w, N): the same bytes
        return y.permute(0, 2, 3, 1).reshape(n, h, f * w, -1).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        folds = f", folds={self.folds}" if self.folds else ""
        return f"{tuple(self.weight.shape)}, stride={self.stride}, input={self.act.name if self.act else 'float'}{folds}"


class FusedLinear(_FusedLayer):
    """``linear(quantize_input(x), W, b)`` with fixed, pre-quantized ``W``."""

    def forward(self, x):
        return F.linear(self.quantize_input(x), self.weight, self.bias)


class FusedBasicBlock(nn.Module):
    """A residual block of fused layers, ``relu(conv2(relu(conv1(x))) + shortcut(x))``, computed in
    place where a tensor has no other user: each convolution's output is fresh, so its ReLU, the
    next layer's input quantizer and the residual sum overwrite it (an allocation fewer each, and
    the page faults of its first touch).  The ReLU before a DoReFa-quantized ``conv2`` is skipped:
    that quantizer clamps at 0 itself (``clips_at_zero``), so the result is bitwise the same.  The block's input is
    only read."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1, self.conv2, self.downsample = block.conv1, block.conv2, block.downsample
        self.relu = isinstance(block.relu, nn.ReLU)  # False: BNN, whose ReLUs are identities
        self.relu1 = self.relu and not (self.conv2.act is not None and self.conv2.act.clips_at_zero)

    def forward(self, x):
        out = self.conv1(x)
        if self.relu1:
            out = out.relu_()
        out = self.conv2(out, scratch=True).add_(x if self.downsample is None else self.downsample(x))
        return out.relu_() if self.relu else out


# the basic blocks whose forward is relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
BLOCKS = (BasicBlock, torchvision.models.resnet.BasicBlock)


def _fusable_block(block: nn.Module) -> bool:
    """A basic block whose BatchNorms are folded into fused convolutions and whose shortcut is empty or one."""
    if not isinstance(block, BLOCKS):
        return False
    shortcut = block.downsample
    fused_shortcut = shortcut is None or (isinstance(shortcut, nn.Sequential) and len(shortcut) == 2 and
                                          isinstance(shortcut[0], FusedConv2d) and isinstance(shortcut[1], nn.Identity))
    return (isinstance(block.conv1, FusedConv2d) and isinstance(block.conv2, FusedConv2d)
            and isinstance(block.bn1, nn.Identity) and isinstance(block.bn2, nn.Identity)
            and isinstance(block.relu, (nn.ReLU, nn.Identity)) and fused_shortcut)


def _input_quantizer(module: nn.Module) -> tuple[ActivationQuantizer | None, int | None]:
    if not is_quantized(module) or module.spec.act_quantizer is None:
        return None, None
    return module.spec.act_quantizer, module.spec.a_bits


def _weight(module: nn.Module) -> torch.Tensor:
    return module.quantized_weight() if is_quantized(module) else module.weight


@torch.no_grad()
def fuse_for_inference(model: nn.Module, channels_last: bool = True, fold: bool = True) -> nn.Module:
    """An eval-only copy of ``model`` with weights pre-quantized and BatchNorm and scales folded;
    ``channels_last``: weights and activations in NHWC, the layout oneDNN's and cuDNN's
    convolutions run fastest in (docs/speed.md);
    ``fold``: column-fold the convolutions with few filters where this CPU's vectors allow
    (:func:`fold_factors`; channels-last CPU tensors only)."""
    if not isinstance(model, nn.Module):
        raise InferenceError(f"fuse_for_inference needs a torch.nn.Module (a CNN, quantized or not), "
                             f"got {type(model).__name__}")
    if getattr(model, "fused_for_inference", False):
        raise InferenceError("this model is already fused for inference; fuse the model it was made from "
                             "(fuse_for_inference returns a copy and leaves its argument as it was)")
    fused = copy.deepcopy(model).eval()
    try:
        pairs = conv_bn_pairs(fused)
    except GraphError as e:
        raise InferenceError(f"cannot fuse this model for inference: {e}") from None
    for conv_name, bn_name in pairs.items():
        conv, bn = fused.get_submodule(conv_name), fused.get_submodule(bn_name)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w = _weight(conv) * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        b = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            b = b + conv.bias * scale
        _set_module(fused, conv_name, FusedConv2d(conv, w, b, *_input_quantizer(conv), fold=fold))
        _set_module(fused, bn_name, nn.Identity())
    for name, module in list(fused.named_modules()):  # quantized layers without a BatchNorm after them
        if not is_quantized(module) or name in pairs:
            continue
        if isinstance(module, nn.Conv2d):
            _set_module(fused, name, FusedConv2d(module, _weight(module), module.bias, *_input_quantizer(module),
                                                 fold=fold))
        elif isinstance(module, nn.Linear):
            _set_module(fused, name, FusedLinear(_weight(module), module.bias, *_input_quantizer(module)))
    for name, module in list(fused.named_modules()):
        if _fusable_block(module):
            _set_module(fused, name, FusedBasicBlock(module))
    fused.requires_grad_(False)
    if channels_last:
        fused.to(memory_format=torch.channels_last)
    fused.fused_for_inference = True
    return fused

