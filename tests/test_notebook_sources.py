"""Notebook sources are jupytext py:percent files, and they are what JupyterLab opens and saves
(jupytext.toml): a lesson run and saved leaves its file as it was; the sources pass the library's
lint; the lessons have objectives, equations, exercises with solutions in files, and a summary; the
committed executed copies hold no machine paths, object reprs or stderr."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.sync_contentsmanager import TextFileContentsManager

from qrepro import notebooks

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")) + sorted((NOTEBOOKS / "teaching").glob("T[0-9]_*.py"))
LESSONS = [p for p in SOURCES if p.parent.name == "teaching"]


def test_the_sources_are_the_notebooks():
    assert len(SOURCES) == 12
    assert not list(NOTEBOOKS.rglob("*.ipynb")), "a notebook's source is its .py file; remove the stray .ipynb"
    for source in SOURCES:
        nb = jupytext.read(source)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "smoke" in tagged[0].source, source.name
        assert source.read_text().startswith("# %%"), f"{source.name}: no header (jupytext.toml filters it)"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_run_and_saved_in_jupyterlab_the_source_stays_as_it_was(source, tmp_path):
    """What JupyterLab's save calls (jupytext's contents manager, the project's jupytext.toml), on the
    notebook after a Run All (outputs, execution counts, the kernel's metadata): the file is unchanged
    and nothing else is written."""
    shutil.copy(ROOT / "jupytext.toml", tmp_path)
    (tmp_path / "notebooks").mkdir()
    path = tmp_path / "notebooks" / source.name
    shutil.copy(source, path)
    cm = TextFileContentsManager(root_dir=str(tmp_path))
    model = cm.get(f"notebooks/{source.name}")
    assert model["type"] == "notebook"
    for i, cell in enumerate(model["content"]["cells"]):
        if cell["cell_type"] == "code":
            cell["outputs"] = [nbformat.v4.new_output("stream", name="stdout", text="an output\n")]
            cell["execution_count"] = i + 1
            cell["metadata"]["execution"] = {"iopub.status.busy": "2026-12-03T10:00:00"}
    model["content"]["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                                  "language": "python"}
    model["content"]["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    cm.save(model, f"notebooks/{source.name}")
    assert path.read_text() == source.read_text()
    assert sorted(p.name for p in (tmp_path / "notebooks").iterdir() if not p.name.startswith(".")) == [source.name]


@pytest.mark.parametrize("source", LESSONS, ids=lambda p: p.stem)
def test_lessons_have_objectives_equations_exercises_solutions_and_a_summary(source):
    nb = jupytext.read(source)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for part in ("You will learn to", "## Exercises", "$$", "## Summary", "**References**", "%load solutions/"):
        assert part in text, (source.name, part)
    solutions = sorted((source.parent / "solutions").glob(f"{source.stem.split('_')[0]}_*.py"))
    assert len(solutions) >= 2, source.name
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "if solutions:" in code  # run only when asked: the tests ask, Run All and make teach do not


def test_sources_pass_lint():
    solutions = sorted((NOTEBOOKS / "teaching" / "solutions").glob("*.py"))
    for files, ignore in ((SOURCES + [NOTEBOOKS / "index.py"], []), (solutions, ["--ignore", "F821"])):  # a solution uses its lesson's names
        run = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--output-format", "concise",
                              *ignore, *map(str, files)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr


COMMITTED = sorted((ROOT / "results" / "notebooks").rglob("*.ipynb"))
NOISE = {"a machine path": re.compile(r"(/work/|/tmp/|/home/|/root/|/Users/|site-packages)"),
         "an object repr": re.compile(r"<[A-Za-z_.]+ (object )?at 0x[0-9a-f]+>"),
         "a carriage return (progress bar)": re.compile(r"\r")}


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_executed_copies_hold_no_machine_paths_reprs_or_stderr(path):
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("name") == "stderr"], f"{path.name} has stderr output"
    text = json.dumps(outputs) + json.dumps(nb.metadata)
    for what, pattern in NOISE.items():
        found = pattern.search(text.replace("\\r", "\r"))
        assert not found, f"{path.name} holds {what}: {text[max(0, found.start() - 60):found.end() + 20]!r}"


def test_the_index_lists_every_notebook_in_the_order_they_run_and_its_cell_runs(capsys):
    """notebooks/index.py links every lesson and results notebook, each track in its run order, to files that
    exist; its one code cell runs."""
    index = NOTEBOOKS / "index.py"
    links = re.findall(r"\]\(([^)]+\.py)\)", index.read_text())
    assert links == [str(p.relative_to(NOTEBOOKS)) for p in LESSONS + [p for p in SOURCES if p not in LESSONS]]
    nb = jupytext.read(index)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 1
    exec(compile(code[0], str(index), "exec"), {})
    assert "qrepro" in capsys.readouterr().out


def test_the_first_failing_notebook_is_reported_and_stops_the_rest(tmp_path, monkeypatch):
    """One at a time, the first notebook fails: the run stops with its message, and the ones it stopped before they
    started are skipped, not raised as cancelled."""
    ran = []

    def run_one(nb, out, *args):
        ran.append(nb.name)
        if len(ran) == 1:
            return f"{nb.name} failed: ValueError: boom", 0.0
        time.sleep(0.5)  # the next one, if it started, runs while the failure cancels those still queued
        return None, 0.5

    monkeypatch.setattr(notebooks, "_run_one", run_one)
    with pytest.raises(SystemExit, match=r"^01_quantizers\.py failed: ValueError: boom$"):
        notebooks.run_notebooks(root=tmp_path, jobs=1)
    assert ran[0] == "01_quantizers.py" and len(ran) <= 2


def test_a_notebook_runs_in_its_folder_without_changing_this_process_folder(tmp_path, monkeypatch):
    """Notebooks run in threads of one process: each kernel starts in its notebook's folder, and nothing changes the
    process's working directory, which every other notebook's kernel start would inherit."""
    folder = tmp_path / "books"
    folder.mkdir()
    nb = folder / "cwd.py"
    nb.write_text("# %% tags=[\"parameters\"]\nsmoke = False\nresults = None\n\n# %%\nimport os\nprint(os.getcwd())\n")

    here, chdir = os.getcwd(), os.chdir

    def stay(path):  # papermill goes back to where it started, even when told no folder: that is no change
        if Path(path).resolve() != Path(here).resolve():
            raise AssertionError(f"the process's working directory changed to {path}")
        chdir(path)

    monkeypatch.setattr(os, "chdir", stay)
    failure, _ = notebooks._run_one(nb, tmp_path / "cwd.ipynb", False, tmp_path, 120, "python3", "results", False)
    assert failure is None
    printed = [o["text"] for c in nbformat.read(tmp_path / "cwd.ipynb", as_version=4).cells
               for o in c.get("outputs", []) if o.get("name") == "stdout"]
    assert printed == [f"{folder}\n"]
