"""Build the comparison report of one results store: ``index.html`` (self-contained),
``report.md``, ``figures/*.png|svg`` and ``tables/*.csv``.

The report reads only what ``load_store`` gives (contract 4: the tidy run table, the manifest,
the analyses) and computes every measure with ``evosgd.analysis``.  Optimizers are compared as
*variants*: an optimizer label, plus the swept values when the scenario has a sweep.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evosgd.analysis import runtime as rt_mod
from evosgd.analysis import statistics as st
from evosgd.analysis import tracking as tr
from evosgd.analysis.verdict import verdict_lines
from evosgd.core.analysis_api import sweep_curves
from evosgd.report import figures as F
from evosgd.report import findings as FI
from evosgd.report.document import Document, Figure, Section, Table, fmt, fmt_p, p_clause, write_html, write_markdown

G = "variant"


# ----------------------------------------------------------------------------- inputs
def _get(store: Any, name: str, default=None):
    if isinstance(store, dict):
        return store.get(name, default)
    return getattr(store, name, default)


def _sweep_cols(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c.startswith("p_") and runs[c].nunique(dropna=True) > 1]


def _short(col: str) -> str:
    return col[2:].split(".")[-1]


def add_variants(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Name each run's variant: its label, plus ``[key=value, ...]`` for the swept keys that
    vary among that label's runs.  Returns (runs with a ``variant`` column, one row per variant
    with ``variant``, ``label`` and the swept columns)."""
    runs = runs.copy()
    sweep = _sweep_cols(runs)
    per_run = runs.drop_duplicates("run_id")[["run_id", "label"] + sweep].copy()
    names = {}
    for label, g in per_run.groupby("label", sort=False):
        varying = [c for c in sweep if g[c].nunique(dropna=True) > 1]
        for _, r in g.iterrows():
            parts = [f"{_short(c)}={fmt(r[c])}" for c in varying if pd.notna(r[c])]
            names[r["run_id"]] = f"{label} [{', '.join(parts)}]" if parts else str(label)
    runs[G] = runs["run_id"].map(names)
    per_run[G] = per_run["run_id"].map(names)
    variants = per_run.drop(columns="run_id").drop_duplicates(G).reset_index(drop=True)
    return runs, variants


def pairing(runs: pd.DataFrame) -> str | None:
    """``"replicate"`` (paired tests) unless a swept key changes the landscape instances."""
    return None if any(c.startswith(("p_landscape", "p_scenario")) for c in _sweep_cols(runs)) else "replicate"


def _targets(manifest: dict, runs: pd.DataFrame, measure: str) -> list[float]:
    t = manifest.get("targets") or (manifest.get("resolved", {}).get("scenario", {}) or {}).get("targets")
    if t:
        return sorted({float(x) for x in t}, reverse=True)
    v = runs[measure].to_numpy(dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return []
    return [float(x) for x in rt_mod.target_ladder(v.min(), np.median(v), 5)]


def _ecdf_ladder(targets: list[float]) -> list[float]:
    """Targets of the runtime ECDF: the scenario's targets plus 3 log-spaced per decade
    between the easiest and the hardest (COCO/IOHprofiler aggregate over a target ladder)."""
    pos = [t for t in targets if t > 0]
    if len(pos) < 2:
        return list(targets)
    hi, lo = max(pos), min(pos)
    n = max(2, int(round(3 * np.log10(hi / lo))) + 1)
    return sorted(set(np.logspace(np.log10(hi), np.log10(lo), n).tolist()) | set(targets), reverse=True)


# ----------------------------------------------------------------------------- tables
def _in_order(df: pd.DataFrame, order: list[str], first: str | None = None) -> pd.DataFrame:
    """Rows in the scenario's optimizer order (after ``first`` descending, e.g. easy targets first)."""
    key = df[G].map({v: i for i, v in enumerate(order)})
    cols = ([first] if first else []) + ["_order"]
    return (df.assign(_order=key).sort_values(cols, ascending=[False] * bool(first) + [True], kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def _display_quality(summary: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "optimizer": summary[G],
        "runs": summary["runs"].astype(int),
        "diverged": summary["diverged"].astype(int),
        "median": summary["median"].map(fmt),
        "IQR": [f"[{fmt(a)}, {fmt(b)}]" for a, b in zip(summary["q25"], summary["q75"])],
        "best": summary["best"].map(fmt),
        "worst": summary["worst"].map(fmt),
    })


def _display_ert(ert: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "optimizer": ert[G],
        "target": ert["target"].map(fmt),
        "successes": [f"{int(s)}/{int(n)}" for s, n in zip(ert["successes"], ert["runs"])],
        "success rate": ert["success_rate"].map(lambda v: fmt(100 * v) + "%"),
        "median runtime": ert["median_runtime"].map(fmt),
        "ERT": ert["ert"].map(fmt),
    })


def _display_tests(t: pd.DataFrame) -> pd.DataFrame:
    d = pd.DataFrame({
        "optimizer 1": t["a"], "optimizer 2": t["b"], "test": t["test"], "n": t["n"].astype(int),
        "median 1": t["median_a"].map(fmt), "median 2": t["median_b"].map(fmt),
        "p": t["p"].map(fmt_p), "p (Holm)": t["p_holm"].map(fmt_p),
        "better": t["better"], "effect A": t["A"].map(fmt),
    })
    if "target" in t.columns:
        d.insert(0, "target", t["target"].map(fmt))
    return d


def _display_rank(rank: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"rank": rank["rank"], "optimizer": rank[G], "mean rank": rank["mean_rank"].map(fmt),
                         "median": rank["median"].map(fmt), "runs": rank["runs"]})


def _display_generic(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(lambda col: col.map(fmt) if col.dtype != object else col.astype(str))


# ----------------------------------------------------------------------------- the report
class _Writer:
    def __init__(self, out_dir: Path):
        self.out = out_dir
        self.fig = out_dir / "figures"
        self.tab = out_dir / "tables"
        for d in (self.fig, self.tab):  # out_dir is a fresh temporary folder (see build_report)
            d.mkdir(parents=True, exist_ok=True)

    def table(self, name: str, raw: pd.DataFrame, display: pd.DataFrame, caption: str) -> Table:
        raw.to_csv(self.tab / f"{name}.csv", index=False)
        return Table(name, display.reset_index(drop=True), caption)


def build_report(store: Any, out_dir: str | Path) -> Path:
    """Write the report of ``store`` (anything with ``runs``, ``manifest``, ``analyses``: a
    ``StoreData`` or a dict) into ``out_dir``; returns the path of ``index.html``.

    The report is built in a temporary folder beside ``out_dir`` and swapped in
    (:func:`evosgd.report.safe_write.swap_in`): a failed build leaves the previous report as it
    was, and only files an earlier report wrote are ever removed from ``out_dir``."""
    from evosgd.report.safe_write import building

    out_dir = Path(out_dir)
    with building(out_dir) as tmp:
        index = _build_into(store, tmp)
    return out_dir / index.relative_to(tmp)


def _build_into(store: Any, out_dir: Path) -> Path:
    w = _Writer(out_dir)
    manifest: dict = _get(store, "manifest", {}) or {}
    analyses: list = _get(store, "analyses", []) or []
    runs: pd.DataFrame = _get(store, "runs", None)
    if runs is None:
        runs = pd.DataFrame()
    name = manifest.get("scenario") or (runs["scenario"].iloc[0] if "scenario" in runs and len(runs) else "scenario")

    doc = Document(title=f"evosgd report: {name}", subtitle=str(manifest.get("description") or ""))
    findings: list[str] = []
    sec_find = Section("Findings")
    doc.sections.append(sec_find)

    failed = {k: v for k, v in (manifest.get("runs") or {}).items() if v.get("status") == "failed"}
    if failed:
        findings += [f"Run {k} ({v.get('label')}) failed: {v.get('error') or 'no message'}; it is not in "
                     "the figures." for k, v in failed.items()]

    if len(runs):
        findings += _runs_sections(doc, w, runs, manifest, analyses)
    else:
        findings.append("The store holds no finished optimizer runs.")
    findings += _analysis_sections(doc, w, analyses)

    sec_find.add(findings or ["Nothing to report."])
    doc.footer = _provenance(manifest, runs)
    write_markdown(doc, out_dir / "report.md")
    return write_html(doc, out_dir / "index.html", w.fig)


def _runs_sections(doc: Document, w: _Writer, runs: pd.DataFrame, manifest: dict, analyses: list = ()) -> list[str]:
    runs, variants = add_variants(runs)
    order = list(dict.fromkeys(runs[G]))
    colors = F.palette(order)
    measure = rt_mod.quality_column(runs)
    qname = "loss error" if measure == "error" else "true loss"
    targets = _targets(manifest, runs, measure)
    findings: list[str] = []
    # Replicate r of every optimizer meets the same landscape instance (DESIGN, contract 2): paired
    # tests.  A sweep over the landscape or the scenario itself changes the instances: unpaired.
    pair_on = pairing(runs)

    # --- overview and final quality
    finals = rt_mod.final_values(runs, by=(G,), measure=measure)
    summary = _in_order(rt_mod.quality_summary(finals, by=(G,)), order)
    n_max = int(summary["runs"].max()) if len(summary) else 0
    sec = Section("Final quality")
    doc.sections.append(sec)
    sec.add(f"Final {qname} of the recommendation at the end of each run (diverged runs count as +inf, the "
            "worst outcome, and are listed).  Median and inter-quartile range over replicates.")
    sec.add(w.table("final_quality", summary, _display_quality(summary), f"Final {qname} per optimizer."))
    if F.final_quality(finals, colors, w.fig, "final_quality", ylabel=f"final {qname}", order=order):
        sec.add(Figure("final_quality", f"Final {qname} per run (box: quartiles); diverged runs are counted "
                                        "under the axis labels."))
    findings += FI.divergence_findings(summary)
    findings += FI.replicate_findings(n_max)

    # --- convergence
    sec = Section("Convergence")
    doc.sections.append(sec)
    for x, xl in (("cost", "cost (sample-evaluations)"), ("sim_time", "simulated time"), ("wall_time", "wall time [s]")):
        if x not in runs or not np.isfinite(runs[x]).any() or runs[x].nunique() < 2:
            continue
        if x == "sim_time" and runs[x].equals(runs["cost"]):
            continue
        if F.convergence(runs, x, measure, colors, w.fig, f"convergence_{x}", xlabel=xl, ylabel=qname):
            sec.add(Figure(f"convergence_{x}", f"{qname.capitalize()} at the recommendation vs {xl}: median "
                                               f"over replicates with the inter-quartile band."))

    # --- runtime to target
    tests_rt = None
    if targets:
        sec = Section("Runtime to target")
        doc.sections.append(sec)
        rts = rt_mod.runtimes(runs, targets, by=(G,), measure=measure)
        ert = _in_order(rt_mod.expected_running_time(rts, by=(G,)), order, first="target")
        if not (manifest.get("targets") or (manifest.get("resolved", {}).get("scenario", {}) or {}).get("targets")):
            sec.add("The scenario names no targets: these are log-spaced between the median recorded value and the "
                    "best one.")
        if measure == "true_loss":
            sec.add("The landscape does not know its optimal loss, so the targets apply to the true loss itself.")
        sec.add(f"Runtime of a run = cost of the first record with {qname} <= target.  ERT = (cost of all "
                "runs until success or their end) / successes (COCO); inf when no run succeeded.")
        sec.add(w.table("runtime", ert, _display_ert(ert), "Success rate, median runtime of the successful runs "
                                                           "and ERT per target."))
        ladder = _ecdf_ladder(targets)
        rts_l = rt_mod.runtimes(runs, ladder, by=(G,), measure=measure)
        cmax = float(runs["cost"].max())
        cmin = float(runs.loc[runs["cost"] > 0, "cost"].min()) if (runs["cost"] > 0).any() else 1.0
        budgets = np.logspace(np.log10(cmin), np.log10(max(cmax, cmin * 1.0001)), 150)
        ecdf = rt_mod.runtime_ecdf(rts_l, budgets, by=(G,))
        if F.runtime_ecdf(ecdf, colors, w.fig, "runtime_ecdf", n_targets=len(ladder)):
            sec.add(Figure("runtime_ecdf", f"Runtime ECDF: fraction of (run, target) pairs reached by each cost, "
                                           f"{len(ladder)} targets from {fmt(max(ladder))} to {fmt(min(ladder))}."))
        if F.ert_per_target(ert, colors, w.fig, "ert"):
            sec.add(Figure("ert", "ERT per target (targets never reached are not drawn; see the table)."))
        if n_max >= 2 and len(order) >= 2:
            parts = []
            for t in targets:
                sub = rts[rts["target"] == t]
                if not sub["hit"].any():
                    continue
                vals = sub.assign(value=np.where(sub["hit"], sub["runtime"], np.inf))
                tt = st.pairwise_tests(vals, group=G, order=order, pair_on=pair_on)
                tt.insert(0, "target", t)
                parts.append(tt)
            if parts:
                tests_rt = pd.concat(parts, ignore_index=True)
                sec.add(w.table("tests_runtime", tests_rt, _display_tests(tests_rt),
                                "Pairwise two-sided tests of the runtime to each target (unsuccessful runs rank "
                                "worst), Holm-corrected within a target; effect A = probability that the better "
                                "optimizer needs less cost (Vargha-Delaney)."))
        findings += FI.runtime_findings(ert, tests_rt, targets)

    # --- statistics on final quality
    tests_q = rank = rank_info = None
    if len(order) >= 2:
        sec = Section("Statistics")
        doc.sections.append(sec)
        if n_max >= 2:
            tests_q = st.pairwise_tests(finals, group=G, value="value", order=order, pair_on=pair_on)
            kind = ("paired Wilcoxon signed-rank (replicates share their landscape instance)"
                    if (tests_q["test"] == "wilcoxon").all() else
                    "Mann-Whitney U (the sweep changes the landscape instances: no pairing)" if pair_on is None else
                    "Wilcoxon signed-rank where paired, Mann-Whitney U otherwise")
            sec.add(f"Final {qname}: {kind}; Holm correction over the {len(tests_q)} comparisons; effect A = "
                    "Vargha-Delaney probability that the better optimizer ends lower.")
            sec.add(w.table("tests_final", tests_q, _display_tests(tests_q), f"Pairwise tests of the final {qname}."))
            n_min = int(summary["runs"].min())
            power = FI.power_findings(n_min, len(tests_q), paired=bool((tests_q["test"] == "wilcoxon").all()))
            if power:
                sec.add(power[0])
                findings += power
            rank, rank_info = st.ranking(finals, group=G, value="value", pair_on=pair_on)
            cap = "Ranking by mean rank of the final value over replicates (1 = best)"
            if rank_info.get("test"):
                cap += f"; {rank_info['test'].capitalize()} test of no difference: {p_clause(rank_info['p'])}"
            sec.add(w.table("ranking", rank, _display_rank(rank), cap + "."))
        else:
            sec.add("Statistics unavailable: only one replicate per optimizer.")
    findings = FI.quality_findings(summary, tests_q, rank, rank_info, qname) + findings

    # --- drift
    land = manifest.get("landscape") or {}
    drift = land.get("drift")
    lparams = land.get("params") or {}
    if not drift and ("change_every" in lparams or land.get("kind") == "moving_peaks"):
        # a landscape that changes by itself (Moving Peaks): its own change period drives the measures
        drift = {"kind": land.get("kind"), **{k: v for k, v in lparams.items() if k in ("change_every", "change_times")}}
    if drift:
        burn_in = manifest.get("offline_error_from")
        if burn_in is None:
            burn_in = ((manifest.get("resolved") or {}).get("scenario") or {}).get("offline_error_from", 0.0)
        findings += _drift_section(doc, w, runs, drift, colors, measure, qname, float(burn_in or 0.0))

    # --- held-out loss and accuracy (landscapes with validation/test data)
    from evosgd.report.generalization import generalization_section
    findings += generalization_section(doc, w, runs, colors)

    # --- sweeps
    findings += _sweep_section(doc, w, runs, variants, summary, targets, measure, colors, analyses)

    # --- distributed / optimizer metrics
    _metrics_section(doc, w, runs, colors)
    return findings


def _drift_section(doc, w, runs, drift, colors, measure, qname, offline_from: float = 0.0) -> list[str]:
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
                             vlines=changes, log_x=False, points=400):
                sec.add(Figure(nm, f"{yl.capitalize()} vs environment time: median and inter-quartile band."))
    per_run = tr.tracking_table(runs, change_times=changes, drift_speed=speed, by=(G,),
                                drift=drift if isinstance(drift, dict) else None, offline_from=offline_from)
    meas = [c for c in ("offline_error", "best_error_before_change", "median_recovery_time", "recovered",
                        "tracking_distance", "tracking_lag") if c in per_run]
    if not meas:
        return []
    med = per_run.groupby(G, sort=False)[meas].median().reset_index()
    med.insert(1, "runs", per_run.groupby(G, sort=False).size().to_numpy())
    med.insert(2, "diverged", per_run.groupby(G, sort=False)["diverged"].sum().astype(int).to_numpy())
    med = _in_order(med, list(dict.fromkeys(runs[G])))
    per_run.to_csv(w.tab / "tracking_per_run.csv", index=False)
    disp = med.rename(columns={G: "optimizer"})
    sec.add(w.table("tracking", med, _display_generic(disp),
                    "Median over runs of the offline error (time-mean of the current error, Branke"
                    + (f", from env-time {fmt(offline_from)} on" if offline_from > 0 else "") + "), best error "
                    "before change, recovery time after a change (time until the error is back at its level before "
                    "the change; inf: not within the period) and the fraction of changes recovered from, and the "
                    "distance to the optimum over the second half of the run."))
    sec.add("Per-run values: tracking_per_run.csv (tables/tracking_per_run.csv).")
    return FI.tracking_findings(med)


#: the sweep panel columns and the measure (``evosgd.core.analysis_api.SWEEP_MEASURES``) each one draws;
#: an analysis row with ``sweep_measure`` m is overlaid on the panel of column SWEEP_PANEL_MEASURE^-1[m]
SWEEP_PANEL_MEASURE = {"median": "final_quality", "ert": "cost_to_target", "ert_steps": "steps_to_target"}


def sweep_overlays(analyses: list, key: str, swept: np.ndarray, target: float | None,
                   colors_by_label: dict) -> tuple[pd.DataFrame, list[str]]:
    """The predicted curves that analyses supply for the sweep over ``key`` (a run-table column
    ``p_<dotted key>``): one row per (analysis, measure, x) with ``analysis``, ``title``,
    ``measure``, ``panel`` (the sweep table column), ``sweep_key``, ``x``, ``predicted``,
    ``predicted_low``, ``predicted_high``, ``sweep_target``, ``color`` -- limited to the swept
    range of x, and for the runtime measures to the panel's ``target`` (NaN in the row: any).
    Also returns sentences for the caption about curves left out (another target)."""
    dotted = key[2:]
    panel_of = {m: c for c, m in SWEEP_PANEL_MEASURE.items()}
    parts, skipped = [], []
    # a categorical sweep (e.g. batch composition "random" / "hard_negatives") has no curve to draw
    xs = pd.to_numeric(pd.Series(swept), errors="coerce").to_numpy(dtype=float)
    xs = xs[np.isfinite(xs)]
    parts_of_key = dotted.split(".")
    color = colors_by_label.get(parts_of_key[1]) if len(parts_of_key) > 2 and parts_of_key[0] == "optimizer" else None
    for a in analyses:
        rows = sweep_curves(a.get("comparison"), dotted)
        if rows.empty or xs.size == 0:
            continue
        label = str(a.get("label") or a.get("id"))
        for m, r in rows.groupby("sweep_measure", sort=False):
            if m not in panel_of:
                continue
            if m != "final_quality":
                tgt = r["sweep_target"].to_numpy(dtype=float)
                if target is None:
                    skipped.append(f"analysis {label!r} predicts {m.replace('_', ' ')}, but no swept run reached a "
                                   "target: its curve is not drawn.")
                    continue
                ok = np.isnan(tgt) | np.isclose(tgt, target, rtol=1e-9, atol=0.0)
                if not ok.any():
                    skipped.append(f"analysis {label!r} predicts {m.replace('_', ' ')} to {fmt(float(np.nanmin(tgt)))}, "
                                   f"not to {fmt(target)} (the hardest target the swept runs reached): its curve is not drawn.")
                    continue
                r = r[ok]
            x = r["x"].to_numpy(dtype=float)
            inside = (x >= xs.min() * (1 - 1e-9)) & (x <= xs.max() * (1 + 1e-9)) & np.isfinite(r["predicted"].to_numpy(dtype=float))
            r = r[inside]
            if r.empty:
                continue
            parts.append(pd.DataFrame({
                "analysis": label, "title": str(a.get("title") or label), "measure": m, "panel": panel_of[m],
                "sweep_key": dotted, "x": r["x"].to_numpy(dtype=float), "predicted": r["predicted"].to_numpy(dtype=float),
                "predicted_low": r["predicted_low"].to_numpy(dtype=float),
                "predicted_high": r["predicted_high"].to_numpy(dtype=float),
                "sweep_target": r["sweep_target"].to_numpy(dtype=float), "color": [color] * len(r),
            }))
    cols = ["analysis", "title", "measure", "panel", "sweep_key", "x", "predicted", "predicted_low", "predicted_high",
            "sweep_target", "color"]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    return out.sort_values(["analysis", "measure", "x"], kind="stable").reset_index(drop=True), skipped


SWEEP_PANEL_MEASURE_NAME = {"final_quality": "final quality", "cost_to_target": "cost to target (ERT)",
                            "steps_to_target": "steps to target (ERT)"}


def _sweep_section(doc, w, runs, variants, summary, targets, measure, colors, analyses=()) -> list[str]:
    sweep = [c for c in variants.columns if c.startswith("p_") and variants[c].nunique(dropna=True) > 1]
    if not sweep:
        return []
    sec = Section("Sweeps")
    doc.sections.append(sec)
    findings = []
    base = variants.merge(summary[[G, "median"]], on=G, how="left")
    rt_hard = None
    if targets:
        rts = rt_mod.runtimes(runs, targets, by=(G,), measure=measure)
        ert = rt_mod.expected_running_time(rts, by=(G,))
        reached = ert[ert["successes"] > 0]
        if not reached.empty:
            rt_hard = float(reached["target"].min())
            base = base.merge(ert[ert["target"] == rt_hard][[G, "ert", "success_rate"]], on=G, how="left")
            steps = rt_mod.expected_running_time(rt_mod.runtimes(runs, [rt_hard], by=(G,), measure=measure, cost="step"),
                                                 by=(G,))
            base = base.merge(steps[[G, "ert"]].rename(columns={"ert": "ert_steps"}), on=G, how="left")
    label_colors = {}
    for lab in dict.fromkeys(variants["label"]):
        first = variants.loc[variants["label"] == lab, G].iloc[0]
        label_colors[lab] = colors[first]
    for key in sweep:
        others = [c for c in sweep if c != key]
        t = base[base[key].notna()].copy()
        t["line"] = [str(r["label"]) + (" [" + ", ".join(f"{_short(c)}={fmt(r[c])}" for c in others if pd.notna(r[c])) + "]"
                                        if any(pd.notna(r[c]) for c in others) else "")
                     for _, r in t.iterrows()]
        label_of = dict(zip(t["line"], t["label"]))
        ys = [("median", f"median final {'loss error' if measure == 'error' else 'true loss'}")]
        if rt_hard is not None:
            ys += [("ert", f"ERT (cost) to {fmt(rt_hard)}"), ("ert_steps", f"ERT (steps) to {fmt(rt_hard)}")]
        nm = f"sweep_{_short(key)}"
        curve_findings: list[str] = []
        curves, skipped = sweep_overlays(list(analyses), key, t[key].to_numpy(), rt_hard, label_colors)
        curves = curves[curves["panel"].isin([c for c, _ in ys])]
        overlays: dict[str, list[dict]] = {}
        for (an, panel), cv in curves.groupby(["analysis", "panel"], sort=False):
            band = cv[["predicted_low", "predicted_high"]].notna().all(axis=1).any()
            c0 = cv["color"].iloc[0]
            overlays.setdefault(panel, []).append(dict(
                label=f"{an} (predicted)", x=cv["x"], y=cv["predicted"], color=c0 if c0 is not None else "0.25",
                low=cv["predicted_low"] if band else None, high=cv["predicted_high"] if band else None))
        caption = (f"Median final quality and expected cost / steps to the hardest target reached, vs "
                   f"{key[2:]}.")
        if not curves.empty:
            names = {m: SWEEP_PANEL_MEASURE_NAME[m] for m in dict.fromkeys(curves["measure"])}
            per = "; ".join(f"analysis {an!r} ({cv['title'].iloc[0]}): "
                            + ", ".join(names[m] for m in dict.fromkeys(cv["measure"]))
                            for an, cv in curves.groupby("analysis", sort=False))
            caption += (f"  Dashed lines (and bands): the curves predicted by {per}, computed by the analysis from its "
                        "own measurement (see its section and its notes for what it fitted), drawn in the colour of "
                        "the swept optimizer over the swept range.")
        if skipped:
            caption += "  " + " ".join(skipped)
        if F.sweep(t, key, ys, "line", label_colors, label_of, w.fig, nm, xlabel=key[2:], overlays=overlays):
            sec.add(Figure(nm, caption))
        if not curves.empty:
            pred = curves.drop(columns=["color", "title"])
            sec.add(w.table(f"{nm}_predicted", pred, _display_generic(pred),
                            f"Predicted curves overlaid on the sweep over {key[2:]} (by analysis and measure)."))
            curve_findings = FI.sweep_curve_findings(t, key, "line", curves, SWEEP_PANEL_MEASURE_NAME, _short(key))
        cols = ["line", key] + [c for c, _ in ys] + (["success_rate"] if rt_hard is not None else [])
        raw = t[cols].sort_values(["line", key])
        sec.add(w.table(nm, raw, _display_generic(raw.rename(columns={"line": "optimizer", key: _short(key)})),
                        f"Sweep over {key[2:]}."))
        findings += curve_findings
        findings += FI.sweep_findings(t, key, "line", "median", "median final quality", _short(key))
        if rt_hard is not None:
            findings += FI.sweep_findings(t, key, "line", "ert", f"ERT to {fmt(rt_hard)}", _short(key))
    if len(findings) > 8:  # the sweep tables hold the rest
        findings = findings[:8] + [f"... and {len(findings) - 8} more sweep observations in the sweep tables."]
    return findings


def _metrics_section(doc, w, runs, colors) -> None:
    mcols = [c for c in runs.columns if c.startswith("m_") and np.isfinite(runs[c].to_numpy(dtype=float)).any()
             and (runs.groupby(G)[c].nunique() > 1).any()]  # a setting that never changes is not a metric
    if not mcols:
        return
    sec = Section("Optimizer metrics")
    doc.sections.append(sec)
    dist = [c for c in runs.columns if c.startswith(("m_staleness", "m_idle"))
            and np.isfinite(runs[c].to_numpy(dtype=float)).any()]
    for c in dist:
        nm = f"hist_{_slug(c[2:])}"
        if c.startswith("m_staleness") and F.staleness_hist(runs, c, colors, w.fig, nm):
            sec.add(Figure(nm, f"Distribution of {c[2:]} over all records."))
    if dist:
        agg = runs.groupby(G, sort=False)[dist].agg(["mean", "median", "max"])
        agg.columns = [f"{c[2:]} {stat}" for c, stat in agg.columns]
        agg = _in_order(agg.reset_index(), list(dict.fromkeys(runs[G])))
        sec.add(w.table("distributed", agg, _display_generic(agg.rename(columns={G: "optimizer"})),
                        "Staleness and idle metrics of distributed runs over all records (mean, median, max)."))
    for c in mcols[:8]:
        nm = f"metric_{_slug(c[2:])}"
        if F.convergence(runs, "cost", c, colors, w.fig, nm, xlabel="cost (sample-evaluations)", ylabel=c[2:]):
            sec.add(Figure(nm, f"{c[2:]} vs cost: median and inter-quartile band over replicates."))


def _analysis_sections(doc: Document, w: _Writer, analyses: list) -> list[str]:
    findings = []
    for a in analyses:
        aid = str(a.get("id") or a.get("label"))
        title = a.get("title") or a.get("label") or aid
        sec = Section(f"Analysis: {title}")
        doc.sections.append(sec)
        notes = [str(n) for n in (a.get("notes") or [])]
        verdicts = verdict_lines((a.get("tables") or {}).get("verdicts"))
        if verdicts:  # one computed line per claim, first in the section and all in the findings
            sec.add(verdicts)
        if notes:  # the analysis' own computed sentences lead its section
            sec.add(notes)
            findings += [f"{title}: {n}" for n in notes[:3]]
        findings += [f"{title}: {v}" for v in verdicts]
        conf = a.get("confidence", 0.95)
        comp: pd.DataFrame = a.get("comparison")
        if comp is None or comp.empty:
            sec.add("This analysis produced no comparison table.")
        else:
            for i, (q, cq) in enumerate(comp.groupby("quantity", sort=False)):
                nm = f"analysis_{_slug(aid)}_{i}"
                if F.analysis_quantity(cq, w.fig, nm, title=str(q)):
                    sec.add(Figure(nm, f"{q}: measured (points, {fmt(100 * float(conf))}% CI) against the prediction "
                                       "(line, band)."))
            sec.add(w.table(f"analysis_{_slug(aid)}", comp, _display_generic(comp), f"{title}: measured vs predicted."))
        for tn, tdf in (a.get("tables") or {}).items():
            sec.add(w.table(f"analysis_{_slug(aid)}_{_slug(tn)}", tdf, _display_generic(tdf), f"{title}: {tn}."))
    return findings


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(s)).strip("_")[:60] or "x"


def _provenance(manifest: dict, runs: pd.DataFrame) -> list[tuple[str, str]]:
    p = manifest.get("provenance") or {}
    rows = [("scenario", str(manifest.get("scenario", "?"))),
            ("scenario file", str(manifest.get("source_file", "n/a"))),
            ("quick mode", fmt(bool(manifest.get("quick", False)))),
            ("seed", str(manifest.get("seed", "n/a"))),
            ("replicates", str(manifest.get("replicates", runs["replicate"].nunique() if "replicate" in runs else "n/a")))]
    if "seed" in runs and len(runs):
        seeds = sorted(runs["seed"].dropna().unique().tolist())
        rows.append(("replicate seeds", ", ".join(str(int(s)) for s in seeds[:12]) + (" ..." if len(seeds) > 12 else "")))
    if manifest.get("landscape"):
        rows.append(("landscape", json.dumps(manifest["landscape"], sort_keys=True, default=str)))
    rows.append(("grad_cost", str(manifest.get("grad_cost", "n/a"))))
    for k in ("evosgd", "python", "torch", "numpy", "deap", "platform", "device", "git_revision", "created", "command"):
        if k in p:
            rows.append((k, str(p[k])))
    rows.append(("report generated", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    return rows


def report_from_store(results_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Load the store at ``results_dir`` and build its report, by default in
    ``reports/<scenario>/`` (relative to the working directory)."""
    from evosgd.run.store import load_store  # the run layer writes the store; import only when needed

    store = load_store(Path(results_dir))
    if out_dir is None:
        manifest = _get(store, "manifest", {}) or {}
        out_dir = Path("reports") / str(manifest.get("scenario") or Path(results_dir).name)
    return build_report(store, out_dir)
