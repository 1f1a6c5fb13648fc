"""Run a scenario into its results store: skip finished runs, execute the others through an
executor, record each in the manifest as it finishes, then run the ``[[analysis]]`` entries.

A run that raises is recorded as ``failed`` with its message and the sweep goes on; a run with
diverged replicates is recorded as ``diverged``.  Ctrl-C stops at once and keeps every finished
run (its file and manifest entry are written as soon as it finishes); the same command resumes.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch

from evosgd.core.analysis_api import AnalysisContext
from evosgd.core.device import device_description, resolve_device
from evosgd.core.dtype import resolve_dtype
from evosgd.core.errors import DeviceError, EvosgdError
from evosgd.core.registry import ANALYSES, LANDSCAPES, OPTIMIZERS
from evosgd.run.executors import Executor, make_executor
from evosgd.run.memory import check_memory
from evosgd.run.store import ResultsStore, load_store
from evosgd.scenario.loader import LandscapeSpec, RunSpec, Scenario, canonical_json, config_hash, load_scenario


@dataclass
class Task:
    run: RunSpec
    root: str
    device: str
    inner_progress: bool = False
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
    bar = None
    threads = torch.get_num_threads()
    # One intra-op thread per run: runs are parallel across worker processes, and on small
    # tensors torch's thread pool costs more than it gains (10x slower on a busy machine).
    torch.set_num_threads(max(1, task.threads))
    try:
        if task.inner_progress:
            from tqdm import tqdm

            bar = tqdm(total=1000, desc=f"  {run.label}", leave=False, position=1, unit="‰",
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}", mininterval=0.5)

            def progress(frac: float) -> None:
                n = int(frac * 1000)
                if n > bar.n:
                    bar.update(n - bar.n)
        else:
            from evosgd.run.executors import report_progress

            last = [-1.0, 0.0]

            def progress(frac: float) -> None:  # to the parent's bar, at most every 0.5 s
                now = time.perf_counter()
                if frac - last[0] >= 0.01 and now - last[1] >= 0.5:
                    if report_progress(run.run_id, run.label, frac):
                        last[0], last[1] = frac, now
        outcome = run_one(run, device=task.device, progress=progress)
        rel = ResultsStore(task.root).write_run(run.run_id, outcome.frame)
        return TaskResult(run.run_id, outcome.status, None, outcome.wall_time, outcome.diverged_replicates, rel)
    except KeyboardInterrupt:
        raise
    except EvosgdError as e:
        return TaskResult(run.run_id, "failed", str(e), time.perf_counter() - t0)
    except Exception as e:  # a bug in a component must not stop the sweep; keep where it happened
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        return TaskResult(run.run_id, "failed", f"{type(e).__name__}: {e}{where}", time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()


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
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5)
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
) -> pd.DataFrame:
    """Run a scenario (a path, a dict, or a loaded :class:`Scenario`) into ``out/<name>/`` and
    return every run's rows as one DataFrame (contract 4).  See :func:`execute_scenario`."""
    store = execute_scenario(scenario, out, quick=quick, workers=workers, force=force, device=device,
                             replicates=replicates, progress=progress, executor=executor, command=command,
                             threads=threads)
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
) -> ResultsStore:
    """Execute a scenario and return its store.  ``quick``, ``device`` and ``replicates`` override
    the file; ``force`` redoes finished runs; ``workers`` None: one per CPU core, or 1 (serial) in
    quick mode;
    ``threads``: torch intra-op threads per run (1 suits many small runs in parallel)."""
    if isinstance(scenario, Scenario):
        if quick is not None or replicates is not None or device is not None:
            scenario = scenario.with_options(quick=quick, replicates=replicates, device=device)
    else:
        scenario = load_scenario(scenario, quick=bool(quick), replicates=replicates, device=device)
    dev = resolve_device(scenario.settings.device)
    resolve_dtype(scenario.settings.dtype)
    store = ResultsStore(Path(out) / scenario.name)
    store.prepare()
    old = store.read_manifest() or {}
    _refuse_other_device(store, old, dev, force)
    manifest = _manifest(scenario, dev, command)
    old_runs = old.get("runs", {}) if isinstance(old.get("runs"), dict) else {}
    pending: list[RunSpec] = []
    for run in scenario.runs:
        if not force and store.has_run(run.run_id):
            prev = old_runs.get(run.run_id) or {}
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
    ex = executor or make_executor(workers, len(pending), _plugin_modules(pending), progress=progress)
    concurrent = getattr(ex, "concurrent", getattr(ex, "workers", 1))
    check_memory(pending, dev, concurrent=concurrent)
    store.write_manifest(manifest)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(scenario.runs), initial=len(scenario.runs) - len(pending), desc=scenario.name,
                   unit="run", position=0, dynamic_ncols=True)
    watcher = _ProgressWatcher(getattr(ex, "progress_queue", None), bar) if bar is not None else None
    tasks = [Task(run, str(store.root), str(dev), inner_progress=progress and ex.in_process, threads=threads)
             for run in pending]
    runs_by_id = {r.run_id: r for r in pending}
    try:
        with ex:
            for task, res in ex.map(execute_run, tasks):
                if isinstance(res, BaseException):  # the executor lost the worker
                    res = TaskResult(task.run.run_id, "failed", f"worker process failed: {type(res).__name__}: {res}", 0.0)
                run = runs_by_id[res.run_id]
                manifest["runs"][res.run_id] = _run_entry(run, res.status, res.error, res.wall_time, res.file,
                                                          res.diverged_replicates)
                store.write_manifest(manifest)
                if watcher is not None:
                    watcher.finished(res.run_id)
                if bar is not None:
                    bar.update(1)
                    if res.status == "failed":
                        bar.write(f"run {run.label} {run.sweep or ''} failed: {res.error}")
    finally:
        if watcher is not None:
            watcher.stop()
        if bar is not None:
            bar.close()
    _run_analyses(scenario, store, manifest, dev, force, old.get("analyses", {}))
    manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    store.write_manifest(manifest)
    return store


class _ProgressWatcher:
    """Shows the progress of the runs in flight in pool workers as the run bar's postfix."""

    def __init__(self, queue: Any, bar: Any) -> None:
        import threading

        self.queue, self.bar = queue, bar
        self.state: dict[str, tuple[str, float]] = {}
        self.lock = threading.Lock()
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
            run_id, label, frac = msg
            with self.lock:
                self.state[run_id] = (label, frac)
                self._show()

    def _show(self) -> None:
        text = ", ".join(f"{label} {100 * frac:.0f}%" for label, frac in self.state.values())
        self.bar.set_postfix_str(text, refresh=True)

    def finished(self, run_id: str) -> None:
        with self.lock:
            if self.state.pop(run_id, None) is not None:
                self._show()

    def stop(self) -> None:
        if self.thread is not None:
            try:
                self.queue.put(None)
            except (OSError, ValueError):
                pass
            self.thread.join(timeout=2)


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
    }


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
            manifest["analyses"][aid] = {**entry, **{k: v for k, v in old.get(aid, {}).items() if k == "wall_time"}}
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
