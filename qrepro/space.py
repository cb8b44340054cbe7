"""The search space of per-layer ratios: the unit cube, the linear size constraint and feasible draws.

A candidate is ``x`` in ``[0, 1]^d``, the ratios ``r = r_max x``.  With block-mode pruning of a
ResNet the size is (up to the rounding of filter counts) linear in the ratios; where searched
layers share weights (a chain of convolutions) :meth:`qrepro.size.SizeModel.weights` bounds it by
a linear function from above (:class:`qrepro.size.SizeModel`), so the paper-style target ``size <= (1 - target) S0`` is the linear inequality
``sum_l b_l N_l r_max x_l >= target S0`` that BoTorch's ``optimize_acqf`` takes as it is.
Functions take a search config (``mode``, ``target``, ``r_max``) and a size model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from botorch.utils.sampling import get_polytope_samples

from .errors import BadInput
from .size import SizeModel

if TYPE_CHECKING:  # annotations only: the search module imports this one
    from .search import SearchConfig

DTYPE = torch.double


class SearchError(BadInput):
    """A bad search setting (budget, target, layers, objective value, ...)."""


def check_reachable(cfg: SearchConfig, size: SizeModel):
    """Raise if no ratios in ``[0, r_max]`` meet the size target."""
    if cfg.mode != "constrained":
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


def unit_cube(d: int) -> torch.Tensor:
    """``(2, d)`` bounds of the normalized search space."""
    return torch.stack([torch.zeros(d, dtype=DTYPE), torch.ones(d, dtype=DTYPE)])


def is_feasible(x: torch.Tensor, cfg: SearchConfig, size: SizeModel) -> torch.Tensor:
    if cfg.mode != "constrained":
        return torch.ones(x.shape[0], dtype=torch.bool)
    ((_, coef, rhs),) = constraint(cfg, size)
    return x.to(DTYPE) @ coef >= rhs - 1e-9


def feasible_draws(n: int, cfg: SearchConfig, size: SizeModel, seed: int, sobol: bool) -> torch.Tensor:
    """``n`` points of the unit cube that meet the constraint: the first feasible points of a
    scrambled Sobol sequence (``sobol``) or of uniform draws, by rejection; hit-and-run
    sampling of the polytope when rejection accepts too few."""
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
    """The known second objective: fraction of the model size removed (linear bound)."""
    return (x.to(DTYPE) * cfg.r_max) @ size.weights(cfg.r_max) / size.base


def uniform_ratio(cfg: SearchConfig, size: SizeModel) -> float:
    """The smallest single ratio for every layer that meets the size target (exact sizes)."""
    w = size.weights(cfg.r_max).sum().item()
    r = min(cfg.r_max, cfg.target * size.base / w)
    need = (1 - cfg.target) * size.base
    while size.exact_size([r] * len(size.layers)) > need + 1e-6 and r < cfg.r_max:
        r = min(cfg.r_max, r + 1e-4)
    return r
