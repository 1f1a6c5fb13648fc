"""Run a scenario into its results store: skip finished runs, execute the others through an
executor, record each in the manifest as it finishes, then run the ``[[analysis]]`` entries.

A run that raises is recorded as ``failed`` with its message and the sweep goes on; a run with
diverged replicates is recorded as ``diverged``.  Ctrl-C stops at once and keeps every finished
run (its file and manifest entry are written as soon as it finishes); the same command resumes.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from evosgd.core.analysis_api import AnalysisContext
from evosgd.core.device import device_description, resolve_device
from evosgd.core.dtype import resolve_dtype
from evosgd.core.errors import DeviceError, EvosgdError
from evosgd.core.registry import ANALYSES, LANDSCAPES, OPTIMIZERS
from evosgd.run.events import Event, Listener, ProgressSink, RunFinished, RunProgress, SweepFinished, SweepStarted
from evosgd.run.executors import Executor, make_executor
from evosgd.run.memory import check_memory
from evosgd.run.store import ResultsStore, load_store
from evosgd.scenario.loader import LandscapeSpec, RunSpec, Scenario, canonical_json, config_hash, load_scenario


@dataclass
class Task:
    run: RunSpec
    root: str
    device: str
    threads: int = 1


@dataclass
class TaskResult:
    run_id: str
    status: str  # done | diverged | failed
    error: str | None
    wall_time: float
    diverged_replicates: int = 0
    file: str | None = None


def execute_run(task: Task) -> TaskResult:
    """Run one task and write its Parquet file (in whatever process the executor chose)."""
    from evosgd.run.engine import run_one

    run = task.run
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    # One intra-op thread per run: runs are parallel across worker processes, and on small
    # tensors torch's thread pool costs more than it gains (10x slower on a busy machine).
    torch.set_num_threads(max(1, task.threads))
    try:
        from evosgd.run.executors import report_progress

        last = [-1.0, 0.0]

        def progress(frac: float) -> None:  # to whoever watches (RunProgress events), at most every 0.5 s
            now = time.perf_counter()
            if frac - last[0] >= 0.01 and now - last[1] >= 0.5:
                if report_progress(run.run_id, run.label, frac):
                    last[0], last[1] = frac, now
        if run.plugins:  # a worker process: load the plugins the parent loaded (hashes checked)
            from evosgd.core.plugins import ensure_plugins

            ensure_plugins(run.plugins)
        outcome = run_one(run, device=task.device, progress=progress)
        rel = ResultsStore(task.root).write_run(run.run_id, outcome.frame)
        return TaskResult(run.run_id, outcome.status, None, outcome.wall_time, outcome.diverged_replicates, rel)
    except KeyboardInterrupt:
        raise
    except EvosgdError as e:
        return TaskResult(run.run_id, "failed", str(e), time.perf_counter() - t0)
    except (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError)) as e:
        return TaskResult(run.run_id, "failed", out_of_memory_message(run, e), time.perf_counter() - t0)
    except Exception as e:  # a bug in a component must not stop the sweep; keep where it happened
        if is_allocation_failure(e):
            return TaskResult(run.run_id, "failed", out_of_memory_message(run, e), time.perf_counter() - t0)
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        return TaskResult(run.run_id, "failed", f"{type(e).__name__}: {e}{where}", time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


def is_allocation_failure(e: BaseException) -> bool:
    """torch's CPU allocator raises a plain RuntimeError ("DefaultCPUAllocator: not enough memory")."""
    text = str(e)
    return isinstance(e, RuntimeError) and ("not enough memory" in text or "DefaultCPUAllocator" in text
                                            or "out of memory" in text.lower())


def out_of_memory_message(run: RunSpec, e: BaseException) -> str:
    """A failed run's message when its tensors did not fit: what it needed, what to change."""
    from evosgd.run.memory import _fmt, estimate_run_bytes

    try:
        need = f"about {_fmt(estimate_run_bytes(run))} estimated before it started"
    except Exception:  # the estimate is a courtesy here
        need = "its estimate is unknown"
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return (f"out of memory: run {run.label} could not allocate its tensors ({need}; the allocator said: {first}). "
            f"Reduce replicates (--replicates N, now {run.replicates}), the population, batch, dataset or widths, "
            "or use fewer workers")


# ----------------------------------------------------------------------------- provenance
def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    rev = out.stdout.strip()
    # reports/ holds outputs (the example reports being regenerated), not code: it does not make the tree dirty
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)reports"], capture_output=True, text=True, timeout=5)
    return rev + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def provenance(device: torch.device, command: str | None = None) -> dict[str, Any]:
    import numpy

    import evosgd

    def version(mod: str) -> str | None:
        try:
            return __import__(mod).__version__
        except Exception:
            return None

    return {
        "evosgd": evosgd.__version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "pandas": pd.__version__, "deap": version("deap"),
        "platform": platform.platform(), "device": device_description(device), "git_revision": git_revision(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
    }


def _plugin_modules(runs: list[RunSpec]) -> list[str]:
    """Modules outside evosgd that registered a component used here (workers must import them)."""
    mods = set()
    for r in runs:
        for reg, kind in ((OPTIMIZERS, r.kind), (LANDSCAPES, r.landscape.kind)):
            if kind in reg:
                origin = reg.get(kind).origin or {}
                if origin.get("type") != "module":  # files and entry points: loaded from run.plugins
                    continue
                m = getattr(reg.get(kind).factory, "__module__", "")
                if m and not m.startswith("evosgd") and m != "__main__":
                    mods.add(m)
    return sorted(mods)


# ----------------------------------------------------------------------------- the runner
def run_scenario(
    scenario: Scenario | str | Path | Mapping[str, Any],
    out: str | Path = "results",
    *,
    quick: bool | None = None,
    workers: int | None = None,
    force: bool = False,
    device: str | None = None,
    replicates: int | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    command: str | None = None,
    threads: int = 1,
    wait: bool = True,
    notify: Callable[[str], None] | None = None,
    events: Listener | None = None,
) -> pd.DataFrame:
    """Run a scenario (a path, a dict, or a loaded :class:`Scenario`) into ``out/<name>/`` and
    return every run's rows as one DataFrame (contract 4).  See :func:`execute_scenario`."""
    store = execute_scenario(scenario, out, quick=quick, workers=workers, force=force, device=device,
                             replicates=replicates, progress=progress, executor=executor, command=command,
                             threads=threads, wait=wait, notify=notify, events=events)
    return load_store(store.root).runs


def execute_scenario(
    scenario: Scenario | str | Path | Mapping[str, Any],
    out: str | Path = "results",
    *,
    quick: bool | None = None,
    workers: int | None = None,
    force: bool = False,
    device: str | None = None,
    replicates: int | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    command: str | None = None,
    threads: int = 1,
    wait: bool = True,
    notify: Callable[[str], None] | None = None,
    events: Listener | None = None,
) -> ResultsStore:
    """Execute a scenario and return its store.  ``quick``, ``device`` and ``replicates`` override
    the file; ``force`` redoes finished runs; ``workers`` None: one per CPU core, or 1 (serial) in
    quick mode;
    ``threads``: torch intra-op threads per run (1 suits many small runs in parallel).
    ``events``: called with each :mod:`evosgd.run.events` record (sweep started, run progress when
    ``progress``, run finished, sweep finished); the runner itself never prints.

    The store's writer lock is held throughout (:class:`evosgd.run.store.StoreLock`): when another
    process holds it, ``wait`` waits (``notify`` is told why) or refuses with StoreBusyError."""
    if isinstance(scenario, Scenario):
        if quick is not None or replicates is not None or device is not None:
            scenario = scenario.with_options(quick=quick, replicates=replicates, device=device)
    else:
        scenario = load_scenario(scenario, quick=bool(quick), replicates=replicates, device=device)
    dev = resolve_device(scenario.settings.device)
    resolve_dtype(scenario.settings.dtype)
    store = ResultsStore(Path(out) / scenario.name)
    store.acquire(wait=wait, notify=notify)
    try:
        _execute_locked(scenario, store, dev, workers=workers, force=force, progress=progress and events is not None,
                        executor=executor, command=command, threads=threads, events=events or _ignore)
    finally:
        store.release()
    return store


def _execute_locked(scenario: Scenario, store: ResultsStore, dev: torch.device, *, workers: int | None, force: bool,
                    progress: bool, executor: Executor | None, command: str | None, threads: int,
                    events: Listener) -> None:
    store.prepare()
    old = store.read_manifest() or {}
    _refuse_other_device(store, old, dev, force)
    manifest = _manifest(scenario, dev, command)
    old_runs = old.get("runs", {}) if isinstance(old.get("runs"), dict) else {}
    pending: list[RunSpec] = []
    for run in scenario.runs:
        if not force and store.has_run(run.run_id):
            prev = old_runs.get(run.run_id)
            prev = prev if isinstance(prev, dict) else {}  # the old manifest is read, not trusted
            if prev.get("status") not in ("done", "diverged"):
                # killed between writing the run file and the manifest: the file tells the status
                prev = _entry_from_file(store, run)
            manifest["runs"][run.run_id] = _run_entry(run, prev.get("status", "done"), None, prev.get("wall_time"),
                                                      store.run_file(run.run_id), prev.get("diverged_replicates", 0))
        else:
            pending.append(run)
    for run in pending:  # listed now (as pending) so the manifest always names every run of the scenario
        manifest["runs"][run.run_id] = _run_entry(run, "pending", None, None, None)
    if workers is None and scenario.quick:
        workers = 1  # quick runs take seconds: starting worker processes would cost more than it saves
    if any(ref.get("type") == "interactive" for run in pending for ref in run.plugins):
        workers = 1  # components defined in a notebook or the REPL exist only in this process
    ex = executor or make_executor(workers, len(pending), _plugin_modules(pending), progress=progress)
    concurrent = getattr(ex, "concurrent", getattr(ex, "workers", 1))
    check_memory(pending, dev, concurrent=concurrent)
    store.write_manifest(manifest)

    events(SweepStarted(scenario.name, len(scenario.runs), len(pending), concurrent, scenario.settings.replicates,
                        _budget_words(scenario)))
    watcher = _ProgressWatcher(getattr(ex, "progress_queue", None), events) if progress else None
    tasks = [Task(run, str(store.root), str(dev), threads=threads) for run in pending]
    runs_by_id = {r.run_id: r for r in pending}
    from evosgd.run import executors

    in_process_sink = executors.PROGRESS_QUEUE
    if progress and ex.in_process:  # runs in this process report to the listener directly
        executors.PROGRESS_QUEUE = ProgressSink(events)
    try:
        with ex:
            for task, res in ex.map(execute_run, tasks):
                if isinstance(res, BaseException):  # the executor lost the worker
                    why = (" (it was killed: when the system ran out of memory, its out-of-memory killer ends the largest "
                           "process; reduce replicates or workers)" if "terminated abruptly" in str(res) else "")
                    res = TaskResult(task.run.run_id, "failed",
                                     f"worker process failed: {type(res).__name__}: {res}{why}", 0.0)
                run = runs_by_id[res.run_id]
                manifest["runs"][res.run_id] = _run_entry(run, res.status, res.error, res.wall_time, res.file,
                                                          res.diverged_replicates)
                store.write_manifest(manifest)
                events(RunFinished(res.run_id, run.label, json.dumps(run.sweep, default=str) if run.sweep else "",
                                   res.status, res.error, float(res.wall_time or 0.0)))
    finally:
        executors.PROGRESS_QUEUE = in_process_sink
        if watcher is not None:
            watcher.stop()
        events(SweepFinished(scenario.name))
    old_analyses = old.get("analyses")
    _run_analyses(scenario, store, manifest, dev, force, old_analyses if isinstance(old_analyses, dict) else {})
    manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    store.write_manifest(manifest)


class _ProgressWatcher:
    """Forwards the progress messages of the runs in flight in pool workers as RunProgress events."""

    def __init__(self, queue: Any, events: Listener) -> None:
        import threading

        self.queue, self.events = queue, events
        self.thread = None
        if queue is not None:
            self.thread = threading.Thread(target=self._loop, daemon=True, name="evosgd-progress")
            self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                msg = self.queue.get()
            except (EOFError, OSError):
                return
            if msg is None:
                return
            self.events(RunProgress(*msg))

    def stop(self) -> None:
        if self.thread is not None:
            try:
                self.queue.put(None)
            except (OSError, ValueError):
                pass
            self.thread.join(timeout=2)


def _ignore(event: Event) -> None:
    """The listener of a silent execution."""


def _budget_words(scenario: Scenario) -> str:
    """The per-replicate budget limits of a scenario, e.g. 'max_cost = 1e+05'."""
    budget = scenario.settings.budget
    limits = budget.model_dump() if hasattr(budget, "model_dump") else dict(budget or {})
    return ", ".join(f"{k} = {v:g}" if isinstance(v, (int, float)) else f"{k} = {v}"
                     for k, v in limits.items() if v is not None) or "no limit"


def _refuse_other_device(store: ResultsStore, old: dict[str, Any], dev: torch.device, force: bool) -> None:
    """A store whose finished runs were made on another device type is not resumed silently: the
    CPU and CUDA random streams differ (the device type is part of a run's id), so its old runs
    would sit beside the new ones as samples of another stream."""
    before = str((old.get("provenance") or {}).get("device", "")).split(" ")[0].split(":")[0]
    runs = old.get("runs") if isinstance(old.get("runs"), dict) else {}
    finished = sum(1 for r in runs.values() if isinstance(r, dict) and r.get("status") in ("done", "diverged"))
    if force or not before or before == dev.type or not finished:
        return
    raise DeviceError(
        f"the results store {store.root} holds {finished} run(s) made on {before}, and this command runs on "
        f"{dev.type}; the random streams of the two devices differ, so their runs must not be mixed. Use "
        f"--device {before} to resume it, --force to redo every run on {dev.type}, or --out for a new store")


def _manifest(scenario: Scenario, dev: torch.device, command: str | None) -> dict[str, Any]:
    s = scenario.settings
    return {
        "scenario": scenario.name, "description": scenario.description, "resolved": scenario.resolved(),
        "source_file": scenario.source, "quick": scenario.quick, "seed": s.seed, "replicates": s.replicates,
        "targets": list(s.targets), "offline_error_from": s.offline_error_from, "grad_cost": s.grad_cost, "clock": s.clock, "dtype": s.dtype,
        "budget": s.budget.model_dump(), "sweep": {"mode": scenario.sweep_mode, "keys": list(scenario.sweep)},
        "landscape": {"kind": scenario.landscape.kind, "params": scenario.landscape.params,
                      "drift": scenario.landscape.drift},
        "optimizers": [{"label": o.label, "kind": o.kind, "params": o.params} for o in scenario.optimizers],
        "provenance": provenance(dev, command), "runs": {}, "analyses": {},
        "plugins": _manifest_plugins(scenario),
    }


def _manifest_plugins(scenario: Scenario) -> list[dict[str, Any]]:
    """Every plugin loaded in this process, each with the labels of the runs and analyses that use
    it (the runs carry the same refs in their config, and the name and hash in their id)."""
    from evosgd.core.plugins import loaded_plugins
    from evosgd.scenario.loader import plugins_of

    refs: dict[str, dict[str, Any]] = {}
    for ref in loaded_plugins():
        refs[canonical_json(ref)] = {**ref, "used_by": []}
    uses = [(r.label, r.plugins) for r in scenario.runs]
    uses += [(a.label, plugins_of([(ANALYSES, a.kind)])) for a in scenario.analyses]
    for label, plugins in uses:
        for ref in plugins:
            entry = refs.setdefault(canonical_json(ref), {**ref, "used_by": []})
            if label not in entry["used_by"]:
                entry["used_by"].append(label)
    return list(refs.values())


def _entry_from_file(store: ResultsStore, run: RunSpec) -> dict[str, Any]:
    """Status of a finished run whose manifest entry was lost (process killed in between)."""
    try:
        frame = pd.read_parquet(store.root / store.run_file(run.run_id), columns=["replicate", "diverged", "wall_time"])
    except Exception:
        return {}
    n_div = int(frame.groupby("replicate")["diverged"].max().sum())
    return {"status": "diverged" if n_div else "done", "diverged_replicates": n_div,
            "wall_time": float(frame["wall_time"].max()) if len(frame) else None}


def _run_entry(run: RunSpec, status: str, error: str | None, wall_time: float | None, file: str | None,
               diverged_replicates: int = 0) -> dict[str, Any]:
    return {"label": run.label, "kind": run.kind, "config": run.config(), "sweep": run.sweep, "status": status,
            "error": error, "wall_time": wall_time, "file": file, "diverged_replicates": diverged_replicates,
            "replicates": run.replicates}


# ----------------------------------------------------------------------------- analyses
def analysis_id(scenario: Scenario, label: str, kind: str, params: dict[str, Any]) -> str:
    s = scenario.settings
    key = {"label": label, "kind": kind, "params": params, "landscape": scenario.resolved()["landscape"],
           "seed": s.seed, "replicates": s.replicates, "dtype": s.dtype, "grad_cost": s.grad_cost,
           "quick": scenario.quick}
    from evosgd.core.plugins import identity
    from evosgd.scenario.loader import drift_registry, plugins_of

    plugins = plugins_of([(ANALYSES, kind), (LANDSCAPES, scenario.landscape.kind),
                          (drift_registry(), (scenario.landscape.drift or {}).get("kind"))])
    if plugins:  # only then: the ids of analyses of built-in components do not change
        key["plugins"] = [identity(r) for r in plugins]
    return f"{label}-{config_hash(key)}"


def _run_analyses(scenario: Scenario, store: ResultsStore, manifest: dict[str, Any], dev: torch.device, force: bool,
                  old: dict[str, Any]) -> None:
    if not scenario.analyses:
        return
    from evosgd.run.engine import build_run_landscape

    s = scenario.settings
    dtype = resolve_dtype(s.dtype)
    for a in scenario.analyses:
        aid = analysis_id(scenario, a.label, a.kind, a.params)
        entry = {"label": a.label, "kind": a.kind, "params": a.params, "status": "done", "error": None,
                 "file": store.analysis_files(aid)}
        if not force and store.has_analysis(aid):
            manifest["analyses"][aid] = {**entry, **{k: v for k, v in (old.get(aid) if isinstance(old.get(aid), dict) else {}).items() if k == "wall_time"}}
            continue

        def make_landscape(kind: str | None = None, params: dict | None = None, drift: dict | None = None,
                           replicates: int | None = None, seed: int | None = None) -> Any:
            """The scenario's landscape, or another one (None: as in the scenario)."""
            base = scenario.landscape
            spec = LandscapeSpec(kind=kind or base.kind,
                                 params=dict(params if params is not None else (base.params if kind in (None, base.kind) else {})),
                                 drift=drift if drift is not None else base.drift)
            return build_run_landscape(spec, replicates=s.replicates if replicates is None else replicates,
                                       seed=s.seed if seed is None else seed, device=dev, dtype=dtype)

        ctx = AnalysisContext(scenario=scenario.name, label=a.label, seed=s.seed, replicates=s.replicates,
                              device=dev, dtype=dtype, quick=scenario.quick, make_landscape=make_landscape,
                              grad_cost=s.grad_cost)
        t0 = time.perf_counter()
        try:
            model = ANALYSES.validate(a.kind, a.params)
            result = ANALYSES.get(a.kind).factory(model, context=ctx)
            store.write_analysis(aid, result, {"label": a.label, "kind": a.kind, "params": a.params})
        except KeyboardInterrupt:
            raise
        except Exception as e:
            entry.update(status="failed", error=f"{type(e).__name__}: {e}", file=None)
        entry["wall_time"] = time.perf_counter() - t0
        manifest["analyses"][aid] = entry
        store.write_manifest(manifest)


__all__ = ["Task", "TaskResult", "canonical_json", "execute_run", "execute_scenario", "run_scenario"]
