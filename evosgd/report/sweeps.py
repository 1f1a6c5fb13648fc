"""The sweep section: measures vs an optimizer setting swept within a problem (a curve per
optimizer), with the curves that analyses predict overlaid."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evosgd.analysis import runtime as rt_mod
from evosgd.core.analysis_api import sweep_curves
from evosgd.report import figures as F
from evosgd.report import findings as FI
from evosgd.report.document import Figure, Section, fmt
from evosgd.report.problems import G, P, _short
from evosgd.report.tables import display_generic

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


def _sweep_section(doc, w, runs, variants, summary, targets, measure, colors, analyses=(), title="Sweeps") -> list[str]:
    sweep = [c for c in variants.columns if c.startswith("p_") and variants[c].nunique(dropna=True) > 1]
    if not sweep:
        return []
    sec = Section(title)
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
        xlabel = f"{_short(key).replace('_', ' ')} ({key[2:]})"  # words, and the scenario key it sweeps
        if F.sweep(t, key, ys, "line", label_colors, label_of, w.fig, nm, xlabel=xlabel, overlays=overlays):
            sec.add(Figure(nm, caption))
        if not curves.empty:
            pred = curves.drop(columns=["color", "title"])
            sec.add(w.table(f"{nm}_predicted", pred, display_generic(pred),
                            f"Predicted curves overlaid on the sweep over {key[2:]} (by analysis and measure)."))
            curve_findings = FI.sweep_curve_findings(t, key, "line", curves, SWEEP_PANEL_MEASURE_NAME, _short(key))
        cols = ["line", key] + [c for c, _ in ys] + (["success_rate"] if rt_hard is not None else [])
        raw = t[cols].sort_values(["line", key])
        sec.add(w.table(nm, raw, display_generic(raw.rename(columns={"line": "optimizer", key: _short(key)})),
                        f"Sweep over {key[2:]}."))
        findings += curve_findings
        findings += FI.sweep_findings(t, key, "line", "median", "median final quality", _short(key))
        if rt_hard is not None:
            findings += FI.sweep_findings(t, key, "line", "ert", f"ERT to {fmt(rt_hard)}", _short(key))
    if len(findings) > 8:  # the sweep tables hold the rest
        findings = findings[:8] + [f"... and {len(findings) - 8} more sweep observations in the sweep tables."]
    return findings




def problem_sweep_sections(doc, w, runs, variants, finals, targets, measure, colors, analyses=()) -> list[str]:
    """Sweeps of a study over several problems.  An optimizer setting swept within a problem stays a
    curve, one per (optimizer, problem); a numeric problem parameter (dimension, condition, drift
    speed) is a scaling curve per optimizer, as COCO plots ERT against the dimension.  Settings that
    change only with the problem are no sweep (they are in the problems table)."""
    out = []
    settings = [c for c in variants.columns if c.startswith("p_")]
    if settings:
        r2 = runs.assign(label=runs["label"].astype(str) + " on " + runs[P].astype(str),
                         **{G: runs[G].astype(str) + " on " + runs[P].astype(str)})
        v2 = r2.drop_duplicates(G)[[G, "label"] + settings].reset_index(drop=True)
        f2 = finals.assign(**{G: finals[G].astype(str) + " on " + finals[P].astype(str)})
        summ = rt_mod.quality_summary(f2, by=(G,))
        cols = {g: colors.get(v) for g, v in zip(r2[G], runs[G])}
        out += _sweep_section(doc, w, r2, v2, summ, targets, measure, cols, analyses, title="Sweeps within problems")
    numeric = [c for c in runs.columns if c.startswith("p_landscape") and runs[c].nunique(dropna=True) > 1
               and pd.api.types.is_numeric_dtype(runs[c])]
    if numeric:
        r3 = runs.assign(**{G: runs[G].astype(str) + " on " + runs[P].astype(str)})
        v3 = r3.drop_duplicates(G)[[G, "label"] + numeric].reset_index(drop=True)
        f3 = finals.assign(**{G: finals[G].astype(str) + " on " + finals[P].astype(str)})
        summ = rt_mod.quality_summary(f3, by=(G,))
        cols = {g: colors.get(v) for g, v in zip(r3[G], runs[G])}
        out += _sweep_section(doc, w, r3, v3, summ, targets, measure, cols, analyses, title="Scaling with the problem")
    return out
