"""Mini-batch concentration (analysis 'minibatch_concentration') and its theory functions."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from evosgd.analysis.minibatch import (
    MinibatchParams,
    _imhof_tail,
    chebyshev_batch_size,
    chebyshev_failure_bound,
    clt_batch_size,
    gaussian_quadratic_tail,
    measure_concentration,
    minibatch_gradient_variance,
)
from evosgd.core.analysis_api import AnalysisContext
from evosgd.core.errors import ConfigError
from evosgd.core.registry import ANALYSES
from evosgd.core.seeding import make_generator
from evosgd.landscapes import build_landscape


def test_minibatch_variance_matches_exhaustive_enumeration():
    """Exact case: a population of N = 6 vectors; average ||g_b - g||^2 over *every* subset
    (without replacement) and *every* ordered tuple (with replacement).  Both formulas are
    identities, so the only error is float64 rounding (tolerance 1e-12 relative)."""
    rng = np.random.default_rng(3)
    G = rng.normal(size=(6, 3)) * np.array([1.0, 3.0, 0.2])
    g = G.mean(0)
    trace = float(((G - g) ** 2).sum(1).mean())  # tr of the population covariance (divisor N)
    for b in (1, 2, 3, 5, 6):
        without = np.mean([((G[list(s)].mean(0) - g) ** 2).sum() for s in itertools.combinations(range(6), b)])
        assert without == pytest.approx(minibatch_gradient_variance(trace, b, 6), rel=1e-12, abs=1e-14)
    for b in (1, 2, 3):
        withr = np.mean([((G[list(s)].mean(0) - g) ** 2).sum() for s in itertools.product(range(6), repeat=b)])
        assert withr == pytest.approx(minibatch_gradient_variance(trace, b), rel=1e-12)


def test_quadratic_form_tail_exact_cases():
    # equal eigenvalues: lambda * chi2_D exactly
    for d, lam, x in [(1, 1.0, 2.0), (5, 2.0, 7.0), (10, 0.3, 9.0), (10, 0.3, 60.0)]:
        assert gaussian_quadratic_tail(np.full(d, lam), x) == pytest.approx(stats.chi2.sf(x / lam, d), rel=1e-9)
    # two equal eigenvalues lambda: an exponential with mean 2 lambda; plus unequal cases against Imhof's integral
    assert gaussian_quadratic_tail(np.array([1.5, 1.5]), 4.0) == pytest.approx(math.exp(-4.0 / 3.0), rel=1e-9)
    for lam, x in [([1.0, 2.0, 3.0], 10.0), ([0.1, 1.0, 4.0, 4.0], 3.0)]:
        assert gaussian_quadratic_tail(np.array(lam), x) == pytest.approx(_imhof_tail(np.array(lam), x), abs=2e-6)
    # widely spread eigenvalues (Imhof's integrand decays too slowly there): condition on Z2, integrate
    lam2 = 1e-2
    conv = integrate.quad(lambda t: stats.chi2.sf(max(0.5 - lam2 * t, 0.0), 1) * stats.chi2.pdf(t, 1), 0, 50,
                          points=[1e-9, 1e-6, 1e-3])[0] + stats.chi2.sf(50, 1)
    assert gaussian_quadratic_tail(np.array([1.0, lam2]), 0.5) == pytest.approx(conv, abs=1e-7)


def test_batch_size_formulas():
    assert chebyshev_batch_size(40.0, eps=2.0, delta=0.1) == 100  # 40 / (0.1 * 4)
    assert chebyshev_batch_size(40.0, eps=2.0, delta=0.09) == 112  # ceil(111.1)
    assert chebyshev_failure_bound(40.0, 10, 2.0) == 1.0 and chebyshev_failure_bound(40.0, 100, 2.0) == pytest.approx(0.1)
    # equal eigenvalues: the CLT quantile is lambda * chi2.isf(delta, D)
    q = 4.0 * stats.chi2.isf(0.1, 10)
    assert clt_batch_size(np.full(10, 4.0), eps=2.0, delta=0.1) == math.ceil(q / 4.0)


@pytest.fixture(scope="module")
def sphere_result():
    land = build_landscape("sphere", {"dim": 8, "noise_std": 1.0}, replicates=1, seed=5, dtype=torch.float64)
    params = MinibatchParams(batch_sizes=[1, 4, 16, 64], population=512, samples=1500, eps_relative=0.5, delta=0.1)
    return measure_concentration(land, params, make_generator(11))


def test_measured_variance_agrees_with_exact_prediction(sphere_result):
    """Exact case: the predictions use the population's own covariance, so E||g_b - g||^2 equals
    the prediction exactly; the measurement is a mean of 1500 iid draws, whose standard error is
    (CI half-width)/1.96.  5 standard errors per row: P(false failure) < 1e-5 over 8 rows."""
    c = sphere_result.comparison
    var = c[c.quantity == "E||g_b - g||^2"]
    assert len(var) == 8 and set(var.series) == {"with replacement", "without replacement"}
    se = (var.measured_high - var.measured_low) / (2 * 1.96)
    assert ((var.measured - var.predicted).abs() <= 5 * se).all()
    # the finite-population correction is visible: without < with replacement at b = 64 of N = 512
    w = var.set_index(["series", "x"]).predicted
    assert w[("without replacement", 64)] == pytest.approx(w[("with replacement", 64)] * (512 - 64) / 511)


def test_failure_rate_respects_chebyshev_and_tracks_the_clt(sphere_result):
    """The per-example gradients of the noisy sphere are Gaussian (2(theta - s - xi)), so the CLT
    prediction is near exact; the measured frequency is binomial with n = 1500: allow 5 binomial
    standard errors sqrt(p(1-p)/n) plus 0.01 for the finite-population / estimated-covariance gap."""
    c = sphere_result.comparison
    fail = c[c.quantity == "P(||g_b - g|| > eps)"]
    assert (fail.measured_low <= fail.predicted_high).all()  # Chebyshev is a bound
    se = np.sqrt(fail.predicted * (1 - fail.predicted) / 1500)
    assert ((fail.measured - fail.predicted).abs() <= 5 * se + 0.01).all()
    rec = c[c.quantity == "P(||g_b - g|| > eps) at the recommended b"].set_index("series")
    summary = sphere_result.tables["summary"].iloc[0]
    assert summary.chebyshev_b == math.ceil(summary.trace_cov / (0.1 * summary.eps**2) - 1e-9)
    assert summary.clt_b < summary.chebyshev_b  # Chebyshev is conservative
    assert rec.loc["Chebyshev batch size", "measured_low"] <= 0.1
    assert rec.loc["CLT batch size", "measured"] <= 0.1 + 5 * math.sqrt(0.09 / 1500)


def test_registered_and_validates_params():
    land = lambda replicates=None, **kw: build_landscape("sphere", {"dim": 4, "noise_std": 0.5}, replicates=replicates or 1, seed=1)
    ctx = AnalysisContext("t", "mb", 1, 1, torch.device("cpu"), torch.float32, make_landscape=land)
    res = ANALYSES.build("minibatch_concentration", {"batch_sizes": [1, 8], "population": 64, "samples": 50}, context=ctx)
    assert set(res.comparison.x) >= {1, 8} and res.notes
    with pytest.raises(ConfigError, match="delta"):
        ANALYSES.validate("minibatch_concentration", {"delta": 1.5})
    with pytest.raises(ConfigError, match="unknown key"):
        ANALYSES.validate("minibatch_concentration", {"batchsize": [1]})
