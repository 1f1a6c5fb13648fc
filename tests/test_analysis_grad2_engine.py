"""The optimizer-dynamics analyses measured through the engines, on cases where the closed form is
exact: each measurement function against its theory, and each registered analysis end to end with
small sizes.  Seeds are fixed; statistical tolerances are derived in the comments."""

import math

import numpy as np
import pytest
import torch

from evosgd.analysis import (
    clipping,
    confidence_lr,
    momentum,
    pairwise,
    staleness,
    stragglers,
)
from evosgd.analysis.grad2_common import make_optimizer, small_landscape
from evosgd.core.analysis_api import AnalysisContext
from evosgd.core.registry import ANALYSES
from evosgd.gradient.distributed import ConstantTime, ExponentialTime


@pytest.fixture(autouse=True)
def _one_thread():
    # small tensors: one intra-op thread is fastest on a shared machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _se(row):
    """Standard error from a 95% Student-t interval (t ~ 2.0 for the sample sizes here: a slight
    overestimate of the SE for larger n, which only widens the 5-SE bounds)."""
    return (row.measured_high - row.measured_low) / (2 * 2.0)


# ----------------------------------------------------------------------------- stragglers
def test_sync_step_time_constant_workers_is_exact():
    """Constant worker times: every step takes exactly value + comm, whatever K and the backups."""
    per_rep = stragglers.measure_step_times(ConstantTime(value=0.7), 8, 3, 0.2, replicates=3, steps=5, seed=1)
    np.testing.assert_allclose(per_rep, 0.9, rtol=1e-12)


def test_sync_step_time_exponential_matches_order_statistic():
    """K = 8 of N = 10 exponential workers: E T_(8:10) = H_10 - H_2.  400 replicates x 20 steps: the
    per-replicate means are iid, so 5 standard errors bound the mean (false failure < 1e-6)."""
    spec = ExponentialTime(kind="exponential", mean_time=1.0)
    per_rep = stragglers.measure_step_times(spec, 8, 2, 0.0, replicates=400, steps=20, seed=2)
    pred = stragglers.harmonic_number(10) - stragglers.harmonic_number(2)
    assert abs(per_rep.mean() - pred) <= 5 * per_rep.std(ddof=1) / math.sqrt(per_rep.size)


def test_time_to_target_constant_workers_is_steps_times_step_time():
    """Constant worker times (every step takes exactly 1) and almost no noise (floor ~ 3e-8): the
    replicate-mean error follows rho^(2t) mean ||e_0||^2, so the measured time equals the predicted
    steps to target exactly."""
    p = stragglers.StragglerParams(target=0.05, noise_std=1e-3, target_replicates=8, max_steps=80)
    tm, _, _, tp, n = stragglers.measure_time_to_target(ConstantTime(value=1.0), 4, 0, p, seed=3)
    assert math.isfinite(n) and tm == pytest.approx(tp) and tp == pytest.approx(n)


# ----------------------------------------------------------------------------- staleness
def test_engine_fixed_delay_follows_the_delayed_recursion_exactly():
    """sgd_async (fixed delay tau) on the noise-free 1-D sphere (gradient 2x) is exactly
    x_{t+1} = x_t - 2 lr x_{t-tau} with the history padded with x_0 (float64 rounding only)."""
    tau, lr = 3, 0.07
    land = small_landscape("sphere", {"dim": 1}, replicates=2, seed=4)
    opt, _ = make_optimizer("sgd_async", {"lr": lr, "batch_size": 1, "workers": 1, "delay_model": "fixed", "delay": tau},
                            land, seed=4)
    s = land.optimum()
    x0 = (land.initial_point - s)[:, 0].numpy()
    xs = [x0.copy() for _ in range(tau + 1)]
    for _ in range(60):
        opt.step()
        xs.append(xs[-1] - 2 * lr * xs[-1 - tau])
        np.testing.assert_allclose((opt.recommend() - s)[:, 0].numpy(), xs[-1], rtol=1e-9, atol=1e-12)


def test_stability_boundary_bracket_contains_prediction():
    """The scan's bracket [largest stable a, smallest unstable a] (2.2% apart) contains the
    Levin-May bound for tau = 1 and 3."""
    p = staleness.StalenessParams(scan_steps=300)
    for tau in (1, 3):
        lo, hi = staleness.measure_boundary(tau, p, seed=0)
        assert lo <= staleness.delayed_stability_bound(tau) <= hi
        assert hi / lo < 1.03


def test_stale_gradient_bias_measured_equals_dominant_root():
    """Noise-free, after 400 steps the subdominant roots (modulus < 0.8 z here) have decayed by
    (0.8)^400 ~ 1e-39: the measured ratio is the dominant root's to rounding."""
    p = staleness.StalenessParams(scan_steps=400, scan_dim=8)
    a, bias = staleness.measure_bias(2, p, seed=0)
    pred = np.array([staleness.stale_gradient_bias(x, 2) for x in a])
    np.testing.assert_allclose(bias, pred, rtol=1e-6)


def test_delayed_sgd_stationary_variance_matches_lyapunov():
    """Noisy sphere (h = 2, c = 4), tau = 2, b = 4, lr = 0.05: per-replicate time averages of
    ||e||^2/D over 300 steps after a 200-step burn-in (transient rho^400 ~ 1e-9).  Replicates are
    iid; 5 SE of their mean bounds the deviation (false failure < 1e-6)."""
    p = staleness.StalenessParams(lr=0.05, dim=8, replicates=24, burn_in=200, records=300)
    per_rep = staleness.measure_stationary(2, 4, p, seed=3)
    pred = staleness.delayed_stationary_variance(0.05, 2.0, 4.0, 4, 2)
    assert abs(per_rep.mean() - pred) <= 5 * per_rep.std(ddof=1) / math.sqrt(per_rep.size)


# ----------------------------------------------------------------------------- momentum
def test_gd_rate_is_exact_on_two_eigenvalues():
    """Axis-aligned ellipsoid in D = 2: the eigenvalues are exactly mu = 2 and L = 2 kappa, and at
    lr = 2/(L+mu) both modes shrink by exactly (kappa-1)/(kappa+1) per step: the fitted rate is the
    closed form up to float64 rounding."""
    land = small_landscape("ellipsoid", {"dim": 2, "condition": 10.0, "rotate": False}, replicates=3, seed=1)
    lr, beta, rate = momentum.gd_optimal(2.0, 20.0)
    rates, _, _ = momentum.measure_rate(land, lr, beta, False, 80, seed=1)
    np.testing.assert_allclose(rates, rate, rtol=1e-9)


@pytest.mark.parametrize("method", ["heavy_ball", "nesterov"])
def test_momentum_rate_within_double_root_band(method):
    """Polyak's and Nesterov's tunings give a double root at the extreme eigenvalue, error ~ t rho^t;
    the log-slope fit over [t1, t2] then lies in [ln rho, ln rho + ln(t2/t1)/(t2-t1)]."""
    land = small_landscape("ellipsoid", {"dim": 6, "condition": 100.0, "rotate": True}, replicates=3, seed=2)
    lr, beta, rate = momentum.TUNINGS[method](2.0, 200.0)
    rates, t1, t2 = momentum.measure_rate(land, lr, beta, method == "nesterov", 240, seed=2)
    upper = rate * math.exp(math.log(t2 / t1) / (t2 - t1))
    assert (rates >= rate * (1 - 1e-6)).all() and (rates <= upper).all()


# ----------------------------------------------------------------------------- clipping
def test_clipping_below_recovery_threshold_never_fails_and_steps_are_bounded():
    """c = 100 <= c* = 396 (lr = 0.005): every run reaches the basin and stays (exact claim, noise-free),
    given the steps to reach the face; every step <= lr c.  Unclipped, steps <= lr G_max."""
    p = clipping.ClippingParams(steps=600, replicates=6)
    out = clipping.run_clipped(p, 100.0, seed=5)
    assert all(clipping.steps_to_face(r, p.lr, 100.0, 1.0, 0.01) < 550 for r in out["r0"])
    assert out["in_basin"].all()
    assert (out["largest_step"] <= p.lr * 100.0 * (1 + 1e-12)).all()
    free = clipping.run_clipped(p, None, seed=5)
    assert (free["largest_step"] <= p.lr * clipping.cliff_max_gradient(100.0, 1.0, 0.01) * (1 + 1e-9)).all()
    assert free["largest_step"].max() > 10 * p.lr * 100.0  # the cliff throws unclipped steps far


# ----------------------------------------------------------------------------- confidence step
def test_constant_step_error_matches_closed_form():
    """Constant step (lr = 1/h): E[F - F*] = V/(2hb) for any noise law; 3000 iid trials, 5 SE."""
    p = confidence_lr.ConfidenceParams(replicates=3000, dim=4, batch_size=4)
    err, factor, dist2, noise = confidence_lr.one_step(p, "constant", 2.0, seed=6)
    pred = confidence_lr.one_step_error(1.0, dist2, noise, 2.0)
    assert pred == pytest.approx(4.0 * 1.0 * 4 / 4 / (2 * 2.0))  # V/(2hb), V = 4 sigma^2 D
    assert abs(err.mean() - pred) <= 5 * err.std(ddof=1) / math.sqrt(err.size)
    assert (factor == 1.0).all()


def test_snr_rule_beats_constant_step_at_low_snr():
    """At snr = 0.2 the constant step multiplies the error by (V/(2hb)) / ((h/2)||e||^2) = 1/snr = 5
    (closed form); the oracle keeps 1/(1+snr) of it.  The rule's mean error must lie far below the
    constant's: 600 trials each, 5 SE of the difference."""
    p = confidence_lr.ConfidenceParams(replicates=600, dim=4, batch_size=4)
    const, *_ = confidence_lr.one_step(p, "constant", 0.2, seed=9)
    rule, factor, *_ = confidence_lr.one_step(p, "snr", 0.2, seed=9)
    se = math.sqrt(const.var(ddof=1) / const.size + rule.var(ddof=1) / rule.size)
    assert const.mean() - rule.mean() > 5 * se
    assert 0.0 <= factor.min() and factor.max() <= 1.0


# ----------------------------------------------------------------------------- pairwise
def test_separable_landscape_noise_is_v_over_b():
    """Control: linear regression (separable, sampled with replacement) has E||g_B - E g_B||^2 =
    V_1/B with V_1 the population variance of the per-example gradients, computed exactly from the
    whole dataset.  300 batches: the measured noise's Student-t CI; 5 SE."""
    from evosgd.landscapes.base import per_example_grads

    land = small_landscape("linear_regression", {"n_examples": 128, "features": 4}, replicates=1, seed=8)
    theta = land.initial_point
    G = per_example_grads(land, theta, land.take(torch.arange(128).unsqueeze(0)))[0].numpy()  # [n, D]
    V1 = ((G - G.mean(0)) ** 2).sum(1).mean()
    grads = pairwise.batch_gradients(land, theta, 8, 300, torch.Generator().manual_seed(8))
    st = pairwise.gradient_statistics(grads, seed=0)
    m, lo, hi = st["noise"]
    assert abs(m - V1 / 8) <= 5 * (hi - lo) / (2 * 1.97)
    np.testing.assert_allclose(grads.mean(0), G.mean(0), atol=5 * math.sqrt(V1 / 8 / 300))


def test_pairwise_change_wording_never_divides_by_zero():
    # the bias-corrected signal is clipped at 0 when the noise of its estimate hides it
    assert pairwise.change(2.0, 0.5) == "by x4"
    assert pairwise.change(0.3, 0.0) == "from 0 (not resolved from the noise of its estimate)"
    assert pairwise.change(0.0, 0.0) == "not at all (0 at both)"


# ----------------------------------------------------------------------------- registered analyses
SMALL = {
    "straggler_step_time": {"workers": [1, 4], "backup_workers": [0, 1], "replicates": 4, "steps": 5,
                            "compute_times": [{"kind": "exponential", "mean_time": 1.0}]},
    "momentum_rate": {"conditions": [10.0], "dim": 3, "replicates": 2, "max_steps": 100},
    "staleness": {"delays": [0, 1], "scan_steps": 60, "scan_dim": 8, "variance_delays": [0], "batch_sizes": [2],
                  "replicates": 3, "burn_in": 10, "records": 10, "lr_grid": [0.05, 0.1], "horizon": 5},
    "clipping_cliff": {"thresholds": [1.0, 1000.0], "steps": 50, "replicates": 2},
    "confidence_step": {"snrs": [1.0], "replicates": 20},
    "pairwise_batch": {"batch_sizes": [4, 8], "compositions": ["random", "hard_negatives"], "batches": 10,
                       "landscape": {"n_examples": 64}},
}


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_registered_analysis_rows_have_measurement_and_prediction(kind):
    ctx = AnalysisContext("t", "x", 3, 1, torch.device("cpu"), torch.float32)
    res = ANALYSES.build(kind, SMALL[kind], context=ctx)
    c = res.comparison
    assert len(c) and c.measured.notna().any() and c.predicted.notna().any()
    assert res.notes and res.title


def test_bad_params_are_refused():
    from evosgd.core.errors import ConfigError, ParameterError

    with pytest.raises(ConfigError):
        ANALYSES.validate("staleness", {"delays": []})
    with pytest.raises(ConfigError):
        ANALYSES.validate("clipping_cliff", {"lr": 0.7})
    with pytest.raises(ParameterError):
        staleness.measure_staleness(staleness.StalenessParams(delays=[0], variance_delays=[4], lr=0.5, scan_steps=20), seed=0)


def test_confidence_rule_is_the_constant_step_without_noise():
    """Exact case: with no per-example noise V = 0, the snr rule's factor is 1, and one step of
    lr = 1/h on the sphere lands on the optimum."""
    land = small_landscape("sphere", {"dim": 3}, replicates=4, seed=7)
    opt, _ = make_optimizer("sgd", {"lr": 0.5, "batch_size": 4, "confidence": "snr"}, land, seed=7)
    opt.step()
    np.testing.assert_allclose(opt.metrics()["confidence"].numpy(), 1.0)
    np.testing.assert_allclose((opt.recommend() - land.optimum()).numpy(), 0.0, atol=1e-12)
