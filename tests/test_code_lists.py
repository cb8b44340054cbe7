"""Every artifact's code list is computed from what its maker references (artifacts.code_closure),
so a change anywhere on an artifact's path makes it stale: the audit's cases (the study's data
loader, its base-model reader, the atomic writer) and a criterion's option set."""
import functools

import pytest

from qrepro import artifacts, criteria, study
from qrepro.artifacts import code_closure


def _key_changes(monkeypatch, tmp_path, spec: str) -> set[str]:
    """Ids of the smoke study whose key changes when the code ``spec`` changes."""
    before = study.study_graph("smoke", tmp_path)
    keys = {i: before.key(i) for i in before.ids()}
    real = artifacts.code_fingerprint

    @functools.lru_cache(maxsize=None)
    def changed(s):
        return "edited" if s == spec else real(s)

    monkeypatch.setattr(artifacts, "code_fingerprint", changed)
    after = study.study_graph("smoke", tmp_path)
    return {i for i in after.ids() if after.key(i) != keys[i]}


@pytest.mark.parametrize("spec", ["study:load_study_data", "study:Study", "cache", "validation", "quantize"])
def test_a_change_on_every_artifacts_path_restales_every_artifact(monkeypatch, tmp_path, spec):
    graph = study.study_graph("smoke", tmp_path)
    assert _key_changes(monkeypatch, tmp_path, spec) == set(graph.ids())


def test_a_change_in_the_search_restales_searches_and_what_reads_them_not_base_models(monkeypatch, tmp_path):
    changed = _key_changes(monkeypatch, tmp_path, "gp")
    assert any(i.startswith("search/") for i in changed) and "gp_slice" in changed
    assert not any(i.startswith("base/") for i in changed)  # study.BASE_NOT_KEYED
    ids = study.study_graph("smoke", tmp_path).ids()
    assert {i for i in ids if i.startswith(("search/", "final/"))} <= changed


def test_base_models_do_not_depend_on_pruning_code_and_the_exemption_is_still_needed(monkeypatch, tmp_path):
    """Training never prunes: a change of the criteria leaves the base models fresh (study.BASE_NOT_KEYED),
    and each exempted module is still reached by the base models' imports (else the exemption is stale)."""
    changed = _key_changes(monkeypatch, tmp_path, "criteria")
    assert not any(i.startswith("base/") for i in changed) and "ablation" in changed
    reached = set(code_closure(study.make_base, exempt=study.NOT_KEYED))
    assert set(study.BASE_NOT_KEYED) <= reached


def test_the_closure_follows_helpers_context_methods_and_imports():
    """Hand-checked for make_search: its own helpers, the Study context's methods (through the
    annotation), and the modules those name with what they import; the bookkeeping modules left out."""
    code = set(code_closure(study.make_search, exempt=study.NOT_KEYED))
    assert {"study:make_search", "study:make_objective", "study:Study", "study:load_study_data"} <= code
    assert {"search", "gp", "space", "journal", "prune", "criteria", "quantize", "size", "data", "objective",
            "train", "cluster", "cache", "acquisition", "likelihood"} <= code
    assert not code & set(study.NOT_KEYED)
    assert "study" not in code  # the study module counts function by function
    assert "study:make_final" not in code


def test_criterion_options_are_in_the_keys(monkeypatch, tmp_path):
    """A criterion's option set (criteria.VARIANTS) is part of every key that prunes with it, and only
    of those: changing redundancy's tie-break changes the ablation's, the redundancy searches' and
    finals' keys, and not a compared criterion's search or a base model's."""
    before = study.study_graph("full", tmp_path)
    monkeypatch.setitem(criteria.VARIANTS, "redundancy", ("redundancy", {"tie_break": "geometric_median"}))
    after = study.study_graph("full", tmp_path)
    changed = {i for i in before.ids() if before.key(i) != after.key(i)}
    assert "ablation" in changed and "recovery" in changed
    assert "search/bnn-constrained-bo-t0.2612-s0" in changed and "final/bnn-bo-t0.2612-s0" in changed
    assert "search/bnn-constrained-bo-bn_scale-t0.2612-s0" not in changed
    assert "final/bnn-bo-bn_scale-t0.2612-s0" not in changed
    assert not any(i.startswith("base/") for i in changed)
