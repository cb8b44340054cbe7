"""The spread a study's paired comparisons have, and the seeds a 95 % interval of a given half-width needs: the
first step of Study v2's design (issue 31: measure the spread first, then choose the seed counts).

    python tools/seed_spread.py [--results results] [--half-width 0.3] [--preset fmnist-resnet18]

Reads the full study's test metrics, or with ``--preset`` the trials of Study v2 built so far (artifacts;
nothing is computed). For each model and target it pairs the fine-tuned BO pick with the uniform ratio by seed
(Study v2: search and fine-tuning seed), prints each paired difference in test top-1, and the standard deviation
of the differences pooled over the cells. With that spread ``s``, ``n`` seeds give a 95 % half-width of
``t(0.975, n - 1) s / sqrt(n)``; the table lists the smallest ``n`` that reaches the target for ``s`` and for
larger spreads, since two seeds per cell say little about ``s`` itself.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from the source tree

from qrepro.config import load_preset
from qrepro.report import bo_uniform_pairs, pilot_pairs, pooled_spread, read_json, seeds_needed
from qrepro.tables import markdown_table


def paired_differences(results) -> pd.DataFrame:
    """The full study's fine-tuned BO picks and uniform ratios, paired by fine-tuning seed."""
    metrics = read_json("test_metrics", "full", results)
    epochs = float(load_preset("full").final.epochs)
    rows = [{**{k: v["job"][k] for k in ("model", "method", "target", "seed")}, "criterion": v["job"].get("criterion"),
             "epochs": epochs, "test": v["test_acc"]} for v in metrics["final"].values()]
    return bo_uniform_pairs(pd.DataFrame(rows), "test")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--half-width", type=float, default=0.3)
    parser.add_argument("--preset", help="a study with trials (fmnist-resnet18): read its (a) pairs built so far")
    args = parser.parse_args(argv)
    d = pilot_pairs(args.preset, args.results) if args.preset else paired_differences(args.results)
    if d.empty:
        print("no pair of BO pick and uniform ratio is built yet", file=sys.stderr)
        return 1
    print(markdown_table(d))
    pooled, dof = pooled_spread(d)
    seeds = "search and fine-tuning" if args.preset else "fine-tuning"
    print(f"\n{seeds} seeds: pooled standard deviation of the paired differences {pooled:.2f} points "
          f"({dof} degrees of freedom)")
    print(f"\n| spread of a paired difference (points) | seeds for a 95 % half-width of {args.half_width} |\n|---|---|")
    for s in sorted({0.3, 0.5, 0.7, 1.0} | ({round(pooled, 2)} if dof else set())):
        print(f"| {s:.2f} | {seeds_needed(s, args.half_width) or 'over 200'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
