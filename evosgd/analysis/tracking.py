"""Tracking measures for drifting (non-stationary) landscapes.

Each run is a time series of the error ``e(t)`` of its recommendation against the *moving*
optimum, recorded at env-times ``t_0 < t_1 < ... < t_K`` (the drift clock).  Records may be
unevenly spaced (log-spaced recording), so time averages weight every record by the time it
stands for: ``e(t_k)`` holds on ``[t_k, t_{k+1})`` (a left step function, which is what the
optimizer actually offered over that interval).

* offline error (Branke 2002, "Evolutionary Optimization in Dynamic Environments"; here in the
  "current error" form that fits an optimizer with a single recommendation):
  ``E_off = (1 / (t_K - t_0)) * sum_k e(t_k) (t_{k+1} - t_k)``, optionally from a burn-in time
  ``t_b`` on instead of ``t_0`` (``[scenario] offline_error_from``);
* best error before change (Nguyen, Yang & Branke 2012, "Evolutionary dynamic optimization:
  a survey"): the mean over periods between changes of the lowest error reached in the period;
* recovery time after a change at ``c``: env-time from ``c`` until the error is back at or
  below the level just before the change (``inf`` if it never is within the period);
* tracking lag of a continuously drifting run: its mean distance to the moving optimum over
  the second half of the run (steady state), and that distance divided by the drift speed
  (how far behind, in env-time units, the optimizer trails the optimum).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from evosgd.analysis.runtime import RUN_KEYS, _group_cols, quality_column


def offline_error(times: Sequence[float], errors: Sequence[float], start: float | None = None) -> float:
    """Time-weighted mean of the current error (left step function); NaN for < 2 records.

    ``start``: average over ``[start, t_K]`` only (a burn-in: the error recorded last before
    ``start`` holds from ``start`` to the next record); NaN when ``start >= t_K``."""
    t = np.asarray(times, dtype=float)
    e = np.asarray(errors, dtype=float)
    order = np.argsort(t, kind="stable")
    t, e = t[order], e[order]
    if start is not None and len(t) and start > t[0]:
        if start >= t[-1]:
            return float("nan")
        k = int(np.searchsorted(t, start, side="right")) - 1  # the record holding at ``start``
        t, e = np.concatenate([[start], t[k + 1:]]), e[k:]
    if len(t) < 2 or t[-1] <= t[0]:
        return float(e[0]) if len(e) == 1 else float("nan")
    dt = np.diff(t)
    return float(np.sum(e[:-1] * dt) / (t[-1] - t[0]))


def _periods(t: np.ndarray, change_times: Sequence[float]) -> np.ndarray:
    """Period index of each record: number of change times <= t (a record taken exactly at a
    change already sees the new landscape)."""
    c = np.sort(np.asarray(list(change_times), dtype=float))
    return np.searchsorted(c, t, side="right")


def best_error_before_change(
    times: Sequence[float], errors: Sequence[float], change_times: Sequence[float]
) -> tuple[float, np.ndarray]:
    """Mean over periods of the lowest error in each period, and the per-period minima.

    Only periods that contain at least one record count.
    """
    t = np.asarray(times, dtype=float)
    e = np.asarray(errors, dtype=float)
    per = _periods(t, change_times)
    mins = np.array([np.min(e[per == p]) for p in np.unique(per)])
    return float(np.mean(mins)), mins


def recovery_times(
    times: Sequence[float], errors: Sequence[float], change_times: Sequence[float]
) -> np.ndarray:
    """For each change time ``c`` with records on both sides: time after ``c`` until the error
    is again ``<=`` the last error recorded before ``c`` (``inf`` if not within the period)."""
    t = np.asarray(times, dtype=float)
    e = np.asarray(errors, dtype=float)
    order = np.argsort(t, kind="stable")
    t, e = t[order], e[order]
    cs = np.sort(np.asarray(list(change_times), dtype=float))
    out = []
    for i, c in enumerate(cs):
        before = t < c
        end = cs[i + 1] if i + 1 < len(cs) else np.inf
        after = (t >= c) & (t < end)
        if not before.any() or not after.any():
            continue
        level = e[before][-1]
        ok = after & (e <= level)
        out.append(t[ok][0] - c if ok.any() else np.inf)
    return np.asarray(out, dtype=float)


def tracking_table(
    runs: pd.DataFrame,
    *,
    change_times: Sequence[float] | None = None,
    drift_speed: float | None = None,
    by: Sequence[str] = ("label",),
    time: str = "env_time",
    drift: dict | None = None,
    offline_from: float = 0.0,
) -> pd.DataFrame:
    """Per run: ``offline_error``, ``best_error_before_change``, ``median_recovery_time`` (lower
    median over changes, inf when most changes are never recovered from) and ``recovered``
    (fraction of changes recovered from within their period) when change times are given, ``tracking_distance`` (mean distance over the second half of the
    run) and ``tracking_lag`` (that distance / ``drift_speed``, when given).

    Diverged records (flag ``diverged``) are excluded: a diverged run's measures use its
    records before divergence and its ``diverged`` column says so.

    With ``drift`` (the scenario's drift table) each run's own change times and speed are used:
    a sweep over ``landscape.drift.<key>`` (run column ``p_landscape.drift.<key>``, or
    ``p_landscape.<key>`` for a native dynamic landscape's ``change_every``) overrides the base
    value, so swept variants are not measured against the base drift.

    ``offline_from``: the offline error averages the error from this env-time on (a burn-in that
    leaves out the first convergence, as Moving Peaks studies often leave out the first period).
    """
    measure = quality_column(runs)
    by = _group_cols(runs, by)
    keys = list(dict.fromkeys(by + RUN_KEYS))
    rows = []
    for key, g in runs.sort_values(keys + [time]).groupby(keys, sort=False):
        div = bool(g["diverged"].any()) if "diverged" in g.columns else False
        if div:
            g = g[~g["diverged"].astype(bool)]
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)), diverged=div)
        t = g[time].to_numpy(dtype=float)
        if drift is not None and len(g):
            own = _run_drift(drift, g.iloc[0])
            change_times = change_times_from_drift(own, float(runs[time].max()))
            speed = own.get("speed")
            drift_speed = float(speed) if isinstance(speed, (int, float)) else None
        e = g[measure].to_numpy(dtype=float)
        row["offline_error"] = offline_error(t, e, offline_from if offline_from > 0 else None) if len(t) else np.nan
        if change_times is not None and len(t):
            row["best_error_before_change"] = best_error_before_change(t, e, change_times)[0]
            rec = recovery_times(t, e, change_times)
            # the median survives changes never recovered from (inf) unless they are the majority
            row["median_recovery_time"] = float(np.sort(rec)[(len(rec) - 1) // 2]) if len(rec) else np.nan
            row["recovered"] = float(np.mean(np.isfinite(rec))) if len(rec) else np.nan
        if "distance" in g.columns and g["distance"].notna().any() and len(t):
            half = t >= t[0] + 0.5 * (t[-1] - t[0])
            d = float(np.nanmean(g["distance"].to_numpy(dtype=float)[half]))
            row["tracking_distance"] = d
            if drift_speed:
                row["tracking_lag"] = d / float(drift_speed)
        rows.append(row)
    return pd.DataFrame(rows)


def _run_drift(drift: dict, row: pd.Series) -> dict:
    """The base drift table with this run's swept values (``p_landscape.drift.<k>``) applied."""
    own = dict(drift)
    for k in list(own) + ["speed", "every", "period", "change_every"]:
        for col in (f"p_landscape.drift.{k}", f"p_landscape.{k}"):
            if col in row.index and pd.notna(row[col]):
                own[k] = row[col]
                break
    return own


def change_times_from_drift(drift: dict | None, horizon: float) -> list[float] | None:
    """Change points of an abrupt drift up to ``horizon``, read from a drift config dict.

    Recognises a period under one of the keys ``period``, ``interval``, ``every``,
    ``change_every`` (the drift changes at ``period, 2 period, ...``) or an explicit list under
    ``change_times``/``times``.  Returns None for a continuous drift (no change points).
    """
    if not drift:
        return None
    for k in ("change_times", "times"):
        if isinstance(drift.get(k), (list, tuple)):
            return [float(x) for x in drift[k] if float(x) <= horizon]
    kind = str(drift.get("kind", "")).lower()
    if kind in ("linear", "rotation", "random_walk", "randomwalk", "periodic", "sinusoidal"):
        return None
    for k in ("period", "interval", "every", "change_every", "change_period"):
        p = drift.get(k)
        if isinstance(p, (int, float)) and p > 0 and np.isfinite(p):
            n = int(horizon // p)
            return [float(p * i) for i in range(1, min(n, 10_000) + 1)]
    return None
