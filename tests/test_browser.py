"""A lesson opened in JupyterLab in a real browser (headless Chromium through Selenium), run all, saved, then
edited and saved again, on a copy of the project: the first save leaves ``git status`` clean, the second changes
only the edited line, every cell ran without an error, the figures rendered inline and the slider (ipywidgets)
rendered.

``make test`` installs Chromium and its driver where apt-get exists (``make browser``); elsewhere this test is
skipped with that instruction."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSON = "notebooks/teaching/T1_pruning_quantized_filters.py"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make setup installs it)")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="Chromium and chromedriver not found: `make browser` installs them (apt-get)")]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def _copy_of_project(dest: Path) -> Path:
    """The project's tracked and untracked (not ignored) files in a new git repository, committed; files over
    10 MB (Study v2's base checkpoints, which the lesson does not read) stay out."""
    files = _git(ROOT, "ls-files", "-co", "--exclude-standard").splitlines()
    for name in files:
        if (ROOT / name).is_file() and (ROOT / name).stat().st_size <= 10_000_000:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy")
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(driver, name: str, args: dict | None = None) -> str:
    """Run a JupyterLab command (what its menu items run) and wait for it."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.jupyterapp.commands.execute(arguments[0], arguments[1])"
        ".then(w => (w && w.context) ? w.context.ready.then(() => w.sessionContext.ready) : null)"
        ".then(() => done('ok')).catch(e => done('error: ' + e))", name, args or {})


def _notebook(driver, script: str):
    return driver.execute_script("const nb = window.jupyterapp.shell.currentWidget; " + script)


def test_a_lesson_run_and_saved_in_jupyterlab_leaves_the_project_clean(tmp_path):
    repo = _copy_of_project(tmp_path / "project")
    port = _free_port()
    log = open(tmp_path / "lab.log", "w")
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--ServerApp.token=t", f"--ServerApp.root_dir={repo}", "--expose-app-in-browser", "--allow-root"],
        cwd=repo, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(repo)))
    driver = None
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=t")
                break
            except OSError:
                time.sleep(0.5)
        options = webdriver.ChromeOptions()
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(flag)
        options.binary_location = CHROMIUM
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
        driver.set_script_timeout(120)
        driver.get(f"http://127.0.0.1:{port}/lab?token=t")
        for _ in range(240):
            if driver.execute_script("return !!window.jupyterapp"):
                break
            time.sleep(0.5)
        driver.execute_async_script("const done = arguments[arguments.length - 1];"
                                    "window.jupyterapp.restored.then(() => done(1))")
        assert _command(driver, "docmanager:open", {"path": LESSON, "factory": "Notebook"}) == "ok"
        assert _command(driver, "notebook:run-all-cells") == "ok"
        deadline = time.time() + 300
        while time.time() < deadline:  # the kernel idle and no cell queued or running ([*])
            busy = _notebook(driver, "return nb.sessionContext.session.kernel.status !== 'idle' || "
                                     "nb.content.widgets.some(c => c.model.type === 'code' && "
                                     "(c.model.executionState === 'running' || "
                                     "(c.promptNode && c.promptNode.textContent.includes('*'))))")
            if not busy:
                break
            time.sleep(1)
        assert not busy, "the lesson did not finish within 5 minutes"
        errors = _notebook(driver, "return nb.content.widgets.filter(c => c.model.type === 'code').flatMap(c => "
                                   "c.model.outputs.toJSON().filter(o => o.output_type === 'error')"
                                   ".map(o => o.ename + ': ' + o.evalue))")
        assert errors == []
        unrun = _notebook(driver, "return nb.content.widgets.filter(c => c.model.type === 'code' && "
                                  "c.model.sharedModel.source.trim() && !c.model.executionCount).length")
        assert unrun == 0
        assert _notebook(driver, "return nb.content.node.querySelectorAll('.jp-RenderedImage img').length") >= 2
        slider = _notebook(driver, "return nb.content.node.querySelectorAll('.widget-slider').length")
        assert slider == 1, "the size slider (ipywidgets) did not render"

        assert _command(driver, "docmanager:save") == "ok"
        assert _git(repo, "status", "--porcelain") == "", "Run All and save changed the tracked files"
        written = [p for p in (repo / "notebooks").rglob("*")
                   if p.is_file() and ".ipynb_checkpoints" not in p.parts and _git(repo, "ls-files", str(p)) == ""]
        assert written == [], "saving wrote files beside the sources (ignored files count too)"

        _notebook(driver, "const cell = nb.content.widgets.find(c => c.model.type === 'code');"
                          "cell.model.sharedModel.setSource(cell.model.sharedModel.source + '\\n# a student edit')")
        assert _command(driver, "docmanager:save") == "ok"
        assert _git(repo, "status", "--porcelain").split() == ["M", LESSON]
        diff = [line for line in _git(repo, "diff", "-U0", LESSON).splitlines()
                if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        assert diff == ["+# a student edit"]
    finally:
        if driver is not None:
            driver.quit()
        lab.terminate()
        try:
            lab.wait(15)
        except subprocess.TimeoutExpired:
            lab.kill()
        log.close()
