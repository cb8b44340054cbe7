"""Bayesian optimization of per-layer pruning ratios: the search's settings, its proposers and its loop.

One ratio per prunable layer, ``r_l`` in ``[0, r_max]`` (:mod:`qrepro.space`).  The paper-style mode
(``mode="constrained"``) maximizes the objective (validation accuracy) subject to the known, linear
size constraint, so no infeasible candidate is ever proposed; ``mode="pareto"`` searches the whole box
for the accuracy / size front.  Proposers: a scrambled Sobol initial design then the GP step of
:mod:`qrepro.gp` (``method="bo"``: LogEI one candidate at a time by default, qLogNEI for batches,
qLogNEHVI for the front); baselines under the same interface and budget: ``method="random"``
(uniform in the feasible region) and ``method="uniform"`` (one ratio for every layer, the smallest
that meets the target).

Every candidate is journaled (:mod:`qrepro.journal`) before and after it is evaluated; a search
started again on the same journal resumes where it stopped, evaluating nothing twice, and
(evaluated one at a time) reproduces the uninterrupted run.  Evaluations may run concurrently, on a
process pool or a Dask cluster (:mod:`qrepro.cluster`): the loop is then asynchronous, proposing for
each free worker with the in-flight candidates as pending points.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .cache import config_key
from .cluster import open_pool
from .gp import hypervolume, pareto_front, propose_candidates, ref_point
from .journal import Journal
from .lock import hold
from .precision import BIT_CHOICES, Candidate, PrecisionCost
from .size import SizeModel
from .space import DTYPE, SearchError, budgets, check_reachable, decode, feasible_draws, uniform_ratio
from .validation import check_field_types

METHODS = ("bo", "random", "uniform")
MODES = ("constrained", "pareto")
# what a candidate sets: a pruning ratio per layer (the paper's search), a bit-width per unit, or both (qrepro.precision)
SPACES = ("ratios", "bits", "joint")
# constrained mode's acquisition functions: closed-form LogEI one candidate at a time (pending candidates as Kriging
# believers; qrepro.acquisition), or BoTorch's Monte Carlo qLogNEI (batches of q)
ACQUISITIONS = ("logei", "qlognei")


# --------------------------------------------------------------------------- config
@dataclass
class SearchConfig:
    """One search.  ``target``: the fraction of model size to remove (constrained mode)."""

    layers: list[str]
    method: str = field(default="bo", metadata={"choices": METHODS})
    mode: str = field(default="constrained", metadata={"choices": MODES})
    target: float = 0.2612
    r_max: float = 0.9
    budget: int = 60
    n_init: int = 10
    q: int = 1
    seed: int = 0
    num_restarts: int = 4  # starting points of the acquisition optimizer (benchmarks/HISTORY.md: why 4)
    # refit the GP's hyperparameters every this many BO steps; in between the previous step's (journaled)
    # hyperparameters are kept and the GP only conditions on the new data (benchmarks/HISTORY.md: why 1)
    refit_every: int = 1
    raw_samples: int = 256
    # method "bo", constrained mode: "logei" (q=1; the default where q=1) or "qlognei" (the default where q>1);
    # unset otherwise (pareto mode: qLogNEHVI)
    acquisition: str | None = field(default=None, metadata={"choices": ACQUISITIONS})
    ref_accuracy: float | None = None  # pareto mode: accuracy of the reference point (default: min seen)
    space: str = field(default="ratios", metadata={"choices": SPACES})
    bit_choices: list[int] = field(default_factory=lambda: list(BIT_CHOICES),
                                   metadata={"help": "spaces bits and joint: 1 2 4 8 if left out"})
    bops_target: float | None = field(default=None, metadata={
        "help": "spaces bits and joint: the fraction of the unpruned model's bit-operations to remove too"})
    extra: dict = field(default_factory=dict)  # what else determines the objective (criterion, checkpoint, ...)

    def __post_init__(self):
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
        if self.space not in SPACES:
            raise SearchError(f"unknown search space {self.space!r}; accepted values: {', '.join(SPACES)}")
        if self.space != "ratios":
            if self.method == "uniform":
                raise SearchError(f"method 'uniform' searches ratios at the model's bit-widths; use space='ratios' "
                                  f"(got space={self.space!r})")
            if not self.bit_choices or len(set(self.bit_choices)) != len(self.bit_choices) or \
                    any(not 1 <= b <= 8 for b in self.bit_choices):
                raise SearchError(f"bit_choices must be distinct bit-widths from 1 to 8, got {self.bit_choices}")
            self.bit_choices = sorted(self.bit_choices)
        if self.bops_target is not None and (self.space == "ratios" or not 0.0 <= self.bops_target < 1.0):
            raise SearchError(f"bops_target (fraction of bit-operations removed, in [0, 1)) applies to spaces 'bits' "
                              f"and 'joint'; got {self.bops_target} with space={self.space!r}")
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

    @property
    def evaluations(self) -> int:
        """How many evaluations the search makes: ``budget``; the uniform baseline makes one."""
        return 1 if self.method == "uniform" else self.budget

    def to_dict(self) -> dict:
        """The fields (the journal's key). Fields added later are left out at the value that gives the
        earlier algorithm, so a journal written before one existed keeps its key: ``refit_every`` at 1
        (every step refitted), ``acquisition`` at qLogNEI (or unset: no BO, or pareto mode)."""
        d = asdict(self)
        if self.space == "ratios":
            del d["bit_choices"]
        for name, before in (("refit_every", 1), ("acquisition", "qlognei"), ("acquisition", None),
                             ("space", "ratios"), ("bops_target", None)):
            if name in d and d[name] == before:
                del d[name]
        return d


# --------------------------------------------------------------------------- journal


# --------------------------------------------------------------------------- candidates


# --------------------------------------------------------------------------- the loop
@dataclass
class SearchResult:
    config: dict
    records: list[dict]
    best: dict | None
    front: list[dict]


def search_ratios(objective: Callable[[dict], float], size: SizeModel, cfg: SearchConfig,
                  journal: str | Path | None = None, executor: cf.Executor | None = None,
                  progress: bool = True, scheduler=None, workers: int | None = None,
                  wait: bool = False, worker_grace: float | None = None,
                  trust_unverified: bool = False) -> SearchResult:
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
    One search writes a journal at a time (:mod:`qrepro.lock`): a second one stops with a line naming
    the first, or waits for it (``wait``).  A Dask cluster left with no worker for ``worker_grace``
    seconds (default ``cluster.WORKER_GRACE``) stops the search with one line; the journal keeps
    every finished evaluation.
    """
    with hold(journal, f"the search journal {journal}", wait) if journal is not None else contextlib.nullcontext():
        return _search(objective, size, cfg, journal, executor, progress, scheduler, workers, worker_grace,
                       trust_unverified)


def _search(objective, size: SizeModel, cfg: SearchConfig, journal, executor, progress, scheduler,
            workers, worker_grace, trust_unverified) -> SearchResult:
    if list(size.layers) != list(cfg.layers):
        raise SearchError(f"the size model's layers {size.layers} differ from the search's {cfg.layers}")
    if (cfg.space != "ratios") != isinstance(size, PrecisionCost):
        raise SearchError(f"space {cfg.space!r} needs a " + ("qrepro.size.SizeModel" if cfg.space == "ratios" else
                          "qrepro.precision.PrecisionCost (size and BOPs at any bit-widths)") + " as its size model")
    check_reachable(cfg, size)
    header = {"config": cfg.to_dict(), "size": size.to_dict()}
    header["key"] = config_key(header)
    # an unreachable cluster fails here, before the journal exists
    pool = open_pool(objective, cfg.q, executor, scheduler, workers, worker_grace)
    try:
        jr = Journal(journal, header, trust_unverified=trust_unverified)
    except BaseException:
        pool.close()
        raise
    budget = cfg.evaluations
    init = feasible_draws(cfg.n_init, cfg, size, cfg.seed, sobol=True) if cfg.method == "bo" else None
    rand = feasible_draws(budget, cfg, size, cfg.seed, sobol=False) if cfg.method == "random" else None
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
        pts = torch.tensor([_objectives(r) for r in evals], dtype=DTYPE)
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
        x, gp = propose_candidates(xs, ys, cfg_n, size, index, warm, pending)
        return [{**base, "index": index + i, "x": [float(v) for v in row], "source": "bo", "gp": gp,
                 "observed": observed} for i, row in enumerate(x)]
    return [{**base, "index": index + i, "x": [float(v) for v in row], "source": source}
            for i, row in enumerate(x)]


def _objectives(rec: dict) -> list[float]:
    """What a Pareto front trades: the value, the fraction of the size removed (and of the BOPs, in the joint space)."""
    return [rec["value"], rec["pruned_fraction"]] + ([rec["bops_fraction"]] if "bops_fraction" in rec else [])


def _ratios(rec: dict, cfg: SearchConfig) -> dict | Candidate:
    """The objective's argument: ``{layer: ratio}``, or in the joint space a :class:`Candidate`."""
    if cfg.space == "ratios":
        return {n: float(v) * cfg.r_max for n, v in zip(cfg.layers, rec["x"])}
    ratios, bits = decode(torch.tensor([rec["x"]], dtype=DTYPE), cfg, len(cfg.layers))
    return Candidate({n: float(r) for n, r in zip(cfg.layers, ratios[0])},
                     {n: int(b) for n, b in zip(cfg.layers, bits[0])})


def _record(rec: dict, value, seconds: float, jr: Journal, cfg: SearchConfig, size: SizeModel):
    """Journal the finished evaluation of ``rec``."""
    r = _ratios(rec, cfg)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise SearchError(f"the objective returned {value!r} for {r}; it must return a finite number (nothing of "
                          "this candidate was journaled; fix the objective and rerun to resume)")
    if cfg.space == "ratios":
        rv, extra = list(r.values()), {}
        exact = size.exact_size(rv)
        feasible = cfg.mode != "constrained" or exact <= (1 - cfg.target) * size.base + 1e-6
    else:
        rv, bits = list(r.ratios.values()), list(r.bits.values())
        exact = float(size.size(bits, rv)[0])
        bops = float(size.bops(bits, rv)[0])
        exact_of = {"size": exact, "bops": bops}
        feasible = cfg.mode != "constrained" or all(exact_of[w] <= most * (1 + 1e-9) for w, most in budgets(cfg, size))
        extra = {"bits": bits, "bops": bops, "bops_fraction": 1 - bops / size.bops_base}
    out = {"type": "eval", "index": rec["index"], "x": rec["x"], "source": rec["source"], "ratios": rv,
           "value": float(value), "size": exact, "pruned_fraction": 1 - exact / size.base, **extra,
           "feasible": feasible, "seconds": seconds, "seed": cfg.seed}
    prev = best_feasible(jr.evals + [out])
    out["best_so_far"] = prev["value"] if prev else None
    if cfg.mode == "pareto":
        pts = torch.tensor([_objectives(e) for e in jr.evals + [out]], dtype=DTYPE)
        ref = ref_point(pts, cfg, size)
        if cfg.ref_accuracy is None:
            ref[0] = 0.0
        out["hypervolume"] = hypervolume(pts, ref)
    jr.add(out)

