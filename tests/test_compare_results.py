"""tools/compare_results.py: equal up to wall times, and every real difference reported."""
import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "compare_results.py"


def _results(root: Path, value: float, seconds: float, rows=((1, 2.0),)) -> Path:
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "m.json").write_text(json.dumps({"acc": value, "seconds": seconds, "versions": {"t": 1}}))
    (root / "tables" / "t.csv").write_text("a,b,seconds\n" + "".join(f"{a},{b},{seconds}\n" for a, b in rows))
    (root / "manifest.json").write_text(json.dumps({"artifacts": {"tables/m.json": {"id": "metrics"},
                                                                  "tables/t.csv": {"id": "table"}}}))
    return root


def _run(a, b):
    return subprocess.run([sys.executable, str(TOOL), str(a), str(b)], capture_output=True, text=True)


def test_wall_times_and_versions_do_not_count(tmp_path):
    run = _run(_results(tmp_path / "a", 80.5, 1.0), _results(tmp_path / "b", 80.5, 9.0))
    assert run.returncode == 0 and "2 of 2 artifacts the same" in run.stdout


def test_a_changed_value_or_cell_is_reported(tmp_path):
    run = _run(_results(tmp_path / "a", 80.5, 1.0), _results(tmp_path / "b", 80.25, 1.0, rows=((1, 2.5),)))
    assert run.returncode == 1
    assert "content differs      metrics" in run.stdout and "content differs      table" in run.stdout
