"""The problem is an axis of the study (DESIGN, contract 5).

A run is (problem, optimizer configuration, budget, seeds).  The *problem* of a run is its
landscape: kind, parameters (dimension, instance, condition, ...) and drift, read from the run's
resolved config (the ``config`` column of the run table), so a problem is recognised however the
scenario produced it (a ``landscape.*`` sweep, a suite expansion).  Only the landscape fields that
differ between the runs of a store name the problem, e.g. ``rastrigin`` or ``ellipsoid
condition=100``.

An optimizer *variant* is its label plus the swept optimizer settings that vary *within* one
problem (a setting sweep stays a curve); settings that change only together with the problem
(a zip sweep that scales a mutation width to each landscape's box) belong to the problem's setup
and are listed in the problems table, not in the optimizer's name, so each optimizer has one
legend entry across the facets.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from evosgd.report.document import fmt

G = "variant"
P = "problem"


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = json.dumps(d, sort_keys=True) if isinstance(d, list) else d
    return out


def _landscape_of(config: Any) -> dict[str, Any]:
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            return {}
    if not isinstance(config, dict):
        return {}
    land = config.get("landscape") or {}
    flat = _flat({"kind": land.get("kind"), **(land.get("params") or {}), "drift": land.get("drift")})
    return {k: v for k, v in flat.items() if v is not None}


def _name(key: str) -> str:
    return {"dim": "D", "drift.kind": "drift"}.get(key, key)


def problem_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run id: ``run_id``, ``problem`` (its name) and the landscape fields that
    differ between runs (``l_<field>``).  A store without configs (or with one landscape) has one
    problem, named after its landscape kind (or ``"problem"``)."""
    per_run = runs.drop_duplicates("run_id")
    if "config" in per_run:
        lands = [_landscape_of(c) for c in per_run["config"]]
    else:
        lands = [{} for _ in range(len(per_run))]
    # a landscape sweep column of the run table names a problem field as well (stores written
    # without a config column, e.g. in tests)
    for i, (_, r) in enumerate(per_run.iterrows()):
        for c in per_run.columns:
            if c.startswith("p_landscape.") and pd.notna(r[c]):
                lands[i].setdefault(c[len("p_landscape."):], r[c])
    keys = list(dict.fromkeys(k for land in lands for k in land))
    varying = [k for k in keys if len({json.dumps(land.get(k), sort_keys=True, default=str) for land in lands}) > 1]
    rows = []
    for rid, land in zip(per_run["run_id"], lands):
        parts = []
        for k in varying:
            v = land.get(k)
            if k == "kind":
                parts.insert(0, str(v))
            elif v is not None:
                parts.append(f"{_name(k)}={fmt(v)}")
        if not parts:
            parts = [str(land.get("kind") or "problem")]
        rows.append({"run_id": rid, P: " ".join(parts), **{f"l_{k}": land.get(k) for k in varying}})
    return pd.DataFrame(rows, columns=["run_id", P] + [f"l_{k}" for k in varying])


def _sweep_cols(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c.startswith("p_") and runs[c].nunique(dropna=True) > 1]


def _short(col: str) -> str:
    return col[2:].split(".")[-1]


def within_problem_settings(runs: pd.DataFrame) -> list[str]:
    """The swept columns that vary among one label's runs *within* a problem: the settings that
    make optimizer variants (and sweep curves).  Landscape columns never do."""
    sweep = [c for c in _sweep_cols(runs) if not c.startswith("p_landscape")]
    per_run = runs.drop_duplicates("run_id")
    out = []
    for c in sweep:
        n = per_run.groupby([P, "label"], sort=False)[c].nunique(dropna=True) if P in per_run else \
            per_run.groupby("label", sort=False)[c].nunique(dropna=True)
        if (n > 1).any():
            out.append(c)
    return out


def add_problems_and_variants(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Add ``problem`` and ``variant`` columns.  Returns (runs, variants: one row per variant
    with ``variant``, ``label`` and its within-problem settings, problems: one row per
    (problem, label) with the problem's landscape fields and the label's settings there)."""
    runs = runs.copy()
    pt = problem_table(runs)
    runs[P] = runs["run_id"].map(dict(zip(pt["run_id"], pt[P])))
    settings = within_problem_settings(runs)
    per_run = runs.drop_duplicates("run_id")
    names = {}
    for label, g in per_run.groupby("label", sort=False):
        varying = [c for c in settings if g.groupby(P)[c].nunique(dropna=True).max() > 1]
        for _, r in g.iterrows():
            parts = [f"{_short(c)}={fmt(r[c])}" for c in varying if pd.notna(r[c])]
            names[r["run_id"]] = f"{label} [{', '.join(parts)}]" if parts else str(label)
    runs[G] = runs["run_id"].map(names)
    per_run = runs.drop_duplicates("run_id")
    variants = per_run[[G, "label"] + settings].drop_duplicates(G).reset_index(drop=True)
    covary = [c for c in _sweep_cols(runs) if not c.startswith("p_landscape") and c not in settings]
    problems = per_run[[P, G] + covary].merge(pt.drop(columns="run_id").drop_duplicates(P), on=P, how="left")
    return runs, variants, problems.reset_index(drop=True)


def problem_order(runs: pd.DataFrame) -> list[str]:
    """Problems in the order the scenario ran them (first appearance)."""
    return list(dict.fromkeys(runs[P])) if P in runs else []


def values_span_decades(v: np.ndarray, decades: float = 1.5) -> bool:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and np.log10(v.max() / v.min()) >= decades
