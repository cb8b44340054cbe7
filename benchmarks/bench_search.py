"""Benchmark section search: one BoTorch proposal (GP fit and acquisition) against one candidate evaluation."""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import replace

import torch
from timing import busy, timed

from qrepro.config import load_preset
from qrepro.gp import propose_candidates
from qrepro.models import build_model
from qrepro.objective import PruneObjective
from qrepro.quantize import quantize_model
from qrepro.search import SearchConfig
from qrepro.size import SizeModel
from qrepro.study import load_study_data


def bench_search(repeats: int):
    torch.manual_seed(0)
    rows = {}
    for d in (9, 12):
        layers = [f"l{i}" for i in range(d)]
        size = SizeModel(100.0 * d, {n: 64 for n in layers}, {n: 1.0 for n in layers})  # target reachable
        cfg = SearchConfig(layers=layers, target=0.3, budget=61, n_init=10)
        x = torch.rand(60, d, dtype=torch.double)
        y = -((x - 0.3) ** 2).sum(1, keepdim=True) + 0.01 * torch.randn(60, 1, dtype=torch.double)
        _, warm = propose_candidates(x[:59], y[:59], cfg, size, 59)  # the previous step's hyperparameters
        n = max(1, repeats // 3)
        before = replace(cfg, acquisition="qlognei")
        rows[f"bo_proposal_{d}d_s"] = timed(lambda: propose_candidates(x, y, cfg, size, 60, warm), n)
        rows[f"bo_proposal_{d}d_cold_s"] = timed(lambda: propose_candidates(x, y, cfg, size, 60), n)
        rows[f"bo_proposal_{d}d_qlognei_s"] = timed(lambda: propose_candidates(x, y, before, size, 60, warm), n)
        # two workers: the proposal conditions on 59 evaluations, the 60th pending
        rows[f"bo_proposal_{d}d_pending_s"] = timed(lambda: propose_candidates(x[:59], y[:59], cfg, size, 60, warm,
                                                                           x[59:]), n)
        if d == 12:  # two other processes keep both cores busy
            stop = mp.get_context("spawn").Event()
            hogs = [mp.get_context("spawn").Process(target=busy, args=(stop,)) for _ in range(2)]
            for h in hogs:
                h.start()
            try:
                time.sleep(0.5)
                rows["bo_proposal_12d_loaded_s"] = timed(lambda: propose_candidates(x, y, cfg, size, 60, warm), n)
            finally:
                stop.set()
                for h in hogs:
                    h.join()
    splits = load_study_data(False)
    model = quantize_model(build_model("resnet20", in_channels=1), "bnn")
    ev = vars(load_preset(False).evaluation)
    objective = PruneObjective(model, splits, **ev)
    t_eval = timed(lambda: objective(0.5), max(1, repeats // 3))
    rows["evaluation_s"] = t_eval
    print("\n## BoTorch proposal (GP fit + acquisition optimization, 60 observations) against one candidate evaluation")
    print(f"(evaluation: ResNet-20 BNN on Fashion-MNIST, prune + BN re-estimation on {ev['bn_batches']} batches "
          f"+ {ev['val_images']} validation images: {t_eval:.2f} s)")
    print("| proposal | s | ratio to one evaluation |\n|---|---|---|")
    for key, label in (("bo_proposal_9d_s", "9 dimensions, LogEI, warm-started GP (the default)"),
                       ("bo_proposal_9d_cold_s", "9 dimensions, LogEI, cold GP fit"),
                       ("bo_proposal_9d_qlognei_s", "9 dimensions, qLogNEI, warm-started GP"),
                       ("bo_proposal_12d_s", "12 dimensions, LogEI, warm-started GP (the default)"),
                       ("bo_proposal_12d_cold_s", "12 dimensions, LogEI, cold GP fit"),
                       ("bo_proposal_12d_qlognei_s", "12 dimensions, qLogNEI, warm-started GP"),
                       ("bo_proposal_12d_pending_s", "12 dimensions, LogEI, 59 observations + 1 pending (2 workers)"),
                       ("bo_proposal_12d_loaded_s", "12 dimensions, LogEI, 2 other busy processes")):
        print(f"| {label} | {rows[key]:.2f} | {rows[key] / t_eval:.2f} |")
        rows[key.replace("_s", "_over_evaluation")] = rows[key] / t_eval
    return rows
