"""The README's example is examples/prune_and_search.py, and it runs as written (at a small budget)."""
import ast
import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "prune_and_search.py"


def _body(text: str) -> str:
    """The code of a file without its docstring."""
    tree = ast.parse(text)
    first = tree.body[0]
    start = first.end_lineno if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) else 0
    return "\n".join(text.splitlines()[start:]).strip()


def test_the_readme_shows_the_example():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)[1]
    assert block.strip() == _body(EXAMPLE.read_text()), "copy examples/prune_and_search.py into the README's block"


@pytest.mark.slow
def test_the_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The example at a 3-evaluation budget on 256 validation images, run in an empty folder (its outputs
    land there), in this process."""
    code = EXAMPLE.read_text().replace("budget=40", "budget=3, n_init=2").replace("val_images=2000", "val_images=256")
    script = tmp_path / "example.py"
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    acc, fraction = map(float, capsys.readouterr().out.split()[-2:])
    assert 0 < acc <= 100 and 0 < fraction <= 1 - 0.2612 + 1e-9
    assert (tmp_path / "pruned.qrpk").exists() and (tmp_path / "search.jsonl").exists()
