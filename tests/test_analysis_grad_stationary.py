"""Stationary spread of SGD on a noisy quadratic (analysis 'sgd_stationary')."""

import math

import numpy as np
import pytest
import torch

from evosgd.analysis.sgd_stationary import (
    StationaryParams,
    lyapunov_stationary_cov,
    measure_stationary,
    sde_stationary_cov,
    simulate_stationary,
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
    assert (t.trace_sde < t.trace_exact).all()
    assert t[t.lr_fraction_of_limit == 0.8].sde_underestimate.min() > t[t.lr_fraction_of_limit == 0.2].sde_underestimate.max()


def test_least_squares_moment_operator_by_enumeration():
    """Exact case: N = 3 examples, b = 2 drawn with replacement: average (I - lr A_b) S (I - lr A_b)
    over all 9 ordered index pairs and compare with the closed-form operator (float64 rounding)."""
    import itertools

    from evosgd.analysis.sgd_stationary import least_squares_moment_operator, least_squares_noise

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(3, 2)), rng.normal(size=3)
    _, H, _, M = least_squares_noise(X, y)
    S = np.array([[1.0, 0.3], [0.3, 0.5]])
    lr = 0.2
    brute = np.zeros((2, 2))
    for pair in itertools.product(range(3), repeat=2):
        A = np.mean([np.outer(X[i], X[i]) for i in pair], axis=0)
        T = np.eye(2) - lr * A
        brute += T @ S @ T / 9
    K = least_squares_moment_operator(H, M, lr, 2)
    np.testing.assert_allclose((K @ S.reshape(-1)).reshape(2, 2), brute, rtol=1e-12, atol=1e-14)


def test_least_squares_reduces_to_lyapunov_without_multiplicative_noise():
    """Exact case: in one dimension with x_i = +-a every x_i^2 is a^2, so A_b = H for every batch:
    the noise is additive and the generalized equation must give the plain Lyapunov solution."""
    from evosgd.analysis.sgd_stationary import least_squares_noise, least_squares_stationary_cov

    X = np.array([[1.5], [-1.5], [1.5], [-1.5], [1.5]])
    y = np.array([1.0, 0.2, -0.5, 0.3, 0.9])
    _, H, C, M = least_squares_noise(X, y)
    assert H[0, 0] == pytest.approx(2.25) and M[0, 0] == pytest.approx(2.25**2)
    for lr, b in [(0.1, 1), (0.5, 3)]:
        np.testing.assert_allclose(least_squares_stationary_cov(H, C, M, lr, b), lyapunov_stationary_cov(H, C, lr, b), rtol=1e-12)
    assert least_squares_stationary_cov(H, C, M, 0.9, 1) is None  # lr h = 2.025 > 2: unstable


def test_least_squares_simulation_matches_the_generalized_lyapunov():
    """On a linear_regression dataset: 300 iid chains x 10 snapshots; 5 standard errors per (lr, b)."""
    from evosgd.analysis.sgd_stationary import regression_data
    from evosgd.landscapes import build_landscape

    land = build_landscape("linear_regression", {"n_examples": 128, "features": 4, "condition": 10.0}, replicates=1, seed=4)
    data = regression_data(land)
    params = StationaryParams(model="landscape", lr_fractions=[0.1, 0.3], batch_sizes=[1, 8], chains=300, records=10)
    res = measure_stationary(params, make_generator(2), data=data)
    c = res.comparison
    main = c[c.quantity == "stationary E||theta - theta*||^2"]
    assert len(main) >= 3
    se = (main.measured_high - main.measured_low) / (2 * 1.97)
    assert ((main.measured - main.predicted).abs() <= 5 * se).all()
    t = res.tables["stationary_covariance"]
    assert (t.trace_lyapunov_additive < t.trace_exact).all()  # the multiplicative part adds spread
