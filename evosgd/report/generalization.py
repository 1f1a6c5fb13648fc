"""Generalization: held-out loss and accuracy beside the training loss, per optimizer.

Runs on landscapes with held-out data record ``validation_loss``, ``test_loss`` and, for
classification, ``train_accuracy`` / ``validation_accuracy`` / ``test_accuracy`` at every record
point (NaN elsewhere).  At the end of each run:

* generalization gap ``test_loss - true_loss`` (held-out minus training loss; the same loss
  formula, so an L2 penalty cancels) and accuracy gap ``train_accuracy - test_accuracy``;
* the test accuracy at the record with the lowest validation loss (model selection by the
  validation split, i.e. early stopping; the test split stays untouched by the choice).

Means over replicates with a two-sided 95 % Student-t interval ``mean +- t_{0.975, n-1} s / sqrt(n)``
(scipy.stats); diverged runs are left out and counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from evosgd.report import figures as F
from evosgd.report.document import Figure, Section, fmt

HELDOUT = ["validation_loss", "test_loss", "train_accuracy", "validation_accuracy", "test_accuracy"]
RUN_KEYS = ["run_id", "replicate"]


def has_heldout(runs: pd.DataFrame) -> bool:
    return "test_loss" in runs and bool(np.isfinite(runs["test_loss"].to_numpy(dtype=float)).any())


def _mean_ci(v: np.ndarray) -> tuple[float, float, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.nan, np.nan, np.nan
    m = float(v.mean())
    if v.size < 2:
        return m, np.nan, np.nan
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half


def final_heldout(runs: pd.DataFrame, group: str = "variant") -> pd.DataFrame:
    """One row per run: group, run keys, final training/held-out measures, gaps, and the test
    accuracy/loss at the record of lowest validation loss."""
    rows = []
    for (g, rid, rep), r in runs.groupby([group] + RUN_KEYS, sort=False):
        r = r.sort_values("cost", kind="stable")
        last = r.iloc[-1]
        row = {group: g, "run_id": rid, "replicate": rep, "diverged": bool(r["diverged"].any()) if "diverged" in r else False,
               "train_loss": float(last["true_loss"])}
        for c in HELDOUT:
            row[c] = float(last[c]) if c in r else np.nan
        row["gap_loss"] = row["test_loss"] - row["train_loss"]
        row["gap_accuracy"] = row["train_accuracy"] - row["test_accuracy"]
        val = r["validation_loss"].to_numpy(dtype=float) if "validation_loss" in r else np.full(len(r), np.nan)
        if np.isfinite(val).any():
            best = int(np.nanargmin(np.where(np.isfinite(val), val, np.nan)))
            row["test_loss_at_best_validation"] = float(r["test_loss"].iloc[best])
            row["test_accuracy_at_best_validation"] = float(r["test_accuracy"].iloc[best]) if "test_accuracy" in r else np.nan
            row["cost_at_best_validation"] = float(r["cost"].iloc[best])
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(finals: pd.DataFrame, order: list[str], group: str = "variant") -> pd.DataFrame:
    """Per group: runs, diverged, and mean [95 % CI] of every measure of :func:`final_heldout`."""
    measures = ["train_loss", "validation_loss", "test_loss", "gap_loss", "train_accuracy", "test_accuracy",
                "gap_accuracy", "test_accuracy_at_best_validation"]
    rows = []
    for g in order:
        f = finals[finals[group] == g]
        ok = f[~f["diverged"]]
        row = {group: g, "runs": len(f), "diverged": int(f["diverged"].sum())}
        for m in measures:
            mean, lo, hi = _mean_ci(ok[m].to_numpy(dtype=float)) if m in ok else (np.nan,) * 3
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = mean, lo, hi
        rows.append(row)
    return pd.DataFrame(rows)


def _ci(row: pd.Series, m: str) -> str:
    if not np.isfinite(row[m]):
        return "n/a"
    if not np.isfinite(row[f"{m}_lo"]):
        return fmt(row[m])
    return f"{fmt(row[m])} [{fmt(row[f'{m}_lo'])}, {fmt(row[f'{m}_hi'])}]"


def generalization_section(doc, writer, runs: pd.DataFrame, colors: dict, group: str = "variant") -> list[str]:
    """Add the "Generalization" section (table, figures) to ``doc``; returns its findings.
    Nothing (and no findings) when no run has held-out data."""
    if not has_heldout(runs):
        return []
    order = list(dict.fromkeys(runs[group]))
    finals = final_heldout(runs, group)
    summ = summary_table(finals, order, group)
    classification = bool(np.isfinite(summ["test_accuracy"].to_numpy(dtype=float)).any())
    sec = Section("Generalization")
    doc.sections.append(sec)
    sec.add("Training loss (the true loss on the training split) against the loss on the held-out validation and "
            "test splits at the end of each run; gap = test loss - training loss" +
            ("; accuracy gap = train - test accuracy; 'test acc. at best val.' = test accuracy at the record with "
             "the lowest validation loss (early stopping by the validation split)" if classification else "") +
            ".  Mean over replicates [95 % t-interval]; held-out measures are never charged to the budget.")
    cols = ["train_loss", "validation_loss", "test_loss", "gap_loss"]
    if classification:
        cols += ["train_accuracy", "test_accuracy", "gap_accuracy", "test_accuracy_at_best_validation"]
    names = {"train_loss": "train loss", "validation_loss": "val. loss", "test_loss": "test loss", "gap_loss": "gap (loss)",
             "train_accuracy": "train acc.", "test_accuracy": "test acc.", "gap_accuracy": "gap (acc.)",
             "test_accuracy_at_best_validation": "test acc. at best val."}
    display = pd.DataFrame({"optimizer": summ[group], "runs": summ["runs"].map(fmt)})
    for c in cols:
        display[names[c]] = [_ci(r, c) for _, r in summ.iterrows()]
    sec.add(writer.table("generalization", summ, display, "Final training and held-out measures per optimizer."))
    for y, yl, name in (("test_accuracy", "test accuracy", "test_accuracy"), ("test_loss", "test loss", "test_loss")):
        if y in runs and np.isfinite(runs[y].to_numpy(dtype=float)).any():
            if F.convergence(runs, "cost", y, colors, writer.fig, f"generalization_{name}",
                             xlabel="cost (sample-evaluations)", ylabel=yl, group=group):
                sec.add(Figure(f"generalization_{name}", f"{yl.capitalize()} at the recommendation vs cost: median over "
                                                         "replicates with the inter-quartile band."))
    return _findings(summ, classification, group)


def _findings(summ: pd.DataFrame, classification: bool, group: str) -> list[str]:
    out = []
    ok = summ[np.isfinite(summ["test_loss"].to_numpy(dtype=float))]
    if ok.empty:
        return out
    if classification:
        best = ok.loc[ok["test_accuracy"].idxmax()]
        out.append(f"Best final test accuracy: {best[group]} with {_ci(best, 'test_accuracy')} (mean over "
                   f"{int(best['runs'] - best['diverged'])} replicates [95 % t-interval]).")
    else:
        best = ok.loc[ok["test_loss"].idxmin()]
        out.append(f"Lowest final test loss: {best[group]} with {_ci(best, 'test_loss')}.")
    widest = ok.loc[ok["gap_loss"].idxmax()]
    excl = ("excludes 0" if np.isfinite(widest["gap_loss_lo"]) and widest["gap_loss_lo"] > 0 else
            "includes 0" if np.isfinite(widest["gap_loss_lo"]) else "has no interval (one replicate)")
    out.append(f"Largest generalization gap (test - train loss): {widest[group]} with {_ci(widest, 'gap_loss')}; its "
               f"interval {excl}.")
    return out
