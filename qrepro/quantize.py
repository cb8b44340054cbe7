"""Quantizers: BNN / XNOR-style binarization and DoReFa-Net k-bit, and quantized layers.

Formulas (see ``../shared/spec/METHOD.md``):

* Binary weights (Courbariaux et al. 2016; Rastegari et al. 2016, XNOR-Net)::

      w_b = alpha * sign(w),   alpha = mean(|w|) per output filter ("filter"),
                               per layer ("layer") or 1 ("none")

  ``sign(0) = +1``, so the codes are exactly ``{-1, +1}``.  Backward: the
  straight-through estimator ``d sign(w)/dw = 1_{|w| <= 1}``; ``alpha`` is
  differentiated as the mean it is (XNOR-Net's gradient).
* Binary activations: ``a_b = sign(a)``, same straight-through estimator.
* DoReFa-Net (Zhou et al. 2016, arXiv:1606.06160), ``quantize_k(r) = round((2^k-1) r) / (2^k-1)``:

  - k-bit weights, k > 1: ``w_q = 2 quantize_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1``
    (max over the whole layer tensor);
  - 1-bit weights: ``w_q = E(|w|) sign(w)`` (layer-wise mean); backward: the gradient
    passes unchanged, ``E(|w|)`` a constant (the authors' tensorpack code);
  - k-bit activations: ``a_q = quantize_k(clip(a, 0, 1))``;
  - backward through ``round``: identity (straight-through).

Scales can be *frozen*: after pruning, the per-filter ``alpha`` (or DoReFa's
``max|tanh(w)|``) keeps its pre-pruning value so that a pruned layer computes
exactly what the unpruned layer computed on the kept filters (see ``prune.py``).

Quantizers are registered by name (``WEIGHT_QUANTIZERS``, ``ACTIVATION_QUANTIZERS``,
``SCHEMES``) so configs, notebooks and the command line name them as strings.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import BadInput

SCALINGS = ("filter", "layer", "none")
FULL_PRECISION_BITS = 32


# --------------------------------------------------------------------------- validation
class QuantizationError(BadInput):
    """A bad quantization setting."""


def check_bits(bits, what: str = "bits") -> int:
    """Return ``bits`` as an int in 1..32, or raise a ValueError saying what is accepted."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        if isinstance(bits, float) and bits.is_integer():
            bits = int(bits)
        else:
            raise QuantizationError(f"{what} must be an integer from 1 to 32 (32 = full precision), got {bits!r}")
    if not 1 <= bits <= FULL_PRECISION_BITS:
        raise QuantizationError(f"{what} must be an integer from 1 to 32 (32 = full precision), got {bits!r}")
    return bits


def check_scaling(scaling: str) -> str:
    if scaling not in SCALINGS:
        raise QuantizationError(f"unknown scaling {scaling!r}; accepted values: {', '.join(SCALINGS)}")
    return scaling


# --------------------------------------------------------------------------- straight-through functions
def _pass_inside(grad: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """``grad`` where the bool mask ``inside`` is set, 0 elsewhere (bitwise the same as ``grad * inside``).

    The mask is read as uint8: float times bool first converts the whole mask to a float tensor, which
    cost 3 times the product itself (1.4 against 0.5 ms on a 128x16x28x28 batch, one process, 2 threads).
    """
    return grad * inside.view(torch.uint8)


class _SignSTE(torch.autograd.Function):
    """``sign`` with ``sign(0) = +1``; backward passes the gradient where ``|x| <= 1``."""

    @staticmethod
    def forward(ctx, x):
        # one bool mask kept for backward (a quarter of the memory of x), no full-size constants
        ctx.save_for_backward(x.abs() <= 1)
        return _sign(x)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return _pass_inside(grad, inside)


class _RoundSTE(torch.autograd.Function):
    """``round`` forward, identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _ScaledSignIdentity(torch.autograd.Function):
    """DoReFa's 1-bit weights ``E sign(w)`` (``sign(0) = +1``) with the gradient passed
    straight through unchanged and ``E`` a constant, as in the DoReFa authors' code
    (tensorpack ``quantize_weight``, ``bitW == 1``) and larq_zoo."""

    @staticmethod
    def forward(ctx, w, scale):
        return torch.where(w >= 0, scale, -scale)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _sign(x: torch.Tensor) -> torch.Tensor:
    """``+1`` / ``-1`` exactly, ``sign(0) = +1``. The comparison writes floats directly: converting a bool
    tensor cost 3 times the comparison and the two in-place passes together (2.9 of 4.1 ms on a
    256x16x28x28 batch, one thread); ``torch.where`` with scalars cost 3 times as much again."""
    return torch.ge(x, 0, out=torch.empty_like(x)).mul_(2).sub_(1)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    if not (x.requires_grad and torch.is_grad_enabled()):  # inference: no mask to keep for a backward
        return _sign(x)
    return _SignSTE.apply(x)


def quantize_k(r: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's ``quantize_k(r) = round((2^k - 1) r) / (2^k - 1)`` for ``r`` in ``[0, 1]``."""
    n = float(2**bits - 1)
    return _RoundSTE.apply(r * n) / n


# --------------------------------------------------------------------------- weight quantizers
def binary_scale(w: torch.Tensor, scaling: str = "filter") -> torch.Tensor:
    """XNOR-Net's ``alpha``: ``mean(|w|)`` per output filter ``(N, 1, ..)``, per layer ``()``, or 1."""
    check_scaling(scaling)
    if scaling == "filter":
        return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
    if scaling == "layer":
        return w.abs().mean()
    return torch.ones((), dtype=w.dtype, device=w.device)


def binarize_weight(w: torch.Tensor, scaling: str = "filter", scale: torch.Tensor | None = None) -> torch.Tensor:
    """``alpha * sign(w)`` for weights of shape ``(N, C, k, k)`` (or ``(N, D)``).

    ``scale``: a frozen ``alpha`` (shape ``(N,)`` for "filter", ``()`` or ``(1,)`` for
    "layer"); computed from ``w`` when ``None``.
    """
    check_scaling(scaling)
    if scaling == "none":
        alpha = torch.ones((), dtype=w.dtype, device=w.device)
    elif scale is None:
        alpha = binary_scale(w, scaling)
    elif scaling == "filter":
        alpha = scale.reshape(-1, *([1] * (w.dim() - 1)))
    else:
        alpha = scale.reshape(())
    return alpha * sign_ste(w)


def binarize_activation(x: torch.Tensor, bits: int = 1) -> torch.Tensor:
    """``sign(x)`` with ``sign(0) = +1``; straight-through gradient where ``|x| <= 1``."""
    if bits != 1:
        raise QuantizationError(f"binary activations have 1 bit, got a_bits={bits!r}; use scheme 'dorefa' for k-bit")
    return sign_ste(x)


def dorefa_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The layer constant of DoReFa's weight quantizer: ``max|tanh(w)|`` (k > 1) or ``E|w|`` (k = 1)."""
    return w.abs().mean() if bits == 1 else torch.tanh(w).abs().max()


def dorefa_weight(w: torch.Tensor, bits: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """DoReFa-Net k-bit weights in ``[-1, 1]`` (2^k levels), or ``E|w| sign(w)`` for 1 bit.

    ``scale``: a frozen ``max|tanh(w)|`` (k > 1) or ``E|w|`` (k = 1); computed when ``None``.
    With a frozen scale the argument of ``quantize_k`` is clamped to ``[0, 1]``
    (a no-op while the scale is the true maximum).
    """
    bits = check_bits(bits, "w_bits")
    if bits == FULL_PRECISION_BITS:
        return w
    s = dorefa_scale(w, bits) if scale is None else scale.reshape(())
    if bits == 1:
        return _ScaledSignIdentity.apply(w, s.detach().to(w.dtype))
    r = torch.tanh(w) / (2 * s) + 0.5
    if scale is not None:
        r = r.clamp(0, 1)
    return 2 * quantize_k(r, bits) - 1


def _closed_unit_window(dtype: torch.dtype) -> tuple[float, float]:
    """Open bounds ``(lo, hi)`` with ``lo < x < hi`` exactly when ``0 <= x <= 1`` in ``dtype``: ``lo`` is
    minus the smallest subnormal (so ``-0.0`` and ``0.0`` are inside), ``hi`` the next float after 1.

    The bounds assume IEEE subnormals, PyTorch's default; under ``torch.set_flush_denormal(True)``
    ``lo`` reads as ``-0.0`` and an input of exactly 0 gets no gradient."""
    info = torch.finfo(dtype)
    return -info.smallest_normal * info.eps, 1.0 + info.eps


class _ClipQuantizeSTE(torch.autograd.Function):
    """``quantize_k(clip(x, 0, 1))`` in one function: the gradient passes where ``0 <= x <= 1``
    (the clip's gradient; ``round``'s is the identity).

    The input itself is saved, not a mask: in a network it is the output of the ReLU in front, which
    autograd keeps for the ReLU's backward anyway, so nothing more is stored, and the forward loses its
    comparison pass. The backward is ATen's one-pass ``hardtanh_backward`` with open bounds that select
    exactly the closed interval ``[0, 1]`` (:func:`_closed_unit_window`). The gradients are the values
    the saved mask gave; benchmarks/HISTORY.md has the training step's time before and after."""

    @staticmethod
    def forward(ctx, x, levels: float):
        ctx.save_for_backward(x)
        return torch.clamp(x, 0, 1).mul_(levels).round_().div_(levels)  # in place: two buffers fewer

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.ops.aten.hardtanh_backward(grad, x, *_closed_unit_window(x.dtype)), None


def dorefa_activation(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``quantize_k(clip(x, 0, 1))``; the clip passes gradients inside ``[0, 1]``."""
    bits = check_bits(bits, "a_bits")
    if bits == FULL_PRECISION_BITS:
        return x
    levels = float(2**bits - 1)
    if not (x.requires_grad and torch.is_grad_enabled()):  # inference: no mask to keep for a backward
        return torch.clamp(x, 0, 1).mul_(levels).round_().div_(levels)
    return _ClipQuantizeSTE.apply(x, levels)


# --------------------------------------------------------------------------- registries
WEIGHT_QUANTIZERS: dict[str, Callable] = {"binary": binarize_weight, "dorefa": dorefa_weight}
ACTIVATION_QUANTIZERS: dict[str, Callable] = {"sign": binarize_activation, "dorefa": dorefa_activation}


@dataclass(frozen=True)
class QuantSpec:
    """How one layer is quantized; ``weight``/``act`` name entries of the registries above.

    ``act=None`` or ``a_bits=32`` leaves the layer's input in full precision.
    """

    weight: str = "binary"
    w_bits: int = 1
    scaling: str = "filter"
    act: str | None = "sign"
    a_bits: int = 1

    def __post_init__(self):
        if self.weight not in WEIGHT_QUANTIZERS:
            raise QuantizationError(f"unknown weight quantizer {self.weight!r}; registered: {', '.join(WEIGHT_QUANTIZERS)}")
        if self.act is not None and self.act not in ACTIVATION_QUANTIZERS:
            raise QuantizationError(
                f"unknown activation quantizer {self.act!r}; registered: {', '.join(ACTIVATION_QUANTIZERS)}"
            )
        object.__setattr__(self, "w_bits", check_bits(self.w_bits, "w_bits"))
        object.__setattr__(self, "a_bits", check_bits(self.a_bits, "a_bits"))
        check_scaling(self.scaling)
        if self.weight == "binary" and self.w_bits != 1:
            raise QuantizationError(f"weight quantizer 'binary' has 1 bit, got w_bits={self.w_bits}")
        if self.act == "sign" and self.a_bits != 1:
            raise QuantizationError(f"activation quantizer 'sign' has 1 bit, got a_bits={self.a_bits}")

    @property
    def code_kind(self) -> str:
        """``"binary"`` when the weight codes are {-1, +1}, ``"levels"`` for k-bit integer levels."""
        return "binary" if self.w_bits == 1 else "levels"

    def scale_shape(self, out_channels: int) -> tuple[int, ...]:
        """Shape of the frozen-scale buffer: one per filter, one per layer, or none."""
        if self.weight == "binary":
            return {"filter": (out_channels,), "layer": (1,), "none": (0,)}[self.scaling]
        return (0,) if self.w_bits == FULL_PRECISION_BITS else (1,)

    def to_dict(self) -> dict:
        return asdict(self)


def _scheme_bnn(w_bits: int = 1, a_bits: int = 1, scaling: str = "filter") -> QuantSpec:
    if w_bits != 1 or a_bits != 1:
        raise QuantizationError(f"scheme 'bnn' is 1-bit weights and activations, got w_bits={w_bits}, a_bits={a_bits}")
    return QuantSpec("binary", 1, scaling, "sign", 1)


def _scheme_dorefa(w_bits: int = 2, a_bits: int = 2, scaling: str = "filter") -> QuantSpec:
    return QuantSpec("dorefa", w_bits, scaling, "dorefa", a_bits)


SCHEMES: dict[str, Callable[..., QuantSpec]] = {"bnn": _scheme_bnn, "dorefa": _scheme_dorefa}


def make_spec(scheme: str, w_bits: int | None = None, a_bits: int | None = None, scaling: str = "filter") -> QuantSpec:
    """The :class:`QuantSpec` of a named scheme (``"bnn"`` or ``"dorefa"``)."""
    if scheme not in SCHEMES:
        raise QuantizationError(f"unknown quantization scheme {scheme!r}; accepted values: {', '.join(SCHEMES)}")
    kwargs = {"scaling": check_scaling(scaling)}
    if w_bits is not None:
        kwargs["w_bits"] = check_bits(w_bits, "w_bits")
    if a_bits is not None:
        kwargs["a_bits"] = check_bits(a_bits, "a_bits")
    return SCHEMES[scheme](**kwargs)


# --------------------------------------------------------------------------- layers
class _QuantMixin:
    """Shared by :class:`QConv2d` and :class:`QLinear`.

    Buffers:
      ``w_scale`` (``QuantSpec.scale_shape``): the frozen scale, used when ``scale_frozen`` is set.
      ``scale_frozen`` (``()`` bool), mirrored by the Python flag :attr:`is_frozen` that
      ``forward`` reads: branching on a tensor's value would break ``torch.compile``'s graph.
    """

    spec: QuantSpec

    def _init_quant(self, spec: QuantSpec):
        self.spec = spec
        self.register_buffer("w_scale", torch.zeros(spec.scale_shape(self.weight.shape[0])))
        self.register_buffer("scale_frozen", torch.zeros((), dtype=torch.bool))
        self._frozen = False

    @property
    def is_frozen(self) -> bool:
        return self._frozen

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._frozen = bool(self.scale_frozen)  # the buffer was just loaded: mirror it

    def set_frozen_scale(self, scale: torch.Tensor):
        """Use ``scale`` (the shape of ``w_scale``) as the frozen scale from now on."""
        with torch.no_grad():
            self.w_scale.copy_(scale)
        self.scale_frozen.fill_(True)
        self._frozen = True

    def current_scale(self) -> torch.Tensor:
        """The scale the weight quantizer uses now, in the shape of ``w_scale``."""
        if self._frozen or self.w_scale.numel() == 0:
            return self.w_scale
        w = self.weight.detach()
        s = self.spec
        if s.weight == "binary":
            return binary_scale(w, s.scaling).reshape(s.scale_shape(w.shape[0]))
        if s.w_bits == FULL_PRECISION_BITS:
            return self.w_scale
        return dorefa_scale(w, s.w_bits).reshape(1)

    def freeze_scale(self):
        """Store the current scale and use it from now on (the post-pruning convention)."""
        self.w_scale = self.current_scale().clone()
        self.scale_frozen = torch.ones((), dtype=torch.bool, device=self.w_scale.device)
        self._frozen = True

    def quantized_weight(self) -> torch.Tensor:
        s = self.spec
        scale = self.w_scale if self._frozen else None
        if s.weight == "binary":
            return binarize_weight(self.weight, s.scaling, scale)
        return dorefa_weight(self.weight, s.w_bits, scale)

    def weight_codes(self) -> torch.Tensor:
        """Quantized filters with scales divided out, shape ``(N, D)``.

        Binary: the ``{-1, +1}`` codes.  k-bit DoReFa: the integer levels ``0 .. 2^k - 1``.
        """
        w = self.weight.detach().flatten(1)
        s = self.spec
        if s.w_bits == 1:
            return torch.where(w >= 0, 1.0, -1.0)
        if s.w_bits == FULL_PRECISION_BITS:
            return w.clone()
        wq = self.quantized_weight().detach().flatten(1)
        return torch.round((wq + 1) * (2**s.w_bits - 1) / 2)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        if s.act is None or s.a_bits == FULL_PRECISION_BITS:
            return x
        return ACTIVATION_QUANTIZERS[s.act](x, s.a_bits)

    def extra_repr(self) -> str:
        s = self.spec
        return super().extra_repr() + f", w={s.weight}:{s.w_bits}b/{s.scaling}, a={s.act}:{s.a_bits}b"


class QConv2d(_QuantMixin, nn.Conv2d):
    """An ``nn.Conv2d`` whose weights (and input) are quantized in ``forward``.

    Shapes: input ``(B, C, H, W)``, weight ``(N, C/groups, k, k)``.
    """

    def __init__(self, *args, spec: QuantSpec, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(spec)

    def forward(self, x):
        return self._conv_forward(self.quantize_input(x), self.quantized_weight(), self.bias)


class QLinear(_QuantMixin, nn.Linear):
    """An ``nn.Linear`` whose weights ``(N, D)`` (and input) are quantized in ``forward``."""

    def __init__(self, *args, spec: QuantSpec, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(spec)

    def forward(self, x):
        return F.linear(self.quantize_input(x), self.quantized_weight(), self.bias)


def is_quantized(module: nn.Module) -> bool:
    return isinstance(module, _QuantMixin)


def conv_from(conv: nn.Conv2d, spec: QuantSpec | None, in_channels: int | None = None,
              out_channels: int | None = None) -> nn.Conv2d:
    """A new (Q)Conv2d with ``conv``'s hyper-parameters and, optionally, other channel counts."""
    kw = dict(
        in_channels=in_channels or conv.in_channels, out_channels=out_channels or conv.out_channels,
        kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
        groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
    )
    return QConv2d(**kw, spec=spec) if spec is not None else nn.Conv2d(**kw)


def linear_from(lin: nn.Linear, spec: QuantSpec | None, in_features: int | None = None) -> nn.Linear:
    kw = dict(in_features=in_features or lin.in_features, out_features=lin.out_features, bias=lin.bias is not None)
    return QLinear(**kw, spec=spec) if spec is not None else nn.Linear(**kw)


def _set_module(model: nn.Module, name: str, new: nn.Module):
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize_model(model: nn.Module, scheme: str, w_bits: int | None = None, a_bits: int | None = None,
                   scaling: str = "filter", replace_relu: bool | None = None, inplace: bool = False) -> nn.Module:
    """Replace every convolution and linear layer by a quantized one, except the first
    convolution and the last linear layer, which stay full precision.

    The latent weights are copied, so a quantized model starts from its full-precision
    checkpoint.  ``scheme`` is ``"bnn"`` (1-bit weights and activations) or ``"dorefa"``
    (``w_bits``/``a_bits``, 2 by default).

    ``replace_relu`` (default: True for ``"bnn"``): ``sign(relu(x))`` is +1 everywhere
    (``sign(0) = +1``), so a binary-activation network cannot have a ReLU in front of a
    binarized layer; ReLUs become identities and the BatchNorm output is binarized
    directly, as in XNOR-Net and Bi-Real Net.  DoReFa keeps its ReLUs (its activation
    quantizer clips to ``[0, 1]`` anyway).
    """
    spec = make_spec(scheme, w_bits, a_bits, scaling)
    if replace_relu is None:
        replace_relu = scheme == "bnn"
    model = model if inplace else copy.deepcopy(model)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    keep_fp = {convs[0]} if convs else set()
    if linears:
        keep_fp.add(linears[-1])
    for name, module in list(model.named_modules()):
        if name in keep_fp or is_quantized(module):
            continue
        if isinstance(module, nn.Conv2d):
            new = conv_from(module, spec)
        elif isinstance(module, nn.Linear):
            new = linear_from(module, spec)
        elif replace_relu and isinstance(module, nn.ReLU):
            _set_module(model, name, nn.Identity())
            continue
        else:
            continue
        new.load_state_dict(module.state_dict(), strict=False)
        new.to(module.weight.device)
        _set_module(model, name, new)
    model.quant_config = {"scheme": scheme, **spec.to_dict(), "replace_relu": replace_relu}
    return model


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if is_quantized(m)}
