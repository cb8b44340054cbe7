"""Speed figures, measured side by side in one run and printed as ratios (not tests).

    python benchmarks/benchmark.py [--sections train compile criteria inference search cluster regret joint gpu]
                                   [--repeats N]
                                   [--json PATH]

* train: training throughput (images/s) of BNN and 2-bit DoReFa ResNet-20 against full
  precision, on the same Fashion-MNIST-sized batches, interleaved to share the noise;
* compile: ``torch.compile`` of the training step against eager (``TrainConfig.compile``): compile
  time, speed-up, and the epochs after which compiling pays;
* criteria: filter-selection time per layer of ResNet-18 for every criterion;
* inference: CPU inference time of ResNet-20 pruned by half against the unpruned model,
  with the ratio of multiply-accumulate counts beside it, as modules and fused
  (``qrepro.inference``), and the fused form's speed-up; then each stage's 3x3 convolutions alone,
  unpruned and with the inner width halved (what bounds the pruned model's time), the narrow one
  also column-folded as the fused form runs it where this CPU's vectors allow
  (``qrepro.inference.fold_factors``), and a 3x3 convolution of 3-16 filters plain and folded by 2 and 4;
* search: BoTorch time per proposal (GP fit + acquisition) at 9 and 12 dimensions with 60
  observations, against one candidate evaluation of ResNet-20 on Fashion-MNIST: closed-form LogEI
  (``qrepro.acquisition``, the default) against Monte Carlo qLogNEI (the option for batches), with a
  pending point (two workers), and while two other processes keep both cores busy;
* cluster: wall time of a 40-evaluation asynchronous BO search on a Dask LocalCluster with 2
  workers against 1 (and one worker per GPU where CUDA is present), and the GP refit time
  against one evaluation: past 1 / that ratio workers, BO itself is the bottleneck;
* regret: BO, random search and the uniform ratio on a 12-layer function with a known optimum
  under the linear size constraint (median regret over seeds): the check that speeding up the
  BO loop did not make it search worse;
* joint: the joint bit-width / pruning search against its baselines (random joint search, bit-widths
  alone, the paper's 1- and 2-bit settings) on a 9-unit function of (bits, ratio) with a known constrained
  optimum (median regret over seeds), and one joint proposal (18 dimensions) beside a ratio-only one (9),
  at 60 observations;
* gpu (where CUDA is present, else one line saying so): the GPU rows of issue 14, from
  ``benchmarks/gpu_check.py``'s throughput section: BNN and DoReFa training throughput against
  full precision on the GPU (ResNet-20 at batch 128 and 1024; ResNet-18 at 28 px, Study v2's network,
  and at 224 in bf16, channels-last), and one search evaluation's time for each network.

Every row is also written to ``--json PATH`` (keys named after the rows).  One module per section
(``bench_<section>.py``), timing helpers in ``timing.py``; rows measured at earlier commits, and why
the defaults are what they are, are in ``benchmarks/HISTORY.md``.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from bench_cluster import bench_cluster
from bench_criteria import bench_criteria
from bench_gpu import bench_gpu
from bench_inference import bench_inference
from bench_joint import bench_joint
from bench_regret import bench_regret
from bench_search import bench_search
from bench_train import bench_compile, bench_train

from qrepro.checkpoint import environment_info

SECTIONS = {"train": bench_train, "criteria": bench_criteria, "inference": bench_inference, "search": bench_search,
            "cluster": bench_cluster, "regret": bench_regret, "joint": bench_joint, "compile": bench_compile,
            "gpu": bench_gpu}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write every row to this JSON file")
    args = parser.parse_args(argv)
    info = environment_info()
    print(f"# qrepro benchmark  ({platform.processor() or platform.machine()}, {info['device']}, "
          f"torch {info['torch']}, botorch {info['botorch']})")
    rows = {}
    for s in args.sections:
        rows.update(SECTIONS[s](args.repeats))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"environment": info, "repeats": args.repeats, "rows": rows}, indent=2))
        print(f"\nrows written to {args.json}")


if __name__ == "__main__":
    main()
