"""Simulated distributed SGD: the virtual clock, order statistics, staleness, delayed-GD stability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import evosgd.gradient  # noqa: F401  (registers)
from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.errors import ConfigError
from evosgd.core.registry import OPTIMIZERS
from evosgd.gradient.distributed import (
    ConstantTime,
    ExponentialTime,
    LognormalTime,
    ShiftedExponentialTime,
    StragglerTime,
    expected_sync_step_time,
    harmonic,
)
from evosgd.landscapes import build_landscape

F64 = torch.float64


def make(kind, cfg, landscape, steps, seed=0):
    budget = Budget(landscape.replicates, limits=BudgetLimits(max_steps=steps))
    gen = torch.Generator().manual_seed(seed)
    return OPTIMIZERS.build(kind, cfg, landscape=landscape, budget=budget, generator=gen), budget, gen


def sphere(R=4, dim=2, **kw):
    return build_landscape("sphere", {"dim": dim, **kw}, replicates=R, seed=1, dtype=F64)


@pytest.mark.parametrize("backup", [0, 2])
def test_sync_step_time_is_kth_fastest_worker_plus_comm(backup):
    """Replay the generator: the step's first draw is the [R, N] worker times; the simulated clock
    advances by their K-th smallest (the maximum without backups) plus the communication time."""
    K, comm = 3, 0.25
    cfg = {"workers": K, "backup_workers": backup, "batch_size": 6, "comm_time": comm, "lr": 0.1,
           "compute_time": {"kind": "lognormal", "mu": 0.0, "sigma": 1.0}}
    opt, budget, gen = make("sgd_sync", cfg, sphere(), steps=5)
    spec = LognormalTime(kind="lognormal", mu=0.0, sigma=1.0)
    for _ in range(5):
        replay = torch.Generator().set_state(gen.get_state())
        times = spec.draw((4, K + backup), replay, torch.device("cpu"))
        before = budget.sim_time.copy()
        opt.step()
        expected = times.sort(dim=1).values[:, K - 1] + comm
        np.testing.assert_allclose(budget.sim_time - before, expected.numpy(), rtol=1e-12)
    assert (budget.gradient_evaluations == 5 * 2 * (K + backup)).all()  # every worker charged its shard


@pytest.mark.parametrize("K,backup", [(4, 0), (4, 2)])
def test_sync_mean_step_time_matches_harmonic_formula(K, backup):
    """Exponential times of mean mu: E T_(K:N) = mu (H_N - H_{N-K}) and, by Renyi's representation
    (T_(K:N) = sum_{i=N-K+1}^{N} mu E_i / i with iid E_i ~ Exp(1)), Var T_(K:N) = mu^2 sum 1/i^2.
    The mean of n = R * steps iid step times is then within 4 sqrt(Var / n) of the formula with
    probability > 0.9999 (normal approximation; n = 6400)."""
    R, steps, mu, comm = 64, 100, 2.0, 0.5
    cfg = {"workers": K, "backup_workers": backup, "batch_size": K, "comm_time": comm, "lr": 0.01,
           "compute_time": {"kind": "exponential", "mean_time": mu}}
    opt, budget, _ = make("sgd_sync", cfg, sphere(R=R, dim=1), steps=steps)
    for _ in range(steps):
        opt.step()
    N = K + backup
    n = R * steps
    mean_step = budget.sim_time.sum() / n
    var = mu**2 * sum(1.0 / i**2 for i in range(N - K + 1, N + 1))
    predicted = expected_sync_step_time(mu, K, backup, comm)
    assert predicted == pytest.approx(mu * (harmonic(N) - harmonic(N - K)) + comm)
    assert abs(mean_step - predicted) < 4 * math.sqrt(var / n)
    m = opt.metrics()
    assert ((m["idle_fraction"] > 0) & (m["idle_fraction"] < 1)).all()
    assert (m["staleness"] == 0).all()


def test_worker_time_distributions_have_their_means():
    """Sample means of 200k draws within 5 standard errors of the stated means (the lognormal's
    variance (e^{s^2} - 1) e^{2 mu + s^2}; the others bounded likewise)."""
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    for spec, var in [
        (ConstantTime(value=2.0), 0.0),
        (ExponentialTime(kind="exponential", mean_time=1.5), 1.5**2),
        (ShiftedExponentialTime(kind="shifted_exponential", shift=1.0, mean_time=0.5), 0.25),
        (LognormalTime(kind="lognormal", mu=0.1, sigma=0.5), (math.exp(0.25) - 1) * math.exp(0.2 + 0.25)),
        (StragglerTime(kind="straggler", base=1.0, p=0.1, slowdown=10.0), 0.1 * 0.9 * 81),
    ]:
        x = spec.draw((n,), gen, torch.device("cpu"))
        assert abs(x.mean().item() - spec.mean()) <= 5 * math.sqrt(var / n) + 1e-12, spec
    assert (x >= 1.0).all() and set(x.unique().tolist()) == {1.0, 10.0}


def test_async_equal_constant_workers_give_staleness_k_minus_1():
    """K workers of equal constant speed c, all starting at 0: the first round delivers staleness
    0, 1, ..., K-1, and from then on every update is exactly K-1 updates old; K updates per c."""
    K, c, steps = 4, 1.5, 41
    cfg = {"workers": K, "batch_size": 2, "lr": 0.01, "compute_time": {"kind": "constant", "value": c}}
    opt, budget, _ = make("sgd_async", cfg, sphere(R=3), steps=steps)
    seen = []
    for _ in range(steps):
        opt.step()
        seen.append(opt.stale_last.clone())
    seen = torch.stack(seen)  # [steps, R]
    assert (seen[:K] == torch.arange(K).unsqueeze(1)).all()
    assert (seen[K:] == K - 1).all()
    hist = opt.staleness_histogram()
    assert (hist[:, K - 1] == steps - (K - 1)).all() and (hist[:, :K - 1] == 1).all()
    m = opt.metrics()
    assert (m["staleness_max"] == K - 1).all()
    np.testing.assert_allclose(budget.sim_time, math.ceil(steps / K) * c)
    assert (budget.gradient_evaluations == 2 * steps).all()


def test_async_gradient_is_taken_at_the_parameters_the_worker_read():
    """Two constant workers on a noise-free 1-D quadratic f = (x - s)^2: replay the server by hand.
    Each update applies -lr * 2 (x_read - s) where x_read is the iterate when that worker started."""
    L = sphere(R=1, dim=1)
    lr, K = 0.1, 2
    opt, _, _ = make("sgd_async", {"workers": K, "batch_size": 1, "lr": lr, "compute_time": {"kind": "constant"}}, L, steps=20)
    s = L.shift[0, 0].item()
    x = [L.initial_point[0, 0].item()]
    reads = [x[0]] * K  # both workers read x0
    for step in range(20):
        w = step % K  # equal speeds: round robin
        x.append(x[-1] - lr * 2 * (reads[w] - s))
        reads[w] = x[-1]
        opt.step()
        assert opt.recommend()[0, 0].item() == pytest.approx(x[-1], rel=1e-12, abs=1e-12)


def _delayed_gd(a: float, tau: int, steps: int, x0: float = 1.0) -> float:
    """x_{t+1} = x_t - a x_{t - tau} (history padded with x0): |x_steps|."""
    xs = [x0] * (tau + 1)
    for _ in range(steps):
        xs.append(xs[-1] - a * xs[-1 - tau])
    return abs(xs[-1])


@pytest.mark.parametrize("tau", [1, 3])
def test_fixed_delay_reproduces_delayed_gd_stability_boundary(tau):
    """Delayed gradient descent x_{t+1} = x_t - lr h x_{t-tau} on a 1-D quadratic is stable iff
    lr h < 2 sin(pi / (2 (2 tau + 1))) (the characteristic roots of z^{tau+1} - z^tau + lr h cross
    the unit circle there).  On f = (x - s)^2 (h = 2): 5% below the boundary the error shrinks,
    5% above it grows, over 1500 updates; the iterates equal the recurrence."""
    h = 2.0
    boundary = 2 * math.sin(math.pi / (2 * (2 * tau + 1))) / h
    L = sphere(R=1, dim=1)
    e0 = (L.initial_point - L.shift).abs().item()
    steps = 1500
    for factor, stable in [(0.95, True), (1.05, False)]:
        lr = factor * boundary
        opt, _, _ = make("sgd_async", {"workers": tau + 1, "batch_size": 1, "lr": lr, "delay_model": "fixed",
                                       "delay": tau}, L, steps=steps)
        for _ in range(steps):
            opt.step()
        err = (opt.recommend() - L.shift).abs().item()
        assert err == pytest.approx(_delayed_gd(lr * h, tau, steps, e0), rel=1e-8)
        assert (err < 1e-3 * e0) if stable else (err > 1e3 * e0), (factor, err / e0)
        assert (opt.metrics()["staleness"] == tau).all()


def test_staleness_aware_lr_divides_by_staleness():
    """Fixed delay tau = 2 with staleness_aware: the same trajectory as lr / 2 without it."""
    L = sphere(R=2, dim=3)
    out = []
    for cfg in [{"lr": 0.2, "staleness_aware": True}, {"lr": 0.1}]:
        opt, _, _ = make("sgd_async", {"workers": 3, "batch_size": 1, "delay_model": "fixed", "delay": 2, **cfg}, L, steps=30)
        for _ in range(30):
            opt.step()
        out.append(opt.recommend())
    torch.testing.assert_close(out[0], out[1], rtol=1e-12, atol=1e-12)


def test_distributed_divergence_and_validation():
    L = sphere(R=2, dim=2)
    opt, _budget, _ = make("sgd_async", {"workers": 2, "lr": 5.0, "compute_time": {"kind": "exponential"}}, L, steps=2000)
    for _ in range(2000):
        opt.step()
        if opt.diverged.all():
            break
    assert opt.diverged.all() and torch.isfinite(opt.recommend()).all()
    with pytest.raises(ConfigError, match="multiple of workers"):
        OPTIMIZERS.validate("sgd_sync", {"workers": 3, "batch_size": 16})
    with pytest.raises(ConfigError, match="compute_time"):
        OPTIMIZERS.validate("sgd_sync", {"compute_time": {"kind": "gamma"}})
