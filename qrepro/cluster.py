"""Where a search's candidate evaluations run: a *pool* the search loop submits to and waits on.

Three pools, one interface (``free()``, ``submit(record, ratios)``, ``wait()``, ``close()``):

* :class:`InlinePool`: in this process, one at a time (the default; what every committed
  search used);
* :class:`ExecutorPool`: any ``concurrent.futures.Executor`` (``q`` at a time);
* :class:`DaskPool`: the workers of a Dask distributed cluster, a ``LocalCluster`` the search
  starts itself (``scheduler="local"``: one worker per GPU, else one per CPU core) or an
  existing one (``scheduler="tcp://host:8786"``, started with ``dask scheduler`` /
  ``dask worker`` or dask-jobqueue on SLURM).  The objective is sent once per worker as a
  task every evaluation depends on; a worker lost mid-evaluation (killed, out of memory,
  pre-empted) has its candidate run again elsewhere (by Dask's scheduler, and resubmitted here
  if Dask gives up), so the search completes and no finished evaluation is repeated.

The pool only runs evaluations: the search loop (:func:`qrepro.search.search_ratios`) alone
proposes candidates and writes the journal.
"""
from __future__ import annotations

import concurrent.futures as cf
import ctypes
import logging
import multiprocessing
import os
import time
import uuid
from typing import Callable

import torch

from .errors import BadInput, RunFailed

WORKER_GRACE = 120.0  # seconds a Dask cluster may have no worker before the search stops (not hangs)
RETRIES = 3  # resubmissions of one candidate after its worker was lost, beyond Dask's own retries


def timed_call(objective: Callable, ratios: dict) -> tuple[float, float]:
    """``(objective(ratios), seconds)``: what every pool returns for one evaluation."""
    t0 = time.perf_counter()
    value = objective(ratios)
    return value, time.perf_counter() - t0


class InlinePool:
    """Evaluations in this process, one at a time, in the order submitted."""

    def __init__(self, objective: Callable):
        self.objective, self.queue = objective, []

    def free(self) -> int:
        return 1 - len(self.queue)

    def submit(self, record: dict, ratios: dict):
        self.queue.append((record, ratios))

    def wait(self) -> list[tuple[dict, float, float]]:
        record, ratios = self.queue.pop(0)
        return [(record, *timed_call(self.objective, ratios))]

    def close(self):
        self.queue.clear()


class ExecutorPool:
    """Evaluations in a ``concurrent.futures.Executor``, at most ``slots`` at once."""

    def __init__(self, objective: Callable, executor: cf.Executor, slots: int, owned: bool = False):
        self.objective, self.executor, self.slots, self.owned = objective, executor, slots, owned
        self.running: dict[cf.Future, dict] = {}

    def free(self) -> int:
        return self.slots - len(self.running)

    def submit(self, record: dict, ratios: dict):
        self.running[self.executor.submit(timed_call, self.objective, ratios)] = record

    def wait(self) -> list[tuple[dict, float, float]]:
        done, _ = cf.wait(list(self.running), return_when=cf.FIRST_COMPLETED)
        return [(self.running.pop(f), *f.result()) for f in sorted(done, key=lambda f: self.running[f]["index"])]

    def close(self):
        for f in self.running:
            f.cancel()
        self.running.clear()
        if self.owned:
            self.executor.shutdown(cancel_futures=True)


# --------------------------------------------------------------------------- Dask
def _hold(objective):
    """The objective as a task result, so each worker receives it once (and a restarted worker again)."""
    return objective


def _evaluate_on_worker(objective, ratios: dict, threads: int | None = None) -> tuple[float, float]:
    """One evaluation on a Dask worker: on the worker's GPU when the objective runs on CUDA
    (worker ``i`` of a cluster uses GPU ``i mod count``), else where the objective is; with
    ``threads`` torch threads when given (a local cluster shares the cores among its workers)."""
    _tune_worker_process(threads)
    to = getattr(objective, "to", None)
    if to is not None and torch.cuda.is_available() and getattr(objective, "device", None) is not None \
            and torch.device(objective.device).type == "cuda":
        device = torch.device("cuda", _worker_index() % torch.cuda.device_count())
        if torch.device(objective.device) != device:
            to(device)
    return timed_call(objective, ratios)


_TUNED = False


def _tune_worker_process(threads: int | None):
    """Once per worker process: keep freed memory instead of returning it to the system at once.
    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which made every evaluation
    (megabytes of activations allocated and freed per batch) several times slower (docs/speed.md)."""
    global _TUNED
    if threads:
        torch.set_num_threads(threads)
    if _TUNED:
        return
    _TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: large buffers from the heap, reused
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _worker_index() -> int:
    from distributed import get_worker

    name = get_worker().name
    try:
        return int(name)
    except (TypeError, ValueError):
        return abs(hash(name))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """One worker per GPU where CUDA is present, else one per CPU core this process may use."""
    return torch.cuda.device_count() if torch.cuda.is_available() else _cores()


def connect(scheduler, workers: int | None = None):
    """``(client, owned cluster or None)``: ``scheduler`` is ``"local"`` (a ``LocalCluster`` of
    ``workers`` processes, each running one evaluation at a time), an address such as
    ``tcp://host:8786``, or a ``distributed.Client`` used as it is."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise BadInput("the Dask scheduler option needs the 'distributed' package: pip install -r "
                       "requirements.txt (or leave out the scheduler to evaluate in this process)") from err
    if isinstance(scheduler, Client):
        return scheduler, None
    if scheduler == "local":
        n = workers or default_workers()
        if n < 1:
            raise BadInput(f"workers must be at least 1, got {n}")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        return Client(cluster), cluster
    if not isinstance(scheduler, str) or "://" not in scheduler:
        raise BadInput(f"scheduler: {scheduler!r} is neither 'local' nor an address like tcp://host:8786")
    try:
        return Client(scheduler, timeout="10s"), None
    except (OSError, TimeoutError) as err:
        raise BadInput(f"cannot reach the Dask scheduler at {scheduler} ({type(err).__name__}); start one there "
                       "(dask scheduler; dask worker ADDRESS), check the address, or use scheduler 'local'") from None


class DaskPool:
    """Evaluations on a Dask cluster's workers; as many at once as the cluster has worker threads
    (read again at each call, so workers may join or leave during a search).  A cluster with no worker
    for longer than ``grace`` seconds stops the search with one line (:class:`~qrepro.errors.RunFailed`)
    instead of waiting forever: every finished evaluation is journaled, and the same command resumes."""

    def __init__(self, objective: Callable, scheduler, workers: int | None = None, grace: float = WORKER_GRACE):
        self.client, self.cluster = connect(scheduler, workers)
        self.grace, self.since_no_worker = grace, None
        # a local cluster shares this machine's cores among its workers (Dask starts each on 1 thread)
        from distributed import LocalCluster

        local = self.cluster or getattr(self.client, "cluster", None)
        self.threads = max(1, _cores() // len(local.workers)) if isinstance(local, LocalCluster) else None
        self.objective = self.client.submit(_hold, objective, pure=False, key=f"objective-{uuid.uuid4().hex}")
        self.running: dict = {}  # future -> (record, ratios, resubmissions)
        self.threads_now = None  # the cluster's worker threads, asked once per wait, not once per submission

    def free(self) -> int:
        if self.threads_now is None:
            self.threads_now = sum(self.client.nthreads().values())
            while self.threads_now == 0 and not self.running:
                self._check_workers()
                time.sleep(min(1.0, self.grace / 10))
                self.threads_now = sum(self.client.nthreads().values())
        return self.threads_now - len(self.running)

    def _check_workers(self):
        """Fail once the cluster has had no worker for ``grace`` seconds."""
        if sum(self.client.nthreads().values()) > 0:
            self.since_no_worker = None
            return
        self.since_no_worker = self.since_no_worker or time.monotonic()
        if time.monotonic() - self.since_no_worker > self.grace:
            raise RunFailed(f"the Dask cluster has had no worker for {self.grace:g} s ({len(self.running)} "
                            "evaluations in flight were lost; every finished one is in the journal): start workers "
                            "(dask worker ADDRESS) and run the same command again to resume")

    def submit(self, record: dict, ratios: dict, tries: int = 0):
        future = self.client.submit(_evaluate_on_worker, self.objective, ratios, self.threads, pure=False,
                                    key=f"candidate-{record['index']}-{tries}-{uuid.uuid4().hex}")
        self.running[future] = (record, ratios, tries)

    def wait(self) -> list[tuple[dict, float, float]]:
        from distributed import wait
        from distributed.client import FuturesCancelledError

        self.threads_now = None  # workers may have joined or left while these ran
        done = []
        while not done:
            try:
                done, _ = wait(list(self.running), return_when="FIRST_COMPLETED", timeout=min(5.0, self.grace / 4))
            except FuturesCancelledError:  # cancelled by the cluster (a worker or the scheduler went away)
                done = [f for f in self.running if f.status != "pending"]
            except TimeoutError:  # nothing finished yet: is anyone still working?
                self._check_workers()
        out = []
        for future in sorted(done, key=lambda f: self.running[f][0]["index"]):
            record, ratios, tries = self.running.pop(future)
            result_lost = False
            if future.status == "finished":
                try:  # a finished result held by a worker that has gone since would be awaited forever
                    out.append((record, *future.result(timeout=min(5.0, self.grace / 4))))
                    continue
                except TimeoutError:
                    self._check_workers()  # no worker for the grace period: stop with one line
                    error, result_lost = TimeoutError("its result was on a worker that has gone"), True
            else:
                error = future.exception() if future.status == "error" else None
            if error is not None and not result_lost and not _lost_worker(error):
                raise error  # the objective itself failed: a bug to see, not to retry
            if tries >= RETRIES:
                raise RunFailed(f"candidate {record['index']} lost its worker {tries + 1} times ({error!r}); the "
                                "journal keeps every finished evaluation: rerun to resume")
            self.submit(record, ratios, tries + 1)
        return out

    def close(self):
        for future in self.running:
            future.cancel()
        self.running.clear()
        self.objective.cancel()
        if self.cluster is not None:
            self.client.close()
            self.cluster.close()


def _lost_worker(error: BaseException) -> bool:
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    return isinstance(error, (KilledWorker, CommClosedError, FutureCancelledError, OSError))


def open_pool(objective: Callable, q: int = 1, executor: cf.Executor | None = None, scheduler=None,
              workers: int | None = None, grace: float | None = None):
    """The pool a search evaluates in: Dask when ``scheduler`` is given, ``executor`` (``q`` at once)
    when given, a local process pool of ``q`` when ``q > 1``, else this process."""
    if scheduler is not None:
        if executor is not None:
            raise BadInput("give either an executor or a Dask scheduler, not both")
        return DaskPool(objective, scheduler, workers, WORKER_GRACE if grace is None else grace)
    if executor is not None:
        return ExecutorPool(objective, executor, q)
    if q > 1:
        pool = cf.ProcessPoolExecutor(max_workers=q, mp_context=multiprocessing.get_context("spawn"))
        return ExecutorPool(objective, pool, q, owned=True)
    return InlinePool(objective)
