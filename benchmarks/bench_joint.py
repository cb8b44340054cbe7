"""Benchmark section joint: the joint bit-width / pruning search against its baselines on a function of
(bits, ratio) per layer with a known constrained optimum, and the time of one joint proposal beside a
ratio-only one.

Run alone: ``python benchmarks/bench_joint.py [--repeats N]`` (the regret table takes about a minute per seed).
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from qrepro.gp import propose_candidates
from qrepro.precision import PrecisionCost
from qrepro.search import SearchConfig, search_ratios
from qrepro.size import SizeModel
from qrepro.space import feasible_draws

CHOICES = (1, 2, 4, 8)


class KnownJointOptimum:
    """``90 - 100 sum_l (s_l 4^(1 - b_l) + v_l r_l^2)`` (quantization error that falls fourfold per bit, a loss
    quadratic in the ratio) under ``size <= (1 - target) S_2bit``, where ``size = sum_l b_l p_l (1 - r_l) / 8``
    plus a full-precision stem, on ``d`` single-layer units.  For fixed bit-widths the ratios' optimum solves
    the KKT conditions (bisection on the multiplier), and every bit-width vector is enumerated, so
    :meth:`optimum` is exact for the search's size bound (continuous ratios)."""

    def __init__(self, d: int = 9, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.layers = [f"l{i}" for i in range(d)]
        self.quant = 0.02 + 0.2 * torch.rand(d, generator=g, dtype=torch.double)   # s_l
        self.prune = 0.01 + 0.05 * torch.rand(d, generator=g, dtype=torch.double)  # v_l
        self.params = torch.tensor([2304.0 * 4 ** (i * 3 // d) for i in range(d)], dtype=torch.double)

    def cost(self) -> PrecisionCost:
        terms = [{"name": "stem", "params": 432, "macs": 432 * 1024, "w_bits": 32, "a_bits": 32, "unit": -1,
                  "follows": False, "groups": []}]
        terms += [{"name": n, "params": int(p), "macs": int(p) * 64, "w_bits": 2, "a_bits": 2, "unit": i,
                   "follows": True, "groups": [i]} for i, (n, p) in enumerate(zip(self.layers, self.params))]
        cost = PrecisionCost(self.layers, dict.fromkeys(self.layers, 1000), {n: [n] for n in self.layers}, terms,
                             0.0, dict.fromkeys(self.layers, 0.0))
        two, zero = torch.full((1, len(self.layers)), 2.0, dtype=torch.double), torch.zeros(1, len(self.layers))
        cost.base, cost.bops_base = float(cost.size(two, zero)), float(cost.bops(two, zero))
        return cost

    def value(self, bits: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        return 90 - 100 * (self.quant * 4.0 ** (1 - bits) + self.prune * ratios ** 2).sum(-1)

    def __call__(self, candidate) -> float:
        bits = torch.tensor([float(candidate.bits[n]) for n in self.layers], dtype=torch.double)
        ratios = torch.tensor([candidate.ratios[n] for n in self.layers], dtype=torch.double)
        return float(self.value(bits, ratios))

    def optimum(self, target: float, r_max: float, choices=CHOICES, prune: bool = True) -> float:
        """The best value over bit-widths from ``choices`` (and ratios in ``[0, r_max]`` where ``prune``)."""
        cost = self.cost()
        bits = torch.tensor(list(itertools.product(choices, repeat=len(self.layers))), dtype=torch.double)
        const, coef = cost.linear(bits, "size", r_max)
        need = const - (1 - target) * cost.base  # sum_l coef_l r_l >= need
        lo, hi = torch.zeros(len(bits), dtype=torch.double), torch.full((len(bits),), 1e6, dtype=torch.double)
        for _ in range(200):  # r_l(lam) = clip(lam coef_l / (2 v_l), 0, r_max), increasing in lam
            lam = (lo + hi) / 2
            r = (lam.unsqueeze(1) * coef / (2 * self.prune)).clamp(0, r_max)
            short = (r * coef).sum(1) < need
            lo, hi = torch.where(short, lam, lo), torch.where(short, hi, lam)
        r = (hi.unsqueeze(1) * coef / (2 * self.prune)).clamp(0, r_max)
        if not prune:
            r = torch.zeros_like(r)
        value = self.value(bits, r)
        feasible = (const - (coef * r).sum(1)) <= (1 - target) * cost.base * (1 + 1e-9)
        return float(value[feasible].max())


SETTINGS = (  # label, space, method, bit choices: the baselines at one size and evaluation budget
    ("joint BO", "joint", "bo", CHOICES),
    ("joint random", "joint", "random", CHOICES),
    ("bits only, BO", "bits", "bo", CHOICES),
    ("paper: 2-bit, BO over ratios", "joint", "bo", (2,)),
    ("paper: 1-bit, BO over ratios", "joint", "bo", (1,)),
)


def bench_joint(repeats: int, budget: int = 40, target: float = 0.3, regret: bool = True):
    """Median regret (against the joint optimum) of each setting over seeds (``regret``), and one proposal's time
    at 60 observations: joint (18 dimensions) beside ratio-only (9)."""
    rows, seeds = {}, range(max(3, repeats))
    problem = KnownJointOptimum()
    if regret:
        rows.update(_regret(problem, seeds, budget, target))
    rows.update(_proposal_time(problem, target))
    return rows


def _regret(problem: KnownJointOptimum, seeds, budget: int, target: float) -> dict:
    rows = {}
    best = problem.optimum(target, 0.9)
    print(f"\n## Joint search on a known optimum (9 units, target {target}, budget {budget}, {len(seeds)} seeds; "
          f"optimum {best:.3f})")
    print("| setting | its own optimum's regret | median regret | worst | median search s |\n|---|---|---|---|---|")
    for label, space, method, choices in SETTINGS:
        own = best - problem.optimum(target, 0.9, choices, prune=space != "bits")
        regrets, walls = [], []
        for seed in seeds:
            cfg = SearchConfig(layers=problem.layers, space=space, method=method, bit_choices=list(choices),
                               target=target, budget=budget, n_init=10, seed=seed)
            t0 = time.perf_counter()
            regrets.append(best - search_ratios(problem, problem.cost(), cfg, progress=False).best["value"])
            walls.append(time.perf_counter() - t0)
        key = "_".join("".join(c if c.isalnum() else " " for c in label).split())
        rows[f"joint_regret_{key}_median"] = statistics.median(regrets)
        print(f"| {label} | {own:.3f} | {statistics.median(regrets):.3f} | {max(regrets):.3f} | "
              f"{statistics.median(walls):.1f} |")
    return rows


def _proposal_time(problem: KnownJointOptimum, target: float) -> dict:
    """One proposal at 60 observations, cold (the GP fitted from BoTorch's initial hyperparameters) and as the
    search makes it (warm: started from the previous step's fitted hyperparameters, which the journal keeps)."""
    rows = {}
    print("\n## One BO proposal at 60 observations (median of 5)\n| space | dimensions | cold s | as the search "
          "runs it (warm-started fit) s |\n|---|---|---|---|")
    ratio_size = SizeModel(1e5, dict.fromkeys(problem.layers, 100), dict.fromkeys(problem.layers, 50.0))
    for space, size in (("ratios", ratio_size), ("joint", problem.cost())):
        cfg = SearchConfig(layers=problem.layers, space=space, target=target, budget=80, n_init=10)
        x = feasible_draws(60, cfg, size, 0, sobol=False)
        y = -(x - 0.3).pow(2).sum(1, keepdim=True)
        propose_candidates(x, y, cfg, size, 60)  # warm-up: imports and first-call costs
        _, warm = propose_candidates(x[:-1], y[:-1], cfg, size, 59)  # the previous step's fit
        times = {"cold": [], "warm": []}
        for step in range(5):
            for kind, start in (("cold", None), ("warm", warm)):
                t0 = time.perf_counter()
                propose_candidates(x, y, cfg, size, 61 + step, start)
                times[kind].append(time.perf_counter() - t0)
        for kind, ts in times.items():
            rows[f"proposal_{space}_{kind}_seconds"] = statistics.median(ts)
        print(f"| {space} | {x.shape[1]} | {rows[f'proposal_{space}_cold_seconds']:.3f} | "
              f"{rows[f'proposal_{space}_warm_seconds']:.3f} |")
    for kind in ("cold", "warm"):
        print(f"ratio joint / ratios-only, {kind}: "
              f"{rows[f'proposal_joint_{kind}_seconds'] / rows[f'proposal_ratios_{kind}_seconds']:.2f}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--proposal-only", action="store_true", help="only the proposal times (seconds)")
    args = parser.parse_args()
    bench_joint(args.repeats, regret=not args.proposal_only)
