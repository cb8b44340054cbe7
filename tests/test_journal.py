"""A garbage, torn or edited line never costs a valid record, and no journal is ever rewritten."""
import hashlib
import json

import pytest

from qrepro.journal import JournalError, append_record, load_journal, read_records, rejected_path
from qrepro.search import SearchConfig, search_ratios
from qrepro.size import SizeModel


def toy_size():
    return SizeModel(1000.0, {"a": 10, "b": 10, "c": 10}, {"a": 20.0, "b": 10.0, "c": 5.0})


def cfg(**kw):
    base = dict(layers=["a", "b", "c"], target=0.2, budget=8, n_init=4, num_restarts=2, raw_samples=64)
    return SearchConfig(**{**base, **kw})


def quadratic(ratios):
    return -sum((r - 0.3) ** 2 for r in ratios.values())


def sealed(record: dict) -> str:
    """``record`` as a journal line with its checksum computed by hand: SHA-256 of its JSON with
    sorted keys and no spaces."""
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return json.dumps({**record, "sha256": digest})


def test_garbage_in_the_middle_keeps_every_valid_record_and_the_file(tmp_path):
    path = tmp_path / "j.jsonl"
    search_ratios(quadratic, toy_size(), cfg(budget=8), journal=path, progress=False)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 2 * 8
    damaged = lines[:5] + ["this is not json", sealed({"type": "eval", "index": 2})] + lines[5:]
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
    path.write_bytes(f'{sealed({"a": 1})}\n{{"a": NaN}}\n'.encode() + b'\xff\xfe\n' + f'{sealed({"a": 4})}\n'.encode())
    assert read_records(path) == [{"a": 1}, {"a": 4}]
    assert len(rejected_path(path).read_text().splitlines()) == 2


def test_each_line_carries_the_sha256_of_its_content(tmp_path):
    path = tmp_path / "rows.jsonl"
    append_record(path, {"b": [1.5, 2], "a": "x"})
    assert json.loads(path.read_text()) == json.loads(sealed({"b": [1.5, 2], "a": "x"}))


def test_an_edited_value_is_set_aside_and_a_planted_unsealed_line_too(tmp_path):
    """The audit's case: a journal edited by hand and read with load_journal directly."""
    path = tmp_path / "j.jsonl"
    search_ratios(quadratic, toy_size(), cfg(budget=6, n_init=5), journal=path, progress=False)
    lines = path.read_text().splitlines()
    edited = json.loads(lines[4])
    assert edited["type"] == "eval"
    edited["value"] = 1.0  # better than anything the search found
    planted = {k: v for k, v in edited.items() if k != "sha256"} | {"index": 99}
    path.write_text("\n".join(lines[:4] + [json.dumps(edited)] + lines[5:] + [json.dumps(planted)]) + "\n")
    _, evals = load_journal(path)
    assert 1.0 not in [r["value"] for r in evals] and 99 not in [r["index"] for r in evals]
    assert len(evals) == 5


def test_a_journal_without_checksums_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "j.jsonl"
    search_ratios(quadratic, toy_size(), cfg(budget=4, n_init=3), journal=path, progress=False)
    old = [{k: v for k, v in json.loads(x).items() if k != "sha256"} for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))  # as an older qrepro wrote it
    with pytest.raises(JournalError, match="no checksums.*--trust-unverified"):
        load_journal(path)
    with pytest.raises(JournalError, match="no checksums"):
        search_ratios(quadratic, toy_size(), cfg(budget=4, n_init=3), journal=path, progress=False)
    _, evals = load_journal(path, trust_unverified=True)
    assert len(evals) == 4
    res = search_ratios(quadratic, toy_size(), cfg(budget=4, n_init=3), journal=path, progress=False,
                        trust_unverified=True)
    assert len(res.records) == 4
