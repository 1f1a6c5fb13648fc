"""Gradient through batch normalization (analysis 'batchnorm_gradient')."""

import pytest
import torch
import torch.nn.functional as F

from evosgd.analysis.batchnorm import BN_EPS, BatchNormParams, bn_backward, bn_jacobian, isotropic_damping, measure_batchnorm
from evosgd.core.analysis_api import AnalysisContext
from evosgd.core.registry import ANALYSES
from evosgd.core.seeding import make_generator


def bn(z, eps=BN_EPS):
    return F.batch_norm(z.unsqueeze(1), None, None, training=True, eps=eps).squeeze(1)


def test_jacobian_formula_equals_autograd():
    """Exact case: the Jacobian of torch's training-mode batch norm at a random batch (float64)."""
    g = make_generator(0)
    for b in (2, 3, 7, 32):
        z = torch.randn(b, generator=g, dtype=torch.float64) * 3 + 1
        J_auto = torch.autograd.functional.jacobian(bn, z)
        sigma = torch.sqrt(z.var(unbiased=False) + BN_EPS)
        x_hat = (z - z.mean()) / sigma
        torch.testing.assert_close(bn_jacobian(x_hat, sigma), J_auto, rtol=1e-10, atol=1e-12)
        up = torch.randn(b, generator=g, dtype=torch.float64)
        torch.testing.assert_close(bn_backward(up, x_hat, sigma), J_auto.T @ up, rtol=1e-10, atol=1e-12)


def test_projection_and_isotropic_damping():
    """Exact cases: with eps = 0, sigma J = P is an orthogonal projection of rank b - 2; with eps,
    E||P g||^2/||g||^2 for isotropic g is tr(P^T P)/b, which the closed form must reproduce."""
    g = make_generator(1)
    z = torch.randn(6, generator=g, dtype=torch.float64)
    sigma0 = z.std(unbiased=False)
    P = bn_jacobian((z - z.mean()) / sigma0, sigma0) * sigma0
    torch.testing.assert_close(P @ P, P, rtol=0, atol=1e-12)
    assert torch.linalg.matrix_rank(P).item() == 4
    assert isotropic_damping(6) == pytest.approx(4 / 6)
    z = torch.tensor([0.0, 1e-3, 2e-3], dtype=torch.float64)  # tiny variance: eps matters
    var = z.var(unbiased=False)
    sigma = torch.sqrt(var + BN_EPS)
    P = bn_jacobian((z - z.mean()) / sigma, sigma) * sigma
    assert float(torch.trace(P.T @ P) / 3) == pytest.approx(float(isotropic_damping(3, float(var / (var + BN_EPS)))), rel=1e-12)


def test_measured_gradients_agree_with_the_formula():
    res = measure_batchnorm(BatchNormParams(batch_sizes=[2, 4, 32], samples=3000, population=20000), make_generator(2))
    c = res.comparison
    ratio = c[c.quantity.str.startswith("median ||dL/dz||")]
    # measured (autograd) and predicted (formula on the same batches) are the same numbers up to rounding
    assert ((ratio.measured - ratio.predicted).abs() <= 1e-9 * ratio.predicted.abs()).all()
    damp = c[c.quantity.str.contains("projection damping")]
    # mean of 3000 iid values in [0, 1]: 5 standard errors ((CI half-width)/1.96) per row
    se = (damp.measured_high - damp.measured_low) / (2 * 1.96)
    assert ((damp.measured - damp.predicted).abs() <= 5 * se).all()
    assert damp.set_index("x").predicted[32] == pytest.approx(30 / 32, abs=1e-4)


def test_registered():
    ctx = AnalysisContext("t", "bn", 3, 1, torch.device("cpu"), torch.float32)
    res = ANALYSES.build("batchnorm_gradient", {"batch_sizes": [4], "samples": 50, "population": 1000}, context=ctx)
    assert len(res.comparison) == 3 and res.notes
