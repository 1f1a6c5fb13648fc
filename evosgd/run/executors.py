"""Executors: where runs execute.  The runner only needs ``map(fn, tasks)`` yielding
``(task, result)`` pairs as runs complete, and ``shutdown(cancel=...)``; a distributed engine
(e.g. Ray) is one more small class with those two methods.

``fn`` must be a module-level function and ``tasks`` picklable plain data; ``fn`` is expected to
catch the errors of a run itself and return them as a result (a failing run must not stop the
sweep).  The process pool starts workers with ``forkserver`` (``spawn`` where it does not exist):
both are safe with torch and CUDA, unlike a plain fork of a threaded parent.  One torch thread per
worker, so N workers use N cores.
"""

from __future__ import annotations

import abc
import collections
import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class Executor(abc.ABC):
    """Runs tasks; yields ``(task, result)`` in completion order."""

    #: whether fn runs in this process (then it may draw an inner progress bar)
    in_process: bool = False

    @abc.abstractmethod
    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        ...

    def shutdown(self, cancel: bool = False) -> None:
        """Release resources; ``cancel`` abandons what is still running (Ctrl-C)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(cancel=exc[0] is not None)


class SerialExecutor(Executor):
    """Runs every task in this process, one after the other."""

    in_process = True

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        for task in tasks:
            yield task, fn(task)


#: in a worker process: the queue its runs report their progress to (see ``report_progress``)
PROGRESS_QUEUE: Any = None


def report_progress(run_id: str, label: str, fraction: float) -> bool:
    """Tell the parent how far a run is (from a pool worker); False when nobody listens."""
    if PROGRESS_QUEUE is None:
        return False
    try:
        PROGRESS_QUEUE.put((run_id, label, float(fraction)))
    except Exception:  # progress is a courtesy: never let it break a run
        return False
    return True


def _die_with(parent_pid: int) -> None:
    """Make this worker exit when the evosgd process ``parent_pid`` dies, however it dies.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` has the kernel kill this process when its parent
    (the forkserver, which itself exits when the evosgd process closes its end of the pipe) ends.
    Everywhere: a daemon thread polls ``parent_pid`` twice a second and ends the worker when it is
    gone (the fallback where prctl does not exist, and a guard against a parent that died before
    the prctl call).  A worker that outlived a SIGKILLed ``evosgd run`` kept computing for minutes
    and could still rename its run file into the store afterwards."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl in this libc: the watchdog alone
            pass

    def alive() -> bool:
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # the pid now belongs to another user's process: ours is gone
            return False
        return True

    def watch() -> None:
        while alive():
            time.sleep(0.5)
        os._exit(1)

    if not alive():
        os._exit(1)
    threading.Thread(target=watch, name="evosgd-parent-watchdog", daemon=True).start()


def _worker_init(modules: list[str], progress_queue: Any = None, parent_pid: int | None = None) -> None:
    global PROGRESS_QUEUE
    PROGRESS_QUEUE = progress_queue
    # Ctrl-C is the parent's to handle: it terminates the workers, and a worker must not print
    # a KeyboardInterrupt traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Its own session, hence its own scheduler autogroup: Linux with autogroup (the default on
    # most desktops and on this project's machines) shares the CPU between sessions, not
    # processes, so N workers left in the parent's session get one session's share together;
    # on a machine with any other busy session, 2 workers then ran no faster than serial
    # (measured: 0.8-0.9x).  The parent still owns the workers: it terminates them on Ctrl-C,
    # and a worker exits when the parent dies (``_die_with``: a session of its own does not
    # shield it from that).
    if hasattr(os, "setsid"):
        try:
            os.setsid()
        except OSError:  # already a session leader
            pass
    if parent_pid is not None:
        _die_with(parent_pid)
    import importlib

    import torch

    torch.set_num_threads(1)
    from evosgd.core.registry import load_all

    load_all(analyses=False)  # workers execute runs; the analyses run in the parent
    for m in modules:  # components registered outside evosgd (plugins, test modules)
        importlib.import_module(m)


def _context() -> multiprocessing.context.BaseContext:
    """forkserver where available: a clean server process imports torch and evosgd once and
    forks every worker from there (no inherited threads or CUDA state, one import instead of one
    per worker); spawn elsewhere."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["evosgd.run.worker_preload"])
        return ctx
    return multiprocessing.get_context("spawn")


class ProcessPoolExecutor(Executor):
    """A local pool of ``workers`` processes (forkserver or spawn), one torch thread each."""

    def __init__(self, workers: int, modules: list[str] | None = None, progress: bool = False) -> None:
        self.workers = max(1, int(workers))
        #: runs that may be in memory at once: the workers', and one in this process at start-up
        self.concurrent = self.workers + 1
        self.modules = list(modules or [])
        #: (run_id, label, fraction) messages of the runs in flight, when ``progress`` is asked for
        self.progress_queue = _context().SimpleQueue() if progress else None
        self._pool: cf.ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Tasks go to the pool a few at a time (at most 2 per worker queued).  The pool is
        started on a background thread: the first submission blocks until the forkserver has
        imported torch and evosgd (about 2 s of one core) and forked the workers.  Meanwhile,
        and until the first worker has finished a task, this process runs tasks itself from the
        other end of the list, so the start-up overlaps with useful work."""
        pending = collections.deque(tasks)
        if not pending:
            return
        futures: dict[cf.Future, Any] = {}
        lock = threading.Lock()  # guards ``pending`` and ``futures`` while the starter runs
        self._starter = threading.Thread(target=self._start_pool, args=(fn, pending, futures, lock),
                                         name="evosgd-pool-start", daemon=True)
        self._start_error = None
        self._starter.start()
        workers_up = False
        while not workers_up:
            with lock:
                started = not self._starter.is_alive()
                if started and self._start_error is not None:
                    raise self._start_error
                workers_up = started and (not pending or any(f.done() for f in futures))
                task = pending.pop() if not workers_up and pending else None  # the pool takes from the front
            if task is None:
                if not workers_up:  # nothing left for this process: wait for the pool to start
                    self._starter.join()
                continue
            yield task, fn(task)
        while futures:
            done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                task = futures.pop(fut)
                try:
                    result = fut.result()
                except Exception as e:  # a worker that died (killed, out of memory): report, go on
                    result = e
                while pending and len(futures) < 2 * self.workers:
                    t = pending.popleft()
                    futures[self._pool.submit(fn, t)] = t
                yield task, result

    def _start_pool(self, fn: Callable[[Any], Any], pending: collections.deque, futures: dict, lock: threading.Lock) -> None:
        """(starter thread) Create the pool and queue its first tasks."""
        env_threads = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # read by the workers' OpenMP at start-up
        try:
            with lock:
                n = min(self.workers, len(pending))
            if n == 0:
                return
            self._pool = cf.ProcessPoolExecutor(max_workers=n, mp_context=_context(), initializer=_worker_init,
                                                initargs=(self.modules, self.progress_queue, os.getpid()))
            while True:
                with lock:
                    if not pending or len(futures) >= 2 * self.workers:
                        return
                    t = pending.popleft()
                fut = self._pool.submit(fn, t)  # the first ones block until the workers exist
                with lock:
                    futures[fut] = t
        except BaseException as e:  # re-raised by map in the main thread
            self._start_error = e
        finally:
            if env_threads is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = env_threads

    def shutdown(self, cancel: bool = False) -> None:
        starter = getattr(self, "_starter", None)
        if starter is not None:
            starter.join()  # the pool exists (or failed) before it is shut down
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if cancel:
            # Stop now: queued tasks are cancelled and running workers terminated (their runs
            # are lost, but each writes its file atomically, so nothing partial stays behind).
            procs = list((getattr(pool, "_processes", None) or {}).values())
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=5)
            pool.shutdown(wait=True, cancel_futures=True)  # the pool notices its dead workers at once
        else:
            pool.shutdown(wait=True)


def make_executor(workers: int | None, n_tasks: int, modules: list[str] | None = None,
                  progress: bool = False) -> Executor:
    """``workers`` None: one per CPU core (at most one per task); 1 (or one task): serial."""
    if workers is None:
        workers = os.cpu_count() or 1
    workers = max(1, min(int(workers), max(1, n_tasks)))
    if workers == 1:
        return SerialExecutor()
    return ProcessPoolExecutor(workers, modules, progress=progress)
