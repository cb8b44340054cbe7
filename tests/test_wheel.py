"""A wheel that works: built from a copy of the source tree, installed into a fresh virtual
environment (its dependencies seen through a .pth file, not installed again), it runs the smoke
study in an empty folder and refuses the notebooks with one line."""
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_runs_the_smoke_study_in_an_empty_folder(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "results", "data", "build",
                                                              "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("qrepro-*.whl")
    env_dir = tmp_path / "fresh"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co., already here
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", site,
                    str(wheel)], check=True, capture_output=True)
    work = tmp_path / "empty"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH: the source tree is out of reach

    def qrepro(*args):
        return subprocess.run([python, "-m", "qrepro", *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=900)

    where = subprocess.run([python, "-c", "import qrepro; print(qrepro.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True).stdout
    assert where.startswith(site), where
    run = qrepro("study", "--preset", "smoke", "--limit", "128")  # every stage, at the smallest scale (suite time)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert (work / "results" / "manifest.json").is_file() and (work / "results" / "tables" / "paper_table.csv").is_file()
    status = qrepro("status", "--preset", "smoke", "--limit", "128")
    assert status.returncode == 0 and "fresh" in status.stdout, status.stdout[-2000:]
    notebooks = qrepro("reproduce", "--preset", "smoke", "--limit", "128")
    assert notebooks.returncode == 2
    assert notebooks.stderr.strip().splitlines() == [
        "error: this command needs the results notebooks of qrepro's source tree (the installed package has no "
        "notebooks or README): git clone the repository and run it there (make reproduce, or pip install -e .)"]
