"""The artifact graph: keys follow config, inputs, data and code; digests catch swaps and
edits; one completion rule; status says why.  A toy graph here (seconds); the smoke study in
tests/test_study_notebooks.py repeats the checks on real artifacts."""
import json
import os
import shutil

import pytest

from qrepro import artifacts
from qrepro.artifacts import Artifact, ArtifactError, Graph, source_fingerprint
from qrepro.cache import config_key
from qrepro.cli import main
from qrepro.errors import BadInput


def test_key_ignores_order_and_int_float_spelling():
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1.0})
    assert config_key({"a": 1}) != config_key({"a": 2})
    assert config_key({"a": [1, 2]}) != config_key({"a": [2, 1]})
    assert config_key({"a": {"x": None}}) != config_key({"a": {"x": 0}})


def test_code_fingerprint_ignores_docstrings_and_comments_not_code():
    a = 'def f(x):\n    """doc"""\n    return x + 1  # one\n'
    assert source_fingerprint(a) == source_fingerprint('def f(x):\n    """other doc"""\n    return x + 1\n')
    assert source_fingerprint(a) != source_fingerprint('def f(x):\n    return x + 2\n')


def _writer(text):
    def make(graph, art, path):
        path.write_text(text + "".join(graph.resolve(i).read_text() for i in art.inputs))
    return make


def toy(root, data=("d", 1), a_config=1, code=("errors",), study=None, tables="tables"):
    arts = [Artifact("a", "checkpoints", "a", ".txt", _writer("A"), {"n": a_config}, (), code, True, stage="one"),
            Artifact("b", "journals", "b", ".txt", _writer("B"), {}, ("a",), (), stage="two", resumable=True),
            Artifact("t", tables, "t", ".csv", _writer("T"), {}, ("b",), (), keyed=False, stage="two")]
    return Graph(arts, root, data_identity=lambda: {"dataset": data[0], "files": {"x": data[1]}}, study=study)


def build_all(g):
    for i in g.artifacts:
        g.build(i)


def states(g):
    return {s.id: s.state for s in g.report()}


def test_fresh_after_build_and_recorded_digest(tmp_path):
    g = toy(tmp_path)
    assert states(g) == {"a": "missing", "b": "missing", "t": "missing"}
    build_all(g)
    assert states(toy(tmp_path)) == {"a": "fresh", "b": "fresh", "t": "fresh"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())["artifacts"]
    entry = manifest[str(g.path("a").relative_to(tmp_path))]
    assert entry["sha256"] == artifacts.sha256_file(g.path("a")) and entry["id"] == "a"


@pytest.mark.parametrize("change, reason", [
    (dict(a_config=2), "config changed"),
    (dict(data=("d", 2)), "data changed"),
    (dict(code=("journal",)), "code changed: journal"),
])
def test_changes_make_stale_with_the_reason_and_downstream_follows(tmp_path, change, reason):
    build_all(toy(tmp_path))
    g = toy(tmp_path, **change)
    st = g.status("a")
    assert st.state == "stale" and reason in st.detail
    assert g.status("b").state == "stale" and "input changed: a" in g.status("b").detail
    assert g.status("t").state == "stale"
    with pytest.raises(ArtifactError, match="stale.*rebuild with: python -m qrepro study --stages one"):
        g.resolve("a")


def test_swapped_edited_or_truncated_files_are_corrupt(tmp_path):
    g = toy(tmp_path)
    build_all(g)
    a, b = g.path("a"), g.path("b")
    a_text, b_text = a.read_text(), b.read_text()
    a.write_text(b_text), b.write_text(a_text)  # swap
    g = toy(tmp_path)
    assert g.status("a").state == "corrupt" and g.status("b").state == "corrupt"
    with pytest.raises(ArtifactError, match=r"a-\w+\.txt: corrupt .*swapped, edited"):
        g.resolve("a")
    a.write_text(a_text[:-1])  # truncated
    assert toy(tmp_path).status("a").state == "corrupt"


def test_rebuilding_a_corrupt_artifact_moves_it_aside(tmp_path):
    g = toy(tmp_path)
    build_all(g)
    g.path("a").write_text("tampered")
    g = toy(tmp_path)
    g.build("a")
    assert g.status("a").state == "fresh" and g.path("a").read_text() == "A"
    aside = [p for p in (tmp_path / "checkpoints").iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_text() == "tampered"


def test_deleted_file_is_missing_and_unrecorded_file_is_not_done(tmp_path):
    g = toy(tmp_path)
    build_all(g)
    os.remove(g.path("b"))
    st = toy(tmp_path).status("b")
    assert st.state == "missing" and "file is gone" in st.detail
    # a journal written but never recorded (its run was killed) is "in progress", never done
    g = toy(tmp_path, a_config=3)
    g.build("a")
    g.path("b").write_text("half")
    assert g.status("b").state == "in progress" and not g.done("b")


def test_legacy_entries_are_usable_until_their_config_data_or_inputs_change(tmp_path):
    g = toy(tmp_path)
    g.path("a").parent.mkdir(parents=True)
    old = g.path("a").with_name("a-000000000000.txt")
    old.write_text("A made long ago")
    g.record("a", old, legacy=True)
    g = toy(tmp_path)
    assert g.status("a").state == "legacy" and g.resolve("a") == old
    g.build("b")  # reads the legacy input
    assert toy(tmp_path).status("b").state == "fresh"
    assert toy(tmp_path, data=("d", 9)).status("a").state == "stale"
    old.write_text("edited")
    assert toy(tmp_path).status("a").state == "corrupt"


def test_status_cli_exit_codes_on_the_committed_cache():
    # every artifact of the committed study is usable (exit 0): fresh, or legacy with the reason it was
    # carried forward across a change of code shown to compute the same (status --carry-forward)
    from qrepro.study import status_lines

    lines, code = status_lines("full")
    assert code == 0, "\n".join(lines)
    for line in lines[:-1]:
        assert line.split()[0] == "fresh" or (line.split()[0] == "legacy" and "compare_results" in line), line


def test_status_cli_reports_a_swap_with_exit_1(tmp_path, capsys):
    from qrepro.paths import RESULTS_DIR

    root = tmp_path / "results"
    shutil.copytree(RESULTS_DIR, root, ignore=shutil.ignore_patterns("notebooks", "figures"))
    from qrepro.study import study_graph

    full = study_graph("full", root)  # the folder holds Study v2's base models too
    bnn, dorefa = full.status("base/bnn").path, full.status("base/dorefa").path
    bnn_bytes = bnn.read_bytes()
    bnn.write_bytes(dorefa.read_bytes())
    dorefa.write_bytes(bnn_bytes)
    assert main(["status", "--results", str(root)]) == 1
    out = capsys.readouterr().out
    assert "corrupt     base/bnn" in out and "corrupt     base/dorefa" in out
    assert "rebuild with: python -m qrepro study --preset full" in out


def test_older_versions_are_orphans_and_can_be_removed(tmp_path):
    build_all(toy(tmp_path))
    old_a = toy(tmp_path).path("a")
    g = toy(tmp_path, a_config=2)
    build_all(g)
    assert sorted(g.orphans()) == sorted(str(toy(tmp_path).path(i).relative_to(tmp_path)) for i in ("a", "b"))
    assert old_a.exists()
    sidecar = old_a.with_suffix(".partial.jsonl")  # what a resumable artifact leaves beside its file
    sidecar.write_text("{}\n")
    g.remove_orphans()
    assert not old_a.exists() and not sidecar.exists()
    assert g.orphans() == [] and all(s.state == "fresh" for s in g.report())


def test_two_studies_in_one_folder_never_see_each_other_s_files_as_their_own(tmp_path):
    """Two studies with the same artifact ids in one results folder (the full study and Study v2): neither takes
    the other's files for an older version of its own (status --remove-orphans would delete them) nor for a
    legacy artifact; each keeps its own, fresh (unkeyed tables in their own folders: StudyConfig.tables)."""
    one, two = toy(tmp_path, study="one"), toy(tmp_path, a_config=2, study="two", tables="tables/two")
    build_all(one)
    build_all(two)
    for g in (one, two):
        assert g.orphans() == [] and set(states(g).values()) == {"fresh"}
    two.remove_orphans()
    assert set(states(one).values()) == {"fresh"}
    # an entry recorded before studies were named belongs to whichever study has its id (one study per folder)
    old = toy(tmp_path / "old")
    build_all(old)
    assert set(states(toy(tmp_path / "old", study="one")).values()) == {"fresh"}


def test_carry_forward_keeps_what_only_a_code_change_made_stale_and_nothing_else(tmp_path):
    build_all(toy(tmp_path))
    g = toy(tmp_path, code=("journal",))  # a's code changed: a and everything downstream stale
    assert set(states(g).values()) == {"stale"}
    assert g.carry_forward("same results: checked") == ["a"]
    g = toy(tmp_path, code=("journal",))  # a under its old key: what reads it is fresh again
    assert states(g) == {"a": "legacy", "b": "fresh", "t": "fresh"}
    assert "same results: checked" in g.status("a").detail
    assert g.resolve("b").read_text() == "BA"  # the files as they were
    # a second change shown to compute the same adds its note to the legacy record, once
    assert g.carry_forward("second change: checked") == ["a"] and g.carry_forward("second change: checked") == []
    assert toy(tmp_path, code=("journal",)).status("a").detail == "same results: checked; second change: checked"
    # a config change is not a code change: nothing is carried forward, the artifact stays stale
    g = toy(tmp_path, code=("journal",), a_config=5)
    assert g.carry_forward("again") == [] and g.status("a").state == "stale"
    # nor is a damaged file
    g = toy(tmp_path, code=("cache",))
    g.status("a").path.write_text("edited")
    assert "a" not in g.carry_forward("again") and toy(tmp_path, code=("cache",)).status("a").state != "legacy"


def test_needed_lists_each_input_not_yet_usable_before_what_needs_it(tmp_path):
    g = toy(tmp_path)
    assert g.matching(["t", "b*"]) == ["b", "t"]
    assert g.needed(["t"]) == ["a", "b", "t"]
    g.build("a")
    assert toy(tmp_path).needed(["t", "b"]) == ["b", "t"]
    with pytest.raises(BadInput, match=r"no artifact id matches 'x\*'; ids look like: a, b"):
        g.matching(["t", "x*"])
