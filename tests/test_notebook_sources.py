"""Notebook sources are jupytext py:percent files paired with the .ipynb JupyterLab opens:
the pair must hold the same cells, and the sources pass the same lint as the library."""
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PAIRS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")) + sorted((NOTEBOOKS / "teaching").glob("T[0-9]_*.py"))


def test_every_notebook_has_a_source():
    books = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) + sorted((NOTEBOOKS / "teaching").glob("T[0-9]_*.ipynb"))
    assert [p.stem for p in PAIRS] == [p.stem for p in books]


@pytest.mark.parametrize("source", [p for p in PAIRS if p.parent.name == "teaching"], ids=lambda p: p.stem)
def test_teaching_notebooks_have_objectives_equations_exercises_and_hidden_solutions(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "You will learn to" in text and "## Exercises" in text and "$$" in text
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) >= 2 and all(c.metadata.get("jupyter", {}).get("source_hidden") for c in solutions)


@pytest.mark.parametrize("source", PAIRS, ids=lambda p: p.stem)
def test_pair_in_sync(source):
    text = jupytext.read(source)
    ipynb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    cells = lambda nb: [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]  # noqa
    assert cells(text) == cells(ipynb), (f"{source.name} and its .ipynb differ: run "
                                         f"`jupytext --sync {source}` (or save it in JupyterLab)")
    assert not any(c.get("outputs") for c in ipynb.cells if c.cell_type == "code"), "commit sources without outputs"
    tagged = [c for c in ipynb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "smoke" in tagged[0].source


def test_sources_pass_lint():
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--output-format", "concise",
                          *map(str, PAIRS)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
