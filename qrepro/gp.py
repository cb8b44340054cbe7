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
from .space import DTYPE, constraint, feasible_draws, project_feasible, pruned_fraction, unit_cube

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
            constraints = constraint(cfg, size)
        elif cfg.mode == "constrained":
            acq = qLogNoisyExpectedImprovement(gp, X_baseline=x, prune_baseline=True, X_pending=pending)
            constraints = constraint(cfg, size)
        else:
            acq = pareto_acquisition(gp, x, y, cfg, size, pending)
            constraints = None
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


def ref_point(y: torch.Tensor, cfg: SearchConfig) -> torch.Tensor:
    acc_ref = cfg.ref_accuracy if cfg.ref_accuracy is not None else float(y[:, 0].min()) - 1e-3
    return torch.tensor([acc_ref, 0.0], dtype=DTYPE)


def pareto_acquisition(gp, x, y, cfg, size, pending=None):
    known = GenericDeterministicModel(lambda X: pruned_fraction(X, cfg, size).unsqueeze(-1), num_outputs=1)
    return qLogNoisyExpectedHypervolumeImprovement(ModelList(gp, known), ref_point=ref_point(y, cfg).tolist(),
                                                   X_baseline=x, prune_baseline=True, X_pending=pending)


def pareto_front(points: torch.Tensor) -> torch.Tensor:
    """Mask of the non-dominated rows of ``points`` ``(n, m)`` (all objectives maximized)."""
    return is_non_dominated(points, deduplicate=True)


def hypervolume(points: torch.Tensor, ref: torch.Tensor) -> float:
    pts = points[pareto_front(points)]
    pts = pts[(pts > ref).all(1)]
    return float(Hypervolume(ref).compute(pts)) if len(pts) else 0.0
