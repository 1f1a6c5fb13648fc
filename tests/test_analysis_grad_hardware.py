"""Cost curve and critical batch size (analysis 'hardware_batch_scaling')."""

import math

import numpy as np
import pytest
import torch

from evosgd.analysis.hardware import (
    HardwareParams,
    examples_to_target,
    fit_critical_batch,
    fit_s_min,
    fit_step_cost,
    hessian_top_eigenvalue,
    measure_hardware,
    noise_scale_ci,
    steps_to_target,
)
from evosgd.core.seeding import make_generator
from evosgd.landscapes import build_landscape
from evosgd.landscapes.base import per_example_grads


def test_fits_recover_exact_curves():
    b = np.array([1, 2, 4, 8, 16, 64, 256])
    a, c = fit_step_cost(b, 1e-3 + 2e-5 * b)
    assert a == pytest.approx(1e-3, rel=1e-9) and c == pytest.approx(2e-5, rel=1e-9)
    S = steps_to_target(100.0, 30.0, b)
    assert fit_s_min(b, S, 30.0) == pytest.approx(100.0, rel=1e-12)
    s_min, b_crit = fit_critical_batch(b, S)
    assert s_min == pytest.approx(100.0, rel=1e-9) and b_crit == pytest.approx(30.0, rel=1e-9)
    # the trade-off: E = S B exactly when E_min = S_min B_noise, and (S/S_min - 1)(E/E_min - 1) = 1
    E = examples_to_target(100.0 * 30.0, 30.0, b)
    np.testing.assert_allclose(E, S * b, rtol=1e-12)
    np.testing.assert_allclose((S / 100.0 - 1) * (E / 3000.0 - 1), 1.0, rtol=1e-12)


def test_noise_scale_of_the_noisy_sphere():
    """Exact case: on the sphere with per-example noise N(0, sigma^2 I) one example's gradient is
    2(theta - s - xi), so G = 2(theta - s), tr(Sigma) = 4 sigma^2 D and B_simple = sigma^2 D / ||theta - s||^2.
    The estimate from 4000 draws must be within 5 delta-method standard errors (half-width / 1.96)."""
    land = build_landscape("sphere", {"dim": 6, "noise_std": 2.0}, replicates=1, seed=0, dtype=torch.float64)
    theta = land.initial_point
    G = per_example_grads(land, theta, land.sample(4000, make_generator(1)))[0]
    B, lo, hi = noise_scale_ci(G)
    exact = 4.0 * 6 / float(((theta - land.shift) ** 2).sum())
    assert abs(B - exact) <= 5 * (hi - lo) / 2 / 1.96
    g = G.mean(0)
    assert B == pytest.approx(float(((G - g) ** 2).sum(1).mean() / (g @ g)), rel=1e-12)


def test_power_iteration_finds_the_top_curvature():
    land = build_landscape("ellipsoid", {"dim": 4, "condition": 10.0, "rotate": True}, replicates=2, seed=0, dtype=torch.float64)
    lam = hessian_top_eigenvalue(land, land.initial_point, iterations=60)
    np.testing.assert_allclose(lam.numpy(), 20.0, rtol=1e-6)  # Hessian 2 diag(kappa^((i-1)/(D-1))), rotated


def test_measure_hardware_rows_and_steps_decrease_with_batch():
    land = build_landscape("linear_regression", {"n_examples": 256, "features": 5}, replicates=3, seed=1)
    one = build_landscape("linear_regression", {"n_examples": 256, "features": 5}, replicates=1, seed=1)
    params = HardwareParams(batch_sizes=[1, 16, 128], timing_repeats=3, warmup=1, noise_population=256, max_steps=2000)
    res = measure_hardware(one, params, make_generator(0), train_landscape=land)
    c = res.comparison
    assert set(c.quantity) == {"time per step", "examples per second", "steps to target", "examples to target",
                               "time to target (steps x time per step)"}
    steps = c[c.quantity == "steps to target"].set_index("x").measured
    assert steps[1] > steps[16] > 0 and steps[1] > steps[128]
    t = c[c.quantity == "time per step"]
    assert (t.measured > 0).all() and (t.measured_low <= t.measured).all()
    assert math.isfinite(float(res.tables["noise_scale"].b_simple.iloc[0]))
