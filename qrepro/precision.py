"""Per-layer bit-widths: setting them, drawing them while training, and what they cost.

A DoReFa network runs at any weight and activation bit-width a layer's :class:`~qrepro.quantize.QuantSpec`
names, so one trained model can be evaluated at per-layer bit-widths without retraining
(:func:`set_bits`).  Training it for that draws each quantized layer's bit-width from a set of choices at
every step (:func:`draw_bits`, ``TrainConfig.bit_choices``): per-layer random precision as in Bit-Mixer
(Bulat and Tzimiropoulos, ICCV 2021), where Any-Precision DNNs (Yu et al., AAAI 2021) and AdaBits (Jin et
al., CVPR 2020) switch the whole network at once.  Unlike those two, the BatchNorms are shared across
bit-widths and re-estimated for the chosen ones before every evaluation (our choice: no switchable
BatchNorm to store per bit-width).

The joint search sets one bit-width per *unit*: the quantized layers that write a searched group's
channels, and those that only read them (a ResNet block's two convolutions); :func:`bit_units`.
:class:`PrecisionCost` gives the size and the bit-operations (BOPs = MACs x weight bits x activation bits)
of the model at any bit-widths and pruning ratios, exactly, and as an upper bound linear in the
ratios for fixed bit-widths, which is what the search's constraints use.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from .prune import apply_kept, check_layers, n_keep, prune_groups
from .quantize import FULL_PRECISION_BITS, QuantizationError, is_quantized
from .size import DEFAULT_CONVENTION, SizeConvention, model_size_bytes

BIT_CHOICES = (1, 2, 4, 8)


@dataclass(frozen=True)
class Candidate:
    """One point of a joint search: a ratio per searched group and a bit-width per unit (same names)."""

    ratios: dict[str, float]
    bits: dict[str, int]


def layer_bits(model: nn.Module) -> dict[str, int]:
    """Each quantized layer's weight bit-width, by name."""
    return {n: m.spec.w_bits for n, m in model.named_modules() if is_quantized(m)}


def set_bits(model: nn.Module, bits: Mapping[str, int]) -> nn.Module:
    """Set the weight bit-width of each named quantized layer, and its input's where the input is quantized;
    in place.  Recorded in ``model.quant_config["layer_bits"]`` (so checkpoints and packed files rebuild
    it).  A layer whose scale is frozen (pruned) keeps its bit-width: set bit-widths before pruning."""
    layers = dict(model.named_modules())
    for name, b in bits.items():
        m = layers.get(name)
        if m is None or not is_quantized(m):
            known = ", ".join(n for n, x in layers.items() if is_quantized(x))
            raise QuantizationError(f"{name!r} is not a quantized layer of this model; its quantized layers: {known}")
        quantized_input = m.spec.act_quantizer is not None
        spec = dataclasses.replace(m.spec, w_bits=b, a_bits=b if quantized_input else m.spec.a_bits)
        if spec == m.spec:
            continue
        if m.is_frozen:
            raise QuantizationError(f"{name} has a frozen (pruned) scale for {m.spec.w_bits} bits; set bit-widths "
                                    "before pruning")
        shape = spec.scale_shape(m.weight.shape[0])
        if tuple(m.w_scale.shape) != shape:
            m.w_scale = torch.zeros(shape, dtype=m.w_scale.dtype, device=m.w_scale.device)
        m.spec = spec
    config = getattr(model, "quant_config", None)
    if config is not None:
        differ = {n: b for n, b in layer_bits(model).items() if b != config["w_bits"]}
        model.quant_config = {k: v for k, v in config.items() if k != "layer_bits"}
        if differ:
            model.quant_config["layer_bits"] = differ
    return model


def draw_bits(model: nn.Module, choices: Sequence[int], generator: torch.Generator) -> dict[str, int]:
    """Set every quantized layer to a bit-width drawn uniformly from ``choices`` (a training step's draw)."""
    names = list(layer_bits(model))
    idx = torch.randint(len(choices), (len(names),), generator=generator).tolist()
    drawn = {n: int(choices[i]) for n, i in zip(names, idx)}
    set_bits(model, drawn)
    return drawn


def bit_units(model: nn.Module, layers: Sequence[str] | None = None, mode: str = "block") -> dict[str, list[str]]:
    """The quantized layers each searched group's bit-width sets: those that write (or carry) its channels,
    and those that read them and write no searched group.  Quantized layers in no unit keep their bits."""
    groups = prune_groups(model, mode)
    layers = list(layers or groups)
    quantized = {n for n, m in model.named_modules() if is_quantized(m)}
    units = {g: [n for n in groups[g].writers + groups[g].through if n in quantized] for g in layers}
    owned = {n for names in units.values() for n in names}
    for g in layers:
        for n in groups[g].readers:
            if n in quantized and n not in owned:
                units[g].append(n)
                owned.add(n)
    return units


def unit_bits(units: Mapping[str, Sequence[str]], bits: Mapping[str, int]) -> dict[str, int]:
    """Per-layer bit-widths from one bit-width per unit."""
    return {layer: int(bits[u]) for u, names in units.items() for layer in names}


@dataclass
class PrecisionCost:
    """Size (bytes, :mod:`qrepro.size`'s convention) and BOPs of a model at per-unit bit-widths ``b`` and
    per-group ratios ``r``, for the searched groups ``layers``:

        size = rest - sum_g f_g d_g + sum_j bits_j c_j k_j / 8,   BOPs = sum_j MACs_j wbits_j abits_j k_j

    over every convolution and linear layer ``j`` (``c_j`` weights; ``k_j`` the kept fraction of its
    weights: the product of the kept fractions of the searched groups it writes and reads), ``d_g`` the
    filters removed from group ``g`` and ``f_g`` the bytes of one filter's biases, scales and BatchNorm
    parameters.  ``base`` and ``bops_base``: the unpruned model at the bit-widths it had when measured
    (what targets are fractions of)."""

    layers: list[str]
    channels: dict[str, int]
    units: dict[str, list[str]]
    terms: list[dict]  # per layer: name, params, macs, w_bits, a_bits, unit (index or -1), follows (a_bits = unit's)
    rest: float
    rest_per_filter: dict[str, float]
    base: float = 0.0
    bops_base: float = 0.0

    @classmethod
    def from_model(cls, model: nn.Module, input_shape: Sequence[int], layers: Sequence[str] | None = None,
                   mode: str = "block", convention: SizeConvention = DEFAULT_CONVENTION) -> "PrecisionCost":
        """Measure ``model`` (inputs of ``input_shape``, e.g. ``(1, 28, 28)``: one forward for the MACs)."""
        groups = prune_groups(model, mode)
        layers = check_layers(groups, layers)
        units = bit_units(model, layers, mode)
        unit_of = {n: i for i, u in enumerate(layers) for n in units[u]}
        macs = _macs(model, input_shape)
        terms = []
        for name, m in model.named_modules():
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            q = is_quantized(m)
            writes = [i for i, g in enumerate(layers) if name in groups[g].writers + groups[g].through]
            reads = [i for i, g in enumerate(layers) if name in groups[g].readers]
            terms.append({"name": name, "params": m.weight.numel(), "macs": macs[name],
                          "w_bits": m.spec.w_bits if q else convention.fp_bits,
                          "a_bits": m.spec.a_bits if q and m.spec.act_quantizer is not None else FULL_PRECISION_BITS,
                          "unit": unit_of.get(name, -1), "follows": q and m.spec.act_quantizer is not None,
                          "groups": writes[:1] + reads[:1]})

        def rest_of(net):  # the bytes that are not weights of a convolution or linear layer
            weights = sum((x.spec.w_bits if is_quantized(x) else convention.fp_bits) * x.weight.numel()
                          for x in net.modules() if isinstance(x, (nn.Conv2d, nn.Linear)))
            return model_size_bytes(net, convention) - weights / 8

        rest = rest_of(model)
        per = {}
        for g in layers:
            kept = {g: list(range(groups[g].channels - 1))}
            per[g] = rest - rest_of(apply_kept(copy.deepcopy(model), kept, mode, "recompute", groups))
        cost = cls(layers, {g: groups[g].channels for g in layers}, units, terms, rest, per)
        current = [[t["w_bits"] for t in terms if t["unit"] == i] for i in range(len(layers))]
        if any(len(set(c)) > 1 for c in current):
            raise QuantizationError("the layers of one unit have different bit-widths; measure the model at one "
                                    "bit-width per unit (set_bits)")
        now = torch.tensor([[c[0] if c else 0 for c in current]], dtype=torch.double)  # a unit of no layer costs 0
        zero = torch.zeros(1, len(layers), dtype=torch.double)
        cost.base, cost.bops_base = float(cost.size(now, zero)), float(cost.bops(now, zero))
        return cost

    # ------------------------------------------------------------------ per-term coefficients
    @functools.cached_property
    def _term_tensors(self) -> dict[str, torch.Tensor]:
        """The per-layer fields of ``terms`` as tensors (computed once: every batch of candidates reuses them),
        and the incidence of layers on searched groups: ``one`` where a layer touches one group, ``two`` where
        it writes one and reads another."""
        t = self.terms
        one = torch.zeros(len(self.layers), len(t), dtype=torch.double)
        two = torch.zeros_like(one)
        for j, term in enumerate(t):
            for g in term["groups"]:
                (one if len(term["groups"]) == 1 else two)[g, j] = 1.0
        col = lambda key: torch.tensor([float(x[key]) for x in t], dtype=torch.double)  # noqa: E731
        unit = torch.tensor([x["unit"] for x in t], dtype=torch.long)
        return {"unit": unit, "searched": unit >= 0, "follows": torch.tensor([bool(x["follows"]) for x in t]),
                "params": col("params"), "macs": col("macs"), "w_bits": col("w_bits"), "a_bits": col("a_bits"),
                "one": one, "two": two}

    def _coefficients(self, bits: torch.Tensor, what: str) -> torch.Tensor:
        """``(n, J)``: bytes (``"size"``) or BOPs (``"bops"``) of each layer, unpruned, at unit bit-widths ``bits``
        ``(n, d)``."""
        t = self._term_tensors
        wb = torch.where(t["searched"], bits[:, t["unit"].clamp(min=0)], t["w_bits"])
        if what == "size":
            return wb * t["params"] / 8
        ab = torch.where(t["searched"] & t["follows"], wb, t["a_bits"])
        return wb * ab * t["macs"]

    def _kept(self, ratios: torch.Tensor, exact: bool) -> torch.Tensor:
        """``(n, J)`` kept fraction of each layer's weights at ``ratios`` ``(n, d)``."""
        if exact:
            n_ch = torch.tensor([self.channels[g] for g in self.layers], dtype=torch.double)
            frac = torch.tensor([[n_keep(int(c), float(r)) for c, r in zip(n_ch, row)] for row in ratios],
                                dtype=torch.double).reshape(ratios.shape) / n_ch
        else:
            frac = 1 - ratios
        cols = [torch.prod(frac[:, t["groups"]], 1) if t["groups"] else torch.ones(len(frac), dtype=torch.double)
                for t in self.terms]
        return torch.stack(cols, 1)

    def _removed_rest(self, ratios: torch.Tensor, exact: bool) -> torch.Tensor:
        f = torch.tensor([self.rest_per_filter[g] for g in self.layers], dtype=torch.double)
        n_ch = torch.tensor([self.channels[g] for g in self.layers], dtype=torch.double)
        if exact:
            kept = torch.tensor([[n_keep(self.channels[g], float(r)) for g, r in zip(self.layers, row)]
                                 for row in ratios], dtype=torch.double).reshape(ratios.shape)
            return (n_ch - kept) @ f
        return ratios @ (f * n_ch)

    # ------------------------------------------------------------------ exact values
    def size(self, bits: torch.Tensor, ratios: torch.Tensor, exact: bool = True) -> torch.Tensor:
        """``(n,)`` bytes at unit bit-widths ``bits`` and ratios ``ratios`` (both ``(n, d)``); ``exact``: with the
        filter counts :func:`qrepro.prune.n_keep` keeps, else the continuous ratios."""
        bits, ratios = _2d(bits), _2d(ratios)
        return self.rest - self._removed_rest(ratios, exact) + (self._coefficients(bits, "size")
                                                               * self._kept(ratios, exact)).sum(1)

    def bops(self, bits: torch.Tensor, ratios: torch.Tensor, exact: bool = True) -> torch.Tensor:
        """``(n,)`` bit-operations per image (MACs x weight bits x activation bits, full precision 32 x 32)."""
        bits, ratios = _2d(bits), _2d(ratios)
        return (self._coefficients(bits, "bops") * self._kept(ratios, exact)).sum(1)

    # ------------------------------------------------------------------ the linear bound
    def _bound_matrix(self, r_max: float) -> torch.Tensor:
        """``A`` ``(d, J)``: for ratios up to ``r_max``, a layer's kept fraction is at most ``1 - (r @ A)_j``
        (``(1 - a)(1 - b) <= 1 - (1 - r_max / 2)(a + b)``, as in :meth:`qrepro.size.SizeModel.weights`)."""
        t = self._term_tensors
        return t["one"] + (1 - r_max / 2) * t["two"]

    def linear(self, bits: torch.Tensor, what: str, r_max: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(const (n,), coef (n, d))`` with ``size`` (or ``bops``) ``<= const - coef @ r`` for every ``r`` in
        ``[0, r_max]^d``, at the unit bit-widths ``bits`` ``(n, d)``."""
        k = self._coefficients(_2d(bits), what)
        coef = k @ self._bound_matrix(r_max).T
        if what == "size":
            f = torch.tensor([self.rest_per_filter[g] * self.channels[g] for g in self.layers], dtype=torch.double)
            return self.rest + k.sum(1), coef + f
        return k.sum(1), coef

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _2d(t) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.double)
    return t.unsqueeze(0) if t.dim() == 1 else t


def _macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Multiply-accumulates per image of every convolution and linear layer (one forward of zeros)."""
    net = copy.deepcopy(model).eval()
    out, hooks = {}, []
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            def hook(mod, inputs, output, name=name):
                spatial = output.shape[2:].numel() if isinstance(mod, nn.Conv2d) else output.shape[1:-1].numel()
                out[name] = int(mod.weight.numel() * spatial)
            hooks.append(m.register_forward_hook(hook))
    p = next(net.parameters())
    with torch.no_grad():
        net(torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device))
    for h in hooks:
        h.remove()
    return out
