"""The README's examples are the files of examples/, and each runs as written (at a small size)."""
import ast
import re
import runpy
from pathlib import Path

import pytest

from qrepro.criteria import CRITERIA, VARIANTS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHOWN = ["prune_and_search.py", "own_network.py"]  # in the README's python blocks, in this order
# each example at a small size: (text in the file, what the test runs instead)
SMALL = {
    "prune_and_search.py": [("budget=40", "budget=3, n_init=2"), ("val_images=2000", "val_images=256")],
    "own_network.py": [("limit=6000", "limit=512"), ("epochs=3", "epochs=1"), ("budget=8, n_init=4", "budget=3, n_init=2")],
    "custom_criterion.py": [("val_size=5000", "val_size=5000, limit=1000")],
}


def _body(text: str) -> str:
    """The code of a file without its docstring."""
    tree = ast.parse(text)
    first = tree.body[0]
    start = first.end_lineno if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) else 0
    return "\n".join(text.splitlines()[start:]).strip()


def test_the_readme_shows_the_examples():
    readme = (ROOT / "README.md").read_text()
    blocks = [b.strip() for b in re.findall(r"```python\n(.*?)```", readme, re.S)]
    for name, block in zip(SHOWN, blocks, strict=True):
        assert block == _body((EXAMPLES / name).read_text()), f"copy examples/{name} into the README's block"
    assert set(SMALL) == {p.name for p in EXAMPLES.glob("*.py")} - {"my_networks.py"}, "every example is run here"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMALL))
def test_the_example_runs_as_written(name, tmp_path, monkeypatch, capsys):
    """The example at a small size, run in an empty folder (its outputs land there), in this process."""
    code = (EXAMPLES / name).read_text()
    for old, new in SMALL[name]:
        assert old in code, f"examples/{name} no longer says {old!r}: update SMALL"
        code = code.replace(old, new)
    script = tmp_path / name
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as `python examples/<name>` puts it first
    registered = [(d, dict(d)) for d in (CRITERIA, VARIANTS)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:  # a criterion an example registers must not leak into other tests
        for d, before in registered:
            d.clear()
            d.update(before)
    out = capsys.readouterr().out.split()
    if name == "prune_and_search.py":
        acc, fraction = map(float, out[-2:])
        assert 0 < acc <= 100 and 0 < fraction <= 1 - 0.2612 + 1e-9
        assert (tmp_path / "pruned.qrpk").exists() and (tmp_path / "search.jsonl").exists()
    elif name == "own_network.py":
        *accs, fraction = map(float, out[-4:])
        assert all(0 <= a <= 100 for a in accs) and 0 < fraction <= 0.7 + 1e-9
        assert all((tmp_path / f).exists() for f in ("own.pt", "own.qrpk", "own.jsonl"))
    else:
        rows = dict(zip(out[-6::2], map(float, out[-5::2])))
        assert set(rows) == {"gamma_l1", "redundancy", "bn_scale"} and all(0 < a <= 100 for a in rows.values())
