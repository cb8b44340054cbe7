"""Asynchronous batch BO on a Dask LocalCluster (qrepro.cluster): a worker killed mid-evaluation,
a driver stopped with candidates in flight, an unreachable scheduler."""
import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from qrepro.errors import BadInput
from qrepro.search import SearchConfig, search_ratios
from qrepro.size import SizeModel

distributed = pytest.importorskip("distributed")

LAYERS = ["a", "b", "c", "d"]
SENS = [4.0, 3.0, 1.0, 0.5]


def toy_size():
    return SizeModel(2000.0, {n: 100 for n in LAYERS}, {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0})


class SlowToy:
    """The known-optimum toy of test_search, taking ``seconds`` per call; each call leaves a line
    ``start <pid> <ratios>`` in ``log`` when it starts and ``end ...`` when it ends, so a test can
    see which worker is busy with what."""

    def __init__(self, log, seconds=0.6, fail_at=None):
        self.log, self.seconds, self.fail_at = str(log), seconds, fail_at

    def _note(self, what, ratios):
        with open(self.log, "a") as f:
            f.write(json.dumps([what, os.getpid(), [ratios[n] for n in LAYERS]]) + "\n")

    def __call__(self, ratios):
        self._note("start", ratios)
        time.sleep(self.seconds)
        r = torch.tensor([ratios[n] for n in LAYERS])
        if self.fail_at is not None and Path(self.fail_at).exists():
            raise RuntimeError("objective failure (planted by the test)")
        self._note("end", ratios)
        return float(90 - 100 * (torch.tensor(SENS) * (r - 0.1) ** 2).sum())


def cfg(**kw):
    base = dict(layers=LAYERS, target=0.4, r_max=0.9, budget=12, n_init=4, seed=0, num_restarts=2, raw_samples=64)
    return SearchConfig(**{**base, **kw})


def lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with Client(cluster) as c:
        yield c
    cluster.close()


def test_worker_killed_mid_evaluation_search_completes_nothing_lost_or_repeated(client, tmp_path):
    log, journal = tmp_path / "calls.log", tmp_path / "search.jsonl"
    killed = {}

    def killer():  # kill the worker that is evaluating the 6th candidate, while it evaluates it
        deadline = time.time() + 120
        while time.time() < deadline:
            starts = [e for e in lines(log) if e[0] == "start"] if log.exists() else []
            if len(starts) >= 6:
                killed["pid"], killed["x"] = starts[5][1], starts[5][2]
                os.kill(starts[5][1], signal.SIGKILL)
                return
            time.sleep(0.05)

    pids_before = set(client.run(os.getpid).values())
    t = threading.Thread(target=killer)
    t.start()
    res = search_ratios(SlowToy(log), toy_size(), cfg(), journal=journal, scheduler=client, progress=False)
    t.join()
    assert killed["pid"] in pids_before
    evals = [r for r in lines(journal) if r["type"] == "eval"]
    assert sorted(r["index"] for r in evals) == list(range(12))  # every candidate finished, each journaled once
    assert len(res.records) == 12 and res.best["feasible"]
    ends = [e for e in lines(log) if e[0] == "end"]
    assert not any(e[1] == killed["pid"] and e[2] == killed["x"] for e in ends)  # it died mid-evaluation
    assert sum(e[2] == killed["x"] for e in ends) == 1  # ... and its candidate was evaluated again, once
    # asynchronous: each BO candidate was proposed while the one before it was being evaluated (2 workers: lag 1)
    assert all(r["observed"] == r["index"] - 1 for r in lines(journal) if r["type"] == "pending" and r["source"] == "bo")
    need = (1 - 0.4) * 2000
    assert all(r["size"] <= need + 1e-6 for r in evals)


def test_driver_stopped_with_candidates_in_flight_resumes_and_requeues_them(client, tmp_path):
    log, journal, flag = tmp_path / "calls.log", tmp_path / "search.jsonl", tmp_path / "fail"
    toy = SlowToy(log, seconds=0.3, fail_at=flag)

    def fail_later():
        while not journal.exists() or sum(r["type"] == "eval" for r in lines(journal)) < 5:
            time.sleep(0.05)
        flag.touch()

    t = threading.Thread(target=fail_later)
    t.start()
    with pytest.raises(RuntimeError, match="planted"):
        search_ratios(toy, toy_size(), cfg(budget=10), journal=journal, scheduler=client, progress=False)
    t.join()
    first = lines(journal)
    done = {r["index"] for r in first if r["type"] == "eval"}
    in_flight = {r["index"] for r in first if r["type"] == "pending"} - done
    assert in_flight, "the planted failure left no candidate in flight"
    flag.unlink()
    before = Path(journal).read_bytes()
    res = search_ratios(SlowToy(log, seconds=0.05), toy_size(), cfg(budget=10), journal=journal, scheduler=client,
                        progress=False)
    assert Path(journal).read_bytes().startswith(before)  # appended to, never rewritten
    after = lines(journal)
    assert sorted(r["index"] for r in after if r["type"] == "eval") == list(range(10))
    requeued = [r for r in after[len(first):] if r["type"] == "pending"]
    assert not {r["index"] for r in requeued} & in_flight  # in-flight candidates re-queued as they were
    assert len(res.records) == 10


class Jittered(SlowToy):
    """SlowToy taking a pseudo-random time per candidate, different for each ``salt``: two runs
    with different salts see their evaluations finish in different orders."""

    def __init__(self, log, salt):
        super().__init__(log, seconds=0.0)
        self.salt = salt

    def __call__(self, ratios):
        time.sleep(random.Random(f"{self.salt}{sorted(ratios.items())}").random() * 0.8)
        return super().__call__(ratios)


def test_asynchronous_search_is_repeatable_whatever_order_evaluations_finish_in(client, tmp_path):
    """Two workers, runs whose evaluations take different times (up to 4, until one finishes in another
    order than the first; a slow proposal on a loaded machine can keep the order): the same candidates, index for
    index (the proposal of candidate i conditions on candidates 0 .. i-2, pending i-1), while the
    evaluations finished in different orders. Before, proposals used whatever had finished."""
    client.wait_for_workers(2, timeout=120)  # an earlier test killed one; its nanny restarts it
    runs, finish_orders = [], []
    for salt in range(1, 5):  # on a loaded machine a slow proposal can let one pair of runs finish alike
        runs.append(search_ratios(Jittered(tmp_path / f"log{salt}", salt), toy_size(), cfg(budget=12),
                                  journal=tmp_path / f"j{salt}.jsonl", scheduler=client, progress=False))
        finish_orders.append([r["index"] for r in lines(tmp_path / f"j{salt}.jsonl") if r["type"] == "eval"])
        if finish_orders[-1] != finish_orders[0]:
            break
    assert finish_orders[-1] != finish_orders[0], f"the jitter never changed the finish order in {len(runs)} runs"
    for run in runs[1:]:
        assert [r["x"] for r in run.records] == [r["x"] for r in runs[0].records]
        assert [r["value"] for r in run.records] == [r["value"] for r in runs[0].records]


def test_local_cluster_started_by_the_search(tmp_path):
    res = search_ratios(SlowToy(tmp_path / "log", seconds=0.05), toy_size(), cfg(budget=6, n_init=3),
                        scheduler="local", workers=2, progress=False)
    assert sorted(r["index"] for r in res.records) == list(range(6))


def test_unreachable_scheduler_is_one_clear_line():
    with pytest.raises(BadInput, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9") as err:
        search_ratios(SlowToy(os.devnull), toy_size(), cfg(), scheduler="tcp://127.0.0.1:9", progress=False)
    assert "\n" not in str(err.value)


def test_one_worker_asynchronous_loop_is_the_sequential_search(tmp_path):
    """With no concurrency the loop proposes exactly what the in-process search proposes."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as lc, \
            Client(lc) as one:
        a = search_ratios(SlowToy(tmp_path / "a", 0.0), toy_size(), cfg(budget=7), scheduler=one, progress=False)
    b = search_ratios(SlowToy(tmp_path / "b", 0.0), toy_size(), cfg(budget=7), progress=False)
    assert [r["x"] for r in a.records] == [r["x"] for r in b.records]


def test_study_searches_on_a_local_cluster(tmp_path):
    """The study's search stage with ``scheduler = "local"``: one LocalCluster serves every search of
    the run, every search artifact ends fresh, and the BO journals were written asynchronously."""
    import dataclasses

    from qrepro.config import load_study
    from qrepro.study import run_study, status_lines, study_graph

    cfg = load_study("smoke")
    run_study(["base"], preset=cfg, root=tmp_path, progress=False)
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, scheduler="local", workers=2))
    run_study(["search"], preset=cfg, root=tmp_path, progress=False)
    graph = study_graph(cfg, tmp_path)
    assert all(graph.status(i).state == "fresh" for i in graph.ids("search")), status_lines(graph=graph)[0]
    bo = [graph.status(i).path for i in graph.ids("search") if "-bo-" in i]
    assert any(r["observed"] < r["index"] for p in bo for r in lines(p) if r["type"] == "pending" and r["source"] == "bo")


def test_a_search_whose_workers_are_all_gone_stops_with_one_line(tmp_path):
    """The audit's hang: every worker killed mid-search.  The search stops after the grace period with
    a line saying what was lost and how to resume, and the journal keeps what finished."""
    from distributed import Client, LocalCluster

    from qrepro.errors import RunFailed
    from qrepro.journal import load_journal

    journal, log = tmp_path / "j.jsonl", tmp_path / "calls.log"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as c:
        def kill_all():  # once 3 results are in the journal (one that ended on a worker may not have reached it)
            while not journal.exists() or journal.read_text().count('"type": "eval"') < 3:
                time.sleep(0.1)
            lc.scale(0)  # every worker goes: the in-flight candidates have nowhere to run

        threading.Thread(target=kill_all, daemon=True).start()
        t0 = time.time()
        with pytest.raises(RunFailed, match="no worker for 3 s .*run the same command again to resume"):
            search_ratios(SlowToy(log, seconds=0.5), toy_size(), cfg(method="random", budget=12), journal=journal,
                          scheduler=c, progress=False, worker_grace=3)
        assert time.time() - t0 < 60
    _, evals = load_journal(journal)
    assert 3 <= len(evals) < 12


class _Finished:
    """A future Dask calls finished whose result sat on a worker that has gone: fetching it waits."""

    status = "finished"

    def result(self, timeout=None):
        if timeout is None:
            raise AssertionError("the result was awaited without a timeout: this is the hang")
        raise TimeoutError


class _NoWorkers:
    def nthreads(self):
        return {}

    def submit(self, *args, **kwargs):
        return object()


def test_a_finished_result_on_a_gone_worker_is_evaluated_again_not_awaited_forever(monkeypatch):
    """The race the cluster test met once under load: a candidate finishes, its worker dies before the
    result is fetched.  The pool resubmits it instead of waiting, and with no worker for the grace
    period stops with one line."""
    import distributed

    from qrepro.cluster import DaskPool
    from qrepro.errors import RunFailed

    monkeypatch.setattr(distributed, "wait", lambda futures, **kw: (set(futures), set()))
    pool = object.__new__(DaskPool)
    pool.client, pool.grace, pool.since_no_worker, pool.threads, pool.objective = _NoWorkers(), 2.0, None, None, None
    pool.running = {_Finished(): ({"index": 7}, {"a": 0.5}, 0)}
    assert pool.wait() == []  # not awaited: resubmitted
    (record, ratios, tries), = pool.running.values()
    assert (record["index"], tries) == (7, 1)
    pool.running = {_Finished(): ({"index": 7}, {"a": 0.5}, 1)}
    pool.since_no_worker = time.monotonic() - 10  # the grace period is over
    with pytest.raises(RunFailed, match="no worker for 2 s"):
        pool.wait()
