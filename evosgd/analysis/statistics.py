"""Pairwise comparisons of optimizers with multiple-testing control, effect sizes, ranking.

* Paired design (replicate ``r`` of every optimizer meets the same landscape instance, as within
  a scenario): Wilcoxon signed-rank test on the per-replicate differences
  (``scipy.stats.wilcoxon``, two-sided, zero differences dropped: Wilcoxon's original "wilcox"
  treatment).
* Unpaired design: Mann-Whitney U test (``scipy.stats.mannwhitneyu``, two-sided).
* Effect size: Vargha & Delaney (2000) A, ``A_xy = P(X > Y) + 0.5 P(X = Y)``, estimated over all
  pairs (equal to ``U_x / (n m)``).  Reports quote the probability that the *better* method gives
  the lower (better) value, so A near 1 is a clear win and 0.5 is no effect.
* Holm (1979) step-down correction of the family of pairwise p-values (controls the
  family-wise error rate without independence assumptions).
* Ranking: per replicate rank of every method (average ranks for ties), mean rank per method;
  Friedman's test (``scipy.stats.friedmanchisquare``) of "all methods alike" when paired with
  >= 3 methods; otherwise methods are ordered by their median.

Values are "lower is better" (loss, error, runtime).  Non-finite values (a diverged run, a target
never reached) are the worst outcome: before a test they are replaced by one common value above
every finite value (``worst_value``), which keeps all rank-based statistics exact for
Mann-Whitney and Friedman, and makes such a pair count as the largest difference for Wilcoxon.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats


def vargha_delaney_a(x: Sequence[float], y: Sequence[float]) -> float:
    """``A_xy = P(X > Y) + 0.5 P(X = Y)`` over all pairs (Vargha & Delaney 2000)."""
    x = np.asarray(x, dtype=float)[:, None]
    y = np.asarray(y, dtype=float)[None, :]
    if x.size == 0 or y.size == 0:
        return float("nan")
    return float(np.mean((x > y) + 0.5 * (x == y)))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values: ``p_(i) * (m - i + 1)``, made monotone, capped at 1.

    NaN p-values are left NaN and do not count in ``m``.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    idx = np.flatnonzero(ok)[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate(p[idx] * (m - np.arange(m))))
    out[idx] = adj
    return out


def worst_value(*arrays: np.ndarray) -> float:
    """A finite value worse (larger) than every finite value in the arrays."""
    finite = np.concatenate([np.asarray(a, dtype=float)[np.isfinite(a)] for a in arrays] + [np.zeros(0)])
    if finite.size == 0:
        return 1.0
    top = float(np.max(np.abs(finite)))
    return 2.0 * top + 1.0


def _clean(*arrays: np.ndarray) -> list[np.ndarray]:
    w = worst_value(*arrays)
    return [np.where(np.isfinite(a), a, w) for a in (np.asarray(a, dtype=float) for a in arrays)]


def compare_two(x: Sequence[float], y: Sequence[float], *, paired: bool) -> dict:
    """One two-sided test of ``x`` vs ``y`` (lower is better).

    Returns ``test``, ``statistic``, ``p`` (NaN when unavailable: fewer than 2 values per side),
    ``a_xy`` (Vargha-Delaney A of x over y: the probability that x is *larger*, i.e. worse),
    ``n_x``, ``n_y``.
    """
    x, y = _clean(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    res = dict(test="wilcoxon" if paired else "mann-whitney", statistic=np.nan, p=np.nan,
               a_xy=vargha_delaney_a(x, y), n_x=len(x), n_y=len(y))
    if paired:
        if len(x) != len(y):
            raise ValueError("paired comparison needs equally many values")
        if len(x) < 2:
            return res
        d = x - y
        if np.all(d == 0):  # identical outcomes: no evidence of a difference
            res.update(statistic=0.0, p=1.0)
            return res
        r = stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    else:
        if len(x) < 2 or len(y) < 2:
            return res
        r = stats.mannwhitneyu(x, y, alternative="two-sided")
    res.update(statistic=float(r.statistic), p=float(r.pvalue))
    return res


def pairwise_tests(
    values: pd.DataFrame,
    *,
    group: str = "label",
    value: str = "value",
    pair_on: str | None = "replicate",
    order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """All pairwise two-sided tests between groups, Holm-corrected.

    ``values`` is tidy: one row per (group, run).  With ``pair_on`` (default ``replicate``) the
    design is paired on the replicates both groups share (Wilcoxon); with ``pair_on=None``, or
    when the groups share fewer than 2 replicates, Mann-Whitney U on all runs.

    Columns: ``a``, ``b``, ``test``, ``n``, ``statistic``, ``p``, ``p_holm``, ``median_a``,
    ``median_b``, ``better`` (the group that tends to give lower values: Vargha-Delaney A of it over
    the other < 0.5; on a tie A = 0.5, the lower median),
    ``A`` (probability that ``better`` gives the lower value: Vargha-Delaney A, >= 0.5).
    """
    groups = list(order) if order is not None else list(dict.fromkeys(values[group]))
    rows = []
    for a, b in combinations(groups, 2):
        va = values[values[group] == a]
        vb = values[values[group] == b]
        paired = False
        if pair_on is not None and pair_on in values.columns:
            common = np.intersect1d(va[pair_on].unique(), vb[pair_on].unique())
            if len(common) >= 2 and va[pair_on].is_unique and vb[pair_on].is_unique:
                paired = True
                va = va.set_index(pair_on).loc[common].reset_index()
                vb = vb.set_index(pair_on).loc[common].reset_index()
        x = va[value].to_numpy(dtype=float)
        y = vb[value].to_numpy(dtype=float)
        r = compare_two(x, y, paired=paired)
        med_a, med_b = _median(x), _median(y)
        # a is better when its values tend to be lower (A_ab < 0.5: stochastic ordering, the quantity
        # the test is about); the medians only break a tie A = 0.5
        a_better = r["a_xy"] < 0.5 or (r["a_xy"] == 0.5 and med_a <= med_b)
        rows.append(dict(a=a, b=b, test=r["test"], n=min(r["n_x"], r["n_y"]) if paired else r["n_x"] + r["n_y"],
                         statistic=r["statistic"], p=r["p"], median_a=med_a, median_b=med_b,
                         better=a if a_better else b,
                         A=(1.0 - r["a_xy"]) if a_better else r["a_xy"]))
    out = pd.DataFrame(rows, columns=["a", "b", "test", "n", "statistic", "p", "median_a", "median_b", "better", "A"])
    out.insert(6, "p_holm", holm(out["p"].to_numpy(dtype=float)) if len(out) else [])
    return out


def _median(v: np.ndarray) -> float:
    v = np.sort(np.asarray(v, dtype=float))
    if v.size == 0:
        return float("nan")
    n = v.size
    if n % 2:
        return float(v[n // 2])
    lo, hi = v[n // 2 - 1], v[n // 2]
    return float(hi if np.isinf(hi) else 0.5 * (lo + hi))


def ranking(
    values: pd.DataFrame,
    *,
    group: str = "label",
    value: str = "value",
    pair_on: str | None = "replicate",
) -> tuple[pd.DataFrame, dict]:
    """Rank the groups (1 = best, lower values better).

    Paired (every group has one value on each of >= 2 common replicates): rank within each
    replicate (ties averaged), ``mean_rank`` per group, and Friedman's test when >= 3 groups.
    Otherwise: ``mean_rank`` is the rank of all runs pooled (Kruskal-Wallis style), with a
    Kruskal-Wallis test when >= 2 groups have >= 2 runs.
    Returns (table with ``group``, ``mean_rank``, ``median``, ``runs``, ``rank``; test info dict
    with ``test``, ``statistic``, ``p`` (NaN when unavailable)).
    """
    groups = list(dict.fromkeys(values[group]))
    clean = values.copy()
    clean[value] = _clean(clean[value].to_numpy(dtype=float))[0]
    info = dict(test=None, statistic=float("nan"), p=float("nan"))
    wide = None
    if pair_on is not None and pair_on in values.columns:
        try:
            wide = clean.pivot(index=pair_on, columns=group, values=value)[groups].dropna()
        except ValueError:  # duplicate (replicate, group) entries: not a paired design
            wide = None
    if wide is not None and len(wide) >= 2:
        ranks = wide.rank(axis=1, method="average")
        mean_rank = ranks.mean(axis=0)
        if len(groups) >= 3:
            r = stats.friedmanchisquare(*[wide[g].to_numpy() for g in groups])
            info = dict(test="friedman", statistic=float(r.statistic), p=float(r.pvalue))
    else:
        pooled = clean[value].rank(method="average")
        mean_rank = pooled.groupby(clean[group]).mean().reindex(groups)
        samples = [clean.loc[clean[group] == g, value].to_numpy() for g in groups]
        if len(groups) >= 2 and all(len(s) >= 2 for s in samples) and len(np.unique(np.concatenate(samples))) > 1:
            r = stats.kruskal(*samples)
            info = dict(test="kruskal", statistic=float(r.statistic), p=float(r.pvalue))
    table = pd.DataFrame({
        group: groups,
        "mean_rank": [float(mean_rank[g]) for g in groups],
        "median": [_median(values.loc[values[group] == g, value].to_numpy(dtype=float)) for g in groups],
        "runs": [int((values[group] == g).sum()) for g in groups],
    })
    table = table.sort_values(["mean_rank", "median"], kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    return table, info


def aggregate_ranks(per_problem: pd.DataFrame, *, group: str = "label", problem: str = "problem",
                    score: str = "mean_rank") -> tuple[pd.DataFrame, dict]:
    """Rank aggregation across problems (Demsar 2006, "Statistical comparisons of classifiers
    over multiple data sets", JMLR 7): on every problem the groups are ranked by ``score`` (lower
    is better, ties averaged), then ranks are averaged over problems.  With >= 2 problems and >= 3
    groups that were run on every problem, Friedman's test over problems as blocks.

    ``per_problem``: one row per (problem, group) with ``score`` (e.g. the within-problem mean rank
    over replicates of :func:`ranking`).  Returns (table with ``group``, ``mean_rank``, ``wins``
    (problems where it ranks first, ties shared), ``problems``, ``rank``; info dict with ``test``,
    ``statistic``, ``p``).
    """
    d = per_problem[[problem, group, score]].copy()
    d["r"] = d.groupby(problem, sort=False)[score].rank(method="average")
    n_best = d.groupby(problem, sort=False)["r"].transform(lambda r: (r == r.min()).sum())
    d["win"] = np.where(d["r"] == d.groupby(problem, sort=False)["r"].transform("min"), 1.0 / n_best, 0.0)
    groups = list(dict.fromkeys(d[group]))
    table = pd.DataFrame({
        group: groups,
        "mean_rank": [float(d.loc[d[group] == g, "r"].mean()) for g in groups],
        "wins": [float(d.loc[d[group] == g, "win"].sum()) for g in groups],
        "problems": [int((d[group] == g).sum()) for g in groups],
    }).sort_values(["mean_rank"], kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    info = dict(test=None, statistic=float("nan"), p=float("nan"))
    wide = d.pivot(index=problem, columns=group, values="r").dropna()
    if len(wide) >= 2 and wide.shape[1] >= 3:
        if np.ptp(wide.to_numpy(), axis=1).any():
            r = stats.friedmanchisquare(*[wide[g].to_numpy() for g in wide.columns])
            info = dict(test="friedman", statistic=float(r.statistic), p=float(r.pvalue))
        else:
            info = dict(test="friedman", statistic=0.0, p=1.0)
    return table, info
