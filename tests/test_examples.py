"""The README's example is examples/prune_and_search.py, and it runs as written (at a small budget)."""
import ast
import os
import re
import subprocess
import sys
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
def test_the_example_runs_as_written(tmp_path):
    """The example at a 4-evaluation budget on 256 validation images, in an empty folder (its outputs land there)."""
    code = EXAMPLE.read_text().replace("budget=40", "budget=4, n_init=2").replace("val_images=2000", "val_images=256")
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "QREPRO_RESULTS": str(ROOT / "results")}
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    acc, fraction = map(float, run.stdout.split()[-2:])
    assert 0 < acc <= 100 and 0 < fraction <= 1 - 0.2612 + 1e-9
    assert (tmp_path / "pruned.qrpk").exists() and (tmp_path / "search.jsonl").exists()
