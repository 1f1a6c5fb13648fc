"""Report sections about drifting landscapes and optimizer metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from evosgd.analysis import tracking as tr
from evosgd.report import figures as F
from evosgd.report import findings as FI
from evosgd.report import theory as TH
from evosgd.report.document import Figure, Section, fmt
from evosgd.report.metrics import metric_label
from evosgd.report.problems import G, P
from evosgd.report.tables import display_generic, in_order, slug


def _drift_section(doc, w, runs, drift, colors, measure, qname, offline_from: float = 0.0, facet=None,
                   facet_order=None, order=None) -> list[str]:
    """Tracking measures of a drifting landscape; with ``facet`` (several problems) one panel per
    problem, and the table and findings per (problem, optimizer)."""
    sec = Section("Drifting landscape")
    doc.sections.append(sec)
    horizon = float(runs["env_time"].max()) if "env_time" in runs else 0.0
    changes = tr.change_times_from_drift(drift if isinstance(drift, dict) else None, horizon)
    speed = drift.get("speed") if isinstance(drift, dict) and isinstance(drift.get("speed"), (int, float)) else None
    sec.add(f"Drift: {json.dumps(drift, sort_keys=True) if drift else 'unknown'}.  The error is against the moving "
            "optimum at the time of the record." + (f"  {len(changes)} change points (dashed)." if changes else ""))
    for y, yl in ((measure, qname), ("distance", "distance to the optimum")):
        if y in runs and np.isfinite(runs[y]).any():
            nm = f"drift_{y}"
            # linear time: changes and periods read as they happen; a fine grid keeps short periods visible
            if F.convergence(runs, "env_time", y, colors, w.fig, nm, xlabel="environment time t", ylabel=yl,
                             vlines=changes, log_x=False, points=400, facet=facet, facet_order=facet_order, order=order):
                sec.add(Figure(nm, f"{yl.capitalize()} vs environment time: median and inter-quartile band."))
    by = [P, G] if facet else [G]
    per_run = tr.tracking_table(runs, change_times=changes, drift_speed=speed, by=tuple(by),
                                drift=drift if isinstance(drift, dict) else None, offline_from=offline_from)
    meas = [c for c in ("offline_error", "best_error_before_change", "median_recovery_time", "recovered",
                        "tracking_distance", "tracking_lag") if c in per_run]
    if not meas:
        return []
    med = per_run.groupby(by, sort=False)[meas].median().reset_index()
    med.insert(len(by), "runs", per_run.groupby(by, sort=False).size().to_numpy())
    med.insert(len(by) + 1, "diverged", per_run.groupby(by, sort=False)["diverged"].sum().astype(int).to_numpy())
    med = in_order(med, list(dict.fromkeys(runs[G])))
    if facet:
        med = med.sort_values(P, key=lambda c: c.map({p: i for i, p in enumerate(dict.fromkeys(runs[P]))}), kind="stable")
    per_run.to_csv(w.tab / "tracking_per_run.csv", index=False)
    disp = med.rename(columns={G: "optimizer"})
    sec.add(w.table("tracking", med, display_generic(disp),
                    "Median over runs of the offline error (time-mean of the current error, Branke"
                    + (f", from env-time {fmt(offline_from)} on" if offline_from > 0 else "") + "), best error "
                    "before change, recovery time after a change (time until the error is back at its level before "
                    "the change; inf: not within the period) and the fraction of changes recovered from, and the "
                    "distance to the optimum over the second half of the run."))
    sec.add("Per-run values: tracking_per_run.csv (tables/tracking_per_run.csv).")
    if facet:  # the best tracker of each problem: never a comparison across problems
        return [f"On {p}: {f}" for p, m in med.groupby(P, sort=False) for f in FI.tracking_findings(m)]
    return FI.tracking_findings(med)


def _metrics_section(doc, w, runs, colors, facet=None, facet_order=None, order=None) -> None:
    """One figure per optimizer metric, labelled by its declaration (``evosgd.report.metrics``), with
    only the variants that report it (in the legend too)."""
    mcols = [c for c in runs.columns if c.startswith("m_") and np.isfinite(runs[c].to_numpy(dtype=float)).any()
             and (runs.groupby(G)[c].nunique() > 1).any()]  # a setting that never changes is not a metric
    if not mcols:
        return
    kinds = list(dict.fromkeys(runs["kind"])) if "kind" in runs else []
    sec = Section("Optimizer metrics")
    doc.sections.append(sec)
    dist = [c for c in runs.columns if c.startswith(("m_staleness", "m_idle"))
            and np.isfinite(runs[c].to_numpy(dtype=float)).any()]
    for c in dist:
        nm = f"hist_{slug(c[2:])}"
        if c.startswith("m_staleness") and F.staleness_hist(runs, c, colors, w.fig, nm, xlabel=metric_label(c[2:], kinds)):
            sec.add(Figure(nm, f"Distribution of the {metric_label(c[2:], kinds)} over all records."))
    if dist:
        agg = runs.groupby(G, sort=False)[dist].agg(["mean", "median", "max"])
        agg.columns = [f"{c[2:]} {stat}" for c, stat in agg.columns]
        agg = in_order(agg.reset_index(), list(dict.fromkeys(runs[G])))
        sec.add(w.table("distributed", agg, display_generic(agg.rename(columns={G: "optimizer"})),
                        "Staleness and idle metrics of distributed runs over all records (mean, median, max)."))
    for c in mcols[:8]:
        nm = f"metric_{slug(c[2:])}"
        has = runs.groupby(G)[c].apply(lambda v: np.isfinite(v.to_numpy(dtype=float)).any())
        sub = runs[runs[G].isin(has[has].index)]
        label = metric_label(c[2:], kinds)
        if F.convergence(sub, "cost", c, colors, w.fig, nm, xlabel="cost (sample-evaluations)", ylabel=label,
                         facet=facet, facet_order=facet_order, order=order):
            names = [g for g in (order or list(dict.fromkeys(sub[G]))) if g in set(sub[G])]
            sec.add(Figure(nm, f"{label[0].upper() + label[1:]} vs cost: median and inter-quartile band over "
                               f"replicates ({', '.join(names)}: the optimizers that report it)."))


def theory_section(doc, w, runs) -> dict:
    """Theory beside measurement where the store allows it: the stationary error floor of plain SGD
    (and heavy-ball momentum) on a noisy quadratic (``evosgd.report.theory``), and the measured
    step-size behaviour of the evolution strategies beside it.  Returns ``findings``, ``floor``
    (the table) and ``sigma`` (the step-size table)."""
    out = {"findings": [], "floor": pd.DataFrame(), "sigma": pd.DataFrame()}
    floor = TH.noise_floor_rows(runs)
    if floor.empty:
        return out
    sigma = TH.step_size_rows(runs)
    out.update(floor=floor, sigma=sigma)
    sec = Section("Theory beside measurement")
    doc.sections.append(sec)
    sec.add("SGD on a noisy quadratic settles at an error floor set by its step and batch size: per eigen-direction "
            "of the Hessian (h = 2 lambda) the iterate and its momentum buffer form a linear system driven by the "
            "mini-batch noise of variance sigma^2 h^2 / b, whose stationary covariance solves a discrete Lyapunov "
            "equation; the predicted E[f - f*] is the sum over directions of lambda times the stationary variance "
            "(plain SGD: sum eta sigma^2 lambda^2 / (b (1 - eta lambda)), i.e. eta tr(C) / (4 b) for small eta, "
            "C = sigma^2 H^2 the per-example gradient covariance).  Measured: each replicate's error averaged over "
            "its records after the burn-in ln(1e4) / (-2 ln rho) steps, mean and 95% Student-t interval over "
            "replicates.")
    disp = pd.DataFrame({
        "optimizer": floor["variant"], "lr": floor["lr"].map(fmt), "batch": floor["batch_size"].map(fmt),
        "momentum": floor["momentum"].map(fmt), "predicted floor": floor["predicted"].map(fmt),
        "burn-in steps": floor["burn_in_steps"].map(fmt), "last step": floor["last_step"].map(fmt),
        "measured": floor["measured"].map(fmt),
        "95% CI": [f"[{fmt(a)}, {fmt(b)}]" if np.isfinite(a) else "n/a" for a, b in zip(floor["low"], floor["high"])],
        "median final error": floor["final"].map(fmt), "verdict": floor["verdict"],
    })
    sec.add(w.table("theory_sgd_floor", floor, disp, "SGD's stationary error floor: prediction beside measurement."))
    for _, r in floor.iterrows():
        out["findings"].append(f"Theory: {r['variant']}'s predicted noise floor E[f - f*] = {fmt(r['predicted'])}; "
                               + (f"measured {fmt(r['measured'])} [{fmt(r['low'])}, {fmt(r['high'])}]: "
                                  if np.isfinite(r["measured"]) else "") + f"{r['verdict']}.")
    if not sigma.empty:
        disp = pd.DataFrame({"optimizer": sigma["variant"], "first sigma": sigma["sigma_first"].map(fmt),
                             "last sigma": sigma["sigma_last"].map(fmt), "shrink factor": sigma["shrink"].map(fmt),
                             "median final error": sigma["final_error"].map(fmt)})
        sec.add("The evolution strategies adapt their step size sigma instead: their error is not held at a floor set "
                "by a fixed step, and shrinks as long as selection on the noisy mini-batch fitness still ranks the "
                "offspring correctly.  Measured step-size behaviour:")
        sec.add(w.table("theory_sigma", sigma, disp, "Step size sigma at the first and last record (median over "
                                                     "replicates) and the final error."))
        fl = floor.iloc[int(np.argmin(floor["predicted"].to_numpy(dtype=float)))]
        for _, r in sigma.iterrows():
            if fl["predicted"] > 0 and np.isfinite(r["final_error"]):
                rel = r["final_error"] / fl["predicted"]
                out["findings"].append(
                    f"Theory: {r['variant']} shrank its step size {fmt(r['shrink'])}-fold and ended at a median error "
                    f"{fmt(r['final_error'])}, {fmt(rel)} x the lowest SGD floor ({fl['variant']}, {fmt(fl['predicted'])})"
                    + (": below any floor a fixed-step SGD of these settings can reach." if rel < 1 else "."))
    return out
