"""Selection theory (evosgd/analysis/selection_theory.py) and ES progress rates
(evosgd/analysis/es_progress.py) against closed forms, enumeration and Monte Carlo runs (tolerances
from the sample size, stated per test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import evosgd.evolution  # noqa: F401  (registers)
from evosgd.analysis.es_progress import (
    one_plus_one_progress_rate,
    one_plus_one_success_probability,
    optimal_sigma_star,
    progress_coefficient,
    progress_rate,
    weighted_progress_rate,
)
from evosgd.analysis.selection_theory import (
    breeders_equation,
    expected_normal_order_statistic,
    heritability,
    multivariate_breeders_equation,
    post_selection_moments,
    price_equation,
    selection_intensity,
    truncation_intensity,
    truncation_variance_reduction,
)
from evosgd.core.budget import Budget
from evosgd.core.registry import OPTIMIZERS
from evosgd.evolution.es_base import positive_weights, recombination_weights
from evosgd.landscapes import build_landscape


def test_order_statistics_and_intensity_closed_forms():
    """E max of 2 = 1/sqrt(pi), of 3 = 3/(2 sqrt(pi)); E Z_(1:3) = -E Z_(3:3); E Z_(2:3) = 0;
    best n of n: intensity 0; the finite-n intensity tends to phi(x_p)/p."""
    assert selection_intensity(1, 2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-10)
    assert selection_intensity(1, 3) == pytest.approx(1.5 / math.sqrt(math.pi), rel=1e-10)
    assert expected_normal_order_statistic(2, 3) == pytest.approx(0.0, abs=1e-12)
    assert expected_normal_order_statistic(1, 5) == pytest.approx(-expected_normal_order_statistic(5, 5), rel=1e-10)
    assert selection_intensity(4, 4) == 0.0
    assert selection_intensity(5, 10) == pytest.approx(np.mean([expected_normal_order_statistic(j, 10) for j in range(6, 11)]), rel=1e-10)
    assert selection_intensity(2000, 4000) == pytest.approx(truncation_intensity(0.5), rel=1e-3)
    assert truncation_intensity(0.5) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)


def test_selection_intensity_monte_carlo():
    """Mean of the best 3 of 10 standard normals over 200000 draws: within 4 standard errors (sd
    estimated from the draws) of i_{3,10}."""
    rng = np.random.default_rng(0)
    top = np.sort(rng.standard_normal((200_000, 10)), axis=1)[:, -3:].mean(1)
    assert abs(top.mean() - selection_intensity(3, 10)) < 4 * top.std(ddof=1) / math.sqrt(len(top))


def test_truncation_selection_on_a_gaussian_by_sampling():
    """2D genotypes N(0, G) + environment N(0, E I), best 20% on y = a . z of 400000 draws: the
    selected genotypes' mean within 4 standard errors of i G a / sqrt(a'Pa), their covariance
    within 4 standard errors (sd of the products estimated from the sample) of G*."""
    rng = np.random.default_rng(1)
    G = np.array([[1.0, 0.6], [0.6, 2.0]])
    E, a, p, n = 0.5, np.array([1.0, -0.5]), 0.2, 400_000
    g = rng.multivariate_normal(np.zeros(2), G, size=n)
    z = g + math.sqrt(E) * rng.standard_normal((n, 2))
    y = z @ a
    sel = g[y > np.quantile(y, 1 - p)]
    dm, G_star = post_selection_moments(G, a, p, E)
    se = sel.std(0, ddof=1) / math.sqrt(len(sel))
    assert np.all(np.abs(sel.mean(0) - dm) < 4 * se)
    d = sel - sel.mean(0)
    for i in range(2):
        for j in range(2):
            prod = d[:, i] * d[:, j]
            assert abs(prod.mean() - G_star[i, j]) < 4 * prod.std(ddof=1) / math.sqrt(len(prod))
    assert truncation_variance_reduction(p) == pytest.approx(1 - stats.truncnorm(stats.norm.isf(p), np.inf).var(), rel=1e-10)


def test_breeders_equation_and_price_identity():
    assert heritability(1.0, 3.0) == 0.25 and float(breeders_equation(0.25, 2.0)) == 0.5
    G, P, S = np.array([[1.0, 0.2], [0.2, 0.5]]), np.array([[2.0, 0.2], [0.2, 1.5]]), np.array([0.3, -0.1])
    np.testing.assert_allclose(multivariate_breeders_equation(G, P, S), G @ np.linalg.inv(P) @ S)
    # Price's equation is an identity: enumerate a small population and its offspring by hand
    z = np.array([1.0, 2.0, 4.0, 7.0])
    w = np.array([0, 1, 3, 2])  # offspring counts
    offspring = [2.5, 4.0, 4.5, 3.5, 7.0, 8.0]  # parent 1 -> 2.5; parent 2 -> 4.0, 4.5, 3.5; parent 3 -> 7.0, 8.0
    zo = np.array([np.nan, 2.5, 4.0, 7.5])
    sel, trans, total = price_equation(z, w, zo)
    assert total == pytest.approx(np.mean(offspring) - z.mean(), rel=1e-12)
    assert sel == pytest.approx(np.cov(w, z, bias=True)[0, 1] / w.mean(), rel=1e-12)
    assert trans == pytest.approx((1 * 0.5 + 3 * 0.0 + 2 * 0.5) / 4 / w.mean(), rel=1e-12)  # population mean over 4 parents


# ----------------------------------------------------------------------------- ES progress rates


def test_progress_rate_closed_forms():
    c = progress_coefficient(1, 2)
    assert c == pytest.approx(1 / math.sqrt(math.pi))
    s_opt, phi_max = optimal_sigma_star(3, 10)
    assert float(progress_rate(s_opt, 3, 10)) == pytest.approx(phi_max, rel=1e-12)
    assert float(progress_rate(2 * s_opt, 3, 10)) == pytest.approx(0.0, abs=1e-12)
    equal = [1 / 3] * 3 + [0.0] * 7
    assert float(weighted_progress_rate(1.3, equal)) == pytest.approx(float(progress_rate(1.3, 3, 10)), rel=1e-10)
    w, mu_eff = recombination_weights(10, 3, "equal")
    assert w == [1 / 3] * 3 and mu_eff == 3
    assert recombination_weights(10, 3) == positive_weights(10, 3)
    # (1+1)-ES: the classic optimum phi* = 0.2025 at sigma* = 1.224 with success probability 0.270
    s = np.linspace(0.5, 2.0, 3001)
    phi = one_plus_one_progress_rate(s)
    assert s[phi.argmax()] == pytest.approx(1.224, abs=2e-3) and phi.max() == pytest.approx(0.2025, abs=2e-4)
    assert float(one_plus_one_success_probability(1.224)) == pytest.approx(0.270, abs=1e-3)
    # the exact finite-N success probability tends to the limit
    assert float(one_plus_one_success_probability(1.224, dim=100_000)) == pytest.approx(0.270, abs=2e-3)


def test_one_plus_one_success_probability_exact_by_sampling():
    """N = 10, sigma* = 2: 200000 offspring of a parent at distance 1, the better fraction within 4
    binomial standard errors of the noncentral chi-square value."""
    N, ss, n = 10, 2.0, 200_000
    rng = np.random.default_rng(2)
    x = np.zeros(N)
    x[0] = 1.0
    off = x + ss / N * rng.standard_normal((n, N))
    p = float(one_plus_one_success_probability(ss, dim=N))
    frac = float((np.linalg.norm(off, axis=1) < 1).mean())
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n)


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["equal", "log_rank"])
def test_csa_es_one_generation_progress_matches_theory(weights):
    """The engine's CSA-ES with ``weights``: one generation from distance 1 on the sphere in N = 400,
    sigma* = 2, (3/3, 12), 4000 replicates.  The mean normalised progress N (1 - R') lies within 4
    standard errors of the large-N prediction, plus 0.01 for the finite-N error of that limit (Beyer's
    finite-N form c s (1+a)/sqrt((1+a)(1+b)) - N(sqrt(1+b)-1), a = s^2/2N, b = s^2/(mu N), differs
    from it by 0.003 here; measured at N = 400 with 8000 replicates: 1.678 +- 0.009 against 1.692)."""
    N, R, mu, lam, ss = 400, 4000, 3, 12, 2.0
    land = build_landscape("sphere", {"dim": N}, replicates=R, seed=1, dtype=torch.float64)
    opt0 = land.optimum()
    x0 = opt0.clone()
    x0[:, 0] += 1.0
    es = OPTIMIZERS.build("csa_es", {"popsize": lam, "mu": mu, "weights": weights, "sigma0": ss / N},
                          landscape=land, budget=Budget(R), generator=torch.Generator().manual_seed(3))
    es.state.mean = x0.clone()
    es.step()
    phi = (N * (1 - (es.state.mean - opt0).norm(dim=1))).numpy()
    w = np.zeros(lam)
    w[:mu] = recombination_weights(lam, mu, weights)[0]
    pred = float(weighted_progress_rate(ss, w))
    assert abs(phi.mean() - pred) < 4 * phi.std(ddof=1) / math.sqrt(R) + 0.01
    if weights == "equal":
        assert pred == pytest.approx(float(progress_rate(ss, mu, lam)), rel=1e-10)
