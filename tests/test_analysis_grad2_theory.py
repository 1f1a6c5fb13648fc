"""Pure theory functions of the optimizer-dynamics analyses (stragglers, staleness, momentum,
clipping, confidence step, pairwise baseline) against exact closed forms, brute force or the
landscape's own autograd.  Deterministic; float64; tolerances are rounding or quadrature error."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from evosgd.analysis import (
    clipping,
    confidence_lr,
    momentum,
    pairwise,
    staleness,
    stragglers,
)
from evosgd.analysis.grad2_common import log_slope
from evosgd.core.errors import ParameterError


# ----------------------------------------------------------------------------- stragglers
def test_harmonic_order_statistics():
    """E max of K Exp(lambda) = H_K / lambda; E T_(k:n) = mu (H_n - H_{n-k}) (Renyi)."""
    assert stragglers.harmonic_number(4) == pytest.approx(25 / 12, rel=1e-15)
    assert stragglers.expected_max_exponential(4, 2.0) == pytest.approx(25 / 24, rel=1e-15)
    assert stragglers.expected_order_statistic_exponential(1, 5, 1.0) == pytest.approx(1 / 5)  # min of 5 is Exp(5)
    assert stragglers.expected_order_statistic_exponential(5, 5, 1.0) == pytest.approx(stragglers.harmonic_number(5))
    with pytest.raises(ParameterError):
        stragglers.expected_order_statistic_exponential(6, 5, 1.0)


@pytest.mark.parametrize("k,n", [(1, 1), (4, 4), (16, 16), (4, 6), (1, 8), (30, 32)])
def test_numerical_order_statistic_matches_exponential_closed_form(k, n):
    """The quadrature of the incomplete-beta survival function reproduces Renyi's closed form;
    quad's requested tolerance is 1e-10 relative, so 1e-7 leaves a wide margin."""
    mu = 1.7
    got = stragglers.expected_order_statistic(stats.expon(scale=mu).cdf, k, n)
    assert got == pytest.approx(mu * (stragglers.harmonic_number(n) - stragglers.harmonic_number(n - k)), rel=1e-7)


def test_two_point_order_statistic_by_enumeration():
    """Exact: enumerate all 2^N slow/fast patterns of N = 6 workers, K = 4."""
    base, p, m, K, N = 1.0, 0.2, 7.0, 4, 6
    total = 0.0
    for pattern in itertools.product([0, 1], repeat=N):
        prob = np.prod([p if s else 1 - p for s in pattern])
        times = sorted(base * (m if s else 1.0) for s in pattern)
        total += prob * times[K - 1]
    assert stragglers.expected_order_statistic_two_point(K, N, base, p, m) == pytest.approx(total, rel=1e-12)


def test_lognormal_order_statistic_against_monte_carlo():
    """2e5 iid maxima of 8 lognormals: the mean's standard error is s/sqrt(2e5); 5 SE => false
    failure probability < 1e-6."""
    rng = np.random.default_rng(0)
    x = np.exp(0.3 + 0.6 * rng.standard_normal((200_000, 8))).max(axis=1)
    pred = stragglers.expected_order_statistic_lognormal(8, 8, 0.3, 0.6)
    assert abs(x.mean() - pred) <= 5 * x.std(ddof=1) / math.sqrt(x.size)
    # K = N = 1: the lognormal mean exp(mu + sigma^2/2)
    assert stragglers.expected_order_statistic_lognormal(1, 1, 0.3, 0.6) == pytest.approx(math.exp(0.3 + 0.18), rel=1e-8)


def test_expected_step_time_dispatch_matches_engine_helper():
    from evosgd.gradient.distributed import (
        ExponentialTime,
        ShiftedExponentialTime,
        expected_sync_step_time,
    )

    spec = ExponentialTime(kind="exponential", mean_time=2.0)
    for K, b in [(1, 0), (8, 0), (8, 3)]:
        assert stragglers.expected_step_time(spec, K, b, 0.5) == pytest.approx(expected_sync_step_time(2.0, K, b, 0.5), rel=1e-12)
    sh = ShiftedExponentialTime(kind="shifted_exponential", shift=1.0, mean_time=0.5)
    assert stragglers.expected_step_time(sh, 4) == pytest.approx(1.0 + 0.5 * 25 / 12, rel=1e-12)


def test_time_to_target_formula():
    """The floor is the tau = 0 Lyapunov variance per coordinate times D (h = 2, c = 4 sigma^2), and
    steps_to_target is the first t where the expected-error recursion e <- rho^2 e + (1 - rho^2) F_inf
    reaches the target (iterated exactly)."""
    D, lr, sigma, B = 10, 0.1, 1.0, 32
    floor = stragglers.noisy_sphere_floor(D, lr, sigma, B)
    assert floor == pytest.approx(D * staleness.delayed_stationary_variance(lr, 2.0, 4 * sigma**2, B, 0), rel=1e-10)
    e, t, rho2 = 100.0, 0, (1 - 2 * lr) ** 2
    while e > 0.05:
        e = rho2 * e + (1 - rho2) * floor
        t += 1
    assert stragglers.steps_to_target(100.0, floor, lr, 0.05) == t
    assert stragglers.steps_to_target(100.0, 0.06, lr, 0.05) == math.inf
    assert stragglers.steps_to_target(0.01, floor, lr, 0.05) == 0.0


# ----------------------------------------------------------------------------- staleness
@pytest.mark.parametrize("tau", [0, 1, 2, 4, 8])
def test_stability_bound_is_where_roots_cross_the_unit_circle(tau):
    """Levin & May: the spectral radius of z^(tau+1) - z^tau + a crosses 1 at a = 2 sin(pi/(2(2tau+1)));
    numpy's roots are accurate to ~1e-12, so +-1e-5 relative around the bound is decisive."""
    a = staleness.delayed_stability_bound(tau)
    assert staleness.delayed_spectral_radius(a * (1 - 1e-5), tau) < 1.0
    assert staleness.delayed_spectral_radius(a * (1 + 1e-5), tau) > 1.0
    if tau == 0:
        assert a == pytest.approx(2.0)
    if tau == 1:
        assert a == pytest.approx(1.0)


def test_stale_gradient_bias_closed_form():
    """(1 - z)/a - 1 = z^-tau for the dominant root; ~ tau a to first order (error O(a^2))."""
    for tau in (1, 2, 4):
        for a in (1e-4, 1e-3):
            assert staleness.stale_gradient_bias(a, tau) == pytest.approx(tau * a, rel=20 * tau * a)
        a = 0.5 * staleness.real_root_limit(tau)
        r = staleness.delayed_roots(a, tau)
        z = max(x.real for x in r if abs(x.imag) < 1e-9)
        assert staleness.stale_gradient_bias(a, tau) == pytest.approx(z ** (-tau) - 1, rel=1e-9)
    assert staleness.real_root_limit(1) == pytest.approx(0.25)
    with pytest.raises(ParameterError):
        staleness.stale_gradient_bias(0.3, 1)


def test_delayed_variance_and_expected_square():
    """tau = 0 reduces to plain SGD: Var = lr c / (b h (2 - lr h)); E x_T^2 terms are geometric sums."""
    lr, h, c, b = 0.1, 2.0, 3.0, 4
    assert staleness.delayed_stationary_variance(lr, h, c, b, 0) == pytest.approx(lr * c / (b * h * (2 - lr * h)), rel=1e-10)
    phi, v = staleness.delayed_expected_square(lr, h, c, b, 0, 25)
    a = 1 - lr * h
    assert phi == pytest.approx(a**25, rel=1e-12)
    assert v == pytest.approx(lr**2 * c / b * sum(a ** (2 * k) for k in range(25)), rel=1e-12)
    # long horizon -> stationary variance (tau = 3); the transient decays like rho^(2T)
    phi, v = staleness.delayed_expected_square(0.05, h, c, b, 3, 3000)
    assert v == pytest.approx(staleness.delayed_stationary_variance(0.05, h, c, b, 3), rel=1e-9)
    # staleness inflates the stationary variance at a fixed lr
    assert staleness.delayed_stationary_variance(0.05, h, c, b, 3) > staleness.delayed_stationary_variance(0.05, h, c, b, 0)
    with pytest.raises(ParameterError):
        staleness.delayed_stationary_variance(0.6, h, c, b, 1)  # a = 1.2 > 1


# ----------------------------------------------------------------------------- momentum
@pytest.mark.parametrize("kappa", [4.0, 10.0, 100.0, 1e4])
def test_tuned_rates_match_spectral_radius(kappa):
    """The largest root modulus over [mu, L] at each classical tuning equals its closed form."""
    eig = np.geomspace(1.0, kappa, 401)
    for name, fn in momentum.TUNINGS.items():
        lr, beta, rate = fn(1.0, kappa)
        assert momentum.momentum_rate(eig, lr, beta, nesterov=name == "nesterov") == pytest.approx(rate, rel=1e-6), name
    assert momentum.gd_optimal(1.0, kappa)[2] == pytest.approx((kappa - 1) / (kappa + 1))
    # heavy ball always beats GD; beta = 0 is GD (|1 - lr lambda| maximised at the ends)
    assert momentum.heavy_ball_optimal(1.0, kappa)[2] < momentum.gd_optimal(1.0, kappa)[2]
    assert momentum.momentum_rate(eig, 0.1, 0.0) == pytest.approx(max(abs(1 - 0.1 * eig.min()), abs(1 - 0.1 * eig.max())))


def test_log_slope_of_a_geometric_sequence():
    y = 3.0 * 0.9 ** np.arange(50)
    assert math.exp(log_slope(y)) == pytest.approx(0.9, rel=1e-12)
    assert momentum.ellipsoid_hessian_eigenvalues(3, 100.0) == pytest.approx([2.0, 20.0, 200.0])


# ----------------------------------------------------------------------------- clipping
def test_cliff_max_gradient_matches_autograd():
    """G_max from the formula equals the largest autograd gradient norm of the cliff landscape
    along a ray through the face (float64; the grid spacings are 1e-7 and 1e-5 of the face width)."""
    from evosgd.landscapes import build_landscape

    H, w, eps = 100.0, 1.0, 0.01
    land = build_landscape("cliff", {"dim": 2, "cliff_height": H, "cliff_radius": w, "cliff_width": eps},
                           replicates=1, seed=0, dtype=torch.float64)
    r = torch.linspace(w - eps, w + eps, 2001, dtype=torch.float64)
    theta = (land.shift[0] + r.unsqueeze(1) * torch.tensor([0.6, 0.8], dtype=torch.float64)).unsqueeze(0).requires_grad_(True)
    (g,) = torch.autograd.grad(land.f(theta).sum(), theta)
    gmax = float(g.norm(dim=-1).max())
    pred = clipping.cliff_max_gradient(H, w, eps)
    assert pred == pytest.approx(gmax, rel=1e-6)
    assert pred == pytest.approx(2 * w + 1.5 * H / (2 * eps), rel=1e-4)


def test_steps_to_face_equals_iterating_the_radial_map():
    """Exact: count the steps of r <- r - lr min(c, 2r) until r <= w + eps."""
    lr, w, eps = 0.01, 1.0, 0.01
    for r0 in (0.5, 1.0213, 3.0013, 7.30137):  # starts off the grid lr*c*k + edge (no ties under rounding)
        for c in (None, 0.5, 3.0, 100.0):
            r, n = r0, 0
            while r > w + eps:
                r -= lr * (2 * r if c is None else min(c, 2 * r))
                n += 1
            assert clipping.steps_to_face(r0, lr, c, w, eps) == n, (r0, c)
    assert clipping.recovery_threshold(0.005, 1.0, 0.01) == pytest.approx(396.0)
    assert clipping.largest_step(0.1, 5.0, 100.0) == pytest.approx(0.5)
    assert clipping.largest_step(0.1, None, 100.0) == pytest.approx(10.0)


# ----------------------------------------------------------------------------- confidence step
def test_oracle_factor_minimises_one_step_error():
    """d/dc of (h/2)[(1-c)^2 e2 + c^2 N/h^2] vanishes at c* = h^2 e2 / (h^2 e2 + N)."""
    h, e2, N = 2.0, 0.7, 1.3
    c = confidence_lr.oracle_factor(h * h * e2, N)

    def f(x: float) -> float:
        return confidence_lr.one_step_error(x, e2, N, h)

    assert (f(c + 1e-6) - f(c - 1e-6)) / 2e-6 == pytest.approx(0.0, abs=1e-8)
    assert f(c) < f(1.0) and f(c) < f(0.0)
    assert f(c) == pytest.approx(0.5 * h * e2 / (1 + h * h * e2 / N), rel=1e-12)  # (h/2)||e||^2 / (1 + snr)
    assert confidence_lr.oracle_factor(1.0, 0.0) == 1.0


# ----------------------------------------------------------------------------- pairwise baseline
def test_separable_baseline_and_gradient_statistics():
    """Gaussian draws with known mean m and covariance S: noise estimates tr S, signal ||m||, SNR
    ||m||^2 / tr S.  M = 4000 draws in D = 3: the noise estimate's standard error is
    sqrt(2 tr S^2 / M) ~ 0.03 here; 5 SE bounds."""
    assert pairwise.separable_noise(2.0, 4, 16) == pytest.approx(0.5)
    assert pairwise.separable_snr(0.5, 4, 16) == pytest.approx(2.0)
    rng = np.random.default_rng(1)
    m = np.array([1.0, -0.5, 0.25])
    S = np.diag([1.0, 0.5, 0.25])
    x = rng.multivariate_normal(m, S, size=4000)
    st = pairwise.gradient_statistics(x, seed=0)
    se = math.sqrt(2 * np.trace(S @ S) / 4000)
    assert abs(st["noise"][0] - np.trace(S)) <= 5 * se
    assert st["noise"][1] <= np.trace(S) + 5 * se and st["noise"][2] >= np.trace(S) - 5 * se
    assert st["signal"][0] == pytest.approx(np.linalg.norm(m), abs=5 * math.sqrt(np.trace(S) / 4000))
    assert st["signal"][1] <= st["signal"][0] <= st["signal"][2]
