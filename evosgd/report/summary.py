"""The computed summary paragraph that opens every report: which family (gradient or evolution)
wins at this budget, by how much, with what confidence, and what the theory says -- every number
taken from the report's own tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evosgd.report.document import fmt, p_clause
from evosgd.report.metrics import family_of
from evosgd.report.problems import G, P

FAMILY_WORDS = {"gradient": "gradient", "evolution": "evolutionary", "other": "other"}


def _families(runs: pd.DataFrame) -> dict[str, str]:
    if "kind" not in runs:
        return {}
    per = runs.drop_duplicates(G)
    return {v: family_of(str(k)) for v, k in zip(per[G], per["kind"])}


def _pair(tests: pd.DataFrame | None, a: str, b: str) -> pd.Series | None:
    if tests is None or tests.empty:
        return None
    m = tests[((tests["a"] == a) & (tests["b"] == b)) | ((tests["a"] == b) & (tests["b"] == a))]
    return None if m.empty else m.iloc[0]


def _confidence(row: pd.Series | None, winner: str) -> str:
    if row is None or not np.isfinite(row["p"]):
        return "no test is available (one replicate)"
    name = "Wilcoxon signed-rank" if row["test"] == "wilcoxon" else "Mann-Whitney U"
    sig = "significant at 0.05" if row["p_holm"] < 0.05 else "not significant at 0.05"
    favour = "" if row["better"] == winner else f" in favour of {row['better']}"
    return f"{name} {p_clause(row['p_holm'], 'p (Holm)')}, effect A = {fmt(row['A'])}{favour} over {int(row['n'])} " \
           f"{'replicate pairs' if row['test'] == 'wilcoxon' else 'runs'}: {sig}"


def _one_problem(summary: pd.DataFrame, tests: pd.DataFrame | None, fam: dict, qname: str) -> str:
    s = summary.sort_values(["median", "q25"], kind="stable")
    best = s.iloc[0]
    fb = fam.get(best[G], "other")
    others = s[[fam.get(v, "other") != fb for v in s[G]]]
    if others.empty:
        who = (f"all optimizers are {FAMILY_WORDS.get(fb, fb)} methods" if fb != "other" else
               "no optimizer's family (gradient or evolution) is known to the registry")
        txt = f"{who}; {best[G]} ends lowest with a median final {qname} of {fmt(best['median'])}"
        if len(s) > 1:
            nxt = s.iloc[1]
            txt += f" against {fmt(nxt['median'])} for {nxt[G]} ({_confidence(_pair(tests, best[G], nxt[G]), best[G])})"
        return txt
    rival = others.iloc[0]
    ratio = rival["median"] / best["median"] if best["median"] > 0 else np.nan
    how = (f"{fmt(ratio)} times lower than" if np.isfinite(ratio) and ratio >= 1.05 else
           "about the same as" if np.isfinite(ratio) else "against")
    row = _pair(tests, best[G], rival[G])
    won = row is not None and np.isfinite(row["p_holm"]) and row["p_holm"] < 0.05 and row["better"] == best[G]
    verb = "win" if won else "end lowest, not significantly"
    return (f"the {FAMILY_WORDS.get(fb, fb)} methods {verb}: {best[G]} ends at a median final {qname} of "
            f"{fmt(best['median'])}, {how} the best {FAMILY_WORDS.get(fam.get(rival[G], 'other'))} method, {rival[G]} "
            f"({fmt(rival['median'])}); {_confidence(row, best[G])}")


def summary_paragraph(runs, finals, summary, tests_q, rank, agg, fb, theory, qname, order, porder, *, budget) -> str:
    fam = _families(runs)
    multi = len(porder) > 1
    reps = int(summary["runs"].max()) if len(summary) else 0
    head = f"At a budget of {fmt(budget)} sample-evaluations per run ({reps} replicates), "
    if not multi:
        txt = head + f"on {porder[0]}, " + _one_problem(summary, tests_q, fam, qname) + "."
    else:
        winners = {}
        for p in porder:
            sp = summary[summary[P] == p].sort_values(["median", "q25"], kind="stable")
            if not sp.empty:
                winners[p] = sp.iloc[0][G]
        count = pd.Series([fam.get(v, "other") for v in winners.values()]).value_counts()
        parts = [f"{FAMILY_WORDS.get(f, f)} methods lead on {int(n)}" for f, n in count.items()]
        txt = (head + f"across {len(porder)} problems " + " and ".join(parts) + " (lowest median final "
               + f"{qname}: " + "; ".join(f"{p}: {v}" for p, v in winners.items()) + ").")
        if agg and "ranks" in agg:
            r = agg["ranks"].iloc[0]
            info = agg.get("rank_info") or {}
            txt += (f"  Best mean rank over problems: {r[G]} ({FAMILY_WORDS.get(fam.get(r[G], 'other'))}, "
                    f"{fmt(r['mean_rank'])} of {len(agg['ranks'])})")
            if info.get("test") and np.isfinite(info.get("p", np.nan)):
                txt += f", Friedman test over problems {p_clause(info['p'])}"
            txt += "."
    auc = (fb or {}).get("auc")
    if auc is not None and len(auc) > 1:
        a = auc.sort_values("auc", ascending=False, kind="stable")
        top = a.iloc[0]
        rival = a[[fam.get(v, "other") != fam.get(top[G], "other") for v in a[G]]]
        txt += (f"  Anytime (area under the runtime ECDF, 1 = every target at once): {top[G]} {fmt(top['auc'])}"
                + (f" against {fmt(rival.iloc[0]['auc'])} for the best {FAMILY_WORDS.get(fam.get(rival.iloc[0][G], 'other'))} "
                   f"method, {rival.iloc[0][G]}" if not rival.empty else "") + ".")
    floor = (theory or {}).get("floor")
    if floor is not None and not floor.empty:
        for _, r in floor.iterrows():
            meas = r["measured"] if np.isfinite(r["measured"]) else r["final"]
            txt += (f"  Why, in terms of the theory: a fixed step holds SGD at a noise floor; {r['variant']} (step "
                    f"{fmt(r['lr'])}, batch {fmt(r['batch_size'])}) is predicted to settle at E[f - f*] = "
                    f"{fmt(r['predicted'])} (measured {fmt(meas)}; {r['verdict'].split(':')[0]})")
            txt += "."
        sig = (theory or {}).get("sigma")
        if sig is not None and not sig.empty:
            txt += ("  The evolution strategies adapt their step size instead ("
                    + "; ".join(f"{r['variant']}: sigma shrank {fmt(r['shrink'])}-fold" for _, r in sig.iterrows()) + ").")
    return txt


def analyses_paragraph(analyses: list) -> str:
    """For a store of analyses only: per analysis, how many of its predictions lie inside the
    measured interval (from its comparison table) and its own first computed note."""
    if not analyses:
        return "This store holds no finished optimizer runs and no analyses."
    parts = []
    for a in analyses:
        title = str(a.get("title") or a.get("label") or a.get("id"))
        comp = a.get("comparison")
        txt = title
        if isinstance(comp, pd.DataFrame) and {"predicted", "measured_low", "measured_high"} <= set(comp.columns):
            c = comp[np.isfinite(comp["predicted"].to_numpy(dtype=float))
                     & np.isfinite(comp["measured_low"].to_numpy(dtype=float))
                     & np.isfinite(comp["measured_high"].to_numpy(dtype=float))]
            if len(c):
                inside = int(((c["predicted"] >= c["measured_low"]) & (c["predicted"] <= c["measured_high"])).sum())
                conf = fmt(100 * float(a.get("confidence", 0.95)))
                txt += f": {inside} of {len(c)} predictions lie inside the measured {conf}% interval"
        notes = [str(n) for n in (a.get("notes") or [])]
        if notes:
            txt += f" ({notes[0].rstrip('.')})"
        parts.append(txt)
    n = len(analyses)
    return (f"This store holds no optimizer runs; {n} analys{'is compares' if n == 1 else 'es compare'} "
            "the theory's predictions with measurements.  " + ".  ".join(parts) + ".")


def with_analyses(summary: str, analyses: list) -> str:
    """The runs' summary, followed by the analyses' verdict counts (when the store has both)."""
    if not analyses:
        return summary
    tail = analyses_paragraph(analyses).split(".  ", 1)[1]
    return f"{summary}  Analyses: {tail}"
