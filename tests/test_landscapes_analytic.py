"""Analytic landscapes: known optima, gradients, batching, shift/rotation, noise model, errors."""

import math

import numpy as np
import pytest
import torch

from evosgd.core.errors import ConfigError, ParameterError
from evosgd.landscapes import build_landscape, per_example_grads
from evosgd.landscapes.analytic import ANALYTIC_KINDS, SCHWEFEL_Z_STAR, STYBLINSKI_TANG_VALUE

F64 = torch.float64


def make(kind, replicates=3, seed=0, **params):
    params.setdefault("dim", 4)
    return build_landscape(kind, params, replicates=replicates, seed=seed, dtype=F64)


def random_points(L, n, seed=1):
    """n points per replicate, uniform in the landscape's domain: [R, n, D]."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = L.domain
    return lo + (hi - lo) * torch.rand(L.replicates, n, L.dim, generator=g, dtype=F64)


@pytest.mark.parametrize("kind", ANALYTIC_KINDS)
def test_value_at_optimum_is_the_optimal_value(kind):
    L = make(kind, rotate=True)
    opt = L.optimum()
    torch.testing.assert_close(opt, L.shift)  # the optimum is exactly the replicate's shift
    value = L.true_loss(opt.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(value, L.optimal_loss(), atol=1e-9, rtol=1e-12)
    # ... and it is a minimum: nearby and random points are not lower
    pts = torch.cat([opt.unsqueeze(1) + 1e-3 * torch.randn(3, 16, 4, generator=torch.Generator().manual_seed(0), dtype=F64),
                     random_points(L, 64)], dim=1)
    assert bool((L.true_loss(pts) >= L.optimal_loss().unsqueeze(1) - 1e-9).all())


def test_stated_optimal_values():
    assert make("styblinski_tang").optimal_loss()[0].item() == pytest.approx(-39.16616570377142 * 4, rel=1e-12)
    assert STYBLINSKI_TANG_VALUE == pytest.approx(-39.16617, abs=1e-5)
    assert SCHWEFEL_Z_STAR == pytest.approx(420.9687, abs=1e-4)
    for kind in ("sphere", "ellipsoid", "rosenbrock", "rastrigin", "ackley", "griewank", "schwefel", "cliff"):
        assert make(kind).optimal_loss().tolist() == [0.0] * 3


def test_schwefel_penalty_keeps_the_stated_minimum_on_the_whole_line():
    # the 1-D term on a fine grid far beyond the [-500, 500] box: its minimum is at z*
    z = torch.linspace(-5000, 5000, 2_000_001, dtype=F64).unsqueeze(-1)
    L = make("schwefel", dim=1)
    h = L.base(z)
    assert h.min().item() >= -1e-9
    assert abs(z[h.argmin()].item() - SCHWEFEL_Z_STAR) < 0.01


@pytest.mark.parametrize("kind", ANALYTIC_KINDS)
def test_autograd_matches_central_finite_differences(kind):
    L = make(kind, dim=3, rotate=True)
    x = random_points(L, 2, seed=7)
    if kind == "cliff":  # include points on the cliff face, where the gradient is steep
        direction = x / x.norm(dim=-1, keepdim=True)
        x = torch.cat([x, L.shift.unsqueeze(1) + 1.0 * direction[:, :1]], dim=1)
    x.requires_grad_(True)
    L.true_loss(x).sum().backward()
    h = 1e-6 * max(1.0, abs(L.domain[1]) / 10)
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for j in range(L.dim):
            e = torch.zeros(L.dim, dtype=F64)
            e[j] = h
            fd[..., j] = (L.true_loss(x + e) - L.true_loss(x - e)) / (2 * h)
    scale = x.grad.abs().max().item()
    torch.testing.assert_close(x.grad, fd, rtol=1e-5, atol=1e-6 * max(scale, 1.0))


@pytest.mark.parametrize("kind", ANALYTIC_KINDS)
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_population_evaluation_equals_a_loop_over_points(kind, noise):
    L = make(kind, rotate=True, noise_std=noise, smoothing_samples=64)
    theta = random_points(L, 5)  # [R, P, D]
    batch = L.sample(6, torch.Generator().manual_seed(3))
    together = L.example_losses(theta, batch)  # [R, P, n]
    tl = L.true_loss(theta)
    for p in range(5):
        torch.testing.assert_close(together[:, p], L.example_losses(theta[:, p], batch), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(tl[:, p], L.true_loss(theta[:, p]), rtol=1e-12, atol=1e-12)
        for r in range(3):  # and a single point of a single replicate
            one = L.f(theta[:, p:p + 1])[r, 0]
            assert one.item() == pytest.approx(L.f(theta[:, p])[r].item(), rel=1e-12)
    torch.testing.assert_close(L.loss(theta, batch), together.mean(-1))


def test_shift_and_rotation_transform_exactly_as_stated():
    L = make("ellipsoid", dim=5, rotate=True, condition=100.0)
    z = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    # theta = s + Q^T (z - z*)  =>  f(theta) = g(z)
    theta = L.shift.unsqueeze(1) + torch.einsum("rji,rpj->rpi", L.rotation, z - L.z_star)
    torch.testing.assert_close(L.f(theta), L.base(z))
    torch.testing.assert_close(L.rotation @ L.rotation.transpose(1, 2), torch.eye(5, dtype=F64).expand(3, 5, 5))
    lo, hi = L.shift_box
    assert bool(((L.shift >= lo) & (L.shift <= hi)).all())
    # shift = false, rotate = false: the base function itself, optimum at the origin
    plain = make("rosenbrock", shift=False)
    torch.testing.assert_close(plain.optimum(), torch.zeros(3, 4, dtype=F64))
    torch.testing.assert_close(plain.f(z[:, :, :4]), plain.base(z[:, :, :4] + 1.0))
    # ellipsoid eigenvalues are log-spaced from 1 to the condition number
    torch.testing.assert_close(L.eigenvalues(5), torch.tensor([1.0, 100**0.25, 10.0, 100**0.75, 100.0], dtype=F64))


def test_cliff_face_gradient_explodes_and_throws_an_unclipped_step_far_away():
    L = make("cliff", dim=2, rotate=True)  # H = 100, w = 1, eps = 0.01
    d = torch.tensor([0.6, 0.8], dtype=F64)
    on_face = (L.shift + 1.0 * d).unsqueeze(1).requires_grad_(True)  # ||z|| = w: the middle of the face
    L.true_loss(on_face).sum().backward()
    # g = ||z||^2 + H S(u): at u = 1/2, |grad| = 2 w + H * 1.5 / (2 eps) = 2 + 7500
    torch.testing.assert_close(on_face.grad.norm(dim=-1), torch.full((3, 1), 7502.0, dtype=F64))
    jumped = on_face - 0.01 * on_face.grad  # one SGD step of lr 0.01
    assert bool(((jumped - L.shift.unsqueeze(1)).norm(dim=-1) > 70).all())
    off_face = (L.shift + 3.0 * d).unsqueeze(1).requires_grad_(True)
    L.true_loss(off_face).sum().backward()
    torch.testing.assert_close(off_face.grad.norm(dim=-1), torch.full((3, 1), 6.0, dtype=F64))


@pytest.mark.parametrize("kind", ["sphere", "ellipsoid", "rosenbrock", "rastrigin", "griewank", "styblinski_tang"])
def test_closed_form_smoothing_is_the_mean_of_example_losses(kind):
    # N = 4000 noise draws: the mean of N iid example losses has std s / sqrt(N) (s = their sample
    # std), so |mean - F| <= 5 s / sqrt(N) fails with probability < 1e-6 per point if F is right.
    sigma = 0.4
    L = make(kind, dim=3, rotate=True, noise_std=sigma)
    theta = random_points(L, 2, seed=5) * 0.3 + 0.7 * L.shift.unsqueeze(1)
    batch = L.sample(4000, torch.Generator().manual_seed(11))
    ex = L.example_losses(theta, batch)  # [R, P, N]
    tol = 5 * ex.std(-1) / math.sqrt(ex.shape[-1])
    assert bool(((ex.mean(-1) - L.true_loss(theta)).abs() <= tol).all())


def test_rastrigin_smoothing_damps_the_ripples_by_exp_minus_2pi2sigma2():
    sigma = 0.5
    L = make("rastrigin", dim=1, shift=False, noise_std=sigma)
    z = torch.tensor([[[0.0], [0.5]]], dtype=F64).expand(3, 2, 1)
    F = L.true_loss(z)
    # F(0.5) - F(0) = 0.25 + 20 exp(-2 pi^2 sigma^2)
    torch.testing.assert_close(F[:, 1] - F[:, 0], torch.full((3,), 0.25 + 20 * math.exp(-2 * math.pi**2 * sigma**2), dtype=F64))


@pytest.mark.parametrize("kind", ["rastrigin", "rosenbrock"])
def test_minibatch_gradient_is_unbiased_for_the_smoothed_objective(kind):
    # K batches of b examples: the mean mini-batch gradient averages K b iid per-example gradients,
    # so coordinate j has std sigma_j / sqrt(K b) (sigma_j from a separate large sample of
    # per-example gradients); 5 standard errors => a false failure has probability < 1e-5 over all
    # coordinates (Bonferroni).
    L = make(kind, dim=3, rotate=True, noise_std=0.3)
    theta = (0.5 * L.shift + 0.5 * L.initial_point).clone()
    g = torch.Generator().manual_seed(2)
    K, b = 200, 16
    th = theta.clone().requires_grad_(True)
    L.true_loss(th).sum().backward()
    full = th.grad
    grads = []
    for _ in range(K):
        t = theta.clone().requires_grad_(True)
        L.loss(t, L.sample(b, g)).sum().backward()
        grads.append(t.grad)
    mean = torch.stack(grads).mean(0)
    pe = per_example_grads(L, theta, L.sample(4000, torch.Generator().manual_seed(9)))  # [R, n, D]
    se = pe.std(dim=1) / math.sqrt(K * b)
    assert bool(((mean - full).abs() <= 5 * se).all()), ((mean - full) / se)


def test_noise_model_gradient_covariance_of_the_sphere_is_4_sigma2():
    sigma = 0.5
    L = make("sphere", dim=3, noise_std=sigma)
    pe = per_example_grads(L, L.initial_point, L.sample(20000, torch.Generator().manual_seed(0)))
    cov = torch.einsum("rni,rnj->rij", pe - pe.mean(1, keepdim=True), pe - pe.mean(1, keepdim=True)) / (pe.shape[1] - 1)
    # sample covariance of 20000 Gaussians: entry std <= 4 sigma^2 sqrt(2/N) ~ 0.01; allow 6x that
    torch.testing.assert_close(cov, 4 * sigma**2 * torch.eye(3, dtype=F64).expand(3, 3, 3), atol=0.06, rtol=0)


@pytest.mark.parametrize("kind", ANALYTIC_KINDS)
def test_same_seed_is_bit_identical(kind):
    a, b, c = make(kind, rotate=True, seed=5), make(kind, rotate=True, seed=5), make(kind, rotate=True, seed=6)
    assert torch.equal(a.shift, b.shift) and torch.equal(a.rotation, b.rotation) and torch.equal(a.initial_point, b.initial_point)
    x = random_points(a, 3)
    assert torch.equal(a.true_loss(x), b.true_loss(x))
    assert not torch.equal(a.initial_point, c.initial_point)
    # replicate r's instance does not depend on how many replicates there are
    one = make(kind, rotate=True, seed=5, replicates=1)
    assert torch.equal(one.shift[0], a.shift[0]) and torch.equal(one.rotation[0], a.rotation[0])


def test_bad_parameters_name_the_parameter_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"dim.*greater than or equal to 1"):
        build_landscape("sphere", {"dim": -3})
    with pytest.raises(ConfigError, match=r"condition.*greater than or equal to 1"):
        build_landscape("ellipsoid", {"condition": 0.5})
    with pytest.raises(ParameterError, match=r"'condition' = inf.*finite number >= 1"):
        build_landscape("ellipsoid", {"condition": float("inf")})
    with pytest.raises(ConfigError, match=r"dim.*greater than or equal to 2"):
        build_landscape("rosenbrock", {"dim": 1})
    with pytest.raises(ParameterError, match=r"'cliff_width' = 2.0.*< cliff_radius"):
        build_landscape("cliff", {"cliff_width": 2.0})
    with pytest.raises(ConfigError, match=r"noise_std"):
        build_landscape("rastrigin", {"noise_std": -1})
    with pytest.raises(ConfigError, match=r"unknown landscape 'rastrign'.*did you mean 'rastrigin'"):
        build_landscape("rastrign", {})


def test_float32_and_smoothing_without_closed_form():
    L = build_landscape("ackley", {"dim": 3, "noise_std": 0.2, "smoothing_samples": 256}, replicates=2, seed=0)
    assert L.dtype is torch.float32 and L.true_loss(L.initial_point).dtype is torch.float32
    assert L.optimum() is None and L.optimal_loss() is None  # the smoothed minimizer is not known
    # Monte Carlo smoothing uses one fixed noise set: deterministic
    assert torch.equal(L.true_loss(L.initial_point), L.true_loss(L.initial_point))
    assert np.isfinite(build_landscape("schwefel", {"dim": 2}).true_loss(torch.zeros(1, 2)).item())


def test_per_example_grads_of_a_batch_independent_loss_keep_replicates_apart():
    """Noise-free sphere: every example's gradient is replicate r's own gradient 2 (x - s_r)."""
    from evosgd.landscapes import build_landscape, per_example_grads

    for R in (2, 4):
        land = build_landscape("sphere", {"dim": 3}, replicates=R, seed=0, dtype=torch.float64)
        batch = land.sample(4, torch.Generator().manual_seed(0))
        g = per_example_grads(land, land.initial_point, batch)
        expected = 2 * (land.initial_point - land.shift)
        assert g.shape == (R, 4, 3)
        torch.testing.assert_close(g, expected[:, None, :].expand(R, 4, 3))
