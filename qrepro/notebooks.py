"""Execute the notebooks in order with papermill: the results track (``notebooks/NN_*``,
``make reproduce``) and the teaching track (``notebooks/teaching/T*_*``, ``make teach``).

A notebook's source is its jupytext ``py:percent`` file (``jupytext.toml``: what JupyterLab opens
and saves, without outputs); it is converted and run with ``smoke`` and ``results`` injected after
its ``parameters`` cell; the executed copy lands in ``results/notebooks/`` (``results/notebooks/teaching/``).  A progress line per notebook
gives its time.  The notebooks only read the cache: a missing or stale artifact stops
the run with the error naming the command that makes it.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .cache import write_text_atomic
from .errors import BadInput
from .paths import NOTEBOOKS_DIR, TEACHING_DIR, executed_notebooks_dir, require_source_tree, results_dir

TRACKS = {"results": (NOTEBOOKS_DIR, "[0-9][0-9]_*.py"), "teaching": (TEACHING_DIR, "T[0-9]_*.py")}


def notebook_paths(track: str = "results") -> list[Path]:
    """The notebooks of ``track``, in the order they run."""
    require_source_tree(f"the {track} notebooks")
    if track not in TRACKS:
        raise BadInput(f"unknown notebook track {track!r}; accepted values: {', '.join(TRACKS)}")
    folder, pattern = TRACKS[track]
    return sorted(folder.glob(pattern))


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the platform tells)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_jobs(jobs: int | None) -> int | None:
    """``jobs`` (notebooks run at once) if ``None`` or a positive integer; else one line saying so."""
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise BadInput(f"--jobs must be a positive number of notebooks run at once, got {jobs!r}; e.g. --jobs 2")
    return jobs


def run_notebooks(smoke: bool = False, root=None, only=None, timeout: int = 1800, kernel: str = "python3",
                  track: str = "results", solutions: bool = False, jobs: int | None = None) -> list[Path]:
    """Execute the notebooks of ``track`` into ``<results>/notebooks/`` (``only``: those whose names contain one
    of these strings); ``solutions``: the lessons also run every exercise's solution file.  ``jobs`` notebooks
    run at once (default: one per usable core; they only read the cache, so their order does not matter);
    the first failure stops the ones not yet started."""
    root = results_dir(root).resolve()
    out_dir = executed_notebooks_dir(root) / ("teaching" if track == "teaching" else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    books = [p for p in notebook_paths(track) if not only or any(o in p.name for o in only)]
    if not books:
        raise FileNotFoundError(f"no notebooks matched {only} in {NOTEBOOKS_DIR}")
    jobs = min(check_jobs(jobs) or usable_cores(), len(books))
    start, failures = time.time(), []
    print(f"{len(books)} notebooks, {jobs} at a time", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        running = {pool.submit(_run_one, nb, out_dir / f"{nb.stem}.ipynb", smoke, root, timeout, kernel, track,
                               solutions): nb for nb in books}
        for done, future in enumerate(as_completed(running), 1):
            if future.cancelled():  # not started: the first failure stopped it
                continue
            failure, seconds = future.result()
            print(f"[{done}/{len(books)}] {running[future].name} {'FAILED after ' if failure else ''}{seconds:.0f} s",
                  flush=True)
            if failure and not failures:
                for other in running:
                    other.cancel()
            if failure:
                failures.append(failure)
    if failures:
        raise SystemExit(failures[0])
    print(f"all {len(books)} notebooks in {time.time() - start:.0f} s; executed copies in {out_dir}", file=sys.stderr)
    return [out_dir / f"{nb.stem}.ipynb" for nb in books]


def _run_one(nb: Path, out: Path, smoke: bool, root: Path, timeout: int, kernel: str, track: str,
             solutions: bool) -> tuple[str | None, float]:
    """Execute one notebook into ``out``: (the failure's message or None, seconds)."""
    import jupytext  # here, not at the top: papermill takes seconds to import, and every notebook imports this
    import nbformat  # module for check_parameters
    import papermill as pm

    t0 = time.time()
    source = jupytext.read(nb)
    for j, cell in enumerate(source.cells):  # jupytext draws random ids: fixed ones keep the copies stable
        cell.id = f"cell-{j}"
    source.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3", "language": "python"}
    nbformat.write(source, out)
    declared = "".join(c.source for c in source.cells if "parameters" in c.metadata.get("tags", []))
    # the results folder relative to the notebook, so a copy holds no path of this machine
    parameters = {"smoke": smoke, "results": os.path.relpath(root, nb.parent)}
    if track == "teaching":
        parameters["solutions"] = solutions
        if "interactive" in declared:  # widgets need a live front end: a saved copy prints instead
            parameters["interactive"] = False
    try:
        # the kernel starts in the notebook's folder by nbclient's resources, not papermill's cwd=, which changes
        # this whole process's working directory while the notebook runs and so races the other notebooks' kernels
        pm.execute_notebook(str(out), str(out), parameters=parameters, kernel_name=kernel,
                            resources={"metadata": {"path": str(nb.parent)}},
                            progress_bar=False, execution_timeout=timeout, record_timing=False,
                            # a cell's outputs may trail its reply on a loaded machine: wait for them, and fail
                            # loudly rather than save a copy without them (nbclient waits 4 s, then drops them)
                            iopub_timeout=120, raise_on_iopub_timeout=True,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no TCP-encryption notice
    except pm.PapermillExecutionError as err:
        return (f"{nb.name} failed: {err.ename}: {err.evalue}\n(executed copy with the traceback: {out})",
                time.time() - t0)
    drop_run_records(out)
    return None, time.time() - t0


def drop_run_records(path: Path):
    """Remove from an executed copy what differs between two runs that compute the same: papermill's
    times and this machine's paths, so that rerunning leaves ``git status`` clean."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("start_time", "end_time", "duration", "input_path", "output_path"):
        meta.pop(key, None)
    for cell in nb.cells:
        for key in ("start_time", "end_time", "duration"):
            cell.metadata.get("papermill", {}).pop(key, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"  # papermill draws a new random id each run
    write_text_atomic(path, nbformat.writes(nb) + "\n")


def check_parameters(smoke=False, results=None) -> tuple[bool, str | None]:
    """The notebooks' papermill parameters, validated (the first cell after ``parameters``).

    ``smoke``: a bool, or the strings ``"True"`` / ``"False"`` that ``papermill -r`` passes
    (read as the bool they spell; ``"False"`` is never true); ``results``: ``None`` or the
    path of an existing results folder.
    """
    if isinstance(smoke, str) and smoke.strip().lower() in ("true", "false"):
        smoke = smoke.strip().lower() == "true"
    if not isinstance(smoke, bool):
        raise BadInput(f"parameter smoke must be True or False, got {smoke!r}; e.g. papermill -p smoke True")
    if results is not None:
        if not isinstance(results, (str, Path)):
            raise BadInput(f"parameter results must be a folder path (a string) or None, got {results!r}")
        if not Path(results).is_dir():
            raise BadInput(f"parameter results: {results} is not a folder; pass the results folder of a study")
        results = str(results)
    return smoke, results
