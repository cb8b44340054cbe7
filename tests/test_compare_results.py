"""tools/compare_results.py: equal up to wall times, and every real difference reported."""
import importlib.util
import json
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "compare_results.py"
_spec = importlib.util.spec_from_file_location("compare_results", TOOL)
compare_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_results)  # the tool itself, in this process (no second torch import)


def _results(root: Path, value: float, seconds: float, rows=((1, 2.0),)) -> Path:
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "m.json").write_text(json.dumps({"acc": value, "seconds": seconds, "versions": {"t": 1}}))
    (root / "tables" / "t.csv").write_text("a,b,seconds\n" + "".join(f"{a},{b},{seconds}\n" for a, b in rows))
    (root / "manifest.json").write_text(json.dumps({"artifacts": {"tables/m.json": {"id": "metrics"},
                                                                  "tables/t.csv": {"id": "table"}}}))
    return root


def _run(capsys, a, b):
    code = compare_results.main([str(a), str(b)])
    return code, capsys.readouterr().out


def test_wall_times_and_versions_do_not_count(tmp_path, capsys):
    code, out = _run(capsys, _results(tmp_path / "a", 80.5, 1.0), _results(tmp_path / "b", 80.5, 9.0))
    assert code == 0 and "2 of 2 artifacts the same" in out


def test_a_changed_value_or_cell_is_reported(tmp_path, capsys):
    code, out = _run(capsys, _results(tmp_path / "a", 80.5, 1.0),
                     _results(tmp_path / "b", 80.25, 1.0, rows=((1, 2.5),)))
    assert code == 1
    assert "content differs      metrics" in out and "content differs      table" in out
