"""Benchmark section criteria: filter-selection time per layer of BNN ResNet-18 for every criterion."""
from __future__ import annotations

from timing import timed

from qrepro.criteria import CRITERIA, select_filters
from qrepro.models import build_model
from qrepro.prune import layer_view, prune_groups
from qrepro.quantize import quantize_model


def bench_criteria(repeats: int):
    model = quantize_model(build_model("resnet18"), "bnn")
    groups = prune_groups(model, "block")
    rows = {}
    print("\n## Criterion selection time per layer, BNN ResNet-18, ratio 0.5 (median of", repeats, "runs, ms)")
    print("| layer | filters x dims | " + " | ".join(CRITERIA) + " |")
    print("|---|---|" + "---|" * len(CRITERIA))
    for name, g in groups.items():
        view = layer_view(model, g)
        ms = [1000 * timed(lambda c=c: select_filters(view, view.n // 2, c), repeats) for c in CRITERIA]
        print(f"| {name} | {view.n} x {view.codes.shape[1]} | " + " | ".join(f"{t:.1f}" for t in ms) + " |")
        rows.update({f"criterion_ms_{c}_{name}": t for c, t in zip(CRITERIA, ms)})
    return rows
