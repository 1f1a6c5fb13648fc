"""ERT, runtime ECDF, success rates and final-quality summaries vs hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest

from evosgd.analysis.runtime import (
    expected_running_time,
    final_values,
    quality_column,
    quality_summary,
    runtime_ecdf,
    runtimes,
)


def _run(label, rep, costs, errors, diverged_from=None):
    rows = []
    for i, (c, e) in enumerate(zip(costs, errors)):
        rows.append(dict(run_id=f"{label}-id", label=label, replicate=rep, step=i, cost=float(c), error=float(e),
                         true_loss=float(e) + 1.0, diverged=diverged_from is not None and i >= diverged_from))
    return rows


@pytest.fixture
def table():
    # label a: 3 runs.  Targets 1e-1 and 1e-3.
    #  rep0: error 1, 0.05 @20, 1e-4 @40 -> runtime(1e-1)=20, runtime(1e-3)=40
    #  rep1: error 1, 0.5, 0.01 @60      -> runtime(1e-1)=60, never 1e-3, spent 60
    #  rep2: 1, 0.2 @10, 1e-2 @30, then diverges at step 3 (cost 50) with a "small" NaN/0 error
    #        -> runtime(1e-1)=30, 1e-3 never (the diverged row's 0 must not count), spent 50
    rows = _run("a", 0, [0, 20, 40], [1, 0.05, 1e-4])
    rows += _run("a", 1, [0, 30, 60], [1, 0.5, 0.01])
    rows += _run("a", 2, [0, 10, 30, 50], [1, 0.2, 1e-2, 0.0], diverged_from=3)
    # label b: 2 runs, never below 0.1 (unsuccessful everywhere)
    rows += _run("b", 0, [0, 100], [1, 0.3])
    rows += _run("b", 1, [0, 80], [1, 0.2])
    return pd.DataFrame(rows)


def test_runtimes_by_hand(table):
    rt = runtimes(table, [1e-1, 1e-3])
    a = rt[(rt.label == "a")].set_index(["replicate", "target"])
    assert a.loc[(0, 1e-1), "runtime"] == 20 and a.loc[(0, 1e-3), "runtime"] == 40
    assert a.loc[(1, 1e-1), "runtime"] == 60 and not a.loc[(1, 1e-3), "hit"]
    assert a.loc[(2, 1e-1), "runtime"] == 30 and not a.loc[(2, 1e-3), "hit"]
    assert a.loc[(2, 1e-3), "spent"] == 50
    assert not rt[rt.label == "b"]["hit"].any()


def test_ert_and_success_by_hand(table):
    ert = expected_running_time(runtimes(table, [1e-1, 1e-3])).set_index(["label", "target"])
    # target 0.1: all three of a succeed: (20 + 60 + 30) / 3
    assert ert.loc[("a", 1e-1), "ert"] == pytest.approx(110 / 3)
    assert ert.loc[("a", 1e-1), "success_rate"] == 1.0
    assert ert.loc[("a", 1e-1), "median_runtime"] == 30
    # target 1e-3: one success at 40; failures spent 60 and 50 -> (40 + 60 + 50) / 1
    assert ert.loc[("a", 1e-3), "ert"] == pytest.approx(150.0)
    assert ert.loc[("a", 1e-3), "successes"] == 1
    assert ert.loc[("a", 1e-3), "success_rate"] == pytest.approx(1 / 3)
    # b never succeeds: ERT infinite, success rate 0
    assert math.isinf(ert.loc[("b", 1e-1), "ert"]) and ert.loc[("b", 1e-1), "success_rate"] == 0
    assert math.isnan(ert.loc[("b", 1e-1), "median_runtime"])


def test_runtime_ecdf_by_hand(table):
    rt = runtimes(table, [1e-1, 1e-3])
    e = runtime_ecdf(rt, [10, 20, 30, 40, 60, 1e9]).set_index(["label", "budget"])["fraction"]
    # a has 6 (run, target) pairs with runtimes 20, 40, 60, inf, 30, inf
    assert [e[("a", b)] for b in (10, 20, 30, 40, 60, 1e9)] == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 4 / 6])
    assert (e.loc["b"] == 0).all()


def test_final_values_and_summary(table):
    fv = final_values(table).set_index(["label", "replicate"])
    assert fv.loc[("a", 0), "value"] == 1e-4
    assert math.isinf(fv.loc[("a", 2), "value"]) and fv.loc[("a", 2), "diverged"]
    s = quality_summary(final_values(table)).set_index("label")
    # a: sorted [1e-4, 1e-2, inf] -> median 1e-2, q25 = 1e-4 + 0.5 (1e-2 - 1e-4), q75 = inf
    assert s.loc["a", "median"] == pytest.approx(1e-2)
    assert s.loc["a", "q25"] == pytest.approx(0.00505)
    assert math.isinf(s.loc["a", "q75"]) and s.loc["a", "diverged"] == 1
    # b: [0.2, 0.3] -> median 0.25 (numpy's linear interpolation)
    assert s.loc["b", "median"] == pytest.approx(np.median([0.2, 0.3]))
    assert s.loc["b", "q75"] == pytest.approx(np.quantile([0.2, 0.3], 0.75))


def test_quality_column_falls_back_to_true_loss(table):
    assert quality_column(table) == "error"
    assert quality_column(table.assign(error=np.nan)) == "true_loss"
