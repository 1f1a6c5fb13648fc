"""Pairwise tests, Holm correction, Vargha-Delaney A and ranking agree with scipy / by hand."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evosgd.analysis.statistics import compare_two, holm, pairwise_tests, ranking, vargha_delaney_a


def _data(seed=0, n=12):
    rng = np.random.default_rng(seed)
    base = rng.lognormal(size=n)  # the shared landscape instance of each replicate
    vals = {"a": base * 0.5, "b": base * rng.lognormal(0, 0.3, n), "c": base * 3.0 + rng.random(n)}
    return pd.DataFrame([dict(label=k, replicate=r, value=v[r]) for k, v in vals.items() for r in range(n)]), vals


def test_vargha_delaney_matches_mann_whitney_u():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=9), np.round(rng.normal(0.5, size=7), 1)
    u = stats.mannwhitneyu(x, y).statistic  # U of x: #(x > y) + 0.5 #(x == y)
    assert vargha_delaney_a(x, y) == pytest.approx(u / (9 * 7))
    assert vargha_delaney_a([1, 2], [1, 2]) == 0.5


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, np.nan, 0.9]) == pytest.approx([1.0, np.nan, 1.0], nan_ok=True)


def test_paired_tests_agree_with_scipy():
    df, vals = _data()
    t = pairwise_tests(df)
    assert list(t["test"]) == ["wilcoxon"] * 3
    raw = []
    for _, r in t.iterrows():
        ref = stats.wilcoxon(vals[r["a"]], vals[r["b"]])
        assert r["statistic"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
        raw.append(ref.pvalue)
    assert t["p_holm"].to_numpy() == pytest.approx(holm(raw))
    ab = t[(t.a == "a") & (t.b == "b")].iloc[0]
    assert ab["better"] == "a" and ab["A"] == pytest.approx(1 - vargha_delaney_a(vals["a"], vals["b"]))


def test_unpaired_tests_agree_with_scipy():
    df, vals = _data(2)
    t = pairwise_tests(df, pair_on=None)
    r = t[(t.a == "b") & (t.b == "c")].iloc[0]
    ref = stats.mannwhitneyu(vals["b"], vals["c"], alternative="two-sided")
    assert r["test"] == "mann-whitney" and r["p"] == pytest.approx(ref.pvalue)
    assert r["better"] == "b" and r["A"] == pytest.approx(1 - ref.statistic / 144)


def test_infinite_values_rank_worst_and_single_replicate_gives_nan():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([np.inf, np.inf, 2.5, 5.0])
    r = compare_two(x, y, paired=False)
    w = 2 * 5.0 + 1  # worst_value: above every finite value
    assert r["p"] == pytest.approx(stats.mannwhitneyu(x, [w, w, 2.5, 5.0]).pvalue)
    assert np.isnan(compare_two([1.0], [2.0], paired=True)["p"])
    assert compare_two([1.0, 2.0], [1.0, 2.0], paired=True)["p"] == 1.0


def test_ranking_friedman_agrees_with_scipy():
    df, vals = _data(3)
    table, info = ranking(df)
    assert list(table["label"]) == ["a", "b", "c"] and list(table["rank"]) == [1, 2, 3]
    ref = stats.friedmanchisquare(vals["a"], vals["b"], vals["c"])
    assert info["test"] == "friedman" and info["p"] == pytest.approx(ref.pvalue)
    ranks = stats.rankdata(np.column_stack([vals["a"], vals["b"], vals["c"]]), axis=1).mean(axis=0)
    assert table.set_index("label").loc[["a", "b", "c"], "mean_rank"].to_numpy() == pytest.approx(ranks)
