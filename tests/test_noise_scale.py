"""Hessian-weighted gradient noise scale (evosgd/analysis/noise_scale.py, McCandlish et al. 2018)
against an exact enumeration on a quadratic finite sum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from evosgd.analysis.noise_scale import (
    expected_loss_change,
    hessian_noise_scale,
    optimal_improvement,
    optimal_step_size,
    simple_noise_scale,
)


def finite_sum(seed=0, n=5, d=3):
    """Least squares on n examples: L(w) = 1/(2n) sum (x_i.w - y_i)^2, Hessian X^T X / n."""
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    w = rng.standard_normal(d)
    loss = lambda v: 0.5 * np.mean((X @ v - y) ** 2)  # noqa: E731
    per = X * (X @ w - y)[:, None]  # per-example gradients
    G = per.mean(0)
    Sigma = np.cov(per.T, bias=True)  # population covariance of the n per-example gradients
    return X, y, w, loss, per, G, X.T @ X / n, Sigma


@pytest.mark.parametrize("B", [1, 2, 3])
def test_expected_loss_change_by_enumerating_every_batch(B):
    """Every ordered batch of B examples drawn with replacement (5^B of them, equally likely): the
    exact mean loss change of a step -eps g equals the formula (the loss is quadratic)."""
    X, y, w, loss, per, G, H, Sigma = finite_sum()
    for eps in (0.05, 0.3):
        exact = np.mean([loss(w - eps * per[list(idx)].mean(0)) - loss(w) for idx in itertools.product(range(5), repeat=B)])
        assert float(expected_loss_change(eps, B, G, H, Sigma)) == pytest.approx(exact, rel=1e-10)


def test_optimum_and_identity_hessian():
    _, _, _, _, _, G, H, Sigma = finite_sum(1)
    for B in (1, 4, 64):
        eps = np.linspace(0, 2 * optimal_step_size(B, G, H, Sigma), 20001)
        dl = expected_loss_change(eps, B, G, H, Sigma)
        assert eps[dl.argmin()] == pytest.approx(float(optimal_step_size(B, G, H, Sigma)), rel=1e-3)
        assert -dl.min() == pytest.approx(float(optimal_improvement(B, G, H, Sigma)), rel=1e-6)
    # the gain per step saturates at the noise scale: half of its maximum at B = B_noise
    bn = hessian_noise_scale(G, H, Sigma)
    assert float(optimal_improvement(bn, G, H, Sigma)) == pytest.approx(float(optimal_improvement(1e12, G, H, Sigma)) / 2, rel=1e-9)
    assert hessian_noise_scale(G, 3.0 * np.eye(3), Sigma) == pytest.approx(simple_noise_scale(np.trace(Sigma), G @ G), rel=1e-12)
