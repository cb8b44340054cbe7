"""Every artifact's code list (qrepro/study.py, ``CODE_*``) against the ``qrepro`` modules its code
actually imports: a module that computes part of an artifact but is missing from its list would
let a change there leave the artifact 'fresh'.  The import closure (module-level and
function-level imports alike) over-approximates what runs, so each module the closure reaches
but the list leaves out is named below with the reason it cannot change the artifact's content."""
import ast
from pathlib import Path

import pytest

from qrepro.study import study_graph

PKG = Path(__file__).resolve().parent.parent / "qrepro"

# reached by every artifact's code, and never part of what it computes
EVERYWHERE = {
    "errors": "error messages and input checks",
    "paths": "where files live",
    "cache": "canonical JSON for keys and atomic writes; a change there changes every key anyway",
    "config": "validation of settings that are themselves in the key (CRITERION_VARIANTS' option sets are "
              "copied into the keys of the artifacts that prune: test_criterion_options_are_in_the_keys)",
}
# per kind of artifact: reached through an import whose code this kind never runs
EXEMPT = {
    "base": {"prune": "checkpoint.rebuild narrows pruned checkpoints; base models are not pruned",
             "criteria": "imported by prune, not called when loading or training"},
    "test_metrics": {"criteria": "imported by prune; loading a pruned model (apply_kept) uses no criterion"},
    "final": {"cluster": "the final stage reads journals; it runs no search"},
    "gp_slice": {m: "the GP slice fits a GP to journal records; search.py imports these for SizeModel and "
                    "the loop, which the slice does not run"
                 for m in ("checkpoint", "cluster", "criteria", "data", "device", "distributed", "models",
                           "prune", "quantize", "size", "train")},
    "table": {"artifacts": "the graph's bookkeeping (status, paths), not table content",
              "cluster": "the tables read journals; they run no search",
              "objective": "imported by the study module for the ablation; tables do not evaluate"},
}


def _imports(tree) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qrepro."):
            out.add(node.module.split(".")[1])
    return {m for m in out if (PKG / f"{m}.py").exists()}


def _module_tree(name):
    return ast.parse((PKG / f"{name}.py").read_text())


def _function_imports(spec: str) -> set[str]:
    module, function = spec.split(":")
    node = next(n for n in ast.walk(_module_tree(module)) if isinstance(n, ast.FunctionDef) and n.name == function)
    return _imports(node)


def _closure(roots) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_imports(_module_tree(m)))
    return seen


def _kinds():
    graph = study_graph("smoke")
    kinds = {}
    for art in graph.artifacts.values():
        kinds.setdefault(art.id.split("/")[0], art)
    return kinds


@pytest.mark.parametrize("kind", sorted(_kinds()))
def test_code_list_covers_what_the_artifact_imports(kind):
    art = _kinds()[kind]
    listed = {c for c in art.code if ":" not in c}
    roots = set(listed)
    for spec in (c for c in art.code if ":" in c):
        roots |= _function_imports(spec)
    missing = _closure(roots) - listed - {"study"} - set(EVERYWHERE) - set(EXEMPT.get(kind, {}))
    assert not missing, (f"{kind}: its code imports {sorted(missing)} but its code list (qrepro/study.py) does not "
                         "name them; add them there, or to EXEMPT here with the reason they cannot change it")


def test_exemptions_are_still_needed():
    """An exemption whose module is listed, or no longer reached, is stale: remove it."""
    kinds = _kinds()
    for kind, exempt in EXEMPT.items():
        art = kinds[kind]
        listed = {c for c in art.code if ":" not in c}
        roots = listed | set().union(*[_function_imports(c) for c in art.code if ":" in c])
        reached = _closure(roots)
        stale = [m for m in exempt if m in listed or m not in reached]
        assert not stale, f"{kind}: exemptions {stale} are listed or no longer imported"


def test_criterion_options_are_in_the_keys(monkeypatch, tmp_path):
    """A criterion's option set (config.CRITERION_VARIANTS) is part of every key that prunes with
    it, and only of those: changing redundancy's tie-break changes the ablation's, the redundancy
    searches' and finals' keys, and not a compared criterion's search or a base model's."""
    from qrepro import config, study

    before = study.study_graph("full", tmp_path)
    variants = {**config.CRITERION_VARIANTS, "redundancy": ("redundancy", {"tie_break": "geometric_median"})}
    monkeypatch.setattr(study, "CRITERION_VARIANTS", variants)
    after = study.study_graph("full", tmp_path)
    changed = {i for i in before.ids() if before.key(i) != after.key(i)}
    assert "ablation" in changed and "recovery" in changed
    assert "search/bnn-constrained-bo-t0.2612-s0" in changed and "final/bnn-bo-t0.2612-s0" in changed
    assert "search/bnn-constrained-bo-bn_scale-t0.2612-s0" not in changed
    assert "final/bnn-bo-bn_scale-t0.2612-s0" not in changed
    assert not any(i.startswith("base/") for i in changed)
