"""Order-statistic variances and exact Wright-Fisher absorption times
(evosgd/analysis/order_statistics.py) against closed forms, matrix powers and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from evosgd.analysis.order_statistics import (
    order_statistic_moments,
    variance_order_statistic_exponential,
    variance_order_statistic_lognormal,
    wright_fisher_absorption,
)
from evosgd.analysis.popgen import simulate_fixation, wright_fisher_chain


@pytest.mark.parametrize("k,n", [(1, 1), (1, 8), (4, 8), (8, 8), (15, 16)])
def test_variance_by_integration_equals_closed_forms(k, n):
    m, v = order_statistic_moments(stats.expon(scale=2.0).cdf, k, n)
    assert v == pytest.approx(variance_order_statistic_exponential(k, n, 2.0), rel=1e-7)
    assert m == pytest.approx(2.0 * sum(1 / j for j in range(n - k + 1, n + 1)), rel=1e-8)
    _, vu = order_statistic_moments(stats.uniform.cdf, k, n)
    assert vu == pytest.approx(stats.beta(k, n - k + 1).var(), rel=1e-7)


def test_lognormal_variance_by_sampling():
    """The 6th fastest of 8 lognormal(0, 0.5) times, 200000 samples: the sample variance within 4
    standard errors of the integral (SE of a variance: sqrt((m4 - s^4)/n), m4 estimated)."""
    rng = np.random.default_rng(0)
    t = np.sort(rng.lognormal(0.0, 0.5, size=(200_000, 8)), axis=1)[:, 5]
    d = t - t.mean()
    se = math.sqrt((np.mean(d**4) - np.mean(d**2) ** 2) / len(t))
    assert abs(d.var() - variance_order_statistic_lognormal(6, 8, 0.0, 0.5)) < 4 * se


def test_absorption_times_exact_cases():
    """N = 2 neutral from one copy: stays with probability 1/2 per generation, so t = 2, t1 = 2, u = 1/2.
    Any N: neutral u = i/N; the same u and t1 as popgen's chain (matrix inverse); the mean absorption
    time equals sum_t P(T > t) from powers of the transition matrix."""
    u, t, t1 = wright_fisher_absorption(2)
    assert u[1] == pytest.approx(0.5) and t[1] == pytest.approx(2.0) and t1[1] == pytest.approx(2.0)
    N, s = 12, 0.15
    u0, _, _ = wright_fisher_absorption(N)
    np.testing.assert_allclose(u0, np.arange(N + 1) / N, atol=1e-12)
    u, t, t1 = wright_fisher_absorption(N, s)
    u_ref, t1_ref = wright_fisher_chain(N, s)
    np.testing.assert_allclose(u, u_ref, rtol=1e-10)
    np.testing.assert_allclose(t1[1:], t1_ref[1:], rtol=1e-9)
    i = np.arange(N + 1)
    ps = i / N * (1 + s) / (1 + i / N * s)
    Q = stats.binom.pmf(i[None, :], N, ps[:, None])[1:N, 1:N]
    alive, total = np.ones(N - 1), np.ones(N - 1)  # P(T > 0) = 1
    for _ in range(3000):
        alive = Q @ alive
        total += alive
    np.testing.assert_allclose(t[1:N], total, rtol=1e-9)


@pytest.mark.slow
def test_absorption_time_by_simulating_the_engine():
    """N = 10, s = 0.1, one copy, 20000 populations of the engine's Wright-Fisher generation: the mean
    absorption time within 4 standard errors (sd from the sample) of the exact chain value."""
    torch.set_num_threads(1)
    fixed, time = simulate_fixation(10, torch.tensor([0.1], dtype=torch.float64), 1, 20_000, torch.Generator().manual_seed(0), 2000)
    times = time[0].double().numpy()
    assert (times > 0).all()
    _, t, _ = wright_fisher_absorption(10, 0.1)
    assert abs(times.mean() - t[1]) < 4 * times.std(ddof=1) / math.sqrt(len(times))
