"""Stationary spread of SGD on a noisy quadratic (analysis 'sgd_stationary')."""

import math

import numpy as np
import pytest
import torch

from evosgd.analysis.sgd_stationary import (
    StationaryParams, lyapunov_stationary_cov, measure_stationary, sde_stationary_cov, simulate_stationary,
    stationary_variance_1d,
)
from evosgd.core.analysis_api import AnalysisContext
from evosgd.core.errors import ConfigError, ParameterError
from evosgd.core.registry import ANALYSES
from evosgd.core.seeding import make_generator


def test_lyapunov_matches_closed_forms():
    """Exact case: commuting (diagonal) H and C decouple into 1-D recursions
    s = (1 - lr h)^2 s + lr^2 c / b, whose fixed point is lr c / (b h (2 - lr h)); float64 rounding only."""
    h, c = np.array([0.2, 1.0, 3.0]), np.array([1.0, 0.5, 2.0])
    for lr, b in [(0.1, 1), (0.5, 8), (0.6, 3)]:
        S = lyapunov_stationary_cov(np.diag(h), np.diag(c), lr, b)
        np.testing.assert_allclose(np.diag(S), [stationary_variance_1d(hi, ci, lr, b) for hi, ci in zip(h, c)], rtol=1e-10)
        np.testing.assert_allclose(S - np.diag(np.diag(S)), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.diag(sde_stationary_cov(np.diag(h), np.diag(c), lr, b)), lr * c / (2 * b * h), rtol=1e-10)
    # non-commuting H and C: the solution satisfies its equation
    rng = np.random.default_rng(0)
    M = rng.normal(size=(4, 4))
    C = M @ M.T + np.eye(4)
    H = np.diag([0.1, 0.5, 1.0, 2.0])
    S = lyapunov_stationary_cov(H, C, 0.3, 5)
    A = np.eye(4) - 0.3 * H
    np.testing.assert_allclose(S, A @ S @ A.T + 0.09 * C / 5, atol=1e-12)
    # the temperature limit depends on lr / b only
    np.testing.assert_allclose(sde_stationary_cov(H, C, 0.2, 2), sde_stationary_cov(H, C, 0.4, 4), rtol=1e-12)


def test_unstable_learning_rate_is_refused():
    with pytest.raises(ParameterError, match="lr"):
        lyapunov_stationary_cov(np.diag([1.0, 4.0]), np.eye(2), 0.5, 1)  # 2 / 4 = 0.5 is the limit
    with pytest.raises(ConfigError, match="lr_fractions|batch_sizes"):
        ANALYSES.validate("sgd_stationary", {"batch_sizes": []})


def test_simulated_spread_matches_lyapunov():
    """Exact case: 1-D, h = 1, c = 1, lr = 0.5, b = 2: sigma^2 = 0.5 / (2 * 1.5) = 1/6 exactly.
    400 iid chains, each averaging 20 snapshots: the mean's standard error is (CI half-width)/1.96
    (t_399 ~ 1.97); 5 standard errors gives P(false failure) < 1e-6."""
    per_chain, cov = simulate_stationary(np.eye(1), np.eye(1), 0.5, 2, chains=400, records=20, generator=make_generator(3))
    pred = stationary_variance_1d(1.0, 1.0, 0.5, 2)
    assert pred == pytest.approx(1 / 6)
    se = per_chain.std(ddof=1) / math.sqrt(per_chain.size)
    assert abs(per_chain.mean() - pred) <= 5 * se
    assert cov[0, 0] == pytest.approx(per_chain.mean(), rel=1e-12)


def test_analysis_rows_and_registry():
    ctx = AnalysisContext("t", "stat", 7, 1, torch.device("cpu"), torch.float32)
    params = {"dim": 3, "lr_fractions": [0.2, 0.8], "batch_sizes": [1, 4], "chains": 200, "records": 10}
    res = ANALYSES.build("sgd_stationary", params, context=ctx)
    c = res.comparison
    main = c[c.quantity == "stationary E||theta - theta*||^2"]
    assert len(main) == 4
    # 5-standard-error agreement per row (4 rows; see test above for the derivation)
    se = (main.measured_high - main.measured_low) / (2 * 1.97)
    assert ((main.measured - main.predicted).abs() <= 5 * se).all()
    # the SDE limit is below the exact spread, and more so at the larger learning rate
    t = res.tables["stationary_covariance"]
    assert (t.trace_sde < t.trace_lyapunov).all()
    assert t[t.lr_fraction_of_limit == 0.8].sde_underestimate.min() > t[t.lr_fraction_of_limit == 0.2].sde_underestimate.max()
