"""Views that aggregate across problems the way COCO does (ERT ratios per problem, mean ranks
over problems, the runtime ECDF area), and the fixed-budget views beside the fixed-target ones."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evosgd.analysis import runtime as rt_mod
from evosgd.analysis import statistics as st
from evosgd.report import figures as F
from evosgd.report.document import Figure, Section, fmt, p_clause
from evosgd.report.problems import G, P
from evosgd.report.tables import display_generic, in_order


def _display_ratios(er: pd.DataFrame, order: list[str], porder: list[str]) -> pd.DataFrame:
    """Rows (problem, target) where someone succeeded; a column per optimizer: ratio (successes)."""
    rows = []
    for (p, t), g in er.groupby([P, "target"], sort=False):
        if not np.isfinite(g["best_ert"]).any():
            continue
        row = {"problem": p, "target": fmt(t), "best ERT": fmt(float(g["best_ert"].iloc[0]))}
        for o in order:
            r = g[g[G] == o]
            row[o] = "" if r.empty else f"{fmt(float(r['ratio'].iloc[0]))} ({int(r['successes'].iloc[0])}/{int(r['runs'].iloc[0])})"
        rows.append(row)
    d = pd.DataFrame(rows)
    if d.empty:
        return d
    d["_p"] = d["problem"].map({p: i for i, p in enumerate(porder)})
    return d.sort_values("_p", kind="stable").drop(columns="_p").reset_index(drop=True)


def across_problems(doc, w, runs, ert, rank, summary, order, porder, colors) -> tuple[dict, list[str]]:
    """The 'Across problems' section; returns ({"ranks", "rank_info", "ratios"}, findings)."""
    sec = Section("Across problems")
    doc.sections.append(sec)
    out: dict = {}
    findings: list[str] = []
    sec.add("Aggregation over problems as COCO does it: every comparison is made within a problem, then summarised "
            "(ratios to the best optimizer of each problem, ranks averaged over problems, the runtime ECDF with every "
            "problem weighing the same).  Nothing here compares values of different problems directly.")
    if ert is not None and not ert.empty:
        er = rt_mod.ert_ratios(ert, group=G, problem=P)
        out["ratios"] = er
        disp = _display_ratios(er, order, porder)
        if not disp.empty:
            sec.add(w.table("ert_ratios", er, disp, "ERT ratio per problem (function and dimension) and target: ERT of "
                            "the optimizer / the lowest ERT on that problem and target (1 = the best; inf = never "
                            "reached), with successes / runs."))
    # mean rank over problems, from each problem's median final quality (a rank per problem)
    if rank is not None and not rank.empty:
        per = rank[[P, G, "mean_rank"]]
        score = "mean_rank"
    else:
        per = summary[[P, G, "median"]]
        score = "median"
    agg, info = st.aggregate_ranks(per, group=G, problem=P, score=score)
    agg = in_order(agg, order).sort_values("mean_rank", kind="stable").reset_index(drop=True)
    agg["rank"] = np.arange(1, len(agg) + 1)
    out.update(ranks=agg, rank_info=info)
    cap = ("Rank aggregation over problems: on each problem the optimizers are ranked by their within-problem mean rank "
           "over replicates (ties averaged), then the ranks are averaged over problems; wins = problems where the "
           "optimizer ranks first (a tie shares the win)")
    if info.get("test"):
        cap += f"; Friedman test over problems as blocks: {p_clause(info['p'])}"
    sec.add(w.table("rank_aggregation", agg, display_generic(agg.rename(columns={G: "optimizer"})), cap + "."))
    best = agg.iloc[0]
    sent = (f"Across the {len(porder)} problems, {best[G]} has the best mean rank ({fmt(best['mean_rank'])} of "
            f"{len(agg)}; first on {fmt(best['wins'])} of {int(best['problems'])} problems)")
    if len(agg) > 1:
        sent += f", then {agg.iloc[1][G]} ({fmt(agg.iloc[1]['mean_rank'])})"
    if info.get("test") and np.isfinite(info.get("p", np.nan)):
        sent += f"; Friedman test over problems {p_clause(info['p'])}" + ("" if info["p"] < 0.05 else
                                                                          ", not significant at 0.05")
    findings.append(sent + ".")
    return out, findings


def fixed_budget_section(doc, w, runs, rts_l, order, porder, colors, measure, qname, multi) -> dict:
    """Fixed-budget views: the quality reached at a ladder of budgets (per problem, and as mean
    ranks over problems when several), and the area under the runtime ECDF.  Returns
    {"budgets", "values", "table", "auc"}."""
    cmax = float(runs["cost"].max())
    pos = runs.loc[runs["cost"] > 0, "cost"]
    if pos.empty or cmax <= 0:
        return {}
    cmin = float(pos.min())
    budgets = rt_mod.budget_ladder(cmin, cmax)
    by = (P, G) if multi else (G,)
    vals = rt_mod.quality_at_budgets(runs, budgets, by=by, measure=measure)
    parts = []
    for b in budgets:
        s = rt_mod.quality_summary(vals[vals["budget"] == b], by=by)
        s.insert(len(by), "budget", b)
        parts.append(s)
    table = pd.concat(parts, ignore_index=True)
    table = in_order(table, order)
    keys = ([P] if multi else []) + ["budget"]
    if multi:
        table["_p"] = table[P].map({p: i for i, p in enumerate(porder)})
        keys = ["_p", "budget"]
    table = table.sort_values(keys, kind="stable").drop(columns=[c for c in ["_p"] if c in table]).reset_index(drop=True)
    sec = Section("Fixed budget")
    doc.sections.append(sec)
    sec.add(f"The fixed-budget view beside the fixed-target one: the {qname} of the recommendation at budgets of "
            + ", ".join(fmt(b) for b in budgets) + " (cost), i.e. its value at the run's last record with cost <= the "
            "budget -- what a user would hold had the run stopped there (diverged runs count as +inf).")
    disp = pd.DataFrame({"budget": table["budget"].map(fmt), "optimizer": table[G], "runs": table["runs"].astype(int),
                         "median": table["median"].map(fmt),
                         "IQR": [f"[{fmt(a)}, {fmt(b)}]" for a, b in zip(table["q25"], table["q75"])],
                         "diverged": table["diverged"].astype(int)})
    if multi:
        disp.insert(0, "problem", table[P].to_numpy())
    sec.add(w.table("fixed_budget", table, disp, f"{qname.capitalize()} reached at each budget: median and "
                                                 "inter-quartile range over runs."))
    if F.fixed_budget(vals, colors, w.fig, "fixed_budget", ylabel=qname, order=order, facet=P if multi else None, facet_order=porder):
        sec.add(Figure("fixed_budget", f"Distribution of the {qname} reached at each budget (box: quartiles; points: "
                                       "runs)" + (", per problem." if multi else ".")))
    out = {"budgets": budgets, "values": vals, "table": table}
    if multi and len(order) >= 2:
        # aggregated over problems: the mean over problems of each optimizer's within-problem rank of the median
        rk = []
        for b in budgets:
            s = table[table["budget"] == b]
            agg, _ = st.aggregate_ranks(s[[P, G, "median"]], group=G, problem=P, score="median")
            rk.append(agg[[G, "mean_rank"]].assign(budget=b))
        rk = pd.concat(rk, ignore_index=True)
        wide = rk.pivot(index=G, columns="budget", values="mean_rank").reindex([o for o in order if o in set(rk[G])])
        wd = wide.reset_index()
        wd.columns = ["optimizer"] + [f"mean rank at {fmt(b)}" for b in wide.columns]
        sec.add(w.table("fixed_budget_ranks", rk, display_generic(wd),
                        "Aggregated over problems: mean over problems of the rank of each optimizer's median "
                        f"{qname} at each budget (1 = best on every problem)."))
        out["ranks"] = rk
    if rts_l is not None and not rts_l.empty and cmax > cmin:
        auc = rt_mod.ecdf_area(rts_l, cmin, cmax, by=(G,), weight_by=P if multi else None)
        auc = in_order(auc, order)
        out["auc"] = auc
        sec.add(w.table("ecdf_area", auc, display_generic(auc.rename(columns={G: "optimizer"})),
                        "Area under the runtime ECDF over the log cost from the first record "
                        f"({fmt(cmin)}) to the budget ({fmt(cmax)}), normalised to [0, 1]: 1 = every target reached "
                        "at once, 0 = none by the end" + (" (aggregated over problems, each weighing the same)."
                                                          if multi else ".")))
    return out
