"""Offline error, best-error-before-change, recovery time vs hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest

from evosgd.analysis.tracking import (
    best_error_before_change,
    change_times_from_drift,
    offline_error,
    recovery_times,
    tracking_table,
)

T = [0, 1, 2, 4, 5, 6, 8]
E = [4, 2, 1, 3, 1.5, 0.5, 9]  # change at t = 3 (error jumps to 3) and t = 6... see below


def test_offline_error_time_weighted():
    # left step: 4*1 + 2*1 + 1*2 + 3*1 + 1.5*1 + 0.5*2 = 13.5 over 8
    assert offline_error(T, E) == pytest.approx(13.5 / 8)
    # unsorted input gives the same; even spacing reduces to the plain mean of all but the last
    assert offline_error(T[::-1], E[::-1]) == pytest.approx(13.5 / 8)
    assert offline_error([0, 1, 2, 3], [1, 2, 3, 100]) == pytest.approx(2.0)


def test_offline_error_from_a_burn_in_time():
    # records 0, 10, 20, 40 with errors 8, 4, 2, 1: whole run (80 + 40 + 40) / 40 = 4; from 15 on
    # the error of t=10 holds on [15, 20): (4*5 + 2*20) / 25 = 2.4; from 20 on: 2
    t, e = [0, 10, 20, 40], [8, 4, 2, 1]
    assert offline_error(t, e) == pytest.approx(4.0)
    assert offline_error(t, e, start=0.0) == pytest.approx(4.0)
    assert offline_error(t, e, start=15.0) == pytest.approx(2.4)
    assert offline_error(t, e, start=20.0) == pytest.approx(2.0)
    assert math.isnan(offline_error(t, e, start=40.0))
    rows = [dict(run_id="r", label="x", replicate=0, env_time=ti, error=ei, diverged=False) for ti, ei in zip(t, e)]
    assert tracking_table(pd.DataFrame(rows), offline_from=15.0).iloc[0]["offline_error"] == pytest.approx(2.4)


def test_best_error_before_change():
    # changes at 3 and 7: periods {0,1,2}, {4,5,6}, {8} -> minima 1, 0.5, 9
    mean, mins = best_error_before_change(T, E, [3, 7])
    assert list(mins) == [1, 0.5, 9]
    assert mean == pytest.approx((1 + 0.5 + 9) / 3)
    # a record exactly at a change belongs to the new period
    _, mins = best_error_before_change([0, 1, 2], [5, 1, 0.1], [2])
    assert list(mins) == [1, 0.1]


def test_recovery_times():
    # change at 3: level before = 1 (t=2); after: 3 @4, 1.5 @5, 0.5 @6 -> back <= 1 at t=6: 3
    # change at 7: level before = 0.5; after: 9 @8 -> never: inf
    rec = recovery_times(T, E, [3, 7])
    assert rec[0] == pytest.approx(3.0) and math.isinf(rec[1])


def test_tracking_table_and_lag():
    rows = [dict(run_id="r", label="x", replicate=0, env_time=t, error=e, distance=d, diverged=False)
            for t, e, d in zip(T, E, [5, 4, 3, 2, 2, 2, 2])]
    tab = tracking_table(pd.DataFrame(rows), change_times=[3, 7], drift_speed=0.5)
    r = tab.iloc[0]
    assert r["offline_error"] == pytest.approx(13.5 / 8)
    assert r["best_error_before_change"] == pytest.approx(10.5 / 3)
    # recovery times [3, inf]: lower median 3, half the changes recovered from
    assert r["median_recovery_time"] == pytest.approx(3.0) and r["recovered"] == pytest.approx(0.5)
    # second half: t >= 4 -> distances 2, 2, 2, 2 -> 2; lag = 2 / 0.5
    assert r["tracking_distance"] == pytest.approx(2.0) and r["tracking_lag"] == pytest.approx(4.0)


def test_change_times_from_drift():
    assert change_times_from_drift({"kind": "switch", "period": 2.5}, 10) == [2.5, 5.0, 7.5, 10.0]
    assert change_times_from_drift({"kind": "linear", "speed": 1e-3}, 10) is None
    assert change_times_from_drift(None, 10) is None
    assert np.allclose(change_times_from_drift({"change_times": [1, 20]}, 10), [1])


def test_tracking_table_uses_each_runs_swept_drift():
    """A sweep over landscape.drift.speed / .every: each run is measured against its own drift."""
    from evosgd.analysis.tracking import tracking_table

    t = np.arange(0.0, 101.0, 10.0)
    rows = []
    for run, speed, every in (("a", 0.5, 25.0), ("b", 2.0, 50.0)):
        for ti in t:
            rows.append(dict(run_id=run, replicate=0, label="ga", env_time=ti, error=1.0, distance=4.0,
                             diverged=False, **{"p_landscape.drift.speed": speed, "p_landscape.drift.every": every}))
    table = tracking_table(pd.DataFrame(rows), drift={"kind": "switch", "speed": 1.0, "every": 10.0}).set_index("run_id")
    assert table.loc["a", "tracking_lag"] == pytest.approx(4.0 / 0.5)
    assert table.loc["b", "tracking_lag"] == pytest.approx(4.0 / 2.0)
