"""Runtime-to-target measures on the tidy run table (contract 4): success, ERT, runtime ECDF.

Conventions (COCO, Hansen et al. 2021, "COCO: a platform for comparing continuous optimizers
in a black-box setting", and IOHprofiler, Doerr et al. 2018):

* a *run* is one ``(run_id, replicate)``; its quality at a record point is ``error`` (the loss
  error ``true_loss - optimal_loss``) when the landscape knows its optimum, otherwise the true
  loss itself (see :func:`quality_column`);
* the *runtime* of a run to a target ``f_t`` is the cost (sample-evaluations, contract 2) of the
  first record point at which the quality is ``<= f_t``.  Records are discrete, so this is an
  upper bound on the true hitting cost, tight to the recording resolution;
* an unsuccessful run contributes the cost it spent (its last record point) to ERT;
* a diverged run is unsuccessful from its divergence step on: rows flagged ``diverged`` never
  count as hits.

All functions are pure: they take pandas tables and return new ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

RUN_KEYS = ["run_id", "replicate"]


def quality_column(runs: pd.DataFrame) -> str:
    """``"error"`` when any row has a known error, else ``"true_loss"``."""
    if "error" in runs.columns and runs["error"].notna().any():
        return "error"
    return "true_loss"


def _group_cols(runs: pd.DataFrame, by: Sequence[str]) -> list[str]:
    return [c for c in by if c in runs.columns]


def runtimes(
    runs: pd.DataFrame,
    targets: Sequence[float],
    *,
    by: Sequence[str] = ("label",),
    measure: str | None = None,
    cost: str = "cost",
) -> pd.DataFrame:
    """Runtime of every run to every target.

    Returns one row per (run, target) with the ``by`` columns, ``run_id``, ``replicate``,
    ``target``, ``hit`` (bool), ``runtime`` (cost at the first record with quality <= target,
    NaN when not hit) and ``spent`` (cost of the run's last record: what an unsuccessful run
    used).
    """
    measure = measure or quality_column(runs)
    by = _group_cols(runs, by)
    keys = list(dict.fromkeys(by + RUN_KEYS))
    df = runs.sort_values(keys + [cost])
    q = df[measure].to_numpy(dtype=float)
    valid = np.isfinite(q)
    if "diverged" in df.columns:
        valid &= ~df["diverged"].fillna(False).to_numpy(dtype=bool)
    spent = df.groupby(keys, sort=False)[cost].max()
    out = []
    for target in targets:
        hit_rows = df[valid & (q <= float(target))]
        first = hit_rows.groupby(keys, sort=False)[cost].min()
        t = spent.rename("spent").to_frame()
        t["runtime"] = first.reindex(t.index)
        t["hit"] = t["runtime"].notna()
        t["target"] = float(target)
        out.append(t.reset_index())
    if not out:
        return pd.DataFrame(columns=keys + ["spent", "runtime", "hit", "target"])
    return pd.concat(out, ignore_index=True)


def expected_running_time(rt: pd.DataFrame, *, by: Sequence[str] = ("label",)) -> pd.DataFrame:
    r"""ERT and success rate per group and target, from :func:`runtimes`.

    .. math:: \mathrm{ERT}(f_t) = \frac{\sum_{\text{runs}} \text{cost until success or end}}
                                       {\#\text{successes}}

    (Hansen et al., COCO; equal to the mean runtime of successful runs plus
    ``(1 - p_s)/p_s`` times the mean cost of unsuccessful ones).  ``inf`` when no run succeeds.
    Columns: by..., ``target``, ``runs``, ``successes``, ``success_rate``, ``ert``,
    ``median_runtime`` (median over *successful* runs, NaN if none).
    """
    by = _group_cols(rt, by)
    rows = []
    for key, g in rt.groupby(by + ["target"], sort=False):
        used = np.where(g["hit"], g["runtime"], g["spent"]).astype(float)
        n_succ = int(g["hit"].sum())
        n = len(g)
        rows.append(dict(zip(by + ["target"], key if isinstance(key, tuple) else (key,)),
                         runs=n, successes=n_succ, success_rate=n_succ / n if n else np.nan,
                         ert=used.sum() / n_succ if n_succ else np.inf,
                         median_runtime=float(np.median(g.loc[g["hit"], "runtime"])) if n_succ else np.nan))
    return pd.DataFrame(rows, columns=by + ["target", "runs", "successes", "success_rate", "ert", "median_runtime"])


def runtime_ecdf(
    rt: pd.DataFrame, budgets: Sequence[float] | np.ndarray, *, by: Sequence[str] = ("label",),
    weight_by: str | None = None,
) -> pd.DataFrame:
    """Runtime ECDF (COCO/IOHprofiler "fixed-target" ECDF aggregated over a target ladder).

    For each group and each cost ``x`` in ``budgets``: the fraction of (run, target) pairs whose
    runtime is ``<= x`` (unsuccessful pairs never count).  Columns: by..., ``budget``, ``fraction``.

    ``weight_by`` (e.g. ``"problem"``): aggregate over problems as COCO does -- the ECDF of each
    problem (over its runs and its targets) weighs the same, however many runs or targets it has:
    ``fraction = mean over problems of the problem's fraction``.
    """
    if weight_by is not None and weight_by in rt.columns:
        per = runtime_ecdf(rt, budgets, by=list(by) + [weight_by])
        by = _group_cols(rt, by)
        out = per.groupby(by + ["budget"], sort=False)["fraction"].mean().reset_index()
        return out[by + ["budget", "fraction"]]
    by = _group_cols(rt, by)
    budgets = np.asarray(budgets, dtype=float)
    rows = []
    for key, g in rt.groupby(by, sort=False):
        r = g["runtime"].to_numpy(dtype=float)
        r = np.where(np.isnan(r), np.inf, r)
        frac = (r[None, :] <= budgets[:, None]).mean(axis=1) if len(r) else np.zeros_like(budgets)
        key = key if isinstance(key, tuple) else (key,)
        for b, f in zip(budgets, frac):
            rows.append(dict(zip(by, key), budget=float(b), fraction=float(f)))
    return pd.DataFrame(rows, columns=by + ["budget", "fraction"])


def final_rows(runs: pd.DataFrame, *, by: Sequence[str] = ("label",), cost: str = "cost") -> pd.DataFrame:
    """The last record of every run (largest cost, then step), one row per (run_id, replicate)."""
    by = _group_cols(runs, by)
    keys = list(dict.fromkeys(by + RUN_KEYS))
    order = [c for c in (cost, "step") if c in runs.columns]
    return runs.sort_values(keys + order).groupby(keys, sort=False).tail(1).reset_index(drop=True)


def final_values(runs: pd.DataFrame, *, by: Sequence[str] = ("label",), measure: str | None = None) -> pd.DataFrame:
    """Final quality per run: by..., ``run_id``, ``replicate``, ``value``, ``diverged``.

    A diverged run's value is ``+inf`` (it is the worst outcome, whatever its last finite record
    says), as is a non-finite final quality.
    """
    measure = measure or quality_column(runs)
    by = _group_cols(runs, by)
    last = final_rows(runs, by=by)
    div = (runs.groupby(RUN_KEYS)["diverged"].any() if "diverged" in runs.columns
           else pd.Series(False, index=pd.MultiIndex.from_frame(last[RUN_KEYS])))
    d = div.reindex(pd.MultiIndex.from_frame(last[RUN_KEYS])).fillna(False).to_numpy(dtype=bool)
    v = last[measure].to_numpy(dtype=float)
    v = np.where(d | ~np.isfinite(v), np.inf, v)
    out = last[list(dict.fromkeys(by + RUN_KEYS))].copy()
    out["value"] = v
    out["diverged"] = d
    return out


def quality_summary(finals: pd.DataFrame, *, by: Sequence[str] = ("label",)) -> pd.DataFrame:
    """Median and inter-quartile range of the final quality per group (from :func:`final_values`).

    Quantiles use numpy's default linear interpolation over all runs, diverged ones (+inf)
    included, so a group where more than half diverged has an infinite median: shown, not hidden.
    Columns: by..., ``runs``, ``diverged``, ``median``, ``q25``, ``q75``, ``best``, ``worst``.
    """
    by = _group_cols(finals, by)
    rows = []
    for key, g in finals.groupby(by, sort=False):
        v = np.sort(g["value"].to_numpy(dtype=float))
        key = key if isinstance(key, tuple) else (key,)
        rows.append(dict(zip(by, key), runs=len(v), diverged=int(g["diverged"].sum()),
                         median=_quantile(v, 0.5), q25=_quantile(v, 0.25), q75=_quantile(v, 0.75),
                         best=float(v[0]), worst=float(v[-1])))
    return pd.DataFrame(rows, columns=by + ["runs", "diverged", "median", "q25", "q75", "best", "worst"])


def _quantile(sorted_v: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile that tolerates +inf (numpy gives NaN for inf - inf)."""
    pos = q * (len(sorted_v) - 1)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    a, b = sorted_v[lo], sorted_v[hi]
    if lo == hi or a == b:
        return float(a)
    if np.isinf(b):
        return float("inf")
    return float(a + (pos - lo) * (b - a))


def target_ladder(finals_min: float, start: float, n: int = 10) -> np.ndarray:
    """``n`` log-spaced targets from ``start`` down to ``finals_min`` (both > 0), for an ECDF
    when the scenario names none."""
    lo, hi = max(float(finals_min), 1e-300), max(float(start), 1e-300)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return np.array([hi])
    return np.logspace(np.log10(hi), np.log10(lo), n)


def ecdf_area(rt: pd.DataFrame, b_min: float, b_max: float, *, by: Sequence[str] = ("label",),
              weight_by: str | None = None) -> pd.DataFrame:
    r"""Area under the runtime ECDF over the log budget, normalised to [0, 1] (the anytime
    aggregate of IOHprofiler's ECDF "AUC"; here on the log axis that the ECDF is drawn on):

    .. math:: \mathrm{AUC} = \frac{1}{\ln(b_{max}/b_{min})} \int_{b_{min}}^{b_{max}} \hat F(b)\, d\ln b
              = \operatorname{mean}_{(run, target)} \frac{\ln b_{max} - \ln \max(T, b_{min})}{\ln(b_{max}/b_{min})}

    with runtime T (a pair not reached by ``b_max`` contributes 0).  1 = every target reached at
    the smallest budget; 0 = none reached.  ``weight_by`` weighs problems equally (as
    :func:`runtime_ecdf`).  Columns: by..., ``auc``.
    """
    if not (b_max > b_min > 0):
        raise ValueError("ecdf_area needs 0 < b_min < b_max")
    by = _group_cols(rt, by)
    keys = by + ([weight_by] if weight_by is not None and weight_by in rt.columns else [])
    t = rt["runtime"].to_numpy(dtype=float)
    t = np.where(np.isnan(t), np.inf, t)
    span = np.log(b_max / b_min)
    contrib = np.where(t <= b_max, (np.log(b_max) - np.log(np.maximum(t, b_min))) / span, 0.0)
    d = rt[keys].copy()
    d["auc"] = contrib
    out = d.groupby(keys, sort=False)["auc"].mean().reset_index()
    if len(keys) > len(by):
        out = out.groupby(by, sort=False)["auc"].mean().reset_index()
    return out[by + ["auc"]]


def budget_ladder(c_min: float, c_max: float, decades: int = 2) -> list[float]:
    """Budgets of the fixed-budget view: ``c_max`` and one per decade below it, down to
    ``decades`` decades or the first recorded cost ``c_min``."""
    out = [float(c_max) / 10**k for k in range(decades + 1) if float(c_max) / 10**k >= float(c_min) * (1 - 1e-12)]
    return sorted(out)


def quality_at_budgets(runs: pd.DataFrame, budgets: Sequence[float], *, by: Sequence[str] = ("label",),
                       measure: str | None = None, cost: str = "cost") -> pd.DataFrame:
    """Fixed-budget values: the quality of every run at every budget ``B`` -- the quality at its
    last record with ``cost <= B`` (the recommendation a user would hold had the run stopped
    there; at the run's final budget this is :func:`final_values`).  A run diverged by then is at
    ``+inf``; a run with no record by ``B`` is NaN.  Columns: by..., ``run_id``, ``replicate``,
    ``budget``, ``value``, ``diverged``."""
    measure = measure or quality_column(runs)
    by = _group_cols(runs, by)
    keys = list(dict.fromkeys(by + RUN_KEYS))
    order = [c for c in (cost, "step") if c in runs.columns]
    df = runs.sort_values(keys + order)
    out = []
    for b in budgets:
        sub = df[df[cost] <= float(b) * (1 + 1e-12)]
        last = sub.groupby(keys, sort=False).tail(1)
        v = last[measure].to_numpy(dtype=float)
        div = (last["diverged"].fillna(False).to_numpy(dtype=bool) if "diverged" in last.columns
               else np.zeros(len(last), dtype=bool))
        t = last[keys].copy()
        t["budget"] = float(b)
        t["value"] = np.where(div | ~np.isfinite(v), np.inf, v)
        t["diverged"] = div
        full = df[keys].drop_duplicates().merge(t, on=keys, how="left")
        full["budget"] = float(b)
        full["diverged"] = full["diverged"].astype("boolean").fillna(False).astype(bool)
        out.append(full)
    cols = keys + ["budget", "value", "diverged"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def ert_ratios(ert: pd.DataFrame, *, group: str = "label", problem: str = "problem") -> pd.DataFrame:
    """COCO's ERT ratio: on each problem and target, ERT of every group over the best (lowest)
    ERT any group reached there.  ``ratio`` = 1 for the best, ``inf`` for a group that never
    reached the target, NaN where nobody did.  Columns: those of ``ert`` plus ``best_ert``,
    ``ratio``."""
    keys = [c for c in (problem, "target") if c in ert.columns]
    e = ert.copy()
    fin = e["ert"].where(np.isfinite(e["ert"]))
    e["best_ert"] = fin.groupby([e[k] for k in keys], sort=False).transform("min") if keys else fin.min()
    with np.errstate(divide="ignore", invalid="ignore"):
        e["ratio"] = np.where(np.isfinite(e["best_ert"]), e["ert"] / e["best_ert"], np.nan)
    return e
