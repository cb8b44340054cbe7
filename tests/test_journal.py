"""A garbage or torn line never costs a valid record, and no journal is ever rewritten."""
import json

from qrepro.journal import append_record, load_journal, read_records, rejected_path
from qrepro.search import SearchConfig, search_ratios
from qrepro.size import SizeModel


def toy_size():
    return SizeModel(1000.0, {"a": 10, "b": 10, "c": 10}, {"a": 20.0, "b": 10.0, "c": 5.0})


def cfg(**kw):
    base = dict(layers=["a", "b", "c"], target=0.2, budget=8, n_init=4, num_restarts=2, raw_samples=64)
    return SearchConfig(**{**base, **kw})


def quadratic(ratios):
    return -sum((r - 0.3) ** 2 for r in ratios.values())


def test_garbage_in_the_middle_keeps_every_valid_record_and_the_file(tmp_path):
    path = tmp_path / "j.jsonl"
    search_ratios(quadratic, toy_size(), cfg(budget=8), journal=path, progress=False)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 2 * 8
    damaged = lines[:5] + ["this is not json", '{"type": "eval", "index": 2}'] + lines[5:]
    text = "\n".join(damaged) + "\n"
    path.write_text(text)
    header, evals = load_journal(path)
    assert [r["index"] for r in evals] == list(range(8))  # records before and after the garbage survive
    calls = []
    res = search_ratios(lambda r: calls.append(r) or quadratic(r), toy_size(), cfg(budget=8), journal=path,
                        progress=False)  # resume: every evaluation is there, nothing runs again
    assert calls == [] and len(res.records) == 8
    assert path.read_text() == text  # not rewritten, nothing appended
    side = [json.loads(x) for x in rejected_path(path).read_text().splitlines()]
    assert [s["line"] for s in side] == [6, 7] and side[0]["text"] == "this is not json"
    assert "no valid x" in side[1]["reason"]
    search_ratios(quadratic, toy_size(), cfg(budget=8), journal=path, progress=False)
    assert len(rejected_path(path).read_text().splitlines()) == 2  # reported once, not again


def test_torn_last_line_is_terminated_not_merged(tmp_path):
    path = tmp_path / "rows.jsonl"
    append_record(path, {"a": 1})
    with open(path, "a") as f:
        f.write('{"a": 2, "b"')  # a crash mid-write
    append_record(path, {"a": 3})
    assert read_records(path) == [{"a": 1}, {"a": 3}]
    assert path.read_text().splitlines()[1] == '{"a": 2, "b"'


def test_non_finite_and_non_utf8_lines_are_set_aside(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": NaN}\n\xff\xfe\n{"a": 4}\n')
    assert read_records(path) == [{"a": 1}, {"a": 4}]
    assert len(rejected_path(path).read_text().splitlines()) == 2
