"""Mini-batch SGD / Adam: estimators, accumulation, convergence, divergence, seeding, budget."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import evosgd.gradient  # noqa: F401  (registers)
from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.errors import ConfigError, ParameterError
from evosgd.core.registry import OPTIMIZERS
from evosgd.gradient.estimators import (
    BatchSampler,
    accumulated_gradient,
    batch_gradient,
)
from evosgd.landscapes import build_landscape

F64 = torch.float64


def run(kind, cfg, landscape, steps=None, max_cost=None, seed=0):
    budget = Budget(landscape.replicates, limits=BudgetLimits(max_steps=steps, max_cost=max_cost))
    opt = OPTIMIZERS.build(kind, cfg, landscape=landscape, budget=budget, generator=torch.Generator().manual_seed(seed))
    while (~budget.exhausted() & (opt.diverged_step < 0)).any():  # the engine's loop condition
        opt.step()
    return opt, budget


def linreg(replicates=3, n=64, d=5, **kw):
    return build_landscape("linear_regression", {"n_examples": n, "features": d, **kw}, replicates=replicates, seed=11, dtype=F64)


# ------------------------------------------------------------------ estimators
def test_per_example_variance_matches_explicit_formula():
    L = linreg()
    batch = L.sample(12, torch.Generator().manual_seed(0))
    theta = L.initial_point
    info = batch_gradient(L, theta, batch, stats=True)
    # linear regression: per-example gradient x_i (x_i . w - y_i)
    G = batch["x"] * ((batch["x"] * theta.unsqueeze(1)).sum(-1) - batch["y"]).unsqueeze(-1)
    torch.testing.assert_close(info.grads, G.mean(1))
    torch.testing.assert_close(info.grad_variance, G.var(dim=1, unbiased=True).sum(-1))
    plain = batch_gradient(L, theta, batch)
    torch.testing.assert_close(plain.grads, info.grads)
    torch.testing.assert_close(plain.loss, info.loss)


def test_accumulation_equals_one_big_batch_for_separable_losses():
    L = linreg()
    k, b = 4, 8
    big = L.sample(k * b, torch.Generator().manual_seed(1))
    micro = [{key: v[:, i * b:(i + 1) * b] for key, v in big.items()} for i in range(k)]
    theta = L.initial_point
    full = batch_gradient(L, theta, big, stats=True)
    acc = accumulated_gradient(L, theta, micro, stats=True)
    torch.testing.assert_close(acc.grads, full.grads, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc.loss, full.loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc.grad_variance, full.grad_variance, rtol=1e-10, atol=1e-12)  # Chan et al. combination
    assert acc.batch_size == k * b


def test_accumulation_differs_with_batch_norm_in_training_mode():
    """Batch norm normalises with the statistics of the batch it sees, so k micro-batches of b are
    not one batch of k*b: the gradients differ by far more than rounding (and agree without BN)."""
    k, b = 4, 8
    diffs = {}
    for bn in (False, True):
        L = build_landscape("teacher_student", {"n_examples": 64, "inputs": 3, "widths": [6], "outputs": 1, "batch_norm": bn},
                            replicates=2, seed=3, dtype=F64)
        big = L.sample(k * b, torch.Generator().manual_seed(2))
        micro = [{key: v[:, i * b:(i + 1) * b] for key, v in big.items()} for i in range(k)]
        full = batch_gradient(L, L.initial_point, big).grads
        acc = accumulated_gradient(L, L.initial_point, micro).grads
        diffs[bn] = ((acc - full).norm(dim=1) / full.norm(dim=1)).min().item()
    assert diffs[False] < 1e-12
    assert diffs[True] > 1e-3


def test_sampling_without_replacement_visits_each_example_once_per_epoch():
    class Stub:
        kind, finite_sum, n_examples, replicates, device = "stub", True, 12, 3, torch.device("cpu")

        def take(self, idx, t=None):
            return {"i": idx}

    s = BatchSampler(Stub(), torch.Generator().manual_seed(0), replacement=False)
    for _ in range(2):  # two epochs
        epoch = torch.cat([s.draw(4)["i"] for _ in range(3)], dim=1)
        assert (epoch.sort(dim=1).values == torch.arange(12)).all()
    assert s.epochs == 2
    assert not torch.equal(epoch[0], epoch[1])  # replicates shuffle independently
    s.draw(5), s.draw(5)
    assert s.epochs == 3 and s.pos == 10  # 2 left < 5: dropped, new epoch (drop_last)
    with pytest.raises(ValueError, match="finite-sum"):
        BatchSampler(build_landscape("sphere", {"dim": 2}), torch.Generator(), replacement=False)


# ------------------------------------------------------------------ optimizers
def test_full_batch_gd_reaches_least_squares_solution():
    """Batch = whole dataset without replacement: gradient descent on a strongly convex quadratic
    converges linearly to the closed-form least-squares solution (rate 1 - lr*lambda_min)."""
    L = linreg(n=64, d=5)
    opt, _ = run("sgd", {"lr": 0.3, "batch_size": 64, "sampling": "without_replacement"}, L, steps=400)
    torch.testing.assert_close(opt.recommend(), L.optimum(), rtol=0, atol=1e-8)


def test_minibatch_sgd_with_decaying_lr_approaches_optimum():
    """b = 4 with replacement, momentum and a 1/t schedule: the excess loss falls from O(1) to
    below 1e-3 of its start (a constant lr would stall at a noise floor ~ lr tr(Sigma)/b)."""
    L = linreg(n=128, d=5, noise_std=0.5)
    gap0 = (L.true_loss(L.initial_point) - L.optimal_loss())
    cfg = {"lr": 0.05, "batch_size": 4, "momentum": 0.5, "schedule": {"kind": "inverse_time", "decay": 0.02}}
    opt, budget = run("sgd", cfg, L, steps=600)
    gap = L.true_loss(opt.recommend()) - L.optimal_loss()
    assert (gap < 1e-3 * gap0).all(), (gap / gap0)
    assert (budget.gradient_evaluations == 600 * 4).all()
    assert budget.cost[0] == 3.0 * 600 * 4


def test_too_large_lr_marks_diverged_replicates_and_others_go_on():
    """Full-batch GD on least squares diverges iff lr * lambda_max(X^T X / n) > 2.  Put lr in the
    widest gap between the replicates' thresholds (geometric middle: both sides at least 10% away,
    so a diverging replicate grows by >= 1.2 per step and overflows float32 within 1000 steps),
    so some replicates diverge and the others converge, in one vectorized run."""
    L = build_landscape("linear_regression", {"n_examples": 16, "features": 5}, replicates=8, seed=11)
    x = L.data["x"].double()
    lam = torch.linalg.eigvalsh(x.transpose(1, 2) @ x / 16)[:, -1].sort().values
    k = int((lam[1:] / lam[:-1]).argmax())
    assert lam[k + 1] / lam[k] > 1.2
    lr = float(2 / torch.sqrt(lam[k] * lam[k + 1]))
    expected = lr * torch.linalg.eigvalsh(x.transpose(1, 2) @ x / 16)[:, -1] > 2
    opt, budget = run("sgd", {"lr": lr, "batch_size": 16, "sampling": "without_replacement"}, L, steps=1000)
    assert torch.equal(opt.diverged, expected)
    div = expected.numpy()
    assert (opt.diverged_step[div] > 0).all() and (opt.diverged_step[~div] == -1).all()
    assert (budget.steps[~div] == 1000).all() and (budget.steps[div] < 1000).all()  # frozen: no longer charged
    assert (budget.gradient_evaluations[div] == 16 * budget.steps[div]).all()
    assert torch.isfinite(opt.recommend()).all()
    gap = L.true_loss(opt.recommend()) - L.optimal_loss()
    assert (gap[~expected] < 1e-4).all()  # the others went on and converged


def test_adam_runs_and_converges_on_sphere():
    L = build_landscape("sphere", {"dim": 5}, replicates=2, seed=0, dtype=F64)
    opt, _ = run("adam", {"lr": 0.05}, L, steps=1500)
    assert (L.true_loss(opt.recommend()) < 1e-6).all()


def _replicate(L, r):
    """Replicate r of an analytic landscape as a landscape of one replicate."""
    one = copy.copy(L)
    one.replicates, one.shift, one.initial_point = 1, L.shift[r:r + 1], L.initial_point[r:r + 1]
    return one


def test_vectorized_replicates_match_separate_runs():
    """Seeding: one generator per run, one draw per step for all replicates.  Without sampling
    noise, R vectorized replicates equal R separate runs exactly; with noise, replicate r of a
    vectorized run gets different draws from a one-replicate run with the same seed, so the
    results agree in distribution only.  Test of the latter: the final-loss means of 200
    vectorized replicates and 200 separate runs differ by less than 4 standard errors of the
    difference (a two-sided z-test at level ~6e-5)."""
    cfg = {"lr": 0.1, "batch_size": 2, "momentum": 0.5}
    L = build_landscape("sphere", {"dim": 3}, replicates=4, seed=5, dtype=F64)
    vec, _ = run("sgd", cfg, L, steps=30)
    sep = torch.cat([run("sgd", cfg, _replicate(L, r), steps=30)[0].recommend() for r in range(4)])
    torch.testing.assert_close(vec.recommend(), sep, rtol=1e-14, atol=1e-14)

    n = 200
    L = build_landscape("sphere", {"dim": 3, "noise_std": 1.0, "shift": False}, replicates=n, seed=5, dtype=F64)
    L.initial_point = torch.ones_like(L.initial_point)  # every replicate the same problem
    steps = 10
    excess = lambda th: L.distance_to_optimum(th) ** 2  # the true loss minus its optimum
    vec = excess(run("sgd", cfg, L, steps=steps)[0].recommend())
    one = _replicate(L, 0)
    sep = torch.cat([excess(run("sgd", cfg, one, steps=steps, seed=s)[0].recommend().expand(n, 3))[:1] for s in range(n)])
    se = math.sqrt(vec.var() / n + sep.var() / n)
    assert abs(vec.mean() - sep.mean()) < 4 * se
    assert vec.std() > 0.1 * vec.mean()  # the noise is real, so the check is not vacuous
    # same seed, same everything: bit-identical
    again = excess(run("sgd", cfg, L, steps=steps)[0].recommend())
    assert torch.equal(vec, again)


def test_adaptive_batch_grows_by_norm_test_and_is_charged():
    L = build_landscape("sphere", {"dim": 4, "noise_std": 1.0}, replicates=3, seed=2, dtype=F64)
    opt, budget = run("sgd", {"lr": 0.1, "batch_size": 2, "adaptive_batch": True, "max_batch_size": 256}, L, steps=100)
    b = opt.metrics()["batch_size"]
    assert (b > 2).all() and (b <= 256).all()
    # near the optimum the signal vanishes, so the norm test asks for ever larger batches
    assert (b == 256).all()
    assert (budget.gradient_evaluations > 2 * 100).all()
    assert (budget.gradient_evaluations <= 256 * 100).all()


def test_confidence_scales_down_noisy_steps():
    """At the optimum the gradient is pure noise: snr ~ 0, so the confidence factor is small and the
    iterate stays nearer the optimum than plain SGD's (seeded run: measured ratio of mean
    distances 0.53; plain SGD's spread is set by lr * noise, the confidence rule cuts the noisy
    steps); far from the optimum the factor is ~ 1."""
    L = build_landscape("sphere", {"dim": 20, "noise_std": 1.0}, replicates=8, seed=2, dtype=F64)
    L.initial_point = L.shift.clone()
    opt, _ = run("sgd", {"lr": 0.2, "batch_size": 32, "confidence": "snr"}, L, steps=50)
    plain, _ = run("sgd", {"lr": 0.2, "batch_size": 32}, L, steps=50)
    d_conf = L.distance_to_optimum(opt.recommend()).mean()
    d_plain = L.distance_to_optimum(plain.recommend()).mean()
    assert d_conf < 0.7 * d_plain
    m = opt.metrics()
    assert m["confidence"].mean() < 0.5 and "grad_noise" in m
    L.initial_point = L.shift + 100.0
    far, _ = run("sgd", {"lr": 0.01, "batch_size": 8, "confidence": "snr"}, L, steps=1)
    assert (far.metrics()["confidence"] > 0.95).all()


def test_metrics_and_explicit_transforms():
    L = build_landscape("sphere", {"dim": 4, "noise_std": 0.5}, replicates=3, seed=2)
    cfg = {"batch_size": 4, "gradient_noise": True, "transforms": [
        {"kind": "clip_norm", "max_norm": 0.5}, {"kind": "momentum", "beta": 0.9},
        {"kind": "lr", "lr": 0.05, "schedule": {"kind": "cosine", "total_steps": 20, "warmup_steps": 2}}]}
    opt, _ = run("sgd", cfg, L, steps=20)
    m = opt.metrics()
    assert set(m) >= {"lr", "grad_norm", "clip_fraction", "grad_noise", "batch_size"}
    for v in m.values():
        assert tuple(v.shape) == (3,)
    assert (m["clip_fraction"] > 0.5).all()


def test_accumulation_steps_charge_k_times_b():
    L = linreg()
    opt, budget = run("sgd", {"lr": 0.01, "batch_size": 4, "accumulation_steps": 3}, L, steps=5)
    assert (budget.gradient_evaluations == 5 * 12).all()
    assert (opt.metrics()["batch_size"] == 12).all()


def test_bad_params_are_refused_clearly():
    L = linreg()
    with pytest.raises(ConfigError, match="lr"):
        OPTIMIZERS.validate("sgd", {"lr": -1})
    with pytest.raises(ConfigError, match="either 'transforms' or"):
        OPTIMIZERS.validate("sgd", {"lr": 0.1, "transforms": [{"kind": "lr", "lr": 0.1}]})
    with pytest.raises(ConfigError, match="nesterov"):
        OPTIMIZERS.validate("sgd", {"nesterov": True})
    with pytest.raises(ConfigError, match="unknown key"):
        OPTIMIZERS.validate("sgd", {"learning_rate": 0.1})
    with pytest.raises(ParameterError, match="sampling"):
        run("sgd", {"sampling": "without_replacement"}, build_landscape("sphere", {"dim": 2}), steps=1)
    with pytest.raises(ParameterError, match="at most the 64 examples"):
        run("sgd", {"sampling": "without_replacement", "batch_size": 65}, L, steps=1)
    bn = build_landscape("teacher_student", {"n_examples": 16, "inputs": 2, "widths": [3], "batch_norm": True})
    with pytest.raises(ParameterError, match="separable"):
        run("sgd", {"confidence": "snr"}, bn, steps=1)


# ----------------------------------------------------------------------------- random restarts
def test_random_restarts_escape_local_minima_and_keep_the_best():
    """Rastrigin in D = 2, exact gradients (noise-free, batch 1): plain GD stops in the local
    minimum of its start.  The global basin is about 1/100 of the domain (a 10 x 10 grid of unit
    basins), so each restart lands in it with p ~ 0.01 and the ~34 restarts of 10,000 steps (patience
    100) solve a replicate with probability 1 - 0.99^34 ~ 0.29: Binomial(32, 0.29) has mean 9.3 and
    SD 2.6, and the test asks for at least 3 (2.4 SD below) against plain GD's 1 at most.  The recommendation is
    the best run's iterate, so the error can only be lower than where the last run stands."""
    L = build_landscape("rastrigin", {"dim": 2}, replicates=32, seed=3, dtype=F64)
    errs, opts = {}, {}
    for mode in ("none", "stagnation"):
        opt, _ = run("sgd", {"batch_size": 1, "lr": 0.002, "restarts": mode, "restart_patience": 100}, L, steps=10_000)
        errs[mode] = (L.true_loss(opt.recommend()) - L.optimal_loss()).numpy()
        opts[mode] = opt
    restarts = opts["stagnation"].metrics()["restarts"]
    assert "restarts" not in opts["none"].metrics() and (restarts >= 10).all()
    assert (errs["stagnation"] < 1e-3).sum() >= 3 and (errs["none"] < 1e-3).sum() <= 1
    assert (errs["stagnation"] <= errs["none"] + 1e-9).mean() > 0.8
    current = (L.true_loss(opts["stagnation"].theta) - L.optimal_loss()).numpy()
    assert (errs["stagnation"] <= current + 1e-6).mean() > 0.9  # mostly the best run, not the current one


def test_a_restart_resets_only_its_replicate():
    L = build_landscape("rastrigin", {"dim": 3}, replicates=3, seed=1, dtype=F64)
    opt, _ = run("sgd", {"batch_size": 1, "lr": 0.002, "momentum": 0.9, "restarts": "stagnation"}, L, steps=50)
    theta, buf = opt.theta.clone(), opt.state[0].buffer.clone()
    opt._restart(torch.tensor([False, True, False]))
    assert torch.equal(opt.theta[[0, 2]], theta[[0, 2]]) and torch.equal(opt.state[0].buffer[[0, 2]], buf[[0, 2]])
    lo, hi = L.domain
    assert not torch.equal(opt.theta[1], theta[1]) and ((opt.theta[1] >= lo) & (opt.theta[1] <= hi)).all()
    assert (opt.state[0].buffer[1] == 0).all() and opt.restart_count.tolist() == [0, 1, 0]
    # right after the restart the fresh point is not yet as good as the finished run: recommend keeps that run
    assert torch.equal(opt.recommend()[1], theta[1]) and torch.equal(opt.recommend()[0], opt.theta[0])


def test_restarts_need_a_search_domain_and_respect_max_restarts():
    with pytest.raises(ParameterError, match="restarts"):
        run("sgd", {"restarts": "stagnation"}, linreg(), steps=1)
    L = build_landscape("rastrigin", {"dim": 2}, replicates=4, seed=2, dtype=F64)
    opt, _ = run("sgd", {"batch_size": 1, "lr": 0.002, "restarts": "stagnation", "restart_patience": 20,
                         "max_restarts": 0}, L, steps=500)
    assert (opt.metrics()["restarts"] == 0).all()


def test_accumulation_of_unequal_micro_batches_is_the_big_batch_gradient():
    """Exact case (issue #23): micro-batches of 3, 8 and 5 examples are weighted by their sizes, so
    the gradient, loss and per-example variance are those of the 16 concatenated examples, and the
    reported batch size is 16 (the plain mean of the three means would weight 3 examples like 8)."""
    L = linreg()
    big = L.sample(16, torch.Generator().manual_seed(4))
    cuts = [(0, 3), (3, 11), (11, 16)]
    micro = [{key: v[:, a:b] for key, v in big.items()} for a, b in cuts]
    full = batch_gradient(L, L.initial_point, big, stats=True)
    acc = accumulated_gradient(L, L.initial_point, micro, stats=True)
    torch.testing.assert_close(acc.grads, full.grads, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc.loss, full.loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc.grad_variance, full.grad_variance, rtol=1e-10, atol=1e-12)
    assert acc.batch_size == 16
    plain = torch.stack([batch_gradient(L, L.initial_point, m).grads for m in micro]).mean(0)
    assert float((plain - full.grads).norm()) > 1e-3 * float(full.grads.norm())  # the old answer was wrong here
