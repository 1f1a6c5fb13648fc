"""The two-basin landscape and the escape analysis: closed-form gradient against autograd, the
first-passage integral on exact cases, Kramers as its low-temperature limit, a tiny measurement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evosgd.analysis.escape import (
    EscapeParams,
    exact_escape_rate,
    kramers_rate,
    mean_first_passage_time,
    measure_escape,
    sgd_temperature,
)
from evosgd.landscapes import build_landscape
from evosgd.landscapes.base import Landscape
from evosgd.landscapes.basins import TwoBasinsParams, critical_points, potential_grad


def test_two_basins_gradient_and_noise_model():
    land = build_landscape("two_basins", {"dim": 3, "noise_std": 2.0}, replicates=4, seed=1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    batch = land.sample(7, g)
    theta = torch.randn(4, 3, dtype=torch.float64, generator=g)
    l1, g1 = land.loss_and_grad(theta, batch)
    l2, g2 = Landscape.loss_and_grad(land, theta, batch)  # autograd of loss
    assert torch.allclose(l1, l2, atol=1e-12) and torch.allclose(g1, g2, atol=1e-12)
    assert torch.allclose(land.example_losses(theta, batch).mean(-1), land.loss(theta, batch), atol=1e-12)
    # the tilt noise is unbiased: the full-data gradient is V'(x) (first coordinate)
    assert float(g1[0, 0] + batch["xi"][0].mean(0)[0]) == pytest.approx(float(potential_grad(theta[0, 0].item(), land.params)), abs=1e-12)
    c = land.points
    assert potential_grad(c["sharp_min"], land.params) == pytest.approx(0, abs=1e-9)
    assert c["sharp_curvature"] > c["deep_curvature"] > 0 > c["saddle_curvature"] and c["deep_value"] < c["sharp_value"]
    assert torch.allclose(land.true_loss(land.optimum()), land.optimal_loss())


def test_first_passage_exact_cases():
    # free diffusion reflected at 0: tau(0 -> L) = L^2 / (2T)
    assert mean_first_passage_time(lambda x: 0.0, 0.0, 2.0, 0.5, left=0.0) == pytest.approx(4.0, rel=1e-8)
    # constant force V = -F x, reflected at 0: tau(0 -> L) = L/F - T/F^2 (1 - exp(-F L / T))
    F, T, L = 2.0, 0.5, 1.5
    exact = L / F - T / F**2 * (1 - math.exp(-F * L / T))
    assert mean_first_passage_time(lambda x: -F * x, 0.0, L, T, left=0.0) == pytest.approx(exact, rel=1e-7)


def test_kramers_is_the_low_temperature_limit_of_the_exact_rate():
    # quartic V = (x^2 - 1)^2: Delta V = 1, V''(-1) = 8, V''(0) = -4.  The exact rate / Kramers -> 1 as
    # T -> 0 with a correction O(T / Delta V): at T = 0.05 within 10%.
    V = lambda x: (x * x - 1.0) ** 2
    T = 0.05
    r_exact = 1.0 / mean_first_passage_time(V, -1.0, 1.0, T, left=-3.0)
    assert r_exact / kramers_rate(1.0, 8.0, -4.0, T) == pytest.approx(1.0, abs=0.1)
    assert sgd_temperature(0.01, 10.0, 5) == pytest.approx(0.1)


@pytest.mark.slow
def test_escape_analysis_tiny_agrees_with_the_exact_passage_time():
    p = EscapeParams(batch_sizes=[2, 3, 4], replicates=300, max_steps=40000)
    r = measure_escape(p, seed=2)
    t = r.tables["escape"]
    # 300 first-passage times (roughly exponential: sd ~ mean) give a mean within ~3 * 1/sqrt(300) = 17%
    assert ((t.rate_measured / t.rate_exact - 1).abs() < 0.17).all()
    v = r.tables["verdicts"]
    assert v[v.claim.str.startswith("smaller batches")].verdict.tolist() == ["supported"]
    assert exact_escape_rate(TwoBasinsParams(), 0.3) > exact_escape_rate(TwoBasinsParams(), 0.2)
    assert np.isfinite(critical_points(TwoBasinsParams())["barrier"])
