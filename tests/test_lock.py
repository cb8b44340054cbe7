"""One writer at a time (qrepro.lock): a second search on a journal, or a second study on a results
folder, stops with one line naming the first (or waits for it), and a killed holder leaves no lock."""
import subprocess
import sys
import textwrap
import time

import pytest

from qrepro.lock import Locked, hold, lock_path
from qrepro.search import SearchConfig, search_ratios
from qrepro.size import SizeModel
from qrepro.study import run_study

HOLD = textwrap.dedent("""
    import sys, time
    from qrepro.lock import hold
    with hold(sys.argv[1], "the test file"):
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _holder(path, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "holding"
    return p


def _toy():
    layers = ["a", "b"]
    return (lambda ratios: 50.0 - sum(ratios.values())), SizeModel(1000.0, dict.fromkeys(layers, 10), dict.fromkeys(
        layers, 10.0)), SearchConfig(layers=layers, method="random", target=0.1, budget=2)


def test_a_second_search_on_a_journal_is_refused_with_the_holder(tmp_path):
    journal = tmp_path / "j.jsonl"
    p = _holder(journal, 30)
    try:
        with pytest.raises(Locked, match=rf"the search journal {journal} is being written by process {p.pid} on .*--wait"):
            search_ratios(*_toy(), journal=journal, progress=False)
        assert not journal.exists()  # nothing written by the refused search
    finally:
        p.kill()
        p.wait()


def test_wait_starts_when_the_holder_finishes(tmp_path):
    journal = tmp_path / "j.jsonl"
    p = _holder(journal, 1.5)
    t0 = time.time()
    result = search_ratios(*_toy(), journal=journal, progress=False, wait=True)
    assert len(result.records) == 2 and time.time() - t0 > 0.5
    p.wait()


def test_a_killed_holder_leaves_no_lock(tmp_path):
    journal = tmp_path / "j.jsonl"
    p = _holder(journal, 60)
    p.kill()
    p.wait()
    assert lock_path(journal).exists()  # the file stays, with the dead holder's PID in it
    with hold(journal, "the journal"):  # but the lock went with the process
        pass


def test_a_second_study_on_a_results_folder_is_refused(tmp_path):
    p = _holder(tmp_path / "study", 30)
    try:
        with pytest.raises(Locked, match=f"the results folder {tmp_path} is being written by process {p.pid}"):
            run_study(["tables"], preset="smoke", root=tmp_path, progress=False)
    finally:
        p.kill()
        p.wait()
