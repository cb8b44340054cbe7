"""Benchmark section cluster: an asynchronous BO search on a Dask LocalCluster, 2 workers against 1."""
from __future__ import annotations

import statistics
import time

import torch
from timing import timed

from qrepro.config import load_preset
from qrepro.gp import propose_candidates
from qrepro.models import build_model
from qrepro.objective import PruneObjective
from qrepro.prune import prunable_layers
from qrepro.quantize import quantize_model
from qrepro.search import SearchConfig, search_ratios
from qrepro.size import SizeModel
from qrepro.study import load_study_data


def bench_cluster(repeats: int):
    """A 40-evaluation BO search of ResNet-20 BNN's ratios on a Dask LocalCluster: 2 workers against 1
    (and one per GPU where CUDA is present); the GP refit + acquisition time against one evaluation."""
    from distributed import Client, LocalCluster

    torch.manual_seed(0)
    splits = load_study_data(False)
    model = quantize_model(build_model("resnet20", in_channels=1), "bnn")
    layers = prunable_layers(model)
    size = SizeModel.from_model(model, layers)
    cfg = SearchConfig(layers=layers, target=0.2612, budget=40, n_init=10, seed=0)
    ev = vars(load_preset(False).evaluation)
    rows, runs = {}, [("1 worker", "cpu", 1), ("2 workers", "cpu", 2)]
    if torch.cuda.is_available():
        runs.append((f"{torch.cuda.device_count()} workers, one per GPU", "cuda", torch.cuda.device_count()))
    print("\n## Asynchronous BO on a Dask LocalCluster: a 40-evaluation search (ResNet-20 BNN, "
          f"{len(layers)} layers, target 0.2612)")
    print("| workers | wall s | evaluations / s | speed-up over 1 worker | mean evaluation s |\n|---|---|---|---|---|")
    for label, device, n in runs:
        objective = PruneObjective(model, splits, device=device, **ev)
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=50) as cluster, Client(cluster) as client:
            client.wait_for_workers(n)
            t0 = time.perf_counter()
            res = search_ratios(objective, size, cfg, scheduler=client, progress=False)
            wall = time.perf_counter() - t0
        key = f"search40_{device}_{n}workers"
        rows[key + "_s"] = wall
        rows[key + "_evaluation_s"] = statistics.mean(r["seconds"] for r in res.records)
        base = rows["search40_cpu_1workers_s"]
        print(f"| {label} | {wall:.1f} | {40 / wall:.2f} | {base / wall:.2f} | {rows[key + '_evaluation_s']:.2f} |")
    rows["search40_2workers_speedup"] = rows["search40_cpu_1workers_s"] / rows["search40_cpu_2workers_s"]
    # the driver's share: one GP refit + acquisition at 39 observations, against one evaluation
    x = torch.tensor([r["x"] for r in res.records[:39]], dtype=torch.double)
    y = torch.tensor([[r["value"]] for r in res.records[:39]], dtype=torch.double)
    _, warm = propose_candidates(x[:-1], y[:-1], cfg, size, 38)
    rows["gp_refit_39obs_s"] = timed(lambda: propose_candidates(x, y, cfg, size, 39, warm), max(1, repeats // 3))
    objective = PruneObjective(model, splits, **ev)
    rows["evaluation_s"] = timed(lambda: objective(0.3), max(1, repeats // 3))
    ratio = rows["gp_refit_39obs_s"] / rows["evaluation_s"]
    rows["gp_refit_over_evaluation"] = ratio
    print(f"\nGP refit + acquisition at 39 observations: {rows['gp_refit_39obs_s']:.2f} s; one evaluation in this "
          f"process: {rows['evaluation_s']:.2f} s (ratio {ratio:.2f}): BO itself becomes the bottleneck past about "
          f"{1 / ratio:.0f} workers, when a worker frees up faster than the driver proposes.")
    return rows
