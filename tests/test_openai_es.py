"""OpenAI-ES: the gradient estimate is unbiased for the Gaussian-smoothed objective, the update goes
through the gradient engine's transforms exactly (replayed against torch.optim.Adam), and it descends."""

import numpy as np
import pytest
import torch

import evosgd.evolution  # noqa: F401  (registers)
from evosgd.core.budget import Budget
from evosgd.core.registry import OPTIMIZERS
from evosgd.core.seeding import make_generator
from evosgd.evolution.openai_es import centered_ranks
from evosgd.landscapes import build_landscape


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(params, *, landscape="sphere", lparams=None, R=4, dim=10, seed=1):
    L = build_landscape(landscape, {"dim": dim, **(lparams or {})}, replicates=R, seed=seed, dtype=torch.float64)
    B = Budget(R)
    opt = OPTIMIZERS.build("openai_es", params, landscape=L, budget=B, generator=make_generator(seed))
    return L, B, opt


@pytest.mark.parametrize("antithetic", [True, False])
def test_gradient_estimate_is_unbiased_for_the_smoothed_objective(antithetic):
    """Ellipsoid (condition 10, D = 5, noise-free), every replicate the same instance and the same theta, so the
    R = 16000 replicates give 16000 independent draws of the estimator g (P = 10, sigma = 0.5, raw losses).

    For a quadratic f, F_sigma(theta) = E f(theta + sigma eps) = f(theta) + sigma^2 tr(Lambda): its gradient is
    grad f(theta), computed here by autograd.  Tolerance: by the CLT the mean of R draws is within
    4 s_j / sqrt(R) of its expectation in coordinate j except with probability 6e-5 (s_j: the sample standard
    deviation); over D = 5 coordinates a false alarm has probability < 3.2e-4.  Power: 4 s_j / sqrt(R) is
    below 5% of ||grad f|| (asserted), so a bias of that size in any coordinate would be caught.
    """
    D, R = 5, 16000
    theta0 = [1.0, -2.0, 0.5, 3.0, -1.0]
    params = {"popsize": 10, "sigma": 0.5, "antithetic": antithetic, "fitness_shaping": "none", "transforms": [],
              "x0": theta0}
    L, B, opt = make(params, landscape="ellipsoid", lparams={"condition": 10.0, "shift": False}, R=R, dim=D)
    theta = torch.tensor(theta0, dtype=torch.float64).expand(R, D).clone().requires_grad_(True)
    L.true_loss(theta.unsqueeze(1)).sum().backward()
    true_grad = theta.grad[0]
    opt.step()
    g = opt.state.grad
    mean, se = g.mean(dim=0), g.std(dim=0) / R**0.5
    assert torch.all((mean - true_grad).abs() < 4 * se), (mean, true_grad, se)
    assert torch.all(4 * se < 0.05 * true_grad.norm()), (se, true_grad)
    # the estimator is a noisy one: a single draw is far from the gradient (what averaging buys)
    assert float((g[0] - true_grad).norm()) > 0.1 * float(true_grad.norm())


def test_antithetic_pairs_mirror_and_budget_is_popsize_times_cost():
    L, B, opt = make({"popsize": 8, "sigma": 0.3})
    pop, eps = opt.ask(opt.state)
    assert pop.shape == (4, 8, 10)
    torch.testing.assert_close(pop[:, :4] + pop[:, 4:], 2 * opt.state.theta.unsqueeze(1).expand(4, 4, 10))
    opt.step()
    opt.step()
    np.testing.assert_array_equal(B.evaluations, 2 * 8)
    assert OPTIMIZERS.build("openai_es", {}, landscape=L, budget=Budget(4), generator=make_generator(0)).popsize == 10


def test_centered_ranks_are_rank_based_zero_sum_and_bounded():
    f = torch.tensor([[3.0, -1.0, 10.0, 2.0, 0.5]], dtype=torch.float64)
    s = centered_ranks(f)
    torch.testing.assert_close(s, torch.tensor([[0.25, -0.5, 0.5, 0.0, -0.25]], dtype=torch.float64))
    assert float(s.sum()) == 0.0
    torch.testing.assert_close(centered_ranks(torch.exp(f)), s)  # invariant to monotone transformations


def test_update_goes_through_the_transforms_exactly_like_torch_adam():
    """The ES gradient g_t handed to [adam, lr] gives the same iterates as torch.optim.Adam fed with g_t."""
    lr = 0.05
    L, B, opt = make({"popsize": 20, "sigma": 0.1, "transforms": [{"kind": "adam"}, {"kind": "lr", "lr": lr}]}, R=2)
    w = torch.nn.Parameter(opt.state.theta.clone())
    ref = torch.optim.Adam([w], lr=lr)
    for _ in range(10):
        opt.step()
        w.grad = opt.state.grad.clone()
        ref.step()
        torch.testing.assert_close(opt.state.theta, w.detach(), rtol=1e-12, atol=1e-12)
    assert opt.metrics()["lr"].tolist() == [lr, lr]


def test_openai_es_with_adam_reduces_the_loss():
    L, B, opt = make({"popsize": 20, "sigma": 0.1, "transforms": [{"kind": "adam"}, {"kind": "lr", "lr": 0.1}]})
    start = L.true_loss(opt.recommend().unsqueeze(1)).squeeze(1)
    for _ in range(300):
        opt.step()
    end = L.true_loss(opt.recommend().unsqueeze(1)).squeeze(1)
    # from f ~ 50-160 (distance ~7-13) with steps ~lr per coordinate: measured end ~1e-2 (Adam's steps of
    # size ~lr keep it jittering at a distance ~ lr sqrt(D) / few once the gradient is noise-dominated)
    assert torch.all(end < 1e-3 * start), (start, end)
    assert np.all(B.evaluations == 300 * 20)
