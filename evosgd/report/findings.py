"""Findings: short sentences computed from the report's tables (never pre-written claims).

Every number in a sentence is formatted with :func:`evosgd.report.document.fmt` from the same
table row the report shows, so a reader (and a test) can find it in that table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evosgd.report.document import fmt, p_clause


def _pair(tests: pd.DataFrame, a: str, b: str) -> pd.Series | None:
    if tests is None or tests.empty:
        return None
    m = tests[((tests["a"] == a) & (tests["b"] == b)) | ((tests["a"] == b) & (tests["b"] == a))]
    return None if m.empty else m.iloc[0]


def _test_clause(row: pd.Series | None, winner: str) -> str:
    if row is None or not np.isfinite(row["p"]):
        return "no test available"
    sig = "" if row["p_holm"] < 0.05 else ", not significant at 0.05"
    name = "Wilcoxon signed-rank" if row["test"] == "wilcoxon" else "Mann-Whitney U"
    if row["better"] != winner:  # the medians and the test's direction disagree: say so
        return f"{name} {p_clause(row['p_holm'], 'p (Holm)')}, A = {fmt(row['A'])} in favour of {row['better']}{sig}"
    return f"{name} {p_clause(row['p_holm'], 'p (Holm)')}, A = {fmt(row['A'])}{sig}"


def quality_findings(summary: pd.DataFrame, tests: pd.DataFrame | None, rank: pd.DataFrame | None,
                     rank_info: dict | None, quality_name: str, group: str = "variant") -> list[str]:
    out = []
    if summary.empty:
        return out
    s = summary.sort_values(["median", "q25"], kind="stable")
    best = s.iloc[0]
    sent = (f"Lowest final {quality_name}: {best[group]}, median {fmt(best['median'])} "
            f"[IQR {fmt(best['q25'])}, {fmt(best['q75'])}] over {int(best['runs'])} runs")
    if rank is not None and not rank.empty and len(rank) > 1:
        r = rank.set_index(group).loc[best[group]]
        sent += f"; mean rank {fmt(r['mean_rank'])} of {len(rank)}"
        if rank_info and rank_info.get("test") and np.isfinite(rank_info.get("p", np.nan)):
            t = "Friedman" if rank_info["test"] == "friedman" else "Kruskal-Wallis"
            sent += f" ({t} test of no difference: {p_clause(rank_info['p'])})"
    out.append(sent + ".")
    if len(s) > 1:
        second = s.iloc[1]
        row = _pair(tests, best[group], second[group])
        ratio = second["median"] / best["median"] if best["median"] > 0 else np.nan
        ratio_txt = (f", {fmt(ratio)} times lower than" if np.isfinite(ratio) and ratio >= 1.05
                     else " against")
        out.append(f"{best[group]} vs the runner-up {second[group]}: median final {quality_name} "
                   f"{fmt(best['median'])}{ratio_txt} {fmt(second['median'])}; {_test_clause(row, best[group])}.")
    return out


def runtime_findings(ert: pd.DataFrame, tests_rt: pd.DataFrame | None, targets: list[float],
                     group: str = "variant") -> list[str]:
    """For the hardest target reached by someone: who reached it at the lowest ERT, and by how
    much compared with the next one; targets nobody reached are named."""
    out = []
    if ert.empty:
        return out
    reached = ert[ert["successes"] > 0]
    missed = [t for t in targets if t not in set(reached["target"])]
    if not reached.empty:
        t_hard = float(reached["target"].min())
        e = ert[ert["target"] == t_hard].sort_values(["ert", "median_runtime"], kind="stable")
        best = e.iloc[0]
        runs = "all" if best["successes"] == best["runs"] else f"{int(best['successes'])} of"
        sent = (f"{best[group]} reached the target {fmt(t_hard)} in {runs} {int(best['runs'])} runs, "
                f"median {fmt(best['median_runtime'])} cost (ERT {fmt(best['ert'])})")
        if len(e) > 1:
            nxt = e.iloc[1]
            if np.isfinite(nxt["ert"]) and best["ert"] > 0 and fmt(nxt["ert"] / best["ert"]) == "1":
                sent += (f", the same ERT as {nxt[group]} "
                         f"({int(nxt['successes'])} of {int(nxt['runs'])} runs)")
            elif np.isfinite(nxt["ert"]) and best["ert"] > 0:
                sent += (f", {fmt(nxt['ert'] / best['ert'])} times lower ERT than {nxt[group]} "
                         f"(ERT {fmt(nxt['ert'])}, {int(nxt['successes'])} of {int(nxt['runs'])} runs)")
            elif np.isfinite(nxt["ert"]):
                sent += (f"; next: {nxt[group]} (ERT {fmt(nxt['ert'])}, {int(nxt['successes'])} of "
                         f"{int(nxt['runs'])} runs)")
            else:
                sent += f"; {nxt[group]} never reached it"
            row = None
            if tests_rt is not None and not tests_rt.empty:
                row = _pair(tests_rt[tests_rt["target"] == t_hard], best[group], nxt[group])
            sent += f"; runtime {_test_clause(row, best[group])}"
        out.append(sent + ".")
        nobody = e[e["successes"] == 0][group].tolist()
        if nobody and len(nobody) < len(e) and len(e) > 2:
            out.append(f"Did not reach {fmt(t_hard)} in any run: {', '.join(nobody)}.")
    if missed:
        out.append("No optimizer reached the target" + ("s " if len(missed) > 1 else " ")
                   + ", ".join(fmt(t) for t in missed) + " within the budget.")
    return out


def divergence_findings(summary: pd.DataFrame, group: str = "variant") -> list[str]:
    d = summary[summary["diverged"] > 0]
    if d.empty:
        return ["No run diverged."]
    return [f"{r[group]} diverged in {int(r['diverged'])} of {int(r['runs'])} runs "
            "(counted as the worst outcome in medians, tests and ranks)." for _, r in d.iterrows()]


def replicate_findings(n_max: int) -> list[str]:
    if n_max <= 1:
        return ["Only one replicate per optimizer: pairwise tests, effect sizes and ranks are "
                "unavailable, and medians are single values."]
    return []


def tracking_findings(track: pd.DataFrame, group: str = "variant") -> list[str]:
    """``track``: per-group medians of the tracking measures."""
    if track is None or track.empty or "offline_error" not in track or len(track) < 1:
        return []
    t = track.sort_values("offline_error", kind="stable")
    best = t.iloc[0]
    if len(t) == 1:
        return [f"{best[group]}: median offline error {fmt(best['offline_error'])}."]
    sent = f"{best[group]} tracked the moving optimum best: median offline error {fmt(best['offline_error'])}"
    if len(t) > 1:
        nxt = t.iloc[1]
        if best["offline_error"] > 0 and np.isfinite(nxt["offline_error"]):
            ratio = nxt["offline_error"] / best["offline_error"]
            # below 1.05 the printed ratio would read "1 times lower": say it plainly
            how = f"{fmt(ratio)} times lower than" if ratio >= 1.05 else "about the same as"
            sent += f", {how} {nxt[group]} ({fmt(nxt['offline_error'])})"
    return [sent + "."]


def sweep_findings(table: pd.DataFrame, key: str, line: str, col: str, what: str, key_name: str | None = None) -> list[str]:
    out = []
    for g, t in table.groupby(line, sort=False):
        v = t[col].to_numpy(dtype=float)
        if t[key].nunique() < 2 or not np.isfinite(v).any():
            continue
        i = int(np.nanargmin(np.where(np.isfinite(v), v, np.nan)))
        if fmt(v[i]) == fmt(np.nanmax(np.where(np.isfinite(v), v, np.nan))):
            out.append(f"{g}: {what} was {fmt(v[i])} at every {key_name or key} where it is finite.")
            continue
        out.append(f"{g}: {what} was lowest at {key_name or key} = {fmt(t[key].iloc[i])} ({fmt(v[i])}), "
                   f"highest {fmt(np.nanmax(np.where(np.isfinite(v), v, np.nan)))} over {t[key].nunique()} values.")
    return out


def sweep_curve_findings(table: pd.DataFrame, key: str, line: str, curves: pd.DataFrame,
                         names: dict[str, str], key_name: str | None = None) -> list[str]:
    """Measured over predicted, at the swept values where an analysis' curve has a point: one
    sentence per (line, analysis, measure).  ``curves`` is ``build.sweep_overlays``' table
    (columns analysis, measure, panel, x, predicted); ``names`` maps a measure to its words."""
    out = []
    for (an, m), cv in curves.groupby(["analysis", "measure"], sort=False):
        col = cv["panel"].iloc[0]
        if col not in table.columns:
            continue
        px, py = cv["x"].to_numpy(dtype=float), cv["predicted"].to_numpy(dtype=float)
        for g, t in table.groupby(line, sort=False):
            ratios, at = [], []
            for xv, v in zip(t[key].to_numpy(dtype=float), t[col].to_numpy(dtype=float)):
                hit = np.flatnonzero(np.isclose(px, xv, rtol=1e-9, atol=0.0))
                if hit.size and np.isfinite(v) and np.isfinite(py[hit[0]]) and py[hit[0]] > 0:
                    ratios.append(v / py[hit[0]])
                    at.append(xv)
            if not ratios:
                continue
            r = np.asarray(ratios)
            out.append(f"{g}: measured {names.get(m, m)} / the curve predicted by analysis {an!r} = {fmt(r.min())} to "
                       f"{fmt(r.max())} at {len(r)} of {t[key].nunique()} values of {key_name or key} "
                       f"(median {fmt(float(np.median(r)))}).")
    return out


def power_findings(n: int, comparisons: int, paired: bool) -> list[str]:
    """Say when the design cannot produce a significant difference at all: with n paired
    replicates the smallest exact two-sided Wilcoxon p is 2 / 2^n (all differences of one sign);
    unpaired with n runs a side it is 2 / C(2n, n) (Mann-Whitney, complete separation).  Holm
    multiplies the smallest p by the number of comparisons."""
    if n < 2 or comparisons < 1:
        return []
    from math import comb

    p_min = 2.0 / 2**n if paired else 2.0 / comb(2 * n, n)
    if p_min * comparisons <= 0.05:
        return []
    return [f"With {n} replicates the smallest possible p-value (Holm, {comparisons} comparisons) is "
            f"{fmt(min(1.0, p_min * comparisons))}: no difference can be significant at 0.05; run more replicates."]
