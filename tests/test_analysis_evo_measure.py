"""Measurements of the evolution-side theory analyses against their closed forms on exact cases,
and the registered analyses end to end (small sizes, as a scenario's [quick] would set them).

Tolerances are derived from the sample size: a measured mean is compared with its prediction
within 4 standard errors (two-sided normal tail 6e-5 per check; every stream is seeded, so a
pass is reproducible), plus any known systematic bias of the estimator, stated where used."""

import math

import numpy as np
import pytest
import torch

from evosgd.analysis import drift_decomposition as dd
from evosgd.analysis import popgen as pg
from evosgd.analysis import selection_gradient as sg
from evosgd.analysis import temperature as tp
from evosgd.analysis.evo_common import Quadratic, bootstrap_ci, mean_ci, wilson_ci
from evosgd.core.analysis_api import COMPARISON_COLUMNS, AnalysisContext
from evosgd.core.errors import ConfigError, ParameterError
from evosgd.core.registry import ANALYSES

Z = 4.0  # standard errors allowed for a seeded statistical check


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is faster on a shared 2-core machine (restored afterwards)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def context(label: str = "t", dtype=torch.float64) -> AnalysisContext:
    return AnalysisContext(scenario="test", label=label, seed=11, replicates=1, device=torch.device("cpu"), dtype=dtype, quick=True)


# ----------------------------------------------------------------------------- CI helpers


def test_confidence_intervals():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0], 0.95)
    assert m == 2.0 and hi - m == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # t_{0.975, 2} s / sqrt(3), s = 1
    p, lo, hi = wilson_ci(0, 100)
    assert p == 0 and lo == 0 and 0.03 < hi < 0.04  # Wilson's upper bound for 0/100 is 0.037
    x = torch.randn(500, generator=gen(0), dtype=torch.float64)
    est, lo, hi = bootstrap_ci(x, lambda b: b.mean(-1), n_boot=400, generator=gen(1))
    se = float(x.std()) / math.sqrt(500)
    assert lo < est < hi and (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.2)  # percentile CI ~ normal CI


# ----------------------------------------------------------------------------- popgen


def test_heterozygosity_decay_matches_exact_expectation():
    n, R, T = 20, 3000, 40
    H = pg.simulate_heterozygosity(n, 0.5, T, R, gen(2)).numpy()
    pred = pg.expected_heterozygosity(0.5, n, np.arange(T + 1))
    se = H.std(axis=1, ddof=1) / math.sqrt(R)
    assert H[0].tolist() == [0.5] * R
    assert np.all(np.abs(H.mean(axis=1) - pred)[1:] <= Z * se[1:])
    # the diploid convention (1 - 1/(2N))^t would be outside: the test can tell them apart
    diploid = pg.expected_heterozygosity(0.5, 2 * n, T)
    assert abs(H[T].mean() - diploid) > Z * se[T]


def test_fixation_probability_and_time_match_exact_chain():
    n, R = 20, 12000
    s = torch.tensor([-0.05, 0.0, 0.1], dtype=torch.float64)
    fixed, time = pg.simulate_fixation(n, s, 1, R, gen(3), max_generations=60 * n)
    assert bool((time > 0).all())  # every population absorbed
    for j, sj in enumerate(s.tolist()):
        u, t1 = pg.wright_fisher_chain(n, sj)
        k = int(fixed[j].sum())
        assert abs(k / R - u[1]) <= Z * math.sqrt(u[1] * (1 - u[1]) / R), (sj, k / R, u[1])
        if sj == 0.0:
            times = time[j][fixed[j]].double().numpy()
            assert abs(times.mean() - t1[1]) <= Z * times.std(ddof=1) / math.sqrt(len(times))


def test_popgen_analysis_end_to_end():
    params = dict(population_sizes=[10, 30], replicates=400, scaled_selection=[-1.0, 0.0, 2.0], fixation_replicates=1500, record_points=5)
    res = ANALYSES.build("popgen", params, context=context())
    df = res.comparison
    assert list(df.columns[: len(COMPARISON_COLUMNS)]) == COMPARISON_COLUMNS
    assert set(df["quantity"]) == {"heterozygosity H_t / H_0 (neutral drift)", "fixation probability",
                                   "fixation time given fixation", "neutral fixation time given fixation"}
    fx = df[df["quantity"] == "fixation probability"]
    assert len(fx) == 6 and fx["exact_wf"].notna().all()
    assert (fx["measured_low"] <= fx["measured"]).all() and (fx["measured"] <= fx["measured_high"]).all()
    neutral = fx[fx["x"] == 0]
    np.testing.assert_allclose(neutral["predicted"], [0.1, 1 / 30])
    assert len(res.notes) >= 3 and "fixation" in res.tables
    with pytest.raises(ParameterError):
        ANALYSES.build("popgen", dict(population_sizes=[5], initial_count=5), context=context())
    with pytest.raises(ConfigError):
        ANALYSES.validate("popgen", dict(population_size=[5]))  # unknown key


# ----------------------------------------------------------------------------- selection gradient


def test_one_generation_matches_lande_exact_gaussian_case():
    """Large N: the mean step equals Lande's exact-Gaussian response, per coordinate, within
    4 SE plus the finite-N bias, which to leading order is the factor (N-1)/N (bounded here by
    2/N of the response)."""
    D, N, R, s2 = 3, 2048, 300, 0.2
    quad = Quadratic(D, 5.0, dtype=torch.float64)
    zbar = torch.tensor([0.6, -0.4, 0.5], dtype=torch.float64)
    steps = sg.one_generation_steps(quad, zbar, s2, N, 1.0, R, gen(4))
    lande = sg.gaussian_selection_response(zbar.numpy(), np.zeros(D), np.diag(quad.curvatures_np), s2 * np.eye(D), 1.0)
    mean, se = steps.mean(0).numpy(), steps.std(0).numpy() / math.sqrt(R)
    assert np.all(np.abs(mean - lande) <= Z * se + 2.0 / N * np.abs(lande)), (mean, lande, se)
    # and it is *not* the naive gradient step at this genetic variance (beta s2 a up to 1)
    sgd = sg.sgd_step(zbar.numpy(), np.zeros(D), np.diag(quad.curvatures_np), s2)
    assert np.abs(mean - sgd).max() > 10 * se.max()


def test_evolving_population_follows_lande_with_its_own_covariance():
    """Slope of Delta zbar_t on -G_t (I + beta A G_t)^-1 beta A (zbar_t - z*) over 30 generations of
    100 populations of N = 256: 1 within 4 bootstrap SE plus 2/N (finite-N bias); the slope on the
    isotropic gradient step is clearly below 1 (G_t is anisotropic: selection is G-preconditioned)."""
    quad = Quadratic(4, 10.0, dtype=torch.float64)
    zbar = torch.full((4,), 0.5, dtype=torch.float64)
    steps, lande, sgd = sg.evolving_population_steps(quad, zbar, 256, 1.0, 0.03, 30, 100, gen(12))
    assert steps.shape == lande.shape == sgd.shape == (30, 100, 4)

    def slope(pred):
        sums = torch.stack([(steps * pred).sum((0, 2)), (pred * pred).sum((0, 2))], dim=-1)
        return bootstrap_ci(sums, sg.slope_stat, n_boot=400, generator=gen(13))

    b, lo, hi = slope(lande)
    se = (hi - lo) / (2 * 1.96)
    assert abs(b - 1.0) <= Z * se + 2.0 / 256, (b, lo, hi)
    b2, lo2, hi2 = slope(sgd)
    assert hi2 < 0.9, (b2, lo2, hi2)


def test_debiased_sq_norm_is_unbiased():
    """U = (|sum x|^2 - sum |x|^2) / (n (n-1)) has mean |mu|^2: over B independent sets of n
    points x ~ N(mu, I_D) the mean of U is within 4 SE (SE from the B values) of |mu|^2."""
    B, n, D = 400, 50, 3
    mu = torch.tensor([0.3, 0.0, -0.1], dtype=torch.float64)
    x = mu + torch.randn(B, n, D, generator=gen(5), dtype=torch.float64)
    u = sg.debiased_sq_norm(x)
    target = float(mu @ mu)
    assert abs(float(u.mean()) - target) <= Z * float(u.std()) / math.sqrt(B)
    naive = (x.mean(1) ** 2).sum(-1)  # the plain estimator is biased up by D / n = 0.06
    assert float(naive.mean()) - target > Z * float(naive.std()) / math.sqrt(B)


def test_selection_gradient_analysis_end_to_end():
    params = dict(dim=3, population_sizes=[8, 128], genetic_variances=[0.01, 0.5], replicates=200, bootstrap=50,
                  evolving_generations=10, evolving_population_sizes=[16], mutation_variances=[1e-3], evolving_replicates=20)
    res = ANALYSES.build("selection_gradient", params, context=context(dtype=torch.float32))
    df = res.comparison
    assert len(df) == 2 * 2 * 4 + 2
    assert (df[df["quantity"] == sg.EVOLVING_LANDE]["predicted"] == 1.0).all()
    sgd_rows = df[df["quantity"].str.contains("SGD step")]
    # the predicted gap to the SGD step grows with the genetic variance
    small, large = (sgd_rows[sgd_rows["x"] == v]["predicted"].iloc[0] for v in (0.01, 0.5))
    assert 0 < small < large < 1
    assert "predicted_sgd" in df.columns and "mean_steps" in res.tables and res.notes


# ----------------------------------------------------------------------------- drift decomposition


def _sq_dev(x: torch.Tensor) -> np.ndarray:
    return ((x - x.mean(0)) ** 2).sum(-1).numpy() * x.shape[0] / (x.shape[0] - 1)


def test_sgd_steps_are_unbiased_with_variance_sigma_over_b():
    quad = Quadratic(3, 4.0, noise=1.5, noise_model="shift", dtype=torch.float64)
    zbar = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    R, lr, b = 8000, 0.1, 4
    steps = dd.sgd_steps(quad, zbar, lr, b, R, gen(6))
    mean, cov = dd.sgd_step_moments(zbar.numpy(), np.zeros(3), np.diag(quad.curvatures_np), lr, np.diag(quad.gradient_noise_cov()), b)
    se = steps.std(0).numpy() / math.sqrt(R)
    assert np.all(np.abs(steps.mean(0).numpy() - mean) <= Z * se)
    q = _sq_dev(steps)  # mean of q estimates tr Cov; its SE from the sample of q
    assert abs(q.mean() - np.trace(cov)) <= Z * q.std(ddof=1) / math.sqrt(R)


@pytest.mark.parametrize("beta, n", [(0.0, 8), (0.0, 64), (1.0, 256)])
def test_wf_step_variance(beta, n):
    """Neutral: E[Delta] = 0 and tr Cov = tr G (N-1)/N^2 exactly.  With selection the covariance
    formula is leading order in 1/N: the relative O(1/N) remainder (< 2/N assumed) is added."""
    quad = Quadratic(3, 4.0, dtype=torch.float64)
    zbar = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    R, s2 = 6000, 0.1
    steps = sg.one_generation_steps(quad, zbar, s2, n, beta, R, gen(7 + n))
    mean, cov = dd.wf_step_moments(zbar.numpy(), np.zeros(3), np.diag(quad.curvatures_np), s2 * np.eye(3), beta, n)
    se = steps.std(0).numpy() / math.sqrt(R)
    bias = 0.0 if beta == 0 else 2.0 / n
    assert np.all(np.abs(steps.mean(0).numpy() - mean) <= Z * se + bias * np.abs(mean))
    q = _sq_dev(steps)
    assert abs(q.mean() - np.trace(cov)) <= Z * q.std(ddof=1) / math.sqrt(R) + bias * np.trace(cov)


def test_drift_decomposition_analysis_end_to_end():
    params = dict(dim=3, batch_sizes=[1, 16], population_sizes=[16, 128], replicates=400, bootstrap=50)
    res = ANALYSES.build("drift_decomposition", params, context=context(dtype=torch.float32))
    df = res.comparison
    assert len(df) == (2 + 2 + 2) * 4
    assert set(df["series"].str.split(" ").str[0]) == {"SGD", "Wright-Fisher", "neutral"}
    neutral_progress = df[(df["series"].str.startswith("neutral")) & (df["quantity"] == dd.QUANTITIES["along"])]
    assert (neutral_progress["predicted"] == 0).all()
    sgd_var = df[(df["series"].str.startswith("SGD")) & (df["quantity"] == dd.QUANTITIES["var_orth"])].sort_values("x")
    assert sgd_var["predicted"].iloc[1] / sgd_var["predicted"].iloc[0] == pytest.approx(16.0)  # variance ~ 1/b
    assert len(res.notes) >= 6


# ----------------------------------------------------------------------------- temperature


def test_sgd_temperature_matches_lyapunov():
    quad = Quadratic(2, 4.0, noise=2.0, noise_model="isotropic", dtype=torch.float64)
    temps = tp.sgd_axis_temperatures(quad, 0.1, 2, 1500, 300, 200, gen(8))  # [R, D], replicates independent
    pred = tp.sgd_temperature(quad.curvatures_np, 0.1, 4.0, 2)
    per_axis = temps.numpy()
    se = per_axis.std(0, ddof=1) / math.sqrt(per_axis.shape[0])
    assert np.all(np.abs(per_axis.mean(0) - pred) <= Z * se)


def test_weak_mutation_wright_fisher_temperature_is_sella_hirsh():
    """N = 3, N mu = 0.1.  The weak-mutation law T = 1/(2(N-1) beta) holds up to O(N mu) from
    polymorphism (allowed: 10%); the exponents 2N (T 1/3 smaller) or Moran's N-1 (T twice as
    large) fall outside the same tolerance, so the test tells the three apart."""
    n, beta = 3, 1.0
    quad = Quadratic(2, 4.0, dtype=torch.float64)
    T = tp.wf_temperature(n, beta)
    mu = 0.1 / n
    generations = int(30 / mu)
    temps = tp.wf_axis_temperatures(quad, n, beta, mu, 0.7 * math.sqrt(T), generations, generations // 4, 128, gen(9))
    per_rep = temps.mean(1).numpy()
    m, se = per_rep.mean(), per_rep.std(ddof=1) / math.sqrt(len(per_rep))
    assert abs(m - T) <= Z * se + 0.1 * T, (m, T, se)
    for wrong in (1 / (2 * n * beta), 1 / ((n - 1) * beta)):
        assert abs(m - wrong) > Z * se + 0.1 * wrong, (m, wrong, se)


def test_temperature_analysis_end_to_end():
    params = dict(population_sizes=[4, 8], replicates=32, substitutions=8, batch_sizes=[1, 8], sgd_steps=400)
    res = ANALYSES.build("temperature", params, context=context(dtype=torch.float32))
    df = res.comparison
    t = df[df["quantity"] == tp.QUANTITY]
    assert len(t) == 4 and (t["x"] == t["predicted"]).all() and t["log_x"].all()
    assert len(df[df["quantity"] == tp.SHAPE]) == 4
    with pytest.raises(ParameterError):
        ANALYSES.build("temperature", dict(lr=0.6, condition=4.0), context=context())
