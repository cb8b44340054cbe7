"""Run one of the committed study's searches again into a scratch journal (same config, same base
model, the preset's Dask workers) and compare it with the committed journal: candidates, values,
and whether the evaluations finished in the same order.

    python benchmarks/repeat_search.py search/bnn-constrained-bo-t0.2612-s0
"""
import json
import sys
import tempfile
from pathlib import Path

from qrepro.config import load_study
from qrepro.search import load_journal
from qrepro.study import _close_dask, make_search, study_graph


def main():
    graph = study_graph(load_study("full"), Path("results"))
    graph.progress = False
    searches = graph.ids("search")
    if len(sys.argv) != 2 or sys.argv[1] not in searches:
        sys.exit(f"usage: python benchmarks/repeat_search.py SEARCH_ID, one of: {', '.join(searches)}")
    sid = sys.argv[1]
    art = graph.artifacts[sid]
    committed = graph.resolve(sid)
    out = Path(tempfile.mkdtemp()) / committed.name
    try:
        make_search(graph, art, out)
    finally:
        _close_dask(graph)
    _, a = load_journal(committed)
    _, b = load_journal(out)
    same_x = [ra["x"] == rb["x"] for ra, rb in zip(a, b)]
    same_v = [ra["value"] == rb["value"] for ra, rb in zip(a, b)]
    order = lambda p: [json.loads(l)["index"] for l in open(p) if '"type": "eval"' in l]
    print(f"{sid}: {len(a)} and {len(b)} evaluations; same candidates {sum(same_x)}/{len(a)}, same values {sum(same_v)}/{len(a)}; "
          f"finish order equal: {order(committed) == order(out)}; best {max(r['value'] for r in a if r['feasible']):.2f} / {max(r['value'] for r in b if r['feasible']):.2f}")


if __name__ == "__main__":
    main()
