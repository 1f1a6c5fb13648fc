"""BBOB f1..f24 in torch against IOHexperimenter (``ioh``), the reference implementation of the
instances the literature reports on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evosgd.landscapes import build_landscape
from evosgd.landscapes.bbob_instances import gauss, rotation, uniform

ioh = pytest.importorskip("ioh")

DIMS = (2, 5, 10, 20, 40)
INSTANCES = 5
POINTS = 1000


def _land(fid: int, dim: int, replicates: int = INSTANCES, **extra):
    return build_landscape("bbob", {"function": fid, "dim": dim, "instance": 1, **extra}, replicates=replicates,
                           dtype=torch.float64)


@pytest.mark.parametrize("fid", range(1, 25))
def test_values_equal_ioh(fid):
    """1,000 random points per (function, D, instance): replicate r of the landscape is instance
    r + 1, all five evaluated in one vectorized call [R = 5, P = 1000, D]."""
    rng = np.random.default_rng(fid)
    for dim in DIMS:
        land = _land(fid, dim)
        # mostly the domain [-5, 5]^D, a tenth outside it (where the penalties act)
        x = rng.uniform(-5.0, 5.0, size=(INSTANCES, POINTS, dim))
        x[:, : POINTS // 10] *= 1.3
        ours = land.true_loss(torch.as_tensor(x)).numpy()
        for r in range(INSTANCES):
            problem = ioh.get_problem(fid, r + 1, dim, ioh.ProblemClass.BBOB)
            ref = np.asarray(problem(x[r]))
            np.testing.assert_allclose(ours[r], ref, rtol=1e-6, atol=0, err_msg=f"f{fid} D={dim} instance {r + 1}")


@pytest.mark.parametrize("fid", range(1, 25))
def test_optimum_value_and_location(fid):
    for dim in (2, 10, 40):
        land = _land(fid, dim)
        at_opt = land.true_loss(land.optimum().unsqueeze(1)).squeeze(1)
        for r in range(INSTANCES):
            problem = ioh.get_problem(fid, r + 1, dim, ioh.ProblemClass.BBOB)
            assert land.optimal_loss()[r].item() == problem.optimum.y
            np.testing.assert_allclose(land.optimum()[r].numpy(), problem.optimum.x, atol=1e-12)
            # f20's optimum 4.2096874637 is rounded in the definition: f - f_opt ~ 1e-11 there
            assert abs(at_opt[r].item() - problem.optimum.y) <= 1e-9, (fid, dim, r)
        # no point of a random sample beats f_opt
        x = torch.as_tensor(np.random.default_rng(0).uniform(-5, 5, size=(INSTANCES, 200, dim)))
        assert (land.true_loss(x) >= land.optimal_loss().unsqueeze(1) - 1e-9).all()


# f7 (step ellipsoid) is piecewise constant, f23 (Katsuura) has kinks on a 2^-32 grid and f16
# (Weierstrass) oscillates at frequency 2 pi 3^11: their autograd gradients are exact almost
# everywhere but a finite difference does not resolve them.
SMOOTH = [f for f in range(1, 25) if f not in (7, 16, 23)]


@pytest.mark.parametrize("fid", SMOOTH)
def test_gradients_match_finite_differences(fid):
    """Autograd against float64 central differences, step h = 1e-7: the truncation error h^2 f'''
    and the rounding error eps |f| / h are both below 1e-4 of the gradient's size at these points."""
    rng = np.random.default_rng(100 + fid)
    dim = 5
    land = _land(fid, dim, replicates=2)
    x = torch.as_tensor(rng.uniform(-4.0, 4.0, size=(2, 3, dim)))
    batch = land.sample(1, torch.Generator().manual_seed(0))
    _, grad = land.loss_and_grad(x, batch)
    h = 1e-7
    fd = torch.zeros_like(x)
    for i in range(dim):
        e = torch.zeros(dim, dtype=torch.float64)
        e[i] = h
        fd[..., i] = (land.true_loss(x + e) - land.true_loss(x - e)) / (2 * h)
    scale = grad.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    assert ((grad - fd).abs() / scale).max() < 1e-4, (fid, grad, fd)


def test_population_shape_matches_pointwise_and_float32():
    land = _land(15, 10, replicates=3)
    x = torch.as_tensor(np.random.default_rng(1).uniform(-5, 5, size=(3, 7, 10)))
    full = land.true_loss(x)
    for p in range(7):
        torch.testing.assert_close(land.true_loss(x[:, p]), full[:, p])
    land32 = build_landscape("bbob", {"function": 15, "dim": 10}, replicates=3, dtype=torch.float32)
    torch.testing.assert_close(land32.true_loss(x.float()).double(), full, rtol=1e-4, atol=1e-3)


def test_replicates_share_an_instance_when_asked():
    same = _land(3, 5, replicates=3, replicate_instances=False)
    assert torch.equal(same.optimum()[0], same.optimum()[2]) and same.instances == [1, 1, 1]
    assert not torch.equal(same.initial_point[0], same.initial_point[1])  # own starting points
    assert (same.initial_point.abs() <= 4.0).all()
    spread = _land(3, 5, replicates=3)
    assert spread.instances == [1, 2, 3] and not torch.equal(spread.optimum()[0], spread.optimum()[1])


def test_generator_reference_values():
    """Sanity of the BBOB-2009 generator's outputs (its exact values are checked through ioh's
    x_opt, f_opt and rotations above): uniforms in (0, 1], Box-Muller normals, orthogonal rotations."""
    u = uniform(3, 1)
    assert np.all((u > 0) & (u <= 1)) and len(set(u)) == 3
    g = gauss(2000, 12345)
    assert abs(g.mean()) < 4 / np.sqrt(2000) and abs(g.std() - 1) < 0.1  # 4 standard errors
    q = rotation(7, 6)
    np.testing.assert_allclose(q @ q.T, np.eye(6), atol=1e-12)


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
@pytest.mark.parametrize("severity", ["moderate", "severe"])
def test_noise_mean_is_true_loss(noise, severity):
    """A mean of n examples' losses estimates true_loss: |mean - true| < 5 standard errors
    (the sample standard deviation / sqrt(n)), a false alarm rate below 1e-6 per point."""
    land = build_landscape("bbob", {"function": 2, "dim": 4, "noise": noise, "noise_severity": severity},
                           replicates=2, dtype=torch.float64)
    x = land.optimum().unsqueeze(1) + 0.3
    gen = torch.Generator().manual_seed(3)
    n = 200_000
    losses = land.example_losses(x, land.sample(n, gen))  # [R, 1, n]
    mean, se = losses.mean(-1), losses.std(-1) / n**0.5
    assert ((mean - land.true_loss(x)).abs() < 5 * se + 1e-12).all()
    assert (land.true_loss(land.optimum().unsqueeze(1)) == land.optimal_loss().unsqueeze(1)).all()


def test_bad_parameters_refused():
    from evosgd.core.errors import EvosgdError

    for bad in ({"function": 25}, {"dim": 1}, {"noise": "cauchy"}, {"instance": 0}):
        with pytest.raises((EvosgdError, ValueError)):
            build_landscape("bbob", bad)


def test_step_ellipsoid_has_no_gradient_inside_the_box_and_noise_has_per_example_gradients():
    """f7 is piecewise constant inside [-5, 5]^D (its rounding): autograd's gradient is exactly 0
    there, the information a gradient method gets.  With multiplicative noise, per-example
    gradients (torch.func.vmap) are the noise factors times the noise-free gradient."""
    from evosgd.landscapes import per_example_grads

    land = _land(7, 5, replicates=2)
    x = torch.as_tensor(np.random.default_rng(2).uniform(-4.5, 4.5, size=(2, 5)))
    _, g = land.loss_and_grad(x, land.sample(1, torch.Generator().manual_seed(0)))
    assert torch.count_nonzero(g) == 0
    noisy = build_landscape("bbob", {"function": 1, "dim": 3, "noise": "gaussian", "noise_severity": "severe"},
                            replicates=2, dtype=torch.float64)
    x = torch.zeros(2, 3, dtype=torch.float64)
    batch = noisy.sample(4, torch.Generator().manual_seed(1))
    per = per_example_grads(noisy, x, batch)  # [R, n, D]
    clean = 2.0 * (x - noisy.optimum())  # the sphere's gradient
    factor = torch.exp(noisy.beta * batch["noise"])  # [R, n]
    torch.testing.assert_close(per, factor.unsqueeze(-1) * clean.unsqueeze(1))
