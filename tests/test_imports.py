"""Layers without cycles: every import at the top of its module, and no module that imports,
directly or through others, a module that imports it (a cycle hidden by an import inside a
function is still a cycle).  Exempt: heavy optional dependencies imported where they are used."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"qrepro": ROOT / "qrepro", "benchmarks": ROOT / "benchmarks"}
# imports allowed inside a function, each with its reason
IN_FUNCTION = {
    "distributed": "Dask's distributed: only a search or study that asks for a cluster pays its import",
    "papermill": "only the notebook runner needs it (seconds of import for every other command)",
    "nbformat": "only the notebook runner needs it; the GPU machine's Python has no Jupyter",
    "jupytext": "only the notebook runner needs it (the notebooks' sources are py:percent files); the GPU machine has none",
    "pytest": "the GPU check asks whether pytest is installed on a machine that may lack it",
}


def _modules():
    return [(pkg, p) for pkg, folder in PACKAGES.items() for p in sorted(folder.glob("*.py"))]


def _root(node) -> str:
    if isinstance(node, ast.ImportFrom):
        return "." if node.level else node.module.split(".")[0]
    return node.names[0].name.split(".")[0]


@pytest.mark.parametrize("pkg,path", _modules(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_imports_are_at_the_top(pkg, path):
    tree = ast.parse(path.read_text())
    inside = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside += [f"line {n.lineno}: {ast.unparse(n)}" for n in ast.walk(fn)
                       if isinstance(n, (ast.Import, ast.ImportFrom)) and _root(n) not in IN_FUNCTION]
    assert not inside, f"{path.parent.name}/{path.name} imports inside functions: {inside}; move them to the top"


def _edges(pkg: str, path: Path) -> set[str]:
    """The modules of ``pkg`` that ``path`` imports at run time (not under ``if TYPE_CHECKING``)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == pkg:
            names = [node.module.split(".")[1]] if "." in node.module else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and pkg == "benchmarks":
            names = [node.module.split(".")[0]]
        else:
            names = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else []
        out.update(n for n in names if (PACKAGES[pkg] / f"{n}.py").exists())
    return out - {path.stem}


@pytest.mark.parametrize("pkg", sorted(PACKAGES))
def test_no_import_cycles(pkg):
    graph = {p.stem: _edges(pkg, p) for k, p in _modules() if k == pkg}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles in {pkg}: {cycles}"


def test_the_checks_can_fail(tmp_path):
    """The two checks above on planted modules: an import in a function, and a two-module cycle."""
    (tmp_path / "a.py").write_text("from .b import x\n\ndef f():\n    import json\n")
    (tmp_path / "b.py").write_text("from .a import y\nx = 1\n")
    PACKAGES["planted"] = tmp_path
    try:
        with pytest.raises(AssertionError, match="imports inside functions"):
            test_imports_are_at_the_top("planted", tmp_path / "a.py")
        with pytest.raises(AssertionError, match="a -> b -> a"):
            test_no_import_cycles("planted")
    finally:
        del PACKAGES["planted"]
