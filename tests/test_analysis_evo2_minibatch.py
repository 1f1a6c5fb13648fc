"""Mini-batch fitness (issue #8, question 8): closed forms of evosgd.analysis.evo2_minibatch_fitness
against quadrature, matrix algebra and exact binomial counts, and the registered analysis."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from evosgd.analysis import evo2_minibatch_fitness as mf
from evosgd.analysis.evo_common import Quadratic
from evosgd.core.analysis_api import AnalysisContext
from evosgd.core.registry import ANALYSES


def test_preconditioner_is_the_selected_covariance():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 3))
    G = X @ X.T + 0.1 * np.eye(3)
    A = np.diag([1.0, 2.0, 5.0])
    np.testing.assert_allclose(mf.selection_preconditioner(G, A, 0.7), np.linalg.inv(np.linalg.inv(G) + 0.7 * A), rtol=1e-10)
    # weak selection: K -> G, so the batch noise of the population -> the SGD noise at lr = beta sigma_G^2
    s2 = 1e-5
    pop = np.trace(mf.minibatch_selection_noise(s2 * np.eye(3), A, 2.0, 1.5, 8))
    sgd = np.trace(mf.sgd_step_noise(2.0 * s2, 1.5, 3, 8))
    assert pop == pytest.approx(sgd, rel=1e-4)


def test_response_on_a_tilted_landscape_by_quadrature():
    # 1-D: N(m, G) selected by exp(-beta (a z^2 / 2 - zeta z)); the mean moves by -beta K (a m - zeta)
    for G, beta, a, m, zeta in ((0.1, 1.0, 3.0, 0.7, 0.4), (2.0, 0.5, 1.0, -1.3, -2.0)):
        dens = lambda z, m=m, G=G, beta=beta, a=a, zeta=zeta: math.exp(-(z - m) ** 2 / (2 * G) - beta * (a * z * z / 2 - zeta * z))
        lim = (m - 15 * math.sqrt(G), m + 15 * math.sqrt(G))
        z0 = integrate.quad(dens, *lim, epsabs=0, epsrel=1e-13)[0]
        z1 = integrate.quad(lambda z, dens=dens: z * dens(z), *lim, epsabs=0, epsrel=1e-13)[0]
        K = mf.selection_preconditioner(np.array([[G]]), np.array([[a]]), beta)[0, 0]
        assert z1 / z0 - m == pytest.approx(-beta * K * (a * m - zeta), rel=1e-9)


def test_pair_ordering_is_exactly_gaussian():
    quad = Quadratic(2, 4.0, noise=1.0, noise_model="isotropic", dtype=torch.float64)
    z1 = torch.tensor([0.30, 0.10], dtype=torch.float64)
    z2 = torch.tensor([0.25, 0.20], dtype=torch.float64)
    gap = float(quad.loss(z1) - quad.loss(z2))
    dist = float((z1 - z2).norm())
    n = 20000
    for b in (1, 9):
        k = mf.pair_ordering(quad, z1, z2, b, n, torch.Generator().manual_seed(b))
        p = mf.correct_order_probability(gap, dist, 1.0, b)
        # binomial count: 4 standard deviations sqrt(n p (1 - p))
        assert abs(k - n * p) <= 4 * math.sqrt(n * p * (1 - p))
    assert mf.correct_order_probability(0.3, 0.5, 1.0, 4) == pytest.approx(stats.norm.cdf(0.3 * 2 / 0.5))
    assert mf.correct_order_probability(0.3, 0.5, 0.0, 4) == 1.0


def test_registered_analysis_small_case():
    entry = ANALYSES.get("minibatch_fitness")
    p = entry.params.model_validate(dict(dim=3, batch_sizes=[1, 16], population_size=128, replicates=1500, bootstrap=100))
    ctx = AnalysisContext(scenario="t", label="mf", seed=4, replicates=1, device=torch.device("cpu"), dtype=torch.float64)
    df = entry.factory(p, context=ctx).comparison
    sgd_var = df[(df["quantity"] == mf.Q_VAR) & df["series"].str.startswith("SGD")]
    # SGD: eta^2 s^2 D / b exactly; the sample variance of 1500 steps has relative sd sqrt(2/1500) = 3.7%
    np.testing.assert_allclose(sgd_var["measured"], sgd_var["predicted"], rtol=4 * math.sqrt(2 / 1500))
    wf_var = df[(df["quantity"] == mf.Q_VAR) & df["series"].str.startswith("Wright")]
    # population: batch noise + drift floor (leading order in 1/N): within 4 sd of the estimate + 5% model error
    np.testing.assert_allclose(wf_var["measured"], wf_var["predicted"], rtol=4 * math.sqrt(2 / 1500) + 0.05)
    assert wf_var["measured"].iloc[0] > 2 * wf_var["measured"].iloc[1]  # b = 16 removes most of the batch noise
    means = df[df["quantity"] == mf.Q_MEAN]
    half = (means["measured_high"] - means["measured_low"]) / 2
    assert ((means["measured"] - means["predicted"]).abs() <= 2 * half).all()  # unbiased at every b
