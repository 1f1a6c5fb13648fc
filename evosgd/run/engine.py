"""The engine loop: one run = one landscape batch (R replicates) + one optimizer + one budget.

::

    landscape = build_landscape(kind, params, replicates=R, seed=seed)   # replicate r from (seed, r)
    optimizer = OPTIMIZERS.build(kind, params, landscape=, budget=, generator=<from (seed, run id)>)
    record()                                  # at cost 0
    while some replicate is neither exhausted nor diverged:
        optimizer.step()                      # charges the budget
        if the record schedule is due: record()
    record()                                  # at the end

The recorder measures what contract 4 stores: the true loss at ``recommend()`` (never charged),
the error against the optimal loss at the current time t, the best error so far, the distance to
the optimum, the held-out measures (validation/test loss and accuracy, where the landscape has
held-out data) and the optimizer's metrics, one row per replicate and record point.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.device import resolve_device, to_host
from evosgd.core.dtype import resolve_dtype
from evosgd.core.errors import EvosgdError
from evosgd.core.hostmem import tune_host_allocator
from evosgd.core.registry import OPTIMIZERS
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.scenario.loader import LandscapeSpec, RunSpec, canonical_json

#: an optimizer that takes this many steps in a row without spending budget or counting a step
#: would never finish; the run fails with a clear message instead of hanging
STALL_STEPS = 1000
STALL_CHECK = 50

BASE_COLUMNS = [
    "scenario", "run_id", "label", "kind", "config", "sweep", "replicate", "seed", "step", "cost", "evaluations",
    "gradient_evaluations", "sim_time", "wall_time", "env_time", "true_loss", "error", "best_so_far", "distance",
    "optimal_loss", "diverged", "diverged_step",
]

#: held-out measures at the recommendation (finite-sum landscapes with held-out data; NaN otherwise),
#: like ``true_loss`` never charged to the budget
HELDOUT_COLUMNS = ["train_accuracy", "validation_loss", "validation_accuracy", "test_loss", "test_accuracy"]


class RunError(EvosgdError):
    """A run that cannot go on (an optimizer that never spends its budget, ...)."""


def build_run_landscape(spec: LandscapeSpec, *, replicates: int, seed: int, device: torch.device,
                        dtype: torch.dtype) -> Any:
    """Build a scenario's landscape: replicate r's instance depends only on (seed, r)."""
    import inspect

    from evosgd.landscapes import build_landscape

    kw: dict[str, Any] = dict(replicates=replicates, seed=seed, device=device, dtype=dtype)
    if spec.drift:
        if "drift" not in inspect.signature(build_landscape).parameters:
            raise RunError("this scenario asks for [landscape.drift] but evosgd.landscapes cannot build drift yet")
        kw["drift"] = dict(spec.drift)
    return build_landscape(spec.kind, dict(spec.params), **kw)


class Schedule:
    """When to record, on the budget's axis (cost if max_cost is set, else steps, else sim_time).

    ``every = e``: at e, 2e, 3e, ...; ``log_points = n``: at n points log-spaced from 1 to the
    limit (a step that jumps several points records once).  Start and end are always recorded.
    """

    def __init__(self, record: dict[str, Any], budget: dict[str, Any]) -> None:
        limits = {k: budget.get(k) for k in ("max_cost", "max_steps", "max_sim_time")}
        self.axis = "cost" if limits["max_cost"] is not None else "steps" if limits["max_steps"] is not None else "sim_time"
        limit = float(limits[{"cost": "max_cost", "steps": "max_steps", "sim_time": "max_sim_time"}[self.axis]])
        self.every = record.get("every")
        if self.every is None:
            n = int(record.get("log_points") or 40)
            start = min(1.0, limit)
            self.points = np.geomspace(start, limit, n) if limit > start else np.array([limit])
        else:
            self.points = None
        self.index = 0
        self.next = float(self.every) if self.every is not None else float(self.points[0])

    def due(self, value: float) -> bool:
        if value < self.next:
            return False
        if self.every is not None:
            self.next = (math.floor(value / self.every) + 1) * self.every
        else:
            while self.index < len(self.points) and self.points[self.index] <= value:
                self.index += 1
            self.next = float(self.points[self.index]) if self.index < len(self.points) else math.inf
        return True


def _host(x: Any, n: int) -> np.ndarray:
    arr = np.array(to_host(x), dtype=np.float64)  # a copy: a record must not alias live state
    if arr.ndim == 0:
        return np.full(n, float(arr))
    return arr.reshape(-1)[:n] if arr.size >= n else np.full(n, np.nan)


class Recorder:
    """Collects one row per replicate at each record point (see STORE.md for the columns)."""

    def __init__(self, run: RunSpec, landscape: Any, budget: Budget, optimizer: Any) -> None:
        self.run, self.landscape, self.budget, self.opt = run, landscape, budget, optimizer
        R = run.replicates
        self.R = R
        self.best = np.full(R, np.nan)
        self.diverged = np.zeros(R, dtype=bool)
        self.diverged_step = np.full(R, -1, dtype=np.int64)
        self.records: list[dict[str, np.ndarray]] = []
        self.metric_names: list[str] = []
        self.last_signature: bytes | None = None
        self.t0 = time.perf_counter()

    @torch.no_grad()
    def record(self) -> None:
        b, ls, R = self.budget, self.landscape, self.R
        signature = b.cost.tobytes() + b.steps.tobytes() + b.sim_time.tobytes()
        if signature == self.last_signature:  # nothing happened since the last record
            return
        self.last_signature = signature
        t = b.time(ls.device, ls.dtype)
        x = self.opt.recommend().detach()
        true_loss = _host(ls.true_loss(x, t), R)
        opt_loss = ls.optimal_loss(t)
        opt_loss = _host(opt_loss, R) if opt_loss is not None else np.full(R, np.nan)
        optimum = ls.optimum(t)
        distance = _host((x - optimum).norm(dim=-1), R) if optimum is not None else np.full(R, np.nan)
        error = true_loss - opt_loss
        tracked = error if np.isfinite(opt_loss).all() else true_loss
        # a diverged replicate keeps its best finite value; fmin ignores NaN
        self.best = np.fmin(self.best, np.where(np.isfinite(tracked), tracked, np.nan))
        opt_div = np.asarray(to_host(self.opt.diverged), dtype=bool)
        newly = (opt_div | ~np.isfinite(true_loss)) & ~self.diverged
        if newly.any():
            steps = np.asarray(getattr(self.opt, "diverged_step", np.full(R, -1)))
            self.diverged_step[newly] = np.where(steps[newly] >= 0, steps[newly], b.steps[newly])
            self.diverged |= newly
        rec = {
            "step": b.steps.copy(), "cost": b.cost.copy(), "evaluations": b.evaluations.copy(),
            "gradient_evaluations": b.gradient_evaluations.copy(), "sim_time": b.sim_time.copy(),
            "wall_time": np.full(R, time.perf_counter() - self.t0), "env_time": b.clock().astype(np.float64),
            "true_loss": true_loss, "error": error, "best_so_far": self.best.copy(), "distance": distance,
            "optimal_loss": opt_loss, "diverged": self.diverged.copy(), "diverged_step": self.diverged_step.copy(),
        }
        heldout = getattr(ls, "heldout_metrics", None)
        measured = heldout(x, t) if heldout is not None else {}
        for col in HELDOUT_COLUMNS:
            rec[col] = _host(measured[col], R) if col in measured else np.full(R, np.nan)
        for name, value in (self.opt.metrics() or {}).items():
            col = f"m_{name}"
            if col not in self.metric_names:
                self.metric_names.append(col)
            rec[col] = _host(value, R)
        self.records.append(rec)

    def frame(self) -> pd.DataFrame:
        run, R, n = self.run, self.R, len(self.records)
        cols: dict[str, Any] = {
            "scenario": [run.scenario] * (R * n), "run_id": [run.run_id] * (R * n), "label": [run.label] * (R * n),
            "kind": [run.kind] * (R * n), "config": [canonical_json(run.config())] * (R * n),
            "sweep": [json.dumps(run.sweep, sort_keys=True, default=str)] * (R * n),
            "replicate": np.tile(np.arange(R, dtype=np.int64), n), "seed": np.full(R * n, run.seed, dtype=np.int64),
        }
        for c in BASE_COLUMNS[8:] + HELDOUT_COLUMNS:
            cols[c] = np.concatenate([r[c] for r in self.records])
        cols["step"] = cols["step"].astype(np.int64)
        for c in self.metric_names:
            cols[c] = np.concatenate([r.get(c, np.full(R, np.nan)) for r in self.records])
        for key, value in run.sweep.items():
            col = f"p_{key}"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                cols[col] = [value if isinstance(value, str) else json.dumps(value, default=str)] * (R * n)
            else:
                cols[col] = np.full(R * n, float(value))
        return pd.DataFrame(cols)


@dataclass
class RunOutcome:
    frame: pd.DataFrame
    status: str  # "done" | "diverged"
    diverged_replicates: int
    wall_time: float
    steps: int


def run_one(run: RunSpec, device: str | torch.device | None = None,
            progress: Callable[[float], None] | None = None) -> RunOutcome:
    """Execute one run in this process and return its rows (see the module docstring)."""
    t0 = time.perf_counter()
    tune_host_allocator()  # large per-step temporaries reused, not page-faulted in every step
    dev = resolve_device(run.device if device is None else device)
    dtype = resolve_dtype(run.dtype)
    landscape = build_run_landscape(run.landscape, replicates=run.replicates, seed=run.seed, device=dev, dtype=dtype)
    budget = Budget(run.replicates, grad_cost=run.grad_cost, limits=BudgetLimits(**run.budget), clock=run.clock)
    generator = make_generator(derive_seed(run.seed, run.run_id, "optimizer"), dev)
    optimizer = OPTIMIZERS.build(run.kind, run.params, landscape=landscape, budget=budget, generator=generator)
    schedule = Schedule(run.record, run.budget)
    recorder = Recorder(run, landscape, budget, optimizer)
    recorder.record()
    limit = {"cost": run.budget.get("max_cost"), "steps": run.budget.get("max_steps"),
             "sim_time": run.budget.get("max_sim_time")}[schedule.axis]
    axis_of = {"cost": lambda: budget.cost, "steps": lambda: budget.steps, "sim_time": lambda: budget.sim_time}[schedule.axis]
    # The optimizer's host-side ledger of divergence (every Optimizer keeps one): no device read
    # per step.  An object offering only the protocol's ``diverged`` tensor is read through it.
    host_diverged = ((lambda: optimizer.diverged_step >= 0) if hasattr(optimizer, "diverged_step")
                     else (lambda: to_host(optimizer.diverged)))
    # Stall check every STALL_CHECK steps (the budget's totals are a few numpy reductions): a
    # stalled optimizer is stopped within STALL_CHECK steps of its STALL_STEPS-th idle step.
    last_progress, last_moved, steps = _progress(budget), 0, 0
    while True:
        finished = budget.exhausted() | host_diverged() | recorder.diverged
        if finished.all():
            break
        optimizer.step()
        steps += 1
        if steps % STALL_CHECK == 0:
            now = _progress(budget)
            if now > last_progress:
                last_progress, last_moved = now, steps
            elif steps - last_moved >= STALL_STEPS:
                raise RunError(f"optimizer {run.label!r} ({run.kind}) took {steps - last_moved} steps in a row without "
                               "spending any budget or counting a step; it would never finish")
        value = float(axis_of().max())
        if schedule.due(value):
            recorder.record()
        if progress is not None:  # the callback throttles itself
            progress(min(1.0, value / float(limit)))
    recorder.record()
    frame = recorder.frame()
    n_div = int(recorder.diverged.sum())
    return RunOutcome(frame=frame, status="diverged" if n_div else "done", diverged_replicates=n_div,
                      wall_time=time.perf_counter() - t0, steps=steps)


def _progress(budget: Budget) -> float:
    return float(budget.cost.sum() + budget.steps.sum() + budget.sim_time.sum())
