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

* Ternary weights (TWN, Li, Zhang and Liu 2016, arXiv:1605.04711): ``w_t = alpha t``,
  ``t = sign(w) 1_{|w| > 0.7 mean|w|}`` and ``alpha`` the mean of ``|w|`` above that threshold, per
  filter (or per layer, the paper's); backward: straight through; full-precision activations.

A quantizer is one object (:class:`WeightQuantizer`, :class:`ActivationQuantizer`) that owns its
forward and backward, its scale, its codes (what a criterion compares), its bits (what the size
formula counts and a packed file stores), the way back from stored levels to weights, and its fused
inference form; registered by name (``WEIGHT_QUANTIZERS``, ``ACTIVATION_QUANTIZERS``, ``SCHEMES``) so
configs, notebooks and the command line name them as strings, and no other module branches on a name.
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
    costs more than the product itself (benchmarks/HISTORY.md).
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
    tensor, or ``torch.where`` with scalars, costs several times more (benchmarks/HISTORY.md)."""
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


# --------------------------------------------------------------------------- ternary weights
class _IdentitySTE(torch.autograd.Function):
    """``target`` forward, the gradient passed to ``w`` unchanged (TWN updates the latent weights with
    the gradient of the ternary ones)."""

    @staticmethod
    def forward(ctx, w, target):
        return target

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def ternary_codes(w: torch.Tensor, scaling: str = "filter") -> torch.Tensor:
    """TWN's codes ``t = sign(w) 1_{|w| > delta}`` in ``{-1, 0, +1}``, ``delta = 0.7 mean(|w|)`` per output
    filter (``"filter"``) or over the layer (``"layer"``, the paper's)."""
    dims = tuple(range(1, w.dim())) if scaling == "filter" else tuple(range(w.dim()))
    delta = 0.7 * w.abs().mean(dim=dims, keepdim=True)
    return torch.where(w.abs() > delta, torch.where(w >= 0, 1.0, -1.0), 0.0).to(w.dtype)


def ternary_scale(w: torch.Tensor, scaling: str = "filter") -> torch.Tensor:
    """TWN's ``alpha``: the mean of ``|w|`` over the weights above the threshold, per filter or per layer
    (0 where no weight is above it)."""
    t = ternary_codes(w, scaling).abs()
    dims = tuple(range(1, w.dim())) if scaling == "filter" else tuple(range(w.dim()))
    return (w.abs() * t).sum(dim=dims, keepdim=True) / t.sum(dim=dims, keepdim=True).clamp_min(1)


def ternarize_weight(w: torch.Tensor, scaling: str = "filter", scale: torch.Tensor | None = None) -> torch.Tensor:
    """Ternary Weight Networks (Li, Zhang and Liu 2016, arXiv:1605.04711): ``w_t = alpha t`` with ``t`` of
    :func:`ternary_codes` and ``alpha`` of :func:`ternary_scale` (``scale``: a frozen ``alpha``, ``(N,)``
    per filter or ``(1,)`` per layer); backward: straight through, ``dL/dw = dL/dw_t``."""
    alpha = ternary_scale(w.detach(), scaling) if scale is None else (
        scale.reshape(-1, *([1] * (w.dim() - 1))) if scaling == "filter" else scale.reshape(()))
    return _IdentitySTE.apply(w, alpha.to(w.dtype) * ternary_codes(w.detach(), scaling))


# --------------------------------------------------------------------------- quantizers as objects
class WeightQuantizer:
    """One registered weight quantizer: everything the package asks of it, so no other module branches on
    its name.  ``spec`` is the layer's :class:`QuantSpec`; weights are ``(N, ...)``, codes ``(N, D)``."""

    name = ""

    def check(self, spec: "QuantSpec"):
        """Raise a :class:`QuantizationError` for bits or a scaling this quantizer does not have."""

    def code_kind(self, spec: "QuantSpec") -> str:
        """``"binary"``: codes in {-1, +1} (criteria use the Hamming distance); ``"levels"``: integer levels."""
        return "levels"

    def scale_shape(self, spec: "QuantSpec", out_channels: int) -> tuple[int, ...]:
        """Shape of the frozen-scale buffer."""
        raise NotImplementedError

    def per_filter_scale(self, spec: "QuantSpec") -> bool:
        """Whether the scale holds one value per output filter (pruning slices it with the filters)."""
        return False

    def scale(self, w: torch.Tensor, spec: "QuantSpec") -> torch.Tensor:
        """The scale computed from the latent weights, in :meth:`scale_shape`."""
        raise NotImplementedError

    def quantize(self, w: torch.Tensor, spec: "QuantSpec", scale: torch.Tensor | None = None) -> torch.Tensor:
        """The quantized weights (forward, with a straight-through backward); ``scale``: a frozen one."""
        raise NotImplementedError

    def codes(self, w: torch.Tensor, wq: torch.Tensor, spec: "QuantSpec") -> torch.Tensor:
        """``(N, D)`` codes with the scales divided out, from the latent ``w`` and quantized ``wq`` weights."""
        raise NotImplementedError

    def levels(self, codes: torch.Tensor, spec: "QuantSpec") -> torch.Tensor:
        """The codes as integers in ``[0, 2^w_bits)``: what a packed file stores."""
        return codes

    def latent(self, levels: torch.Tensor, spec: "QuantSpec", scale: torch.Tensor) -> torch.Tensor:
        """Latent weights that quantize back to ``levels`` under the frozen ``scale`` (float64)."""
        raise NotImplementedError


class ScaledWeights(WeightQuantizer):
    """A quantizer whose codes are multiplied by a scale per filter, per layer, or none (``spec.scaling``),
    computed by ``scale_of(w, scaling)``."""

    scale_of: Callable[[torch.Tensor, str], torch.Tensor]

    def scale_shape(self, spec, out_channels):
        return {"filter": (out_channels,), "layer": (1,), "none": (0,)}[spec.scaling]

    def per_filter_scale(self, spec):
        return spec.scaling == "filter"

    def scale(self, w, spec):
        return self.scale_of(w, spec.scaling).reshape(self.scale_shape(spec, w.shape[0]))


class BinaryWeights(ScaledWeights):
    """BNN / XNOR: ``alpha sign(w)`` (:func:`binarize_weight`)."""

    name = "binary"
    scale_of = staticmethod(binary_scale)

    def check(self, spec):
        if spec.w_bits != 1:
            raise QuantizationError(f"weight quantizer 'binary' has 1 bit, got w_bits={spec.w_bits}")

    def code_kind(self, spec):
        return "binary"

    def quantize(self, w, spec, scale=None):
        return binarize_weight(w, spec.scaling, scale)

    def codes(self, w, wq, spec):
        return torch.where(w.flatten(1) >= 0, 1.0, -1.0)

    def levels(self, codes, spec):
        return (codes > 0).to(codes.dtype)

    def latent(self, levels, spec, scale):
        return levels * 2 - 1  # the sign is all a binary layer keeps


class DoReFaWeights(WeightQuantizer):
    """DoReFa-Net's k-bit weights, ``E|w| sign(w)`` at 1 bit (:func:`dorefa_weight`)."""

    name = "dorefa"

    def code_kind(self, spec):
        return "binary" if spec.w_bits == 1 else "levels"

    def scale_shape(self, spec, out_channels):
        return (0,) if spec.w_bits == FULL_PRECISION_BITS else (1,)

    def scale(self, w, spec):
        return dorefa_scale(w, spec.w_bits).reshape(1)

    def quantize(self, w, spec, scale=None):
        return dorefa_weight(w, spec.w_bits, scale)

    def codes(self, w, wq, spec):
        if spec.w_bits == 1:
            return torch.where(w.flatten(1) >= 0, 1.0, -1.0)
        if spec.w_bits == FULL_PRECISION_BITS:
            return w.flatten(1).clone()
        return torch.round((wq.flatten(1) + 1) * (2**spec.w_bits - 1) / 2)

    def levels(self, codes, spec):
        return (codes > 0).to(codes.dtype) if spec.w_bits == 1 else codes

    def latent(self, levels, spec, scale):
        if spec.w_bits == 1:
            return levels * 2 - 1
        k = spec.w_bits  # a latent weight whose tanh sits exactly on level l under the frozen max|tanh|
        return torch.atanh(scale.double().clamp(max=1 - 1e-7) * (2 * levels / (2**k - 1) - 1))


class TernaryWeights(ScaledWeights):
    """Ternary Weight Networks, ``alpha t`` with ``t`` in {-1, 0, +1} (:func:`ternarize_weight`), stored
    at 2 bits per weight (levels 0, 1, 2 for -1, 0, +1)."""

    name = "ternary"
    scale_of = staticmethod(ternary_scale)

    def check(self, spec):
        if spec.w_bits != 2:
            raise QuantizationError(f"weight quantizer 'ternary' is stored at 2 bits, got w_bits={spec.w_bits}")
        if spec.scaling == "none":
            raise QuantizationError("weight quantizer 'ternary' needs a scale: scaling 'filter' or 'layer'")

    def quantize(self, w, spec, scale=None):
        return ternarize_weight(w, spec.scaling, scale)

    def codes(self, w, wq, spec):
        return ternary_codes(w, spec.scaling).flatten(1)

    def levels(self, codes, spec):
        return codes + 1

    def latent(self, levels, spec, scale):
        return levels - 1  # |±1| is above 0.7 mean|w| <= 0.7, and 0 is not: the same codes


class ActivationQuantizer:
    """One registered activation quantizer: its forward with a straight-through backward, and its
    fused-inference form (the input as integers, the step folded into the next layer's weights)."""

    name = ""
    replaces_relu = False  # a ReLU in front would make every input the same code (sign(relu(x)) = +1)
    clips_at_zero = False  # the quantizer maps negatives as a ReLU would (a ReLU in front changes nothing)

    def check(self, bits: int):
        """Raise a :class:`QuantizationError` for bits this quantizer does not have."""

    def quantize(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        raise NotImplementedError

    def step(self, bits: int) -> float:
        """The input's integer step as a divisor: the fused layer's weights are divided by it."""
        return 1.0

    def integers(self, x: torch.Tensor, bits: int, scratch: bool = False) -> torch.Tensor:
        """The quantized input times :meth:`step`, exactly (``scratch``: ``x`` may be overwritten)."""
        raise NotImplementedError


class SignActivations(ActivationQuantizer):
    """``sign(x)`` (:func:`binarize_activation`); fused: +1 / -1."""

    name, replaces_relu = "sign", True

    def check(self, bits):
        if bits != 1:
            raise QuantizationError(f"activation quantizer 'sign' has 1 bit, got a_bits={bits}")

    def quantize(self, x, bits):
        return binarize_activation(x, bits)

    def integers(self, x, bits, scratch=False):
        return x.ge_(0).mul_(2).sub_(1) if scratch else _sign(x)


class DoReFaActivations(ActivationQuantizer):
    """``quantize_k(clip(x, 0, 1))`` (:func:`dorefa_activation`); fused: the levels ``0 .. 2^k - 1``."""

    name, clips_at_zero = "dorefa", True

    def quantize(self, x, bits):
        return dorefa_activation(x, bits)

    def step(self, bits):
        return float(2**bits - 1)

    def integers(self, x, bits, scratch=False):
        levels = self.step(bits)  # round(clip(x, 0, 1) (2^k - 1)), exactly
        return (x.mul_(levels) if scratch else x.mul(levels)).clamp_(0, levels).round_()


WEIGHT_QUANTIZERS: dict[str, WeightQuantizer] = {}
ACTIVATION_QUANTIZERS: dict[str, ActivationQuantizer] = {}


def register_weight_quantizer(q: WeightQuantizer) -> WeightQuantizer:
    WEIGHT_QUANTIZERS[q.name] = q
    return q


def register_activation_quantizer(q: ActivationQuantizer) -> ActivationQuantizer:
    ACTIVATION_QUANTIZERS[q.name] = q
    return q


for _q in (BinaryWeights(), DoReFaWeights(), TernaryWeights()):
    register_weight_quantizer(_q)
for _a in (SignActivations(), DoReFaActivations()):
    register_activation_quantizer(_a)


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
        self.weight_quantizer.check(self)
        if self.act_quantizer is not None:
            self.act_quantizer.check(self.a_bits)

    @property
    def weight_quantizer(self) -> WeightQuantizer:
        return WEIGHT_QUANTIZERS[self.weight]

    @property
    def act_quantizer(self) -> ActivationQuantizer | None:
        """The input's quantizer, or None where the input stays full precision."""
        return None if self.act is None or self.a_bits == FULL_PRECISION_BITS else ACTIVATION_QUANTIZERS[self.act]

    @property
    def code_kind(self) -> str:
        return self.weight_quantizer.code_kind(self)

    def scale_shape(self, out_channels: int) -> tuple[int, ...]:
        """Shape of the frozen-scale buffer: one per filter, one per layer, or none."""
        return self.weight_quantizer.scale_shape(self, out_channels)

    def to_dict(self) -> dict:
        return asdict(self)


def _scheme_bnn(w_bits: int = 1, a_bits: int = 1, scaling: str = "filter") -> QuantSpec:
    if w_bits != 1 or a_bits != 1:
        raise QuantizationError(f"scheme 'bnn' is 1-bit weights and activations, got w_bits={w_bits}, a_bits={a_bits}")
    return QuantSpec("binary", 1, scaling, "sign", 1)


def _scheme_dorefa(w_bits: int = 2, a_bits: int = 2, scaling: str = "filter") -> QuantSpec:
    return QuantSpec("dorefa", w_bits, scaling, "dorefa", a_bits)


def _scheme_ternary(w_bits: int = 2, a_bits: int = FULL_PRECISION_BITS, scaling: str = "filter") -> QuantSpec:
    """TWN: ternary weights stored at 2 bits, full-precision activations (as in the paper)."""
    if w_bits != 2 or a_bits != FULL_PRECISION_BITS:
        raise QuantizationError(f"scheme 'ternary' is ternary weights (2 bits stored) and full-precision activations, "
                                f"got w_bits={w_bits}, a_bits={a_bits}")
    return QuantSpec("ternary", 2, scaling, None, FULL_PRECISION_BITS)


SCHEMES: dict[str, Callable[..., QuantSpec]] = {"bnn": _scheme_bnn, "dorefa": _scheme_dorefa,
                                                "ternary": _scheme_ternary}


def make_spec(scheme: str, w_bits: int | None = None, a_bits: int | None = None, scaling: str = "filter") -> QuantSpec:
    """The :class:`QuantSpec` of a named scheme (``SCHEMES``: ``"bnn"``, ``"dorefa"``, ``"ternary"``)."""
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
        return self.spec.weight_quantizer.scale(self.weight.detach(), self.spec)

    def freeze_scale(self):
        """Store the current scale and use it from now on (the post-pruning convention)."""
        self.w_scale = self.current_scale().clone()
        self.scale_frozen = torch.ones((), dtype=torch.bool, device=self.w_scale.device)
        self._frozen = True

    def quantized_weight(self) -> torch.Tensor:
        return self.spec.weight_quantizer.quantize(self.weight, self.spec, self.w_scale if self._frozen else None)

    def weight_codes(self) -> torch.Tensor:
        """Quantized filters with scales divided out, shape ``(N, D)`` (binary: the ``{-1, +1}`` codes;
        k-bit DoReFa: the integer levels ``0 .. 2^k - 1``; ternary: ``{-1, 0, +1}``)."""
        w = self.weight.detach()
        with torch.no_grad():
            return self.spec.weight_quantizer.codes(w, self.quantized_weight().detach(), self.spec)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        q = self.spec.act_quantizer
        return x if q is None else q.quantize(x, self.spec.a_bits)

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
              out_channels: int | None = None, groups: int | None = None) -> nn.Conv2d:
    """A new (Q)Conv2d with ``conv``'s hyper-parameters and, optionally, other channel counts."""
    kw = dict(
        in_channels=in_channels or conv.in_channels, out_channels=out_channels or conv.out_channels,
        kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
        groups=groups or conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
    )
    return QConv2d(**kw, spec=spec) if spec is not None else nn.Conv2d(**kw)


def linear_from(lin: nn.Linear, spec: QuantSpec | None, in_features: int | None = None,
                out_features: int | None = None) -> nn.Linear:
    """A new (Q)Linear with ``lin``'s bias setting and, optionally, other feature counts."""
    kw = dict(in_features=in_features or lin.in_features, out_features=out_features or lin.out_features,
              bias=lin.bias is not None)
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
    checkpoint.  ``scheme`` is ``"bnn"`` (1-bit weights and activations), ``"dorefa"``
    (``w_bits``/``a_bits``, 2 by default) or ``"ternary"`` (TWN weights, full-precision activations).

    ``replace_relu`` (default: True where the activation quantizer is ``sign``): ``sign(relu(x))`` is +1 everywhere
    (``sign(0) = +1``), so a binary-activation network cannot have a ReLU in front of a
    binarized layer; ReLUs become identities and the BatchNorm output is binarized
    directly, as in XNOR-Net and Bi-Real Net.  DoReFa keeps its ReLUs (its activation
    quantizer clips to ``[0, 1]`` anyway).
    """
    spec = make_spec(scheme, w_bits, a_bits, scaling)
    if replace_relu is None:
        replace_relu = spec.act_quantizer is not None and spec.act_quantizer.replaces_relu
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
        elif replace_relu and isinstance(module, (nn.ReLU, nn.ReLU6)):
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
