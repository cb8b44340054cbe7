"""Bayesian optimization of per-layer pruning ratios with BoTorch.

The search space is one ratio per prunable layer, ``r_l`` in ``[0, r_max]``.  The model
size is analytic (:class:`SizeModel`): with block-mode pruning, removing a filter of a
block's first convolution removes a fixed number of bytes, so

    size(r) <= S0 - sum_l b_l N_l r_l          (b_l: bytes per filter, N_l: filters)

and the paper-style mode maximizes the objective (validation accuracy) subject to the
*linear* constraint ``sum_l b_l N_l r_l >= target S0``, which BoTorch's ``optimize_acqf``
takes as an inequality constraint: no infeasible candidate is ever proposed, the GP never
has to learn the constraint.  (The rounding rule of ``prune.n_keep`` removes at least
``r_l N_l`` filters, so the exact size is never above the linear bound.)  The second mode
(``mode="pareto"``) searches the whole box for the accuracy / size front with
qLogNEHVI, the size objective being a known deterministic model.

BoTorch throughout: a scrambled Sobol initial design (feasible points only), a
``SingleTaskGP`` on inputs normalized to the unit cube and standardized outcomes, and
``qLogNoisyExpectedImprovement`` (``q`` candidates a step).  Baselines under the same
interface and budget: ``method="random"`` (uniform in the feasible region) and
``method="uniform"`` (one ratio for every layer, the smallest that meets the target).

Every candidate is journaled (JSON lines) before and after it is evaluated; a search
started again on the same journal resumes where it stopped, evaluating nothing twice,
and (evaluated one at a time) reproduces the uninterrupted run.  Evaluations may run
concurrently, on a process pool or a Dask cluster (:mod:`qrepro.cluster`): the loop is then
asynchronous, proposing for each free worker with the in-flight candidates as pending points.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .cache import config_key
from .errors import BadInput
from .journal import append_record, read_records
from .prune import n_keep

METHODS = ("bo", "random", "uniform")
MODES = ("constrained", "pareto")
# constrained mode's acquisition functions: closed-form LogEI one candidate at a time (pending candidates as Kriging
# believers; qrepro.acquisition), or BoTorch's Monte Carlo qLogNEI (batches of q; the algorithm before LogEI)
ACQUISITIONS = ("logei", "qlognei")
DTYPE = torch.double


class SearchError(BadInput):
    """A bad search setting (budget, target, layers, objective value, ...)."""


class JournalMismatch(BadInput):
    """A journal written by a search with another configuration."""


# --------------------------------------------------------------------------- size
@dataclass
class SizeModel:
    """Analytic size: ``base`` bytes, and per layer its filter count and bytes per filter."""

    base: float
    channels: dict[str, int]
    bytes_per_filter: dict[str, float]

    @classmethod
    def from_model(cls, model, layers: Sequence[str] | None = None, convention=None) -> "SizeModel":
        """Measure ``model``: bytes removed by pruning one filter of each block-mode layer."""
        from .prune import apply_kept, prune_groups
        from .size import DEFAULT_CONVENTION, model_size_bytes

        convention = convention or DEFAULT_CONVENTION
        groups = prune_groups(model, "block")
        layers = list(layers or groups)
        base = model_size_bytes(model, convention)
        per = {}
        for name in layers:
            one = apply_kept(copy.deepcopy(model), {name: list(range(groups[name].channels - 1))}, "block",
                             "recompute")
            per[name] = base - model_size_bytes(one, convention)
        return cls(base, {n: groups[n].channels for n in layers}, per)

    @property
    def layers(self) -> list[str]:
        return list(self.channels)

    def weights(self) -> torch.Tensor:
        """``b_l N_l``: bytes removed per unit of ratio, per layer."""
        return torch.tensor([self.bytes_per_filter[n] * self.channels[n] for n in self.layers], dtype=DTYPE)

    def linear_size(self, ratios: torch.Tensor) -> torch.Tensor:
        return self.base - ratios.to(DTYPE) @ self.weights()

    def exact_size(self, ratios: Sequence[float]) -> float:
        removed = sum(self.bytes_per_filter[n] * (self.channels[n] - n_keep(self.channels[n], float(r)))
                      for n, r in zip(self.layers, ratios))
        return self.base - removed

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- config
@dataclass
class SearchConfig:
    """One search.  ``target``: the fraction of model size to remove (constrained mode)."""

    layers: list[str]
    method: str = "bo"
    mode: str = "constrained"
    target: float = 0.2612
    r_max: float = 0.9
    budget: int = 60
    n_init: int = 10
    q: int = 1
    seed: int = 0
    num_restarts: int = 4  # 8 before: twice the acquisition time, the same regret (benchmarks/HISTORY.md)
    # refit the GP's hyperparameters every this many BO steps; in between the previous step's (journaled)
    # hyperparameters are kept and the GP only conditions on the new data. 1 with LogEI: median regret 1.7
    # (worst 6.7) at 12 dimensions against 5.2 (worst 17.7) refitting every 5th step, and 3.7 (7.8) for
    # qLogNEI refitting every 5th, the default before (benchmark.py --sections regret, benchmarks/HISTORY.md)
    refit_every: int = 1
    raw_samples: int = 256
    # method "bo", constrained mode: "logei" (q=1; the default where q=1) or "qlognei" (the default where q>1);
    # unset otherwise (pareto mode: qLogNEHVI)
    acquisition: str | None = None
    ref_accuracy: float | None = None  # pareto mode: accuracy of the reference point (default: min seen)
    extra: dict = field(default_factory=dict)  # what else determines the objective (criterion, checkpoint, ...)

    def __post_init__(self):
        from .config import check_field_types

        check_field_types(self)
        if not self.layers:
            raise SearchError("the search needs at least one layer (layers=[] given); see prune.prunable_layers")
        if len(set(self.layers)) != len(self.layers):
            raise SearchError("layers must not repeat")
        if self.method not in METHODS:
            raise SearchError(f"unknown search method {self.method!r}; accepted values: {', '.join(METHODS)}")
        if self.mode not in MODES:
            raise SearchError(f"unknown search mode {self.mode!r}; accepted values: {', '.join(MODES)}")
        if not 0.0 < self.r_max < 1.0:
            raise SearchError(f"r_max must be in (0, 1), got {self.r_max}")
        if not 0.0 <= self.target < 1.0:
            raise SearchError(f"target (fraction of size removed) must be in [0, 1), got {self.target}")
        if self.budget < 1 or self.q < 1 or self.n_init < 1:
            raise SearchError(f"budget, q and n_init must be positive, got {self.budget}, {self.q}, {self.n_init}")
        if self.mode == "pareto" and self.method == "uniform":
            raise SearchError("method 'uniform' has no Pareto mode; use the uniform sweep instead")
        if self.method == "bo" and self.n_init >= self.budget:
            raise SearchError(f"n_init ({self.n_init}) must be smaller than budget ({self.budget}): otherwise the "
                             "'bo' search is only its Sobol initial design; lower n_init or raise budget")
        if self.num_restarts < 1 or self.raw_samples < self.num_restarts:
            raise SearchError("num_restarts must be at least 1 and raw_samples at least num_restarts")
        if self.refit_every < 1:
            raise SearchError(f"refit_every must be at least 1, got {self.refit_every}")
        if self.method != "bo" or self.mode == "pareto":
            if self.acquisition is not None:
                raise SearchError(f"acquisition={self.acquisition!r} applies to method 'bo' in constrained mode only "
                                  "(pareto mode always uses qLogNEHVI): leave acquisition unset")
        elif self.acquisition is None:
            self.acquisition = "logei" if self.q == 1 else "qlognei"
        elif self.acquisition not in ACQUISITIONS:
            raise SearchError(f"unknown acquisition {self.acquisition!r}; accepted values: {', '.join(ACQUISITIONS)}")
        elif self.acquisition == "logei" and self.q > 1:
            raise SearchError(f"acquisition 'logei' proposes one candidate at a time, but q={self.q}; use "
                              "acquisition='qlognei' for batches, or q=1")

    def to_dict(self) -> dict:
        """The fields (the journal's key). Fields added later are left out at the value that gives the
        earlier algorithm, so a journal written before one existed keeps its key: ``refit_every`` at 1
        (every step refitted), ``acquisition`` at qLogNEI (or unset: no BO, or pareto mode)."""
        d = asdict(self)
        for name, before in (("refit_every", 1), ("acquisition", "qlognei"), ("acquisition", None)):
            if name in d and d[name] == before:
                del d[name]
        return d


def check_reachable(cfg: SearchConfig, size: SizeModel):
    """Raise if no ratios in ``[0, r_max]`` meet the size target."""
    if cfg.mode != "constrained":
        return
    best = size.linear_size(torch.full((len(size.layers),), cfg.r_max, dtype=DTYPE)).item()
    need = (1 - cfg.target) * size.base
    if best > need:
        reach = 1 - best / size.base
        raise SearchError(f"target {cfg.target:.4f} cannot be reached: pruning every searched layer at "
                         f"r_max={cfg.r_max} removes only {reach:.4f} of the model size; lower the target, raise "
                         "r_max or search more layers")


# --------------------------------------------------------------------------- journal
def _check_record(rec: dict) -> str | None:
    """Why ``rec`` is not a valid journal record, or None."""
    kind = rec.get("type")
    if kind == "header":
        return None if isinstance(rec.get("key"), str) and isinstance(rec.get("config"), dict) else "a header " \
            "without key or config"
    if kind not in ("pending", "eval"):
        return f"unknown record type {kind!r}"
    if not isinstance(rec.get("index"), int) or isinstance(rec.get("index"), bool) or rec["index"] < 0:
        return "no valid index"
    if not isinstance(rec.get("x"), list) or not all(isinstance(v, (int, float)) for v in rec["x"]):
        return "no valid x"
    if kind == "eval":
        for name in ("value", "size", "pruned_fraction"):
            if not isinstance(rec.get(name), (int, float)) or isinstance(rec.get(name), bool):
                return f"no valid {name}"
        if not isinstance(rec.get("feasible"), bool) or not isinstance(rec.get("ratios"), list):
            return "no valid feasible / ratios"
    return None


def read_journal(path: str | Path, set_aside: bool = True) -> tuple[dict, list[dict]]:
    """``(header, records)`` of a journal: valid records only, each index once (the first);
    garbage lines are set aside (:mod:`qrepro.journal`), never lost or rewritten."""
    records = read_records(path, _check_record, set_aside=set_aside)
    if not records or records[0].get("type") != "header":
        raise JournalMismatch(f"{path} is not a qrepro search journal (its first valid line is not a header); "
                              "pass another journal path or move this file away")
    body, seen = [], set()
    for r in records[1:]:
        if r["type"] == "header":
            continue
        if (r["type"], r["index"]) not in seen:
            seen.add((r["type"], r["index"]))
            body.append(r)
    return records[0], body


class Journal:
    """JSON lines: a header, then ``pending`` (a candidate about to be evaluated) and
    ``eval`` records, appended with :func:`qrepro.journal.append_record`.  Resuming keeps
    every valid record; bad lines are set aside, the file is never rewritten."""

    def __init__(self, path: str | Path | None, header: dict):
        self.path = Path(path) if path is not None else None
        self.header = header
        self.records: list[dict] = []
        if self.path is None:
            return
        if self.path.exists() and self.path.stat().st_size > 0:
            stored, self.records = read_journal(self.path)
            if stored["key"] != header["key"]:
                raise JournalMismatch(
                    f"{self.path} was written by a search with another configuration (key {stored['key']}, "
                    f"this search has {header['key']}); pass a new journal path or move the old one away")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_record(self.path, {"type": "header", **header})

    def add(self, record: dict):
        self.records.append(record)
        if self.path is not None:
            append_record(self.path, record)

    @property
    def evals(self) -> list[dict]:
        return [r for r in self.records if r["type"] == "eval"]

    def pending(self) -> list[dict]:
        done = {r["index"] for r in self.evals}
        return [r for r in self.records if r["type"] == "pending" and r["index"] not in done]


# --------------------------------------------------------------------------- candidates
def _constraint(cfg: SearchConfig, size: SizeModel):
    """``sum_l w_l r_max x_l >= target S0`` on the unit cube, in BoTorch's format."""
    w = size.weights() * cfg.r_max
    scale = w.max()  # keep the coefficients O(1) for SLSQP
    return [(torch.arange(len(w)), w / scale, float(cfg.target * size.base / scale))]


def _unit_cube(d: int) -> torch.Tensor:
    """``(2, d)`` bounds of the normalized search space."""
    return torch.stack([torch.zeros(d, dtype=DTYPE), torch.ones(d, dtype=DTYPE)])


def _feasible(x: torch.Tensor, cfg: SearchConfig, size: SizeModel) -> torch.Tensor:
    if cfg.mode != "constrained":
        return torch.ones(x.shape[0], dtype=torch.bool)
    ((_, coef, rhs),) = _constraint(cfg, size)
    return x.to(DTYPE) @ coef >= rhs - 1e-9


def _feasible_draws(n: int, cfg: SearchConfig, size: SizeModel, seed: int, sobol: bool) -> torch.Tensor:
    """``n`` points of the unit cube that meet the constraint: the first feasible points of a
    scrambled Sobol sequence (``sobol``) or of uniform draws, by rejection; hit-and-run
    sampling of the polytope when rejection accepts too few."""
    d = len(size.layers)
    engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed) if sobol else None
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(64):
        draw = engine.draw(1024).to(DTYPE) if sobol else torch.rand(1024, d, generator=g, dtype=DTYPE)
        out.append(draw[_feasible(draw, cfg, size)])
        if sum(len(o) for o in out) >= n:
            return torch.cat(out)[:n]
    from botorch.utils.sampling import get_polytope_samples

    ((idx, coef, rhs),) = _constraint(cfg, size)
    return get_polytope_samples(n, _unit_cube(d), [(idx, coef.to(DTYPE), rhs + 1e-6)], seed=seed)


@contextlib.contextmanager
def single_thread():
    """Run the BO step on one thread: its tensors are tiny (tens of points), and on a machine
    that other processes load, two spinning OpenMP threads made one proposal 3-4 times slower
    (benchmarks/benchmark.py, section search)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _bo_candidates(x: torch.Tensor, y: torch.Tensor, cfg: SearchConfig, size: SizeModel, step: int,
                   warm: dict | None = None, pending: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """``q`` candidates and the fitted GP's hyperparameters (journaled, to warm-start the next fit);
    ``pending``: candidates being evaluated, which the acquisition function treats as chosen."""
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.optim import optimize_acqf

    from .acquisition import PosteriorLogEI

    seed = cfg.seed * 7919 + step
    torch.manual_seed(seed)
    d = x.shape[1]
    with warnings.catch_warnings(), single_thread():
        warnings.simplefilter("ignore")
        refit = warm is None or (step - cfg.n_init) % cfg.refit_every == 0
        gp = fit_gp(x, y[:, :1], warm, optimize=refit)
        if cfg.acquisition == "logei":
            acq = PosteriorLogEI(gp, x, pending)
            constraints = _constraint(cfg, size)
        elif cfg.mode == "constrained":
            acq = qLogNoisyExpectedImprovement(gp, X_baseline=x, prune_baseline=True, X_pending=pending)
            constraints = _constraint(cfg, size)
        else:
            acq = _pareto_acquisition(gp, x, y, cfg, size, pending)
            constraints = None
        # Initial conditions: the best of ``raw_samples`` feasible q-batches by rejection sampling
        # (BoTorch's default hit-and-run polytope sampler costs seconds per step on 2 cores).
        raw = _feasible_draws(cfg.raw_samples * cfg.q, cfg, size, seed, sobol=False)
        raw = raw.view(cfg.raw_samples, cfg.q, d)
        with torch.no_grad():
            top = acq(raw).topk(min(cfg.num_restarts, cfg.raw_samples)).indices
        cand, _ = optimize_acqf(acq, bounds=_unit_cube(d), q=cfg.q, num_restarts=len(top),
                                batch_initial_conditions=raw[top], inequality_constraints=constraints,
                                options={"maxiter": 100})
    cand = cand.detach().clamp(0, 1)
    if cfg.mode == "constrained":  # SLSQP meets the constraint to ~1e-6: project the last bit exactly
        cand = _project_feasible(cand, cfg, size)
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
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Normalize, Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from .likelihood import mll_closure

    d = x.shape[1]
    gp = SingleTaskGP(x, y, input_transform=Normalize(d, bounds=_unit_cube(d)), outcome_transform=Standardize(1))
    if warm:
        state = gp.state_dict()
        gp.load_state_dict({k: torch.tensor(v, dtype=state[k].dtype).view_as(state[k]) for k, v in warm.items()
                            if k in state and state[k].numel() == len(v)}, strict=False)
    if optimize or not warm:  # else: ``warm``'s hyperparameters as they are, conditioned on (x, y)
        mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
        fit_gpytorch_mll(mll, closure=mll_closure(mll))
    gp.eval()
    return gp


def _project_feasible(x: torch.Tensor, cfg: SearchConfig, size: SizeModel) -> torch.Tensor:
    ((_, coef, rhs),) = _constraint(cfg, size)
    for i in range(x.shape[0]):
        for _ in range(100):
            gap = rhs - float(x[i] @ coef)
            if gap <= 0:
                break
            free = x[i] < 1
            step = (gap + 1e-9) / float((coef * free).sum())
            x[i] = (x[i] + step * free.to(DTYPE)).clamp(0, 1)
    return x


def _pruned_fraction(x: torch.Tensor, cfg: SearchConfig, size: SizeModel) -> torch.Tensor:
    """The known second objective: fraction of the model size removed (linear bound)."""
    return (x.to(DTYPE) * cfg.r_max) @ size.weights() / size.base


def _ref_point(y: torch.Tensor, cfg: SearchConfig) -> torch.Tensor:
    acc_ref = cfg.ref_accuracy if cfg.ref_accuracy is not None else float(y[:, 0].min()) - 1e-3
    return torch.tensor([acc_ref, 0.0], dtype=DTYPE)


def _pareto_acquisition(gp, x, y, cfg, size, pending=None):
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
    from botorch.models.deterministic import GenericDeterministicModel
    from botorch.models.model import ModelList

    known = GenericDeterministicModel(lambda X: _pruned_fraction(X, cfg, size).unsqueeze(-1), num_outputs=1)
    return qLogNoisyExpectedHypervolumeImprovement(ModelList(gp, known), ref_point=_ref_point(y, cfg).tolist(),
                                                   X_baseline=x, prune_baseline=True, X_pending=pending)


def pareto_front(points: torch.Tensor) -> torch.Tensor:
    """Mask of the non-dominated rows of ``points`` ``(n, m)`` (all objectives maximized)."""
    from botorch.utils.multi_objective.pareto import is_non_dominated

    return is_non_dominated(points, deduplicate=True)


def hypervolume(points: torch.Tensor, ref: torch.Tensor) -> float:
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    pts = points[pareto_front(points)]
    pts = pts[(pts > ref).all(1)]
    return float(Hypervolume(ref).compute(pts)) if len(pts) else 0.0


def uniform_ratio(cfg: SearchConfig, size: SizeModel) -> float:
    """The smallest single ratio for every layer that meets the size target (exact sizes)."""
    w = size.weights().sum().item()
    r = min(cfg.r_max, cfg.target * size.base / w)
    need = (1 - cfg.target) * size.base
    while size.exact_size([r] * len(size.layers)) > need + 1e-6 and r < cfg.r_max:
        r = min(cfg.r_max, r + 1e-4)
    return r


# --------------------------------------------------------------------------- the loop
@dataclass
class SearchResult:
    config: dict
    records: list[dict]
    best: dict | None
    front: list[dict]


def search_ratios(objective: Callable[[dict], float], size: SizeModel, cfg: SearchConfig,
                  journal: str | Path | None = None, executor: cf.Executor | None = None,
                  progress: bool = True, scheduler=None, workers: int | None = None) -> SearchResult:
    """Search per-layer ratios; ``objective({layer: ratio}) -> value`` (higher is better).

    Where candidates are evaluated (:mod:`qrepro.cluster`): in this process, one at a time (the
    default); in ``executor`` (any ``concurrent.futures.Executor``), ``q`` at a time (a local
    process pool of ``q`` when ``q > 1`` and no executor is given); or on a Dask cluster:
    ``scheduler="local"`` starts a ``LocalCluster`` of ``workers`` processes (default: one per
    GPU, else one per core), ``scheduler="tcp://host:8786"`` joins a running one.  Away from this
    process the objective must be picklable.

    The loop is asynchronous and repeatable: with ``W`` evaluation slots (workers) when the search
    starts, BO proposes candidate ``i`` from the evaluations of candidates ``0 .. i - W`` (in index
    order, whatever order they finished in), the ``W - 1`` candidates after them passed to the
    acquisition function as pending points -- and waits until those evaluations are in. So the
    candidates depend on the number of workers, never on which worker finished first: two runs with
    the same workers propose the same candidates (with equal evaluation times, no worker waits). With
    one worker this is the sequential search; with ``q > 1`` (batches) the lag is ``W - q``. Only this
    process writes the journal: a ``pending`` record before a candidate is submitted (``observed``:
    how many evaluations its proposal used), an ``eval`` record when it finishes (in the order they
    finish); a search started again on the journal re-queues the candidates that were in flight,
    evaluates nothing twice, and with the same workers proposes what the uninterrupted run did.
    """
    from .cluster import open_pool

    if list(size.layers) != list(cfg.layers):
        raise SearchError(f"the size model's layers {size.layers} differ from the search's {cfg.layers}")
    check_reachable(cfg, size)
    header = {"config": cfg.to_dict(), "size": size.to_dict()}
    header["key"] = config_key(header)
    pool = open_pool(objective, cfg.q, executor, scheduler, workers)  # an unreachable cluster fails before the journal
    try:
        jr = Journal(journal, header)
    except BaseException:
        pool.close()
        raise
    budget = 1 if cfg.method == "uniform" else cfg.budget
    init = _feasible_draws(cfg.n_init, cfg, size, cfg.seed, sobol=True) if cfg.method == "bo" else None
    rand = _feasible_draws(budget, cfg, size, cfg.seed, sobol=False) if cfg.method == "random" else None
    bar = tqdm(total=budget, desc=f"{cfg.method} search", disable=not progress)
    bar.update(len(jr.evals))
    requeue = jr.pending()  # candidates that were in flight when the last run stopped
    issued = 1 + max((r["index"] for r in jr.records if r["type"] != "header"), default=-1)
    lag = max(0, pool.free() - cfg.q)  # candidates in flight while BO proposes: fixed for the whole search
    try:
        while len(jr.evals) < budget:
            while requeue or issued < budget:
                free = pool.free()
                bo_step = cfg.method == "bo" and issued >= cfg.n_init
                if free < 1 or (not requeue and bo_step and not _observed_ready(jr, _observed(issued, lag, cfg))):
                    break  # no idle worker, or the evaluations this proposal conditions on are not all in
                if requeue:
                    todo = [requeue.pop(0)]
                else:
                    n = min(cfg.q, budget - issued) if bo_step else min(cfg.q, free, budget - issued)
                    todo = _propose(jr, cfg, size, init, rand, issued, n, _observed(issued, lag, cfg))
                    for rec in todo:
                        jr.add(rec)
                    issued += len(todo)
                for rec in todo:
                    pool.submit(rec, _ratios(rec, cfg))
            for rec, value, seconds in pool.wait():
                _record(rec, value, seconds, jr, cfg, size)
                bar.update(1)
            best = best_feasible(jr.evals)
            if best:
                bar.set_postfix(best_feasible=f"{best['value']:.4g}")
    finally:
        bar.close()
        pool.close()
    evals = sorted(jr.evals, key=lambda r: r["index"])
    front = []
    if evals:
        pts = torch.tensor([[r["value"], r["pruned_fraction"]] for r in evals], dtype=DTYPE)
        front = [evals[i] for i in pareto_front(pts).nonzero().flatten().tolist()]
        front.sort(key=lambda r: r["pruned_fraction"])
    return SearchResult(cfg.to_dict(), evals, best_feasible(evals), front)


def best_feasible(evals: list[dict]) -> dict | None:
    """The feasible evaluation with the highest value (the earliest on a tie), or None."""
    feasible = [r for r in evals if r["feasible"]]
    return max(feasible, key=lambda r: (r["value"], -r["index"])) if feasible else None


def _observed(index: int, lag: int, cfg: SearchConfig) -> int:
    """How many candidates (``0 .. observed - 1``) the BO proposal starting at ``index`` conditions
    on: all but the ``lag`` before it, and at least two (a GP needs data) where the design has them."""
    return min(index, max(index - lag, min(cfg.n_init, 2)))


def _observed_ready(jr: Journal, observed: int) -> bool:
    done = {r["index"] for r in jr.evals}
    return all(i in done for i in range(observed))


def _propose(jr: Journal, cfg: SearchConfig, size: SizeModel, init, rand, index: int, n: int,
             observed: int) -> list[dict]:
    """``n`` pending records from ``index`` on; BO conditions on the evaluations of candidates
    ``0 .. observed - 1`` (in index order) and treats candidates ``observed .. index - 1`` as pending points."""
    base = {"type": "pending"}
    if cfg.method == "uniform":
        x = torch.full((1, len(cfg.layers)), uniform_ratio(cfg, size) / cfg.r_max, dtype=DTYPE)
        source = "uniform"
    elif cfg.method == "random":
        x, source = rand[index:index + n], "random"
    elif index < cfg.n_init:
        x, source = init[index:index + min(n, cfg.n_init - index)], "sobol"
    else:
        evals = sorted((r for r in jr.evals if r["index"] < observed), key=lambda r: r["index"])
        xs = torch.tensor([r["x"] for r in evals], dtype=DTYPE)
        ys = torch.tensor([[r["value"]] for r in evals], dtype=DTYPE)
        issued = {r["index"]: r["x"] for r in jr.records if r["type"] == "pending"}
        pending = torch.tensor([issued[i] for i in range(observed, index)], dtype=DTYPE) if observed < index else None
        warm = next((r["gp"] for r in reversed(jr.records) if r["type"] == "pending" and "gp" in r), None)
        cfg_n = cfg if n == cfg.q else replace(cfg, q=n)
        x, gp = _bo_candidates(xs, ys, cfg_n, size, index, warm, pending)
        return [{**base, "index": index + i, "x": [float(v) for v in row], "source": "bo", "gp": gp,
                 "observed": observed} for i, row in enumerate(x)]
    return [{**base, "index": index + i, "x": [float(v) for v in row], "source": source}
            for i, row in enumerate(x)]


def _ratios(rec: dict, cfg: SearchConfig) -> dict:
    return {n: float(v) * cfg.r_max for n, v in zip(cfg.layers, rec["x"])}


def _record(rec: dict, value, seconds: float, jr: Journal, cfg: SearchConfig, size: SizeModel):
    """Journal the finished evaluation of ``rec``."""
    r = _ratios(rec, cfg)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise SearchError(f"the objective returned {value!r} for {r}; it must return a finite number (nothing of "
                          "this candidate was journaled; fix the objective and rerun to resume)")
    rv = list(r.values())
    exact = size.exact_size(rv)
    feasible = cfg.mode != "constrained" or exact <= (1 - cfg.target) * size.base + 1e-6
    out = {"type": "eval", "index": rec["index"], "x": rec["x"], "source": rec["source"], "ratios": rv,
           "value": float(value), "size": exact, "pruned_fraction": 1 - exact / size.base, "feasible": feasible,
           "seconds": seconds, "seed": cfg.seed}
    prev = best_feasible(jr.evals + [out])
    out["best_so_far"] = prev["value"] if prev else None
    if cfg.mode == "pareto":
        pts = torch.tensor([[e["value"], e["pruned_fraction"]] for e in jr.evals + [out]], dtype=DTYPE)
        ref = _ref_point(pts, cfg) if cfg.ref_accuracy is not None else torch.tensor([0.0, 0.0], dtype=DTYPE)
        out["hypervolume"] = hypervolume(pts, ref)
    jr.add(out)


def load_journal(path: str | Path) -> tuple[dict, list[dict]]:
    """``(header, eval records by index)`` of a journal, read-only (bad lines skipped and reported)."""
    header, records = read_journal(path, set_aside=False)
    return header, sorted((r for r in records if r["type"] == "eval"), key=lambda r: r["index"])
