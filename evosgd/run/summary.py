"""A compact summary of a results store: per run (label and sweep point), the final and best
error over replicates, how many replicates reached each target, divergences and time."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def final_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The last record of every (run, replicate)."""
    if runs.empty:
        return runs
    return runs.sort_values(["run_id", "replicate", "step", "cost"]).groupby(["run_id", "replicate"], sort=False).tail(1)


def summary_table(runs: pd.DataFrame, manifest: dict | None = None) -> pd.DataFrame:
    """One row per run: label, swept values, replicates, median final/best error (or loss where
    the optimum is unknown), the median final test loss and accuracy where the landscape has
    held-out data, the fraction of replicates whose best error reached each target,
    diverged replicates, median cost spent and the run's wall time."""
    manifest = manifest or {}
    targets = sorted(manifest.get("targets") or [], reverse=True)
    if runs.empty:
        return pd.DataFrame()
    fin = final_rows(runs)
    known = fin["error"].notna().all()
    value = "error" if known else "true_loss"
    rows = []
    order = list((manifest.get("runs") or {}).keys())
    for run_id, g in fin.groupby("run_id", sort=False):
        sweep = json.loads(g["sweep"].iloc[0]) if isinstance(g["sweep"].iloc[0], str) else {}
        row = {
            "label": g["label"].iloc[0],
            "sweep": ", ".join(f"{k.split('.')[-1]}={v}" for k, v in sweep.items()),
            "reps": len(g),
            f"final {value} (median)": float(np.nanmedian(g[value].to_numpy(dtype=float)))
            if np.isfinite(g[value].to_numpy(dtype=float)).any() else np.nan,
            "best (median)": float(np.nanmedian(g["best_so_far"].to_numpy(dtype=float)))
            if np.isfinite(g["best_so_far"].to_numpy(dtype=float)).any() else np.nan,
        }
        for col, name in (("test_loss", "test loss (median)"), ("test_accuracy", "test acc (median)")):
            held = g[col].to_numpy(dtype=float) if col in g else np.full(1, np.nan)
            if np.isfinite(held).any():  # landscapes with held-out data (never charged to the budget)
                row[name] = float(np.nanmedian(held))
        for t in targets:
            row[f"hit {t:g}"] = float((g["best_so_far"] <= t).mean())
        row["diverged"] = int(g["diverged"].sum())
        row["cost (median)"] = float(g["cost"].median())
        wall = (manifest.get("runs", {}).get(run_id, {}) or {}).get("wall_time")
        row["wall s"] = float(wall) if isinstance(wall, (int, float)) else float(g["wall_time"].max())
        row["_order"] = order.index(run_id) if run_id in order else len(order)
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("_order").drop(columns="_order").reset_index(drop=True)
    if not (table["sweep"] != "").any():
        table = table.drop(columns="sweep")
    return table


def format_summary(store) -> str:  # store: StoreData
    """The text `evosgd show` prints."""
    m = store.manifest
    runs = m.get("runs", {})
    status = pd.Series([e.get("status") for e in runs.values()]).value_counts().to_dict() if runs else {}
    head = [f"scenario {m.get('scenario')!r}" + (" (quick)" if m.get("quick") else "") + f" — {store.path}"]
    if m.get("description"):
        head.append(str(m["description"]))
    land = m.get("landscape", {}) or {}
    head.append(f"landscape {land.get('kind')} {_params(land.get('params'))}; replicates {m.get('replicates')}, "
                f"seed {m.get('seed')}, budget {_params(m.get('budget'))}")
    head.append("runs: " + ", ".join(f"{n} {s}" for s, n in sorted(status.items())))
    lines = list(head)
    table = summary_table(store.runs, m)
    if not table.empty:
        with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 40):
            lines += ["", table.to_string(index=False, float_format=lambda v: f"{v:.3g}")]
    failed = [(rid, e) for rid, e in runs.items() if e.get("status") == "failed"]
    for _rid, e in failed[:10]:
        lines.append(f"failed: {e.get('label')} {e.get('sweep') or ''}: {e.get('error')}")
    for a in store.analyses:
        lines.append(f"analysis {a['label']} ({a['kind']}): {a.get('title') or ''}")
        lines += [f"  - {n}" for n in a.get("notes", [])]
    for _aid, e in (m.get("analyses") or {}).items():
        if e.get("status") == "failed":
            lines.append(f"analysis {e.get('label')} failed: {e.get('error')}")
    return "\n".join(lines)


def _params(d: dict | None) -> str:
    if not d:
        return ""
    return "(" + ", ".join(f"{k}={v}" for k, v in d.items() if v is not None and not isinstance(v, dict)) + ")"
