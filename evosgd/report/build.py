"""Build the comparison report of one results store: ``index.html`` (self-contained: the
figures inlined), ``report.md``, ``figures/*.svg`` (each figure stored once) and ``tables/*.csv``.

The report reads only what ``load_store`` gives (contract 4: the tidy run table, the manifest,
the analyses) and computes every measure with ``evosgd.analysis``.  It opens with a computed
summary.  The problem is an axis (``evosgd.report.problems``): optimizers are compared as
*variants* (an optimizer label, plus the settings swept within a problem) *within* each problem;
several problems give faceted figures and an 'Across problems' section (``evosgd.report.suite``).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evosgd.analysis import runtime as rt_mod
from evosgd.analysis import statistics as st
from evosgd.analysis.verdict import verdict_lines
from evosgd.report import figures as F
from evosgd.report import findings as FI
from evosgd.report import suite as SU
from evosgd.report import summary as SM
from evosgd.report.document import (
    Document,
    Figure,
    Section,
    Table,
    fmt,
    p_clause,
    write_html,
    write_markdown,
)
from evosgd.report.problems import G, P, add_problems_and_variants, problem_order
from evosgd.report.sections import _drift_section, _metrics_section, theory_section
from evosgd.report.sweeps import (  # noqa: F401 (API)
    SWEEP_PANEL_MEASURE,
    SWEEP_PANEL_MEASURE_NAME,
    _sweep_section,
    problem_sweep_sections,
    sweep_overlays,
)
from evosgd.report.tables import (
    display_ert,
    display_generic,
    display_problems,
    display_quality,
    display_rank,
    display_tests,
    in_order,
    slug,
)


# ----------------------------------------------------------------------------- inputs
def _get(store: Any, name: str, default=None):
    if isinstance(store, dict):
        return store.get(name, default)
    return getattr(store, name, default)


def _sweep_cols(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c.startswith("p_") and runs[c].nunique(dropna=True) > 1]


def add_variants(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Name each run's variant: its label, plus ``[key=value, ...]`` for the swept optimizer keys
    that vary among that label's runs within a problem (see ``evosgd.report.problems``).  Returns
    (runs with ``problem`` and ``variant`` columns, one row per variant with ``variant``,
    ``label`` and those swept columns)."""
    runs, variants, _ = add_problems_and_variants(runs)
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


def _cost_grid(runs: pd.DataFrame, n: int = 150) -> np.ndarray:
    """Log-spaced costs from the first positive recorded cost to the largest (the ECDF's x)."""
    cmax = float(runs["cost"].max())
    cmin = float(runs.loc[runs["cost"] > 0, "cost"].min()) if (runs["cost"] > 0).any() else 1.0
    return np.logspace(np.log10(cmin), np.log10(max(cmax, cmin * 1.0001)), n)


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
    sec_sum = Section("Summary")  # a computed paragraph opens every report
    sec_find = Section("Findings")
    doc.sections += [sec_sum, sec_find]
    summary = ""

    failed = {k: v for k, v in (manifest.get("runs") or {}).items() if v.get("status") == "failed"}
    if failed:
        findings += [f"Run {k} ({v.get('label')}) failed: {v.get('error') or 'no message'}; it is not in "
                     "the figures." for k, v in failed.items()]

    if len(runs):
        run_findings, summary = _runs_sections(doc, w, runs, manifest, analyses)
        findings += run_findings
    else:
        findings.append("The store holds no finished optimizer runs.")
    findings += _analysis_sections(doc, w, analyses)

    sec_sum.add(SM.with_analyses(summary, analyses) if summary else SM.analyses_paragraph(analyses))
    sec_find.add(findings or ["Nothing to report."])
    doc.footer = _provenance(manifest, runs)
    write_markdown(doc, out_dir / "report.md")
    return write_html(doc, out_dir / "index.html", w.fig)


def _runs_sections(doc: Document, w: _Writer, runs: pd.DataFrame, manifest: dict, analyses: list = ()) -> tuple[list[str], str]:
    """The sections computed from the run table; returns (findings, the summary paragraph)."""
    runs, variants, problems = add_problems_and_variants(runs)
    order = list(dict.fromkeys(runs[G]))
    porder = problem_order(runs)
    multi = len(porder) > 1
    facet = P if multi else None
    by = (P, G) if multi else (G,)
    colors = F.palette(order)
    measure = rt_mod.quality_column(runs)
    qname = "loss error" if measure == "error" else "true loss"
    named = bool(manifest.get("targets") or (manifest.get("resolved", {}).get("scenario", {}) or {}).get("targets"))
    targets = {p: _targets(manifest, runs[runs[P] == p], measure) for p in porder}
    findings: list[str] = []
    quality_f: list[str] = []  # the quality findings lead the list
    where = (lambda p: f"On {p}: ") if multi else (lambda p: "")

    if multi:
        sec = Section("Problems")
        doc.sections.append(sec)
        sec.add(f"The study spans {len(porder)} problems (landscapes).  Optimizers are compared within a problem "
                "only: every test, rank and finding below names its problem; the section 'Across problems' aggregates "
                "the way COCO does (runtime ECDF over problems and targets, ERT ratios, mean ranks).  Settings that "
                "change together with the problem are part of the problem's setup:")
        pt = problems.sort_values(P, key=lambda c: c.map({p: i for i, p in enumerate(porder)}), kind="stable")
        sec.add(w.table("problems", pt, display_problems(pt), "Problems (their landscape fields) and the optimizer "
                                                              "settings that change with them."))

    # --- overview and final quality
    finals = rt_mod.final_values(runs, by=by, measure=measure)
    summary = in_order(rt_mod.quality_summary(finals, by=by), order)
    if multi:
        summary = summary.sort_values(P, key=lambda c: c.map({p: i for i, p in enumerate(porder)}), kind="stable")
    n_max = int(summary["runs"].max()) if len(summary) else 0
    sec = Section("Final quality")
    doc.sections.append(sec)
    sec.add(f"Final {qname} of the recommendation at the end of each run (diverged runs count as +inf, the "
            "worst outcome, and are listed).  Median and inter-quartile range over replicates.")
    sec.add(w.table("final_quality", summary, display_quality(summary),
                    f"Final {qname} per optimizer" + (" and problem." if multi else ".")))
    if F.final_quality(finals, colors, w.fig, "final_quality", ylabel=f"final {qname}", order=order, facet=facet, facet_order=porder):
        sec.add(Figure("final_quality", f"Final {qname} per run (box: quartiles)" + (", one panel per problem" if multi
                                                                                     else "")
                       + "; diverged runs are counted under the axis labels."))
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
        if F.convergence(runs, x, measure, colors, w.fig, f"convergence_{x}", xlabel=xl, ylabel=qname, facet=facet, facet_order=porder,
                         order=order):
            sec.add(Figure(f"convergence_{x}", f"{qname.capitalize()} at the recommendation vs {xl}: median "
                                               "over replicates with the inter-quartile band"
                           + (", one panel per problem." if multi else ".")))

    # --- runtime to target
    tests_rt = None
    rts = rts_l = ert = None
    if any(targets.values()):
        sec = Section("Runtime to target")
        doc.sections.append(sec)
        rts = pd.concat([rt_mod.runtimes(runs[runs[P] == p], targets[p], by=by, measure=measure) for p in porder
                         if targets[p]], ignore_index=True)
        ert = in_order(rt_mod.expected_running_time(rts, by=by), order, first="target")
        if multi:
            ert = ert.sort_values(P, key=lambda c: c.map({p: i for i, p in enumerate(porder)}), kind="stable")
        if not named:
            sec.add("The scenario names no targets: these are log-spaced between the median recorded value and the "
                    "best one" + (" of each problem." if multi else "."))
        if measure == "true_loss":
            sec.add("The landscape does not know its optimal loss, so the targets apply to the true loss itself.")
        sec.add(f"Runtime of a run = cost of the first record with {qname} <= target.  ERT = (cost of all "
                "runs until success or their end) / successes (COCO); inf when no run succeeded.  The median "
                "runtime in this table is over the successful runs only (a failed run has no runtime); the test "
                "table below counts a failed run as an infinite runtime instead.")
        sec.add(w.table("runtime", ert, display_ert(ert), "Success rate, median runtime of the successful runs "
                                                          "and ERT per target."))
        ladders = {p: _ecdf_ladder(targets[p]) for p in porder if targets[p]}
        rts_l = pd.concat([rt_mod.runtimes(runs[runs[P] == p], ladders[p], by=by, measure=measure) for p in ladders],
                          ignore_index=True)
        budgets = _cost_grid(runs)
        n_lad = max(len(v) for v in ladders.values())
        ecdf = rt_mod.runtime_ecdf(rts_l, budgets, by=(G,), weight_by=P if multi else None)
        lad_all = sorted({t for v in ladders.values() for t in v})
        if F.runtime_ecdf(ecdf, colors, w.fig, "runtime_ecdf", n_targets=n_lad, order=order):
            sec.add(Figure("runtime_ecdf", "Runtime ECDF: fraction of (run, target) pairs reached by each cost, "
                           + (f"aggregated over the {len(ladders)} problems (each problem weighs the same) and "
                              f"{n_lad} targets per problem" if multi else
                              f"{n_lad} targets from {fmt(max(lad_all))} to {fmt(min(lad_all))}") + "."))
        if multi:
            ecdf_p = rt_mod.runtime_ecdf(rts_l, budgets, by=(P, G))
            if F.runtime_ecdf(ecdf_p, colors, w.fig, "runtime_ecdf_problems", n_targets=n_lad, order=order, facet=P, facet_order=porder):
                sec.add(Figure("runtime_ecdf_problems", "Runtime ECDF per problem (its own target ladder)."))
        if F.ert_per_target(ert, colors, w.fig, "ert", order=order, facet=facet, facet_order=porder):
            sec.add(Figure("ert", "ERT per target (targets never reached are not drawn; see the table)."))
        if n_max >= 2 and len(order) >= 2:
            parts = []
            for p in porder:
                sub_rt = rts[rts[P] == p] if multi else rts
                pair_on = pairing(runs[runs[P] == p])
                p_order = [o for o in order if o in set(sub_rt[G])]
                for t in targets[p]:
                    sub = sub_rt[sub_rt["target"] == t]
                    if not sub["hit"].any() or len(p_order) < 2:
                        continue
                    vals = sub.assign(value=np.where(sub["hit"], sub["runtime"], np.inf))
                    tt = st.pairwise_tests(vals, group=G, order=p_order, pair_on=pair_on)
                    tt.insert(0, "target", t)
                    if multi:
                        tt.insert(0, P, p)
                    parts.append(tt)
            if parts:
                tests_rt = pd.concat(parts, ignore_index=True)
                sec.add(w.table("tests_runtime", tests_rt, display_tests(tests_rt, "failures = inf"),
                                "Pairwise two-sided tests of the runtime to each target (unsuccessful runs rank "
                                "worst: their runtime counts as inf, also in the medians), Holm-corrected within a "
                                "target" + (" and problem" if multi else "") + "; effect A = probability that the "
                                "better optimizer needs less cost (Vargha-Delaney)."))
        for p in porder:
            e = ert[ert[P] == p] if multi else ert
            t_rt = tests_rt[tests_rt[P] == p] if (multi and tests_rt is not None) else tests_rt
            findings += [where(p) + f for f in FI.runtime_findings(e, t_rt, targets[p])]

    # --- statistics on final quality, within each problem
    tests_q = rank = None
    if len(order) >= 2:
        sec = Section("Statistics")
        doc.sections.append(sec)
        if n_max >= 2:
            tq, rk = [], []
            infos = {}
            for p in porder:
                fp = finals[finals[P] == p] if multi else finals
                p_order = [o for o in order if o in set(fp[G])]
                if len(p_order) < 2:
                    continue
                pair_on = pairing(runs[runs[P] == p])
                t = st.pairwise_tests(fp, group=G, value="value", order=p_order, pair_on=pair_on)
                r, info = st.ranking(fp, group=G, value="value", pair_on=pair_on)
                infos[p] = info
                if multi:
                    t.insert(0, P, p)
                    r.insert(0, P, p)
                tq.append(t)
                rk.append(r)
                sp = summary[summary[P] == p] if multi else summary
                quality_f += [where(p) + f for f in FI.quality_findings(sp, t, r, info, qname)]
            tests_q = pd.concat(tq, ignore_index=True) if tq else None
            rank = pd.concat(rk, ignore_index=True) if rk else None
            if tests_q is not None:
                kind = ("paired Wilcoxon signed-rank (replicates share their landscape instance)"
                        if (tests_q["test"] == "wilcoxon").all() else
                        "Mann-Whitney U (the sweep changes the landscape instances: no pairing)"
                        if (tests_q["test"] != "wilcoxon").all() else
                        "Wilcoxon signed-rank where paired, Mann-Whitney U otherwise")
                sec.add(f"Final {qname}: {kind}; Holm correction over the {len(tests_q)} comparisons"
                        + (" of each problem (optimizers are compared within a problem only)" if multi else "")
                        + "; effect A = Vargha-Delaney probability that the better optimizer ends lower.")
                sec.add(w.table("tests_final", tests_q, display_tests(tests_q, "diverged = inf"),
                                f"Pairwise tests of the final {qname}."))
                n_min = int(summary["runs"].min())
                n_cmp = int(tests_q.groupby(P).size().max()) if multi else len(tests_q)
                power = FI.power_findings(n_min, n_cmp, paired=bool((tests_q["test"] == "wilcoxon").all()))
                if power:
                    sec.add(power[0])
                    findings += power
                cap = "Ranking by mean rank of the final value over replicates (1 = best)"
                if not multi:
                    info = next(iter(infos.values()))
                    if info.get("test"):
                        cap += f"; {info['test'].capitalize()} test of no difference: {p_clause(info['p'])}"
                else:
                    cap += ", within each problem"
                sec.add(w.table("ranking", rank, display_rank(rank), cap + "."))
        else:
            sec.add("Statistics unavailable: only one replicate per optimizer.")
            for p in porder:
                sp = summary[summary[P] == p] if multi else summary
                quality_f += [where(p) + f for f in FI.quality_findings(sp, None, None, None, qname)]
    else:
        quality_f += FI.quality_findings(summary, None, None, None, qname)
    findings = quality_f + findings

    # --- across problems (COCO-style aggregation) and fixed-budget views
    agg = None
    if multi:
        agg, agg_find = SU.across_problems(doc, w, runs, ert, rank, summary, order, porder, colors)
        findings += agg_find
    fb = SU.fixed_budget_section(doc, w, runs, rts_l, order, porder, colors, measure, qname, multi)

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
        findings += _drift_section(doc, w, runs, drift, colors, measure, qname, float(burn_in or 0.0), facet=facet, facet_order=porder,
                                   order=order)

    # --- held-out loss and accuracy (landscapes with validation/test data)
    from evosgd.report.generalization import generalization_section
    findings += generalization_section(doc, w, runs, colors)

    # --- sweeps (optimizer settings within a problem; numeric problem parameters as scaling curves)
    flat_targets = sorted({t for v in targets.values() for t in v}, reverse=True)
    if multi:
        findings += problem_sweep_sections(doc, w, runs, variants, finals, flat_targets, measure, colors, analyses)
    else:
        findings += _sweep_section(doc, w, runs, variants, summary, flat_targets, measure, colors, analyses)

    # --- theory beside measurement, distributed / optimizer metrics
    theory = theory_section(doc, w, runs)
    findings += theory["findings"]
    _metrics_section(doc, w, runs, colors, facet=facet, facet_order=porder, order=order)
    summary_text = SM.summary_paragraph(runs, finals, summary, tests_q, rank, agg, fb, theory, qname, order, porder,
                                        budget=float(runs["cost"].max()))
    return findings, summary_text


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
                nm = f"analysis_{slug(aid)}_{i}"
                if F.analysis_quantity(cq, w.fig, nm, title=str(q)):
                    sec.add(Figure(nm, f"{q}: measured (points, {fmt(100 * float(conf))}% CI) against the prediction "
                                       "(line, band)."))
            sec.add(w.table(f"analysis_{slug(aid)}", comp, display_generic(comp), f"{title}: measured vs predicted."))
        for tn, tdf in (a.get("tables") or {}).items():
            sec.add(w.table(f"analysis_{slug(aid)}_{slug(tn)}", tdf, display_generic(tdf), f"{title}: {tn}."))
    return findings


_ABS_PATH = re.compile(r"""(?<![\w.:/-])(?:~|[A-Za-z]:\\|/)[^\s'",;=]*""")


def portable(text: str) -> str:
    """``text`` without machine paths: an absolute path inside the working directory becomes
    relative to it, any other one keeps only its last component (``.../results``)."""
    cwd = Path.cwd()

    def repl(m: re.Match) -> str:
        path = Path(m.group(0)).expanduser()
        try:
            return path.relative_to(cwd).as_posix() or "."
        except ValueError:
            return f".../{path.name}" if path.name else "..."
    return _ABS_PATH.sub(repl, text)


def _provenance(manifest: dict, runs: pd.DataFrame) -> list[tuple[str, str]]:
    """The footer: what made the results (no machine paths: see :func:`portable`)."""
    return [(k, portable(v)) for k, v in _provenance_rows(manifest, runs)]


def _provenance_rows(manifest: dict, runs: pd.DataFrame) -> list[tuple[str, str]]:
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
    from evosgd.run.store import (
        load_store,  # the run layer writes the store; import only when needed
    )

    store = load_store(Path(results_dir))
    if out_dir is None:
        manifest = _get(store, "manifest", {}) or {}
        out_dir = Path("reports") / str(manifest.get("scenario") or Path(results_dir).name)
    return build_report(store, out_dir)
