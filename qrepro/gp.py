"""The surrogate and the acquisition step of the search: a GP fitted to the evaluations, and the
candidates that maximize an expected-improvement acquisition inside the feasible region.

A ``SingleTaskGP`` on unit-cube inputs (``Normalize``) and standardized outcomes, its marginal
likelihood computed in closed form (:mod:`qrepro.likelihood`); constrained mode maximizes the
closed-form LogEI (:mod:`qrepro.acquisition`, ``q = 1``) or BoTorch's qLogNEI (batches), Pareto
mode qLogNEHVI with the pruned fraction as a known second objective.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING

import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import (
    qLogNoisyExpectedHypervolumeImprovement,
)
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.deterministic import GenericDeterministicModel
from botorch.models.model import ModelList
from botorch.models.transforms import Normalize, Standardize
from botorch.optim import optimize_acqf
from botorch.utils.multi_objective.hypervolume import Hypervolume
from botorch.utils.multi_objective.pareto import is_non_dominated
from gpytorch.mlls import ExactMarginalLogLikelihood

from .acquisition import PosteriorLogEI
from .likelihood import mll_closure
from .size import SizeModel
from .precision import PrecisionCost
from .space import (
    DTYPE,
    all_bit_vectors,
    constraint,
    decode,
    dimensions,
    feasible_draws,
    is_feasible,
    joint_constraints,
    project_feasible,
    pruned_fraction,
    unit_cube,
)

if TYPE_CHECKING:  # annotations only: the search module imports this one
    from .search import SearchConfig


@contextlib.contextmanager
def single_thread():
    """Run the BO step on one thread: its tensors are tiny (tens of points), and on a machine
    that other processes load, two spinning OpenMP threads made one proposal several times slower
    (benchmarks/HISTORY.md, the search loop)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def propose_candidates(x: torch.Tensor, y: torch.Tensor, cfg: SearchConfig, size: SizeModel, step: int,
                   warm: dict | None = None, pending: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """``q`` candidates and the fitted GP's hyperparameters (journaled, to warm-start the next fit);
    ``pending``: candidates being evaluated, which the acquisition function treats as chosen."""
    seed = cfg.seed * 7919 + step
    torch.manual_seed(seed)
    d = x.shape[1]
    with warnings.catch_warnings(), single_thread():
        warnings.simplefilter("ignore")
        refit = warm is None or (step - cfg.n_init) % cfg.refit_every == 0
        gp = fit_gp(x, y[:, :1], warm, optimize=refit)
        if cfg.acquisition == "logei":
            acq = PosteriorLogEI(gp, x, pending)
        elif cfg.mode == "constrained":
            acq = qLogNoisyExpectedImprovement(gp, X_baseline=x, prune_baseline=True, X_pending=pending)
        else:
            acq = pareto_acquisition(gp, x, y, cfg, size, pending)
        if cfg.space != "ratios":
            return optimize_mixed(acq, x, cfg, size, seed), gp_hyperparameters(gp)
        constraints = constraint(cfg, size) if cfg.mode == "constrained" else None
        # Initial conditions: the best of ``raw_samples`` feasible q-batches by rejection sampling
        # (BoTorch's default hit-and-run polytope sampler costs seconds per step on 2 cores).
        raw = feasible_draws(cfg.raw_samples * cfg.q, cfg, size, seed, sobol=False)
        raw = raw.view(cfg.raw_samples, cfg.q, d)
        with torch.no_grad():
            top = acq(raw).topk(min(cfg.num_restarts, cfg.raw_samples)).indices
        cand, _ = optimize_acqf(acq, bounds=unit_cube(d), q=cfg.q, num_restarts=len(top),
                                batch_initial_conditions=raw[top], inequality_constraints=constraints,
                                options={"maxiter": 100})
    cand = cand.detach().clamp(0, 1)
    if cfg.mode == "constrained":  # SLSQP meets the constraint to ~1e-6: project the last bit exactly
        cand = project_feasible(cand, cfg, size)
    return cand, gp_hyperparameters(gp)


def optimize_mixed(acq, x_observed: torch.Tensor, cfg: SearchConfig, size: PrecisionCost, seed: int) -> torch.Tensor:
    """The next ``q`` candidates of the joint (or bits-only) space, one after another (each later one with the
    earlier ones as pending points where the acquisition takes them).

    Bit-widths are discrete and the ratios continuous, with constraints that are linear in the ratios once the
    bit-widths are fixed; so: score ``raw_samples`` feasible draws and every one-unit change of bit-width of
    the best observed candidates, then, for the ``num_restarts`` best, fix their bit-widths and maximize over
    the ratios under those constraints (SLSQP, as in the ratio search; BoTorch's ``optimize_acqf_mixed`` would
    enumerate the ``K^d`` bit-width vectors).  The bits-only space has no continuous part: the best of every
    feasible bit-width vector (:func:`qrepro.space.all_bit_vectors`), or of the draws and changes where too many.
    """
    d = len(size.layers)
    dim = dimensions(cfg, d)
    chosen = []
    listed = all_bit_vectors(cfg, size)
    for i in range(cfg.q):
        if listed is not None:  # bits only, few enough to score every feasible one
            cands = listed
        else:
            raw = feasible_draws(cfg.raw_samples, cfg, size, seed + 104729 * i, sobol=False)
            cands = torch.cat([raw, _bit_neighbours(x_observed, acq, cfg, size)])
        with torch.no_grad():
            scores = acq(cands.unsqueeze(1))
        top = scores.topk(min(cfg.num_restarts, len(cands))).indices
        best, best_score = cands[top[0]], scores[top[0]]
        if cfg.space == "joint":
            for start in cands[top]:
                _, bits = decode(start.view(1, -1), cfg, d)
                fixed = {d + j: float(start[d + j]) for j in range(d)}
                cons = joint_constraints(bits[0], cfg, size) if cfg.mode == "constrained" else None
                cand, value = optimize_acqf(acq, bounds=unit_cube(dim), q=1, num_restarts=1,
                                            batch_initial_conditions=start.view(1, 1, dim), fixed_features=fixed,
                                            inequality_constraints=cons, options={"maxiter": 100})
                cand = project_feasible(cand.detach().view(1, dim).clamp(0, 1), cfg, size)
                if cfg.mode == "constrained" and not bool(is_feasible(cand, cfg, size)[0]):
                    continue
                with torch.no_grad():
                    value = acq(cand.unsqueeze(1))[0]
                if value > best_score:
                    best, best_score = cand[0], value
        chosen.append(best)
        if i + 1 < cfg.q and hasattr(acq, "set_X_pending"):
            before = acq.X_pending
            acq.set_X_pending(torch.stack(chosen) if before is None else torch.cat([before, torch.stack(chosen)]))
    return torch.stack(chosen)


def _bit_neighbours(x: torch.Tensor, acq, cfg: SearchConfig, size: PrecisionCost, keep: int = 3) -> torch.Tensor:
    """Every one-unit change of bit-width (one grid step up or down) of the ``keep`` observed candidates the
    acquisition scores highest, made feasible (:func:`qrepro.space.project_feasible`) and kept where they are."""
    d = len(size.layers)
    with torch.no_grad():
        top = x[acq(x.unsqueeze(1)).topk(min(keep, len(x))).indices]
    step = 1.0 / max(1, len(cfg.bit_choices) - 1)
    out = []
    for row in top:
        for j in range(d):
            for sign in (-1.0, 1.0):
                n = row.clone()
                n[-d + j] = n[-d + j] + sign * step
                if 0.0 <= float(n[-d + j]) <= 1.0 + 1e-9:
                    out.append(n.clamp(0, 1))
    if not out:
        return x[:0]
    cands = project_feasible(torch.stack(out), cfg, size)
    return cands[is_feasible(cands, cfg, size)] if cfg.mode == "constrained" else cands


def gp_hyperparameters(gp) -> dict:
    """The raw (unconstrained) hyperparameters of a fitted GP, as lists: what warm-starts the next fit."""
    return {k: v.detach().flatten().tolist() for k, v in gp.state_dict().items()
            if "raw_" in k and "prior" not in k and "constraint" not in k}


def fit_gp(x: torch.Tensor, y: torch.Tensor, warm: dict | None = None, optimize: bool = True):
    """A ``SingleTaskGP`` on unit-cube inputs (``Normalize``) and standardized outcomes, fitted by
    maximizing the marginal likelihood (unless ``optimize`` is False and ``warm`` is given: then
    its hyperparameters are kept); ``warm`` (:func:`gp_hyperparameters` of the previous
    step's GP) starts the optimizer there: it reaches the same likelihood in about half the
    iterations of a cold start (benchmarks/benchmark.py, section search).  The loss is computed in
    closed form (:func:`qrepro.likelihood.mll_closure`: the same value and gradients as BoTorch's
    default closure to float rounding, 2.5 times cheaper); BoTorch's optimizer, bounds and retries
    are unchanged."""
    d = x.shape[1]
    gp = SingleTaskGP(x, y, input_transform=Normalize(d, bounds=unit_cube(d)), outcome_transform=Standardize(1))
    if warm:
        state = gp.state_dict()
        gp.load_state_dict({k: torch.tensor(v, dtype=state[k].dtype).view_as(state[k]) for k, v in warm.items()
                            if k in state and state[k].numel() == len(v)}, strict=False)
    if optimize or not warm:  # else: ``warm``'s hyperparameters as they are, conditioned on (x, y)
        mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
        fit_gpytorch_mll(mll, closure=mll_closure(mll))
    gp.eval()
    return gp


def ref_point(y: torch.Tensor, cfg: SearchConfig, size=None) -> torch.Tensor:
    """The hypervolume's reference point: ``ref_accuracy`` (default: just below the lowest accuracy seen) and no
    size removed; in the joint space, the size and BOPs fractions of the unpruned model at the highest bit-width
    (every candidate of the space removes at least that much)."""
    acc_ref = cfg.ref_accuracy if cfg.ref_accuracy is not None else float(y[:, 0].min()) - 1e-3
    if cfg.space == "ratios":
        return torch.tensor([acc_ref, 0.0], dtype=DTYPE)
    top = torch.full((1, len(size.layers)), float(max(cfg.bit_choices)), dtype=DTYPE)
    zero = torch.zeros_like(top)
    return torch.tensor([acc_ref, 1 - float(size.size(top, zero)[0]) / size.base,
                         1 - float(size.bops(top, zero)[0]) / size.bops_base], dtype=DTYPE)


def pareto_acquisition(gp, x, y, cfg, size, pending=None):
    k = 1 if cfg.space == "ratios" else 2
    known = GenericDeterministicModel(lambda X: pruned_fraction(X, cfg, size).reshape(*X.shape[:-1], k),
                                      num_outputs=k)
    return qLogNoisyExpectedHypervolumeImprovement(ModelList(gp, known), ref_point=ref_point(y, cfg, size).tolist(),
                                                   X_baseline=x, prune_baseline=True, X_pending=pending)


def pareto_front(points: torch.Tensor) -> torch.Tensor:
    """Mask of the non-dominated rows of ``points`` ``(n, m)`` (all objectives maximized)."""
    return is_non_dominated(points, deduplicate=True)


def hypervolume(points: torch.Tensor, ref: torch.Tensor) -> float:
    pts = points[pareto_front(points)]
    pts = pts[(pts > ref).all(1)]
    return float(Hypervolume(ref).compute(pts)) if len(pts) else 0.0
