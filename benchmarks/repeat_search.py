"""Run one of the committed study's searches again into a scratch journal (same config, same base
model, the preset's Dask workers) and compare it with the committed journal: candidates, values,
and whether the evaluations finished in the same order.

    python benchmarks/repeat_search.py search/bnn-constrained-bo-t0.2612-s0
"""
import sys
import tempfile
from pathlib import Path

from qrepro.journal import read_journal
from qrepro.study import make_search, open_study


def main():
    study = open_study("full", Path("results"), progress=False)
    graph = study.graph
    searches = graph.ids("search")
    if len(sys.argv) != 2 or sys.argv[1] not in searches:
        sys.exit(f"usage: python benchmarks/repeat_search.py SEARCH_ID, one of: {', '.join(searches)}")
    sid = sys.argv[1]
    art = graph.artifacts[sid]
    committed = graph.resolve(sid)
    out = Path(tempfile.mkdtemp()) / committed.name
    try:
        make_search(study, art, out)
    finally:
        study.close()
    finish = {}  # eval records in the order they finished (file order), one read per journal
    for name, path in (("committed", committed), ("again", out)):
        _, records = read_journal(path, set_aside=False)
        finish[name] = [r for r in records if r["type"] == "eval"]
    a, b = (sorted(finish[k], key=lambda r: r["index"]) for k in ("committed", "again"))
    same_x = sum(ra["x"] == rb["x"] for ra, rb in zip(a, b))
    same_v = sum(ra["value"] == rb["value"] for ra, rb in zip(a, b))
    same_order = [r["index"] for r in finish["committed"]] == [r["index"] for r in finish["again"]]
    best = [max(r["value"] for r in e if r["feasible"]) for e in (a, b)]
    print(f"{sid}: {len(a)} and {len(b)} evaluations; same candidates {same_x}/{len(a)}, same values "
          f"{same_v}/{len(a)}; finish order equal: {same_order}; best {best[0]:.2f} / {best[1]:.2f}")


if __name__ == "__main__":
    main()
