"""Verdicts of the shipped analyses named in issue #19: confidence_step, minibatch_normality and
tracking_lag end with one computed verdict per claim."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evosgd.analysis import tracking_lag as TL
from evosgd.analysis.confidence_lr import ConfidenceParams, measure_confidence
from evosgd.analysis.verdict import NOT_SUPPORTED, SUPPORTED, WITH_CORRECTION


@pytest.mark.slow
def test_confidence_step_verdicts_say_when_the_rule_loses_to_a_schedule():
    p = ConfidenceParams(snrs=[1.0], replicates=200, run_steps=200, run_replicates=6)
    r = measure_confidence(p, seed=2)
    v = r.tables["verdicts"].set_index("claim").verdict
    assert v["one constant step leaves E[F - F*] = V / (2 h b)"] == SUPPORTED
    # cosine anneals the rate to zero; the snr rule's factor stays ~ snr/(1 + snr) of a constant rate:
    # after 200 steps the schedule ends far lower, and the verdict says so
    loses = [c for c in v.index if "lower than the best schedule" in c]
    assert loses and all(v[c] == NOT_SUPPORTED for c in loses)
    assert "multi_step" in r.tables


def test_tracking_lag_wright_fisher_verdict_uses_the_gaussian_selection_correction():
    # measured lags sit on the full Lande prediction, far from the weak-selection one: "with correction"
    df = pd.DataFrame({"quantity": TL.QUANTITY_LAG, "series": "Wright-Fisher (N=200, beta=1)", "x_name": "drift speed v per step",
                       "x": [0.01, 0.1], "measured": [0.07, 0.7], "measured_low": [0.069, 0.69],
                       "measured_high": [0.071, 0.71], "predicted": [0.0701, 0.701]})
    extra = pd.DataFrame({"speed": [0.01, 0.1], "lag_wf_weak_selection": [0.06, 0.6]})
    v = TL._verdicts(df, extra, 0.95)
    assert len(v) == 1 and v[0].verdict == WITH_CORRECTION and "(1 + G beta a)" in v[0].line()
    gd = df.assign(series="gradient descent (lr=0.1)", measured_low=df.measured, measured_high=df.measured,
                   predicted=df.measured * 1.0005)  # deterministic: equal within the stated 0.1%
    assert TL._verdicts(gd, extra, 0.95)[0].verdict == SUPPORTED
    assert np.isfinite(v[0].measured)
