"""The verdict judges: exact cases of each rule, and the binomial coverage test."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from evosgd.analysis import verdict as V


def test_judge_value_supported_corrected_and_not():
    assert V.judge_value("c", 1.0, 0.9, 1.1, 1.05).verdict == V.SUPPORTED
    v = V.judge_value("c", 1.0, 0.9, 1.1, 1.3, corrected=1.02, correction="the finite-population factor")
    assert v.verdict == V.WITH_CORRECTION and "finite-population factor" in v.line()
    v = V.judge_value("c", 1.0, 0.9, 1.1, 1.3, corrected=1.5, correction="x")
    assert v.verdict == V.NOT_SUPPORTED and "NOT SUPPORTED" in v.line()
    # a stated tolerance widens the interval by tol |p|: 1.2 needs 0.1/1.2 = 8.3% to reach 1.1
    assert V.judge_value("c", 1.0, 0.9, 1.1, 1.2, rel_tol=0.09).verdict == V.SUPPORTED
    assert V.judge_value("c", 1.0, 0.9, 1.1, 1.2, rel_tol=0.08).verdict == V.NOT_SUPPORTED
    assert V.judge_value("c", 1.0, math.nan, math.nan, 1.0).verdict == V.NOT_SUPPORTED


def test_coverage_pvalue_is_the_binomial_tail():
    # P(Bin(20, 0.05) >= 1) = 1 - 0.95^20
    assert V.coverage_pvalue(1, 20, 0.95) == pytest.approx(1 - 0.95**20, rel=1e-12)
    assert V.coverage_pvalue(0, 20) == 1.0
    # all of 3 missing: 0.05^3
    assert V.coverage_pvalue(3, 3) == pytest.approx(0.05**3, rel=1e-12)


def test_judge_coverage_accepts_nominal_misses_and_rejects_many():
    lo, hi = np.zeros(20), np.ones(20)
    pred = np.full(20, 0.5)
    pred[0] = 2.0  # one miss in 20: P = 0.64, consistent with 95% intervals
    assert V.judge_coverage("c", lo, hi, pred).verdict == V.SUPPORTED
    pred[:4] = 2.0  # four misses in 20: P(Bin(20, .05) >= 4) = 0.016 < 0.05
    v = V.judge_coverage("c", lo, hi, pred)
    assert v.verdict == V.NOT_SUPPORTED and "16 of 20" in v.evidence
    v = V.judge_coverage("c", lo, hi, pred, corrected=np.full(20, 0.4), correction="a factor")
    assert v.verdict == V.WITH_CORRECTION


def test_judge_direction_three_outcomes():
    assert V.judge_direction("c", 1.0, 0.5, 1.5).verdict == V.SUPPORTED
    v = V.judge_direction("c", -1.0, -1.5, -0.5)
    assert v.verdict == V.NOT_SUPPORTED and "opposite" in v.evidence
    v = V.judge_direction("c", 0.1, -0.5, 0.7)
    assert v.verdict == V.NOT_SUPPORTED and "distinguishable" in v.evidence
    assert V.judge_direction("c", -1.0, -1.5, -0.5, expected="negative").verdict == V.SUPPORTED
    with pytest.raises(ValueError):
        V.judge_direction("c", 1, 0, 2, expected="up")


def test_verdict_table_round_trip_to_lines():
    vs = [V.judge_value("claim A", 1.0, 0.9, 1.1, 1.0), V.judge_direction("claim B", -1.0, -2.0, -0.5)]
    t = V.verdict_table(vs)
    assert list(t.columns) == V.VERDICT_COLUMNS
    buf = io.BytesIO()
    t.to_parquet(buf)  # the store keeps analysis tables as Parquet
    lines = V.verdict_lines(pd.read_parquet(io.BytesIO(buf.getvalue())))
    assert lines == [v.line() for v in vs]
    assert lines[0].startswith("Verdict -- claim A: SUPPORTED")
    assert V.verdict_lines(None) == []


def test_paired_log_ratio_and_slope_exact():
    a = np.array([2.0, 4.0, 8.0])
    r, lo, hi = V.paired_log_ratio(a, a / 2.0)  # every ratio is exactly 2: zero-width interval
    assert r == pytest.approx(2.0) and lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    s, lo, hi = V.slope_ci(np.arange(5.0), 3.0 * np.arange(5.0) + 1.0)
    assert s == pytest.approx(3.0) and lo == pytest.approx(3.0) and hi == pytest.approx(3.0)
