"""Gradient through batch normalization (analysis 'batchnorm_gradient')."""

import pytest
import torch
import torch.nn.functional as F

from evosgd.analysis.batchnorm import (
    BN_EPS,
    BatchNormParams,
    bn_backward,
    bn_jacobian,
    isotropic_damping,
    measure_batchnorm,
)
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


@pytest.mark.parametrize("training", [True, False])
def test_scale_shift_and_input_gradients_equal_torch(training):
    """Reference: torch's F.batch_norm with weight and bias (float64), in training mode (batch
    statistics) and evaluation mode (running statistics): our forward, input gradient, dL/dgamma,
    dL/dbeta and the running-statistics update equal autograd / torch's buffers."""
    from evosgd.analysis.batchnorm import (
        bn_eval_forward,
        bn_eval_input_grad,
        bn_param_grads,
        bn_running_update,
        bn_train_input_grad,
    )

    g = make_generator(3)
    C, b = 4, 6
    z = (torch.randn(C, b, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_(True)
    gamma = (torch.rand(C, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    beta = torch.randn(C, generator=g, dtype=torch.float64).requires_grad_(True)
    rm, rv = torch.randn(C, generator=g, dtype=torch.float64), torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    rm_t, rv_t = rm.clone(), rv.clone()
    y = F.batch_norm(z.T, rm_t, rv_t, gamma, beta, training=training, momentum=0.1, eps=BN_EPS).T
    up = torch.randn(C, b, generator=g, dtype=torch.float64)
    dz, dgamma, dbeta = torch.autograd.grad(y, (z, gamma, beta), up)
    zd = z.detach()
    if training:
        sigma = torch.sqrt(zd.var(-1, unbiased=False) + BN_EPS)
        x_hat = (zd - zd.mean(-1, keepdim=True)) / sigma.unsqueeze(-1)
        torch.testing.assert_close(bn_train_input_grad(up, x_hat, sigma, gamma.detach()), dz, rtol=1e-10, atol=1e-12)
        new_rm, new_rv = bn_running_update(rm, rv, zd, 0.1)
        torch.testing.assert_close(new_rm, rm_t, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(new_rv, rv_t, rtol=1e-12, atol=1e-14)
    else:
        y_ours, x_hat = bn_eval_forward(zd, rm, rv, gamma.detach(), beta.detach())
        torch.testing.assert_close(y_ours, y.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn_eval_input_grad(up, rv, gamma.detach()), dz, rtol=1e-12, atol=1e-12)
        assert torch.equal(rm_t, rm) and torch.equal(rv_t, rv)  # evaluation mode leaves the statistics alone
    dg, db = bn_param_grads(up, x_hat)
    torch.testing.assert_close(dg, dgamma, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(db, dbeta, rtol=1e-12, atol=1e-12)
