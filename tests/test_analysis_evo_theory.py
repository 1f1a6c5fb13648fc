"""Closed forms of the evolution-side theory analyses (popgen, selection_gradient,
drift_decomposition, temperature) against exact references: the Wright-Fisher Markov chain,
direct matrix algebra, scipy's discrete Lyapunov solver and numerical integration."""

import math

import numpy as np
import pytest
from scipy import integrate, linalg

from evosgd.analysis import drift_decomposition as dd
from evosgd.analysis import popgen as pg
from evosgd.analysis import selection_gradient as sg
from evosgd.analysis import temperature as tp
from evosgd.evolution.wright_fisher import kimura_fixation_probability as engine_kimura

# ----------------------------------------------------------------------------- popgen


def test_heterozygosity_closed_form():
    assert pg.expected_heterozygosity(0.5, 10, 0) == 0.5
    np.testing.assert_allclose(pg.expected_heterozygosity(0.5, 10, [1, 2]), [0.45, 0.405])


def test_kimura_neutral_limit_symmetry_and_large_n():
    p = np.array([0.01, 0.3, 0.9])
    np.testing.assert_allclose(pg.kimura_fixation_probability(p, 0.0, 100), p)
    # continuity at s = 0: u = p + O(Ns)
    np.testing.assert_allclose(pg.kimura_fixation_probability(p, 1e-9, 100), p, rtol=1e-6)
    # u(p, s) = 1 - u(1 - p, -s): fixing one allele is losing the other
    for s in (-0.03, 0.01, 0.2):
        np.testing.assert_allclose(pg.kimura_fixation_probability(p, s, 50), 1 - pg.kimura_fixation_probability(1 - p, -s, 50))
    # new mutant in a large population: 1 - exp(-2s) (Haldane's ~2s for small s)
    n = 10 ** 6
    assert pg.kimura_fixation_probability(1 / n, 0.01, n) == pytest.approx(1 - math.exp(-0.02), rel=1e-5)
    # the engine's own formula agrees
    for s in (-0.02, 0.0, 0.05):
        assert pg.kimura_fixation_probability(1 / 40, s, 40) == pytest.approx(engine_kimura(s, 40), rel=1e-12)


def test_exact_chain_neutral_is_martingale():
    u, t1 = pg.wright_fisher_chain(30, 0.0)
    np.testing.assert_allclose(u, np.arange(31) / 30, atol=1e-10)  # E[p_t] = p_0 and absorption => u(i) = i/N
    assert t1[-1] == 0 and np.isnan(t1[0])


@pytest.mark.parametrize("n", [50, 100, 200])
def test_kimura_ohta_against_exact_chain(n):
    _, t1 = pg.wright_fisher_chain(n, 0.0)
    # the diffusion time differs from the exact discrete chain by O(1/N) relative; at N >= 50 the
    # measured gap is ~1/N (1.1% at N = 100), so 2/N is a bound that a wrong factor (4N, N) breaks
    for i in (1, n // 2):
        assert t1[i] == pytest.approx(float(pg.kimura_ohta_fixation_time(i / n, n)), rel=2.0 / n)
    assert t1[1] == pytest.approx(2 * n, rel=0.05)  # "about 2N generations" for a new mutant (haploid)


@pytest.mark.parametrize("n, s", [(100, 0.01), (200, 0.005), (200, -0.005), (50, 0.02), (50, -0.04)])
def test_kimura_against_exact_chain(n, s):
    u, _ = pg.wright_fisher_chain(n, s)
    # the diffusion keeps the O(s) drift of p and drops its O(s^2) terms: a relative error O(|s|),
    # and for a deleterious allele (u ~ e^{-2N|s|}) an exponent error O(N s^2) on top
    assert u[1] == pytest.approx(float(pg.kimura_fixation_probability(1 / n, s, n)), rel=abs(s) + 2 * n * s * s)


@pytest.mark.parametrize("n, s", [(100, 0.01), (100, -0.01), (50, 0.04), (50, -0.04), (200, 0.02)])
def test_kimura_ohta_selected_time_against_exact_chain(n, s):
    _, t1 = pg.wright_fisher_chain(n, s)
    # diffusion vs exact chain: O(1/N) (as in the neutral case) plus O(|s|) from the dropped terms
    for i in (1, int(0.3 * n)):
        assert t1[i] == pytest.approx(pg.kimura_ohta_selected_fixation_time(i / n, s, n), rel=2.0 / n + abs(s))


def test_kimura_ohta_selected_time_symmetry_and_neutral_limit():
    for p in (0.01, 0.3):
        # Maruyama (1974): the conditional fixation time is the same for s and -s
        assert pg.kimura_ohta_selected_fixation_time(p, 0.02, 100) == pytest.approx(pg.kimura_ohta_selected_fixation_time(p, -0.02, 100), rel=1e-8)
        assert pg.kimura_ohta_selected_fixation_time(p, 1e-7, 100) == pytest.approx(float(pg.kimura_ohta_fixation_time(p, 100)), rel=1e-5)
    # strong selection fixes faster than neutral: ~ (2/s) ln(2 N s) << 2N
    assert pg.kimura_ohta_selected_fixation_time(0.01, 0.1, 100) < 0.5 * float(pg.kimura_ohta_fixation_time(0.01, 100))


# ----------------------------------------------------------------------------- Lande / selection gradient


def _problem(D=3, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(D, D))
    A = M @ M.T + D * np.eye(D)  # a full SPD Hessian
    Q = rng.normal(size=(D, D))
    G = 0.3 * (Q @ Q.T) + 0.1 * np.eye(D)  # a full genetic covariance
    return A, G, rng.normal(size=D), rng.normal(size=D)


def test_gaussian_response_equals_posterior_mean_shift():
    """Selection with Gaussian fitness on Gaussian genotypes is a Bayesian update: the selected
    distribution has precision G^-1 + beta A and mean (G^-1 + beta A)^-1 (G^-1 zbar + beta A z*)."""
    A, G, zbar, opt = _problem()
    beta = 0.7
    P = np.linalg.inv(G) + beta * A
    expected = np.linalg.solve(P, np.linalg.solve(G, zbar) + beta * A @ opt) - zbar
    np.testing.assert_allclose(sg.gaussian_selection_response(zbar, opt, A, G, beta), expected, rtol=1e-10, atol=1e-12)
    # Lande's form with beta_L = -(G + (beta A)^-1)^-1 (zbar - z*)
    bl = -np.linalg.solve(G + np.linalg.inv(beta * A), zbar - opt)
    np.testing.assert_allclose(sg.gaussian_selection_gradient(zbar, opt, A, G, beta), bl, rtol=1e-10)
    np.testing.assert_allclose(sg.lande_response(G, bl), expected, rtol=1e-10, atol=1e-12)


def test_gaussian_selection_gradient_is_gradient_of_log_mean_fitness():
    """beta_L = grad ln wbar, checked by central finite differences of the closed-form ln wbar."""
    A, G, zbar, opt = _problem(seed=1)
    beta = 0.4

    def log_wbar(m):
        return dd.gaussian_tilt(m, opt, A, G, beta, 1.0)[0]

    h = 1e-6
    fd = np.array([(log_wbar(zbar + h * e) - log_wbar(zbar - h * e)) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(sg.gaussian_selection_gradient(zbar, opt, A, G, beta), fd, rtol=1e-6)


def test_weak_selection_limit_is_the_gradient_step():
    A, _, zbar, opt = _problem(seed=2)
    for s2 in (1e-2, 1e-3, 1e-4):
        G = s2 * np.eye(3)
        lande = sg.gaussian_selection_response(zbar, opt, A, G, 1.0)
        step = sg.sgd_step(zbar, opt, A, sg.equivalent_learning_rate(s2, 1.0))
        # (I + beta s2 A)^-1 - I = O(beta s2 ||A||): relative error <= beta s2 ||A||_2
        err = np.linalg.norm(lande - step) / np.linalg.norm(step)
        assert err <= s2 * np.linalg.norm(A, 2)
        assert err >= 0.1 * s2 * np.linalg.eigvalsh(A).min()  # and it does not vanish faster


# ----------------------------------------------------------------------------- drift decomposition


def test_gaussian_tilt_against_numerical_integration():
    a, g, mu, opt, beta = 2.0, 0.5, 0.8, -0.3, 0.6
    for k in (1.0, 2.0):
        def w(z, k=k):
            return math.exp(-k * beta * a * (z - opt) ** 2 / 2)

        def dens(z):
            return math.exp(-(z - mu) ** 2 / (2 * g)) / math.sqrt(2 * math.pi * g)

        Z = integrate.quad(lambda z: w(z) * dens(z), -20, 20)[0]
        m = integrate.quad(lambda z: z * w(z) * dens(z), -20, 20)[0] / Z
        v = integrate.quad(lambda z, m=m: (z - m) ** 2 * w(z) * dens(z), -20, 20)[0] / Z
        logz, mk, gk = dd.gaussian_tilt(np.array([mu]), np.array([opt]), np.array([[a]]), np.array([[g]]), beta, k)
        assert logz == pytest.approx(math.log(Z), rel=1e-8)
        assert mk[0] == pytest.approx(m, rel=1e-8)
        assert gk[0, 0] == pytest.approx(v, rel=1e-8)


def test_wf_step_moments_neutral_is_exact_drift():
    A, G, zbar, opt = _problem(seed=3)
    for n in (2, 7, 100):
        mean, cov = dd.wf_step_moments(zbar, opt, A, G, 0.0, n, mutation_var=0.04)
        np.testing.assert_allclose(mean, 0.0, atol=1e-14)
        np.testing.assert_allclose(cov, G * (n - 1) / n ** 2 + 0.04 * np.eye(3) / n, rtol=1e-12)


def test_sgd_step_moments():
    A, _, zbar, opt = _problem(seed=4)
    Sigma = np.diag([1.0, 2.0, 3.0])
    mean, cov = dd.sgd_step_moments(zbar, opt, A, 0.1, Sigma, 8)
    np.testing.assert_allclose(mean, -0.1 * A @ (zbar - opt))
    np.testing.assert_allclose(cov, 0.01 * Sigma / 8)


# ----------------------------------------------------------------------------- temperature


def test_sgd_stationary_variance_solves_discrete_lyapunov():
    a = np.array([1.0, 3.0, 9.0])
    lr, s2, b = 0.15, 2.5, 4
    F = np.eye(3) - lr * np.diag(a)
    C = linalg.solve_discrete_lyapunov(F, lr ** 2 * s2 * np.eye(3) / b)  # C = F C F^T + Q
    np.testing.assert_allclose(np.diag(C), tp.sgd_stationary_variance(a, lr, s2, b), rtol=1e-10)
    np.testing.assert_allclose(C - np.diag(np.diag(C)), 0, atol=1e-14)
    # small-eta limit: T = eta s^2 / (2 b) on every axis (Boltzmann)
    np.testing.assert_allclose(tp.sgd_temperature(a, 1e-6, s2, b), 1e-6 * s2 / (2 * b), rtol=1e-5)


@pytest.mark.parametrize("n", [2, 10, 100])
def test_sella_hirsh_exponent_is_detailed_balance_of_kimura(n):
    """pi(y)/pi(x) = u(x->y)/u(y->x) = e^{nu s}: the ratio of Kimura's haploid fixation
    probabilities of a new mutant with log fitness advantage s and -s is exp(2 (N-1) s)."""
    nu = tp.sella_hirsh_exponent(n)
    for s in (0.001, 0.02, 0.3):
        up = pg.kimura_fixation_probability(1 / n, s, n)
        um = pg.kimura_fixation_probability(1 / n, -s, n)
        assert math.log(up / um) == pytest.approx(nu * s, rel=1e-9)
    assert tp.sella_hirsh_exponent(n, "moran") == n - 1
    assert tp.wf_temperature(n, 2.0) == pytest.approx(1 / (4 * (n - 1)))
    # the population size whose temperature is SGD's eta s^2 / (2b)
    n_eq = tp.equivalent_population_size(0.1, 4.0, 3, 1.0)
    assert tp.wf_temperature(n_eq, 1.0) == pytest.approx(0.1 * 4.0 / (2 * 3))
