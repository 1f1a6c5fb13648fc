"""Ray executor: the runs of a sweep as Ray tasks, on a laptop or a cluster.

    evosgd run SCENARIO --executor ray                        # starts a local Ray instance
    evosgd run SCENARIO --executor ray --address auto         # joins the cluster of this machine
    evosgd run SCENARIO --executor ray --address ray://head:10001   # Ray Client, from anywhere

Each run is one Ray task with its own resource request: ``threads`` CPUs (1 by default; K for a
data-parallel ``sgd_ddp`` run of K processes), or one GPU when the run's device is ``cuda`` (Ray then sets ``CUDA_VISIBLE_DEVICES`` for the task, so
``cuda:0`` in the task is the GPU Ray gave it).  Ray schedules them; evosgd builds no scheduler.

Where results are written (``results``):

* ``"driver"`` (default): the task executes the run with the runner's own ``execute_run`` into a
  temporary folder on the worker, and returns the run's Parquet file as bytes; the driver (the
  process that called ``evosgd run``) writes it into the results store with the store's atomic
  write (temporary name + ``os.replace``) and records it in the manifest.  Workers need no access
  to the results folder, so nodes on other machines need no shared file system.
* ``"shared"``: the task writes straight into the store (atomically, as the local executor
  does); the results folder must be the same path on every node (NFS, a cluster file system).

Either way a run's file appears only when it is complete, so interrupting a sweep (Ctrl-C,
``kill -9`` of the driver, a lost cluster) keeps every finished run and the same command resumes
with the missing ones only.  A task whose worker dies is retried by Ray (``max_retries``), then
reported as a failed run; the sweep goes on.

Ray is optional (``pip install "evosgd[ray]"``); asking for this executor without it raises an
:class:`~evosgd.core.errors.EvosgdError` saying how to install it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import queue
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from evosgd.core.errors import EvosgdError, ParameterError
from evosgd.run.executors import Executor
from evosgd.run.store import atomic_write

INSTALL_HINT = 'pip install "evosgd[ray]"  (or: pip install "ray[default]")'


def import_ray() -> Any:
    """``import ray``, or an EvosgdError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise EvosgdError(f"the Ray executor needs Ray, which is not installed; install it with: {INSTALL_HINT}") from None
    return ray


def _prepare_worker(modules: list[str]) -> None:
    """What the local pool's worker initializer does, for a Ray worker process."""
    import torch

    torch.set_num_threads(1)
    # The layers a run needs (their import registers the landscapes and optimizers); not the
    # analysis layer, which runs on the driver and would add seconds (scipy.stats) to the start
    # of every worker process.
    for m in ("evosgd.landscapes", "evosgd.gradient", "evosgd.evolution", *modules):
        importlib.import_module(m)


class _ProgressSink:
    """In a Ray worker: what the runner's ``report_progress`` puts into, forwarded to the
    driver's Ray queue (a lost message is only a stale progress bar)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def put(self, item: Any) -> None:
        self.queue.put_nowait(item)


def run_on_worker(fn: Callable[[Any], Any], task: Any, modules: list[str], results: str,
                  progress: Any = None) -> tuple[Any, bytes | None]:
    """Body of one Ray task: run ``fn(task)`` and hand back its result and, in ``driver`` mode,
    the bytes of the run file it wrote (into a private temporary folder of the worker)."""
    from evosgd.run import executors

    _prepare_worker(modules)
    executors.PROGRESS_QUEUE = _ProgressSink(progress) if progress is not None else None
    try:
        if results == "shared":
            return fn(task), None
        with tempfile.TemporaryDirectory(prefix="evosgd-ray-") as tmp:
            res = fn(dataclasses.replace(task, root=tmp))
            rel = getattr(res, "file", None)
            payload = (Path(tmp) / rel).read_bytes() if rel else None
        return res, payload
    finally:
        executors.PROGRESS_QUEUE = None  # the worker process serves other tasks next


def _plugin_modules(tasks: list[Any]) -> list[str]:
    try:
        from evosgd.run.runner import _plugin_modules as modules_of

        return modules_of([t.run for t in tasks if hasattr(t, "run")])
    except Exception:  # tasks that are not runner tasks: nothing to import
        return []


class RayExecutor(Executor):
    """Runs tasks as Ray tasks; yields ``(task, result)`` as they complete.

    ``address``: None starts a local Ray instance with ``num_cpus`` CPUs (all cores if None) and
    stops it at shutdown; ``"auto"`` joins the cluster running on this machine; ``ray://host:port``
    connects through Ray Client; ``host:port`` joins as a driver on a cluster node.  A Ray session
    already started in this process (``ray.init`` by the caller) is used as it is and left running.
    ``cpus_per_run`` is the CPU request of a CPU run (``None``: the task's ``threads``);
    ``runtime_env`` is passed to ``ray.init`` (e.g. ``{"working_dir": "."}`` to ship a checkout).
    ``keep_alive``: keep the Ray session this executor started across sweeps (several scenarios
    of one command) until :meth:`close`, instead of ending it when a sweep ends.
    ``progress``: the runs in flight report how far they are (through a small Ray queue actor)
    and the driver hands the messages to the runner's progress bar via ``progress_queue``, as
    the local process pool does.
    """

    in_process = False

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, results: str = "driver",
                 cpus_per_run: float | None = None, gpus_per_run: float = 1.0, max_retries: int = 2,
                 modules: list[str] | None = None, runtime_env: dict[str, Any] | None = None,
                 progress: bool = False, keep_alive: bool = False) -> None:
        self.ray = import_ray()
        if results not in ("driver", "shared"):
            raise ParameterError("results", results, "'driver' (the task returns the table) or 'shared' (shared folder)",
                                 where="Ray executor")
        self.address = None if address in (None, "", "local") else str(address)
        self.num_cpus = None if num_cpus is None else max(1, int(num_cpus))
        self.results = results
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = float(gpus_per_run)
        self.max_retries = int(max_retries)
        self.modules = list(modules) if modules is not None else None
        self.runtime_env = runtime_env
        # Concurrent runs on *this* machine, for the runner's memory guard (a cluster's nodes
        # hold their own runs, so only a local instance counts).
        self.workers = (self.num_cpus or os.cpu_count() or 1) if self.address is None else 1
        self.keep_alive = bool(keep_alive)
        self._owns_session = False
        self._pending: dict[Any, Any] = {}
        #: (run_id, label, fraction) messages of the runs in flight, read by the runner's bar
        self.progress_queue: queue.SimpleQueue | None = queue.SimpleQueue() if progress else None
        self._sink: Any = None
        self.progress_messages = 0
        self._cpu_cap: float | None = None  # CPUs of the largest node, once connected

    # ------------------------------------------------------------------ session
    def start(self) -> None:
        """Connect to (or start) Ray unless this process already has a session."""
        ray = self.ray
        if ray.is_initialized():
            return
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if self.runtime_env is not None:
            kw["runtime_env"] = self.runtime_env
        try:
            if self.address is None:
                ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, **kw)
            else:
                kw.pop("include_dashboard")
                ray.init(address=self.address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = "a local Ray instance" if self.address is None else f"the Ray cluster at {self.address!r}"
            raise EvosgdError(f"could not start or reach {where}: {e}") from None
        self._owns_session = True

    def _options(self, task: Any) -> dict[str, Any]:
        device = str(getattr(task, "device", "cpu"))
        threads = int(getattr(task, "threads", 1) or 1)
        cpus = float(self.cpus_per_run if self.cpus_per_run is not None else threads)
        run = getattr(task, "run", None)
        if run is not None and run.kind == "sgd_ddp":  # it starts workers - 1 more processes on its node
            cpus = max(cpus, float(run.params.get("workers", 2)))
        if self._cpu_cap:  # a request no node can meet would wait forever: ask for a whole node instead
            cpus = min(cpus, self._cpu_cap)
        opts: dict[str, Any] = {"num_cpus": cpus, "max_retries": self.max_retries}
        if device.startswith("cuda"):
            opts["num_gpus"] = self.gpus_per_run
        return opts

    # ------------------------------------------------------------------ the Executor API
    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        tasks = list(tasks)
        if not tasks:
            return
        self.start()
        ray = self.ray
        try:
            self._cpu_cap = max(float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")) or None
        except Exception:  # (Ray Client, an API change): no cap, Ray's own warning will tell
            self._cpu_cap = None
        modules = self.modules if self.modules is not None else _plugin_modules(tasks)
        remote = ray.remote(run_on_worker)
        if self.progress_queue is not None and self._sink is None:
            from ray.util.queue import Queue

            self._sink = Queue(actor_options={"num_cpus": 0})
        self._pending = {}
        for task in tasks:
            ref = remote.options(**self._options(task)).remote(fn, task, modules, self.results, self._sink)
            self._pending[ref] = task
        while self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=None if self._sink is None else 0.5)
            self._forward_progress()
            if not ready:
                continue
            ref = ready[0]
            task = self._pending.pop(ref)
            try:
                result, payload = ray.get(ref)
            except Exception as e:  # the worker died (after its retries) or the task could not run
                yield task, e
                continue
            if payload is not None and getattr(result, "file", None):
                # The driver writes the table the worker returned, with the store's atomic write:
                # the file appears complete or not at all, as with the local executor.
                atomic_write(Path(task.root) / result.file, lambda tmp, data=payload: tmp.write_bytes(data))
            if not self._pending:
                self._forward_progress()  # the last runs' messages, before the bar closes
            yield task, result

    def _forward_progress(self) -> None:
        if self._sink is None:
            return
        try:
            n = self._sink.qsize()
            items = self._sink.get_nowait_batch(n) if n else []
        except Exception:  # progress is a courtesy: never let it break the sweep
            return
        for item in items:
            self.progress_messages += 1
            self.progress_queue.put(item)

    def shutdown(self, cancel: bool = False) -> None:
        ray = self.ray
        pending, self._pending = self._pending, {}
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.shutdown(force=True)
            except Exception:
                pass
        if cancel and pending and ray.is_initialized():
            for ref in pending:
                try:
                    # A KeyboardInterrupt in the runs in flight (force=False keeps the workers for
                    # the next sweep); in driver mode their files are never written anyway.
                    ray.cancel(ref, force=False)
                except Exception:
                    pass
        if not self.keep_alive:
            self.close()

    def close(self) -> None:
        """End the Ray session this executor started (a local instance stops; a cluster only
        loses this driver); a session started by the caller is left alone."""
        if self._owns_session and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_session = False


def make_ray_executor(address: str | None = None, workers: int | None = None, **kw: Any) -> RayExecutor:
    """The executor behind ``evosgd run --executor ray [--address A] [--workers N]``: ``workers``
    is the CPU count of a local instance (ignored when joining a cluster).  The session it starts
    lasts until the command exits (Ray ends it then), so the scenarios of one command share it;
    the runs in flight report their progress to the runner's bar."""
    kw.setdefault("progress", True)
    kw.setdefault("keep_alive", True)
    return RayExecutor(address, num_cpus=workers, **kw)


__all__ = ["INSTALL_HINT", "RayExecutor", "import_ray", "make_ray_executor", "run_on_worker"]
