"""The spread a study's paired comparisons have, and the seeds a 95 % interval of a given half-width needs: the
first step of Study v2's design (issue 31: measure the spread first, then choose the seed counts).

    python tools/seed_spread.py [--results results] [--half-width 0.3] [--preset fmnist-resnet18]

Reads the full study's test metrics, or with ``--preset`` the trials of Study v2 finished so far (artifacts;
nothing is computed). For each model and target it pairs the fine-tuned BO pick with the uniform ratio by seed
(Study v2: search and fine-tuning seed), prints each paired difference in test top-1, and
the standard deviation of the differences pooled over the cells. With that spread ``s``, ``n`` seeds give a
95 % half-width of ``t(0.975, n - 1) s / sqrt(n)``; the table lists the smallest ``n`` that reaches the target
for ``s`` and for larger spreads, since two seeds per cell say little about ``s`` itself and the search seed
(not varied between the finals here) adds its own spread.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from the source tree

from qrepro.report import read_json
from qrepro.study import study_graph
from qrepro.tables import markdown_table


def seeds_needed(spread: float, half_width: float, most: int = 200) -> int | None:
    """The smallest number of paired seeds whose 95 % t-interval has at most ``half_width``."""
    for n in range(2, most + 1):
        if stats.t.ppf(0.975, n - 1) * spread / math.sqrt(n) <= half_width:
            return n
    return None


def paired_differences(results) -> pd.DataFrame:
    metrics = read_json("test_metrics", "full", results)
    rows = [{**{k: v["job"][k] for k in ("model", "method", "target", "seed")}, "criterion": v["job"].get("criterion"),
             "test": v["test_acc"]} for v in metrics["final"].values()]
    df = pd.DataFrame(rows)
    df = df[df.criterion.isna() & df.method.isin(["bo", "uniform"])]
    wide = df.pivot_table(index=["model", "target", "seed"], columns="method", values="test").dropna()
    wide["bo_minus_uniform"] = wide["bo"] - wide["uniform"]
    return wide.reset_index()


def trial_differences(preset, results) -> pd.DataFrame:
    """Study v2's (a) pairs among the trials finished so far: BO pick and uniform ratio, same seed."""
    graph = study_graph(preset, results)
    rows = []
    for id in graph.ids("trials"):
        if graph.done(id):
            r = json.loads(graph.resolve(id).read_text())
            rows.append({**{k: r["job"][k] for k in ("model", "method", "target", "epochs", "seed")},
                         "criterion": r["job"].get("criterion"), "rank": r["job"].get("rank"), "test": r["test_acc"]})
    df = pd.DataFrame(rows, columns=["model", "method", "target", "epochs", "seed", "criterion", "rank", "test"])
    df = df[df.criterion.isna() & df["rank"].isna() & df.method.isin(["bo", "uniform"])]
    wide = df.pivot_table(index=["model", "target", "epochs", "seed"], columns="method", values="test")
    wide = wide.reindex(columns=["bo", "uniform"]).dropna()
    wide["bo_minus_uniform"] = wide["bo"] - wide["uniform"]
    return wide.reset_index()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--half-width", type=float, default=0.3)
    parser.add_argument("--preset", help="a study with trials (fmnist-resnet18): read its finished (a) pairs")
    args = parser.parse_args(argv)
    d = trial_differences(args.preset, args.results) if args.preset else paired_differences(args.results)
    if len(d) == 0:
        print("no finished pair of BO pick and uniform ratio yet", file=sys.stderr)
        return 1
    print(markdown_table(d))
    cells = d.groupby(["model", "target"]).bo_minus_uniform
    pooled = math.sqrt((cells.var(ddof=1) * (cells.count() - 1)).sum() / (cells.count() - 1).sum())
    seeds = "search and fine-tuning" if args.preset else "fine-tuning"
    print(f"\n{seeds} seeds: pooled standard deviation of the paired differences {pooled:.2f} points "
          f"({int((cells.count() - 1).sum())} degrees of freedom)")
    print(f"\n| spread of a paired difference (points) | seeds for a 95 % half-width of {args.half_width} |\n|---|---|")
    for s in sorted({round(pooled, 2), 0.3, 0.5, 0.7, 1.0}):
        print(f"| {s:.2f} | {seeds_needed(s, args.half_width) or 'over 200'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
