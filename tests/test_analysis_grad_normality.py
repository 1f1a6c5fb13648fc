"""Normality of mini-batch means (analysis 'minibatch_normality') and its theory functions."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from evosgd.analysis.normality import (
    NormalityParams,
    berry_esseen_bound,
    clt_tail_probability,
    edgeworth_kolmogorov_distance,
    mean_excess_kurtosis,
    mean_skewness,
    measure_normality,
    population_moments,
)
from evosgd.core.seeding import make_generator
from evosgd.landscapes import build_landscape


def test_population_moments_of_a_bernoulli_population():
    p = 0.25  # population [1, 0, 0, 0]: Bernoulli(1/4) moments in closed form
    m = population_moments(np.array([1.0, 0.0, 0.0, 0.0]))
    q = p * (1 - p)
    assert m["skewness"] == pytest.approx((1 - 2 * p) / math.sqrt(q), rel=1e-12)
    assert m["excess_kurtosis"] == pytest.approx((1 - 6 * q) / q, rel=1e-12)
    assert m["rho"] == pytest.approx(p * (1 - p) ** 3 + (1 - p) * p**3, rel=1e-12)


def test_skewness_and_kurtosis_of_the_mean_by_enumeration():
    """Exact case: average over *all* N^b ordered draws of a 4-element population; the law of
    the mean is then the exact law of b iid draws, so gamma/sqrt(b) and kappa/b hold to rounding."""
    v = np.array([0.0, 1.0, 1.0, 5.0])
    m = population_moments(v)
    for b in (2, 3, 4):
        means = np.array([v[list(t)].mean() for t in itertools.product(range(4), repeat=b)])
        mm = population_moments(means)
        assert mm["skewness"] == pytest.approx(mean_skewness(m["skewness"], b), rel=1e-10)
        assert mm["excess_kurtosis"] == pytest.approx(mean_excess_kurtosis(m["excess_kurtosis"], b), rel=1e-10)


def test_edgeworth_and_berry_esseen_against_the_exact_gamma_law():
    """Exact case: the mean of b Exp(1) draws is Gamma(b, scale 1/b), so sup|F_b - Phi| can be
    computed on a fine grid.  Edgeworth's error is O(1/b): at b = 200 within 15%; Berry-Esseen
    (rho = E|X - 1|^3 = 12/e - 2) must hold at every b."""
    rho = 12 / math.e - 2
    z = np.linspace(-6, 6, 200001)
    for b in (5, 50, 200):
        exact = np.abs(stats.gamma.cdf(1 + z / math.sqrt(b), a=b, scale=1 / b) - stats.norm.cdf(z)).max()
        assert exact <= berry_esseen_bound(rho, 1.0, b)
        if b == 200:
            assert exact == pytest.approx(edgeworth_kolmogorov_distance(2.0, b), rel=0.15)
    assert clt_tail_probability(1.96, 1.0, 1) == pytest.approx(0.05, abs=1e-4)


@pytest.fixture(scope="module")
def result():
    land = build_landscape("sphere", {"dim": 4, "noise_std": 1.0}, replicates=1, seed=2, dtype=torch.float64)
    params = NormalityParams(batch_sizes=[1, 4, 32], population=4096, samples=1500, point="optimum", bootstrap=300)
    return measure_normality(land, params, make_generator(4))


def test_measured_skewness_matches_gamma_over_root_b(result):
    """Exact case: on the noisy sphere at its optimum the per-example loss is ||xi||^2 =
    sigma^2 chi2_4 (skewness sqrt(8/4) = 1.41) and the gradient projection is Gaussian (skewness 0).
    The prediction uses the drawn population's moments, the measurement 1500 means: allow the
    bootstrap CI widened by 2 (its half-width is ~1.96 se; 2x makes it ~4 se)."""
    pm = result.tables["population_moments"].set_index("variable")
    assert pm.loc["loss", "skewness"] == pytest.approx(math.sqrt(2.0), abs=0.15)  # 4096 draws: se ~ sqrt(6*... ) ~ 0.07
    c = result.comparison
    sk = c[c.quantity == "skewness of the mini-batch mean"]
    centre = (sk.measured_high + sk.measured_low) / 2
    half = (sk.measured_high - sk.measured_low) / 2
    assert ((sk.predicted - sk.measured).abs() <= 2 * half + 1e-12).all()
    assert centre.notna().all()


def test_kolmogorov_distance_and_loss_tail(result):
    c = result.comparison
    kd = c[c.quantity == "Kolmogorov distance to the normal"]
    # DKW: the true distance is in [D - h, D + h]; the Berry-Esseen upper band must reach it
    assert (kd.measured_low <= kd.predicted_high).all()
    # the loss (skewed) is far from normal at b = 1: D well above the DKW noise floor
    loss_b1 = kd[(kd.series == "loss") & (kd.x == 1)].iloc[0]
    assert loss_b1.measured_low > 0.02
    tail = c[c.quantity == "P(|L_b - L| > eps)"]
    # measured frequency within the Berry-Esseen band around the CLT prediction (allowing the binomial CI)
    assert ((tail.measured_high >= tail.predicted_low) & (tail.measured_low <= tail.predicted_high)).all()
    gof = result.tables["goodness_of_fit"]
    assert gof[(gof.variable == "loss") & (gof.batch_size == 1)].shapiro_pvalue.iloc[0] < 1e-6
    assert set(result.tables["qq"].columns) == {"variable", "batch_size", "probability", "normal_quantile", "sample_quantile"}


def test_verdicts_one_per_claim(result):
    v = result.tables["verdicts"]
    # per variable: Edgeworth, skewness, kurtosis, Shapiro-Wilk at the largest b; plus the loss tail
    assert len(v) == 4 * 2 + 1
    gof = result.tables["goodness_of_fit"]
    for name in gof.variable.unique():
        last = gof[gof.variable == name].sort_values("batch_size").iloc[-1]
        row = v[v.claim.str.startswith(f"{name}: the mini-batch mean is Gaussian")].iloc[0]
        assert row.verdict == ("supported" if last.shapiro_pvalue >= 0.05 else "not supported")
