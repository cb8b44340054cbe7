"""Benchmark section regret: BO, random search and the uniform ratio on a function with a known optimum under
the linear size constraint (the check that a faster BO loop still searches as well)."""
from __future__ import annotations

import statistics
import time

import torch

from qrepro.search import SearchConfig, SizeModel, search_ratios


class KnownOptimum:
    """``90 - 100 sum_l s_l (r_l - 0.1)^2`` under ``sum_l w_l r_l >= T`` (the search's linear size
    constraint) on ``d`` layers: smooth, with its constrained optimum on the constraint, where cheap
    layers are pruned harder; :meth:`optimum` solves the KKT conditions exactly (bisection on the
    multiplier), so a search's regret is known."""

    def __init__(self, d: int = 12, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.layers = [f"l{i}" for i in range(d)]
        self.sens = 0.5 + 3.5 * torch.rand(d, generator=g, dtype=torch.double)
        self.bytes = 1.0 + 3.0 * torch.rand(d, generator=g, dtype=torch.double)

    def size(self):
        return SizeModel(float(100 * self.bytes.sum() * 1.5), {n: 100 for n in self.layers},
                         {n: float(b) for n, b in zip(self.layers, self.bytes)})

    def __call__(self, ratios: dict) -> float:
        r = torch.tensor([ratios[n] for n in self.layers], dtype=torch.double)
        return float(90 - 100 * (self.sens * (r - 0.1) ** 2).sum())

    def optimum(self, target: float, r_max: float) -> float:
        size = self.size()
        w = size.weights()
        need = target * size.base
        lo, hi = 0.0, 1e6
        for _ in range(200):  # r_l(lam) = clip(0.1 + lam w_l / (2 s_l), 0, r_max), increasing in lam
            lam = (lo + hi) / 2
            r = (0.1 + lam * w / (2 * self.sens)).clamp(0, r_max)
            lo, hi = (lam, hi) if float(r @ w) < need else (lo, lam)
        r = (0.1 + hi * w / (2 * self.sens)).clamp(0, r_max)
        return self({n: float(v) for n, v in zip(self.layers, r)})


def bench_regret(repeats: int):
    """Median regret of BO (Monte Carlo qLogNEI or closed-form LogEI, the default; the GP refitted every 5th
    step or every step, the default), random search and the uniform ratio on
    :class:`KnownOptimum` (12 layers, target 0.4, budget 40), with the search's wall time: the check
    that a faster BO loop still searches as well."""
    rows, seeds = {}, range(max(3, repeats // 2))
    print(f"\n## Regret on a known optimum under the linear size constraint (12 layers, target 0.4, budget 40, "
          f"{len(seeds)} seeds)")
    print("| method | median regret | worst | median search s |\n|---|---|---|---|")
    problem = KnownOptimum()
    best = problem.optimum(0.4, 0.9)
    for label, method, extra in (("bo_qlognei_refit5", "bo", {"acquisition": "qlognei", "refit_every": 5}),
                                 ("bo_logei_refit5", "bo", {"acquisition": "logei", "refit_every": 5}),
                                 ("bo_logei_refit1", "bo", {"acquisition": "logei", "refit_every": 1}),
                                 ("random", "random", {}), ("uniform", "uniform", {})):
        regrets, walls = [], []
        for seed in seeds:
            cfg = SearchConfig(layers=problem.layers, method=method, target=0.4, r_max=0.9, budget=40,
                               n_init=10, seed=seed, **extra)
            t0 = time.perf_counter()
            regrets.append(best - search_ratios(problem, problem.size(), cfg, progress=False).best["value"])
            walls.append(time.perf_counter() - t0)
            if method == "uniform":
                break
        rows[f"regret_{label}_median"] = statistics.median(regrets)
        rows[f"search_{label}_seconds_median"] = statistics.median(walls)
        print(f"| {label} | {statistics.median(regrets):.4f} | {max(regrets):.4f} | {statistics.median(walls):.1f} |")
    return rows
