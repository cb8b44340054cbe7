"""The search space of per-layer ratios: the unit cube, the linear size constraint and feasible draws.

A candidate is ``x`` in ``[0, 1]^d``, the ratios ``r = r_max x``.  With block-mode pruning of a
ResNet the size is (up to the rounding of filter counts) linear in the ratios; where searched
layers share weights (a chain of convolutions) :meth:`qrepro.size.SizeModel.weights` bounds it by
a linear function from above (:class:`qrepro.size.SizeModel`), so the paper-style target ``size <= (1 - target) S0`` is the linear inequality
``sum_l b_l N_l r_max x_l >= target S0`` that BoTorch's ``optimize_acqf`` takes as it is.
Functions take a search config (``mode``, ``target``, ``r_max``) and a size model.

The joint search (``space="joint"``: a ratio and a bit-width per layer; ``space="bits"``: bit-widths only)
encodes bit-width ``choices[i]`` of ``K`` choices as the coordinate ``i / (K - 1)``, after the ratios:
``x = (x_ratios, x_bits)``.  Its size model is a :class:`qrepro.precision.PrecisionCost`; for fixed
bit-widths its size and BOPs are bounded from above by functions linear in the ratios, so each
constraint is linear in the ratio coordinates once the bit-widths are chosen, and a candidate that
meets the bound meets the budget exactly.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from botorch.utils.sampling import get_polytope_samples

from .errors import BadInput
from .precision import PrecisionCost
from .size import SizeModel

if TYPE_CHECKING:  # annotations only: the search module imports this one
    from .search import SearchConfig

DTYPE = torch.double


class SearchError(BadInput):
    """A bad search setting (budget, target, layers, objective value, ...)."""


def check_reachable(cfg: SearchConfig, size: SizeModel | PrecisionCost):
    """Raise if no ratios in ``[0, r_max]`` (and bit-widths among the choices) meet the size target."""
    if cfg.mode != "constrained":
        return
    if cfg.space != "ratios":
        lowest = torch.full((1, len(size.layers)), float(min(cfg.bit_choices)), dtype=DTYPE)
        if not bool(_joint_feasible(lowest, torch.full_like(lowest, cfg.r_max if cfg.space == "joint" else 0.0),
                                    cfg, size)):
            raise SearchError(f"the budget cannot be met: at {min(cfg.bit_choices)} bits"
                              + (f" and r_max={cfg.r_max}" if cfg.space == "joint" else " without pruning")
                              + " every searched unit is still above it; lower target or bops_target, add a lower "
                                "bit-width, or search ratios too (space='joint')")
        return
    best = size.linear_size(torch.full((len(size.layers),), cfg.r_max, dtype=DTYPE), cfg.r_max).item()
    need = (1 - cfg.target) * size.base
    if best > need:
        reach = 1 - best / size.base
        raise SearchError(f"target {cfg.target:.4f} cannot be reached: pruning every searched layer at "
                         f"r_max={cfg.r_max} removes only {reach:.4f} of the model size; lower the target, raise "
                         "r_max or search more layers")


def constraint(cfg: SearchConfig, size: SizeModel):
    """``sum_l w_l r_max x_l >= target S0`` on the unit cube, in BoTorch's format."""
    w = size.weights(cfg.r_max) * cfg.r_max
    scale = w.max()  # keep the coefficients O(1) for SLSQP
    return [(torch.arange(len(w)), w / scale, float(cfg.target * size.base / scale))]


def dimensions(cfg: SearchConfig, d: int) -> int:
    """Coordinates of a candidate: a ratio per layer, a bit-width per layer, or both."""
    return {"ratios": d, "bits": d, "joint": 2 * d}[cfg.space]


def decode(x: torch.Tensor, cfg: SearchConfig, d: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(ratios (n, d), bits (n, d) or None)`` of candidates ``x`` ``(n, D)``: ratios ``r_max x``, bit-widths the
    nearest choice on the grid ``i / (K - 1)``."""
    x = x.to(DTYPE)
    if cfg.space == "ratios":
        return x * cfg.r_max, None
    choices = torch.tensor(cfg.bit_choices, dtype=DTYPE)
    xb = x[..., -d:]
    bits = choices[(xb * (len(choices) - 1)).round().clamp(0, len(choices) - 1).long()]
    ratios = x[..., :d] * cfg.r_max if cfg.space == "joint" else torch.zeros_like(xb)
    return ratios, bits


def budgets(cfg: SearchConfig, size: PrecisionCost) -> list[tuple[str, float]]:
    """The joint search's constraints: ``(what, most allowed)`` for the size and, with ``bops_target``, the BOPs."""
    out = [("size", (1 - cfg.target) * size.base)]
    if cfg.bops_target is not None:
        out.append(("bops", (1 - cfg.bops_target) * size.bops_base))
    return out


def _joint_feasible(bits: torch.Tensor, ratios: torch.Tensor, cfg: SearchConfig, size: PrecisionCost) -> torch.Tensor:
    """Whether the linear upper bounds of size (and BOPs) at ``bits`` and ``ratios`` meet the budgets."""
    ok = torch.ones(bits.shape[0], dtype=torch.bool)
    for what, most in budgets(cfg, size):
        const, coef = size.linear(bits, what, cfg.r_max)
        ok &= const - (coef * ratios).sum(1) <= most * (1 + 1e-9)
    return ok


def joint_constraints(bits: torch.Tensor, cfg: SearchConfig, size: PrecisionCost):
    """The budgets at fixed bit-widths ``bits`` ``(d,)`` as BoTorch inequality constraints on the ratio coordinates."""
    d = len(size.layers)
    out = []
    for what, most in budgets(cfg, size):
        const, coef = size.linear(bits.view(1, -1), what, cfg.r_max)
        w = coef[0] * cfg.r_max
        scale = float(w.max().clamp_min(1e-30))  # keep the coefficients O(1) for SLSQP
        out.append((torch.arange(d), w / scale, float(const[0] - most) / scale))
    return out


def _push_feasible(x: torch.Tensor, cfg: SearchConfig, size: PrecisionCost) -> torch.Tensor:
    """Move each row's ratio coordinates toward 1 along ``x + t (1 - x)``, by the least ``t`` that meets every
    budget at its bit-widths (``t = 0`` where it does already); rows no ``t`` in [0, 1] helps are left as they are."""
    d = len(size.layers)
    if cfg.space != "joint":
        return x
    _, bits = decode(x, cfg, d)
    xr = x[:, :d]
    t = torch.zeros(x.shape[0], dtype=DTYPE)
    for what, most in budgets(cfg, size):
        const, coef = size.linear(bits, what, cfg.r_max)
        now = const - cfg.r_max * (coef * xr).sum(1)
        gain = cfg.r_max * (coef * (1 - xr)).sum(1)
        t = torch.maximum(t, ((now - most * (1 - 1e-9)) / gain.clamp_min(1e-30)).clamp(0, 1))
    x = x.clone()
    x[:, :d] = xr + t.unsqueeze(1) * (1 - xr)
    return x


def joint_feasible(x: torch.Tensor, cfg: SearchConfig, size: PrecisionCost) -> torch.Tensor:
    ratios, bits = decode(x, cfg, len(size.layers))
    return _joint_feasible(bits, ratios, cfg, size)


ENUMERABLE = 2**18  # bits-only spaces up to this many bit-width vectors are listed whole, not sampled


def all_bit_vectors(cfg: SearchConfig, size: PrecisionCost) -> torch.Tensor | None:
    """Every bits-only candidate that meets the budgets (``(m, d)``, grid coordinates), or None where there are
    more than ``ENUMERABLE`` bit-width vectors to list."""
    d, k = len(size.layers), len(cfg.bit_choices)
    if cfg.space != "bits" or k**d > ENUMERABLE:
        return None
    grid = torch.cartesian_prod(*[torch.arange(k, dtype=DTYPE) / max(1, k - 1)] * d).reshape(-1, d)
    return grid[joint_feasible(grid, cfg, size)] if cfg.mode == "constrained" else grid


def joint_draws(n: int, cfg: SearchConfig, size: PrecisionCost, seed: int, sobol: bool) -> torch.Tensor:
    """``n`` candidates of the joint (or bits-only) space that meet the budgets: bit-widths uniform among the
    choices and ratios uniform (Sobol or pseudo-random), kept where feasible; where too few are, ratios are moved
    toward ``r_max`` (:func:`_push_feasible`) on rows whose bit-widths can meet the budgets at all.  Bits only:
    uniform over the feasible bit-width vectors (:func:`all_bit_vectors`), drawn with replacement."""
    d = len(size.layers)
    dim = dimensions(cfg, d)
    engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed) if sobol else None
    g = torch.Generator().manual_seed(seed)
    k = len(cfg.bit_choices)
    listed = all_bit_vectors(cfg, size)
    if listed is not None:  # bits only: uniform over the feasible bit-width vectors, listed whole
        return listed[torch.randint(len(listed), (n,), generator=g)]
    out, pushed = [], []
    for _ in range(32):
        draw = engine.draw(1024).to(DTYPE) if sobol else torch.rand(1024, dim, generator=g, dtype=DTYPE)
        draw[:, -d:] = (draw[:, -d:] * k).floor().clamp(max=k - 1) / max(1, k - 1)  # a uniform choice per layer
        if cfg.mode != "constrained":
            out.append(draw)
        else:
            ok = joint_feasible(draw, cfg, size)
            out.append(draw[ok])
            if cfg.space == "joint":
                moved = _push_feasible(draw[~ok], cfg, size)
                pushed.append(moved[joint_feasible(moved, cfg, size)])
        if sum(len(o) for o in out) >= n:
            return torch.cat(out)[:n]
    x = torch.cat(out + pushed)[:n]
    if len(x) < n:
        raise SearchError(f"found only {len(x)} of {n} candidates that meet the budget in 32768 draws; lower the "
                          "target (or bops_target), or add lower bit-widths to bit_choices")
    return x


def unit_cube(d: int) -> torch.Tensor:
    """``(2, d)`` bounds of the normalized search space."""
    return torch.stack([torch.zeros(d, dtype=DTYPE), torch.ones(d, dtype=DTYPE)])


def is_feasible(x: torch.Tensor, cfg: SearchConfig, size: SizeModel) -> torch.Tensor:
    if cfg.mode != "constrained":
        return torch.ones(x.shape[0], dtype=torch.bool)
    if cfg.space != "ratios":
        return joint_feasible(x, cfg, size)
    ((_, coef, rhs),) = constraint(cfg, size)
    return x.to(DTYPE) @ coef >= rhs - 1e-9


def feasible_draws(n: int, cfg: SearchConfig, size: SizeModel, seed: int, sobol: bool) -> torch.Tensor:
    """``n`` points of the unit cube that meet the constraint: the first feasible points of a
    scrambled Sobol sequence (``sobol``) or of uniform draws, by rejection; hit-and-run
    sampling of the polytope when rejection accepts too few.  The joint space: :func:`joint_draws`."""
    if cfg.space != "ratios":
        return joint_draws(n, cfg, size, seed, sobol)
    d = len(size.layers)
    engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed) if sobol else None
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(64):
        draw = engine.draw(1024).to(DTYPE) if sobol else torch.rand(1024, d, generator=g, dtype=DTYPE)
        out.append(draw[is_feasible(draw, cfg, size)])
        if sum(len(o) for o in out) >= n:
            return torch.cat(out)[:n]

    ((idx, coef, rhs),) = constraint(cfg, size)
    return get_polytope_samples(n, unit_cube(d), [(idx, coef.to(DTYPE), rhs + 1e-6)], seed=seed)


def project_feasible(x: torch.Tensor, cfg: SearchConfig, size: SizeModel) -> torch.Tensor:
    if cfg.space != "ratios":
        return _push_feasible(x, cfg, size)
    ((_, coef, rhs),) = constraint(cfg, size)
    for i in range(x.shape[0]):
        for _ in range(100):
            gap = rhs - float(x[i] @ coef)
            if gap <= 0:
                break
            free = x[i] < 1
            step = (gap + 1e-9) / float((coef * free).sum())
            x[i] = (x[i] + step * free.to(DTYPE)).clamp(0, 1)
    return x


def pruned_fraction(x: torch.Tensor, cfg: SearchConfig, size: SizeModel) -> torch.Tensor:
    """The known second objective: fraction of the model size removed (linear bound); the joint space: ``(..., 2)``,
    the fractions of the size and of the BOPs removed."""
    if cfg.space != "ratios":
        shape = x.shape[:-1]
        ratios, bits = decode(x.reshape(-1, x.shape[-1]), cfg, len(size.layers))
        cols = []
        for what, base in (("size", size.base), ("bops", size.bops_base)):
            const, coef = size.linear(bits, what, cfg.r_max)
            cols.append(1 - (const - (coef * ratios).sum(1)) / base)
        return torch.stack(cols, -1).reshape(*shape, 2)
    return (x.to(DTYPE) * cfg.r_max) @ size.weights(cfg.r_max) / size.base


def uniform_ratio(cfg: SearchConfig, size: SizeModel) -> float:
    """The smallest single ratio for every layer that meets the size target (exact sizes)."""
    w = size.weights(cfg.r_max).sum().item()
    r = min(cfg.r_max, cfg.target * size.base / w)
    need = (1 - cfg.target) * size.base
    while size.exact_size([r] * len(size.layers)) > need + 1e-6 and r < cfg.r_max:
        r = min(cfg.r_max, r + 1e-4)
    return r
