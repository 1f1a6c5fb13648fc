"""Update transforms against their references (torch.optim, torch lr_scheduler) and their formulas."""

from __future__ import annotations

import math

import pytest
import torch

from evosgd.core.errors import ConfigError
from evosgd.gradient import schedules as S
from evosgd.gradient import transforms as T

R, D, STEPS = 3, 5, 200


def _gradients(seed: int = 0) -> torch.Tensor:
    """A fixed sequence of gradients [STEPS, R, D] (float64) with a drift, so momentum matters."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(STEPS, R, D, generator=g, dtype=torch.float64) + 0.3


def _run_chain(tx: T.GradientTransform, p0: torch.Tensor, grads: torch.Tensor, grad_of_params=None,
               fused: bool = False) -> torch.Tensor:
    """``fused``: step with ``apply_updates`` (what the SGD optimizer calls) instead of
    ``update`` followed by ``p + u``."""
    p, s = p0.clone(), tx.init(p0)
    for g in grads:
        if grad_of_params is not None:
            g = g + grad_of_params(p)
        if fused:
            p, s = T.apply_updates(tx, g, s, p)
        else:
            u, s = tx.update(g, s, p)
            p = p + u
    return p


def _run_torch(make_opt, p0: torch.Tensor, grads: torch.Tensor, grad_of_params=None, sched=None) -> torch.Tensor:
    """Each replicate row as its own torch parameter, fed the same gradients."""
    rows = [torch.nn.Parameter(p0[r].clone()) for r in range(p0.shape[0])]
    opt = make_opt(rows)
    scheduler = sched(opt) if sched else None
    for g in grads:
        for r, prm in enumerate(rows):
            extra = grad_of_params(prm.detach().unsqueeze(0))[0] if grad_of_params is not None else 0.0
            prm.grad = (g[r] + extra).clone()
        opt.step()
        if scheduler:
            scheduler.step()
    return torch.stack([p.detach() for p in rows])


# The gradient depends on the params too (a quadratic pull), so weight decay and the iterate
# path feed back into the gradients exactly as in a real run.
def _pull(p: torch.Tensor) -> torch.Tensor:
    return 0.5 * p


@pytest.mark.parametrize(
    "cfg",
    [
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True},
        {"momentum": 0.8, "dampening": 0.3},
        {"momentum": 0.9, "weight_decay": 0.05},
        {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        {"weight_decay": 0.1},
    ],
)
def test_sgd_matches_torch(cfg):
    lr = 0.05
    p0 = torch.randn(R, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = _gradients()
    parts = []
    if cfg.get("weight_decay"):
        parts.append(T.add_decayed_weights(cfg["weight_decay"]))
    if cfg.get("momentum"):
        parts.append(T.momentum(cfg["momentum"], cfg.get("dampening", 0.0), cfg.get("nesterov", False)))
    parts.append(T.scale_by_learning_rate(lr))
    ref = _run_torch(lambda ps: torch.optim.SGD(ps, lr=lr, **cfg), p0, grads, _pull)
    for fused in (False, True):
        ours = _run_chain(T.chain(*parts), p0, grads, _pull, fused=fused)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(ours, p0)


def test_apply_updates_fuses_only_a_constant_learning_rate_last():
    """The fused step ``add(p, u, alpha=-eta)`` is offered exactly when the chain ends with a
    constant learning rate, and equals ``p + update`` up to rounding (one ulp per step at most);
    a schedule, or a chain not ending with the lr, falls back to ``p + update``, bit for bit."""
    p0 = torch.randn(R, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads = _gradients(4)[:20]
    const = T.chain(T.momentum(0.9), T.scale_by_learning_rate(0.1))
    assert const.apply is not None
    torch.testing.assert_close(_run_chain(const, p0, grads, fused=True), _run_chain(const, p0, grads), rtol=1e-13, atol=1e-14)
    sched = T.chain(T.momentum(0.9), T.scale_by_learning_rate(S.cosine_schedule(0.1, 20)))
    not_last = T.chain(T.scale_by_learning_rate(0.1), T.momentum(0.9))
    assert not_last.apply is None
    for tx in (sched, not_last):
        assert torch.equal(_run_chain(tx, p0, grads, fused=True), _run_chain(tx, p0, grads))
    # the state advances the same way: the lr metric and the step counter
    _, s = T.apply_updates(const, grads[0], const.init(p0), p0)
    assert s[-1].count.tolist() == [1] * R and torch.equal(s[-1].lr, torch.full((R,), 0.1, dtype=torch.float64))


@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.02, False), (0.02, True)])
def test_adam_matches_torch(wd, decoupled):
    lr = 0.01
    p0 = torch.randn(R, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = _gradients(3)
    adam = T.scale_by_adam(0.9, 0.99, 1e-6)
    if decoupled:
        tx = T.chain(adam, T.add_decayed_weights(wd), T.scale_by_learning_rate(lr))
        make = lambda ps: torch.optim.AdamW(ps, lr=lr, betas=(0.9, 0.99), eps=1e-6, weight_decay=wd)
    else:
        tx = T.chain(T.add_decayed_weights(wd), adam, T.scale_by_learning_rate(lr))
        make = lambda ps: torch.optim.Adam(ps, lr=lr, betas=(0.9, 0.99), eps=1e-6, weight_decay=wd)
    ref = _run_torch(make, p0, grads, _pull)
    for fused in (False, True):  # the optimizer steps through apply_updates (fused lr)
        ours = _run_chain(tx, p0, grads, _pull, fused=fused)
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "spec,torch_sched",
    [
        ({"kind": "step", "step_size": 7, "gamma": 0.5}, lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
        ({"kind": "exponential", "gamma": 0.98}, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.98)),
        ({"kind": "cosine", "total_steps": 50, "min_factor": 0.1},
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 50, eta_min=0.01)),
    ],
)
def test_schedules_match_torch_lr_scheduler(spec, torch_sched):
    """The learning rate used at each step equals torch's (scheduler stepped after each step)."""
    sched = T.LearningRateSpec(kind="lr", lr=0.1, schedule=spec).schedule.build(0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ts = torch_sched(opt)
    # 51 steps: torch's cosine turns back up after T_max (a period), ours stays at the minimum
    ours = sched(torch.arange(51))
    ref = []
    for _ in range(51):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        ts.step()
    torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-14)


def test_inverse_time_and_warmup_formulas():
    t = torch.arange(30)
    inv = S.inverse_time_schedule(0.2, decay=0.5, power=0.5)(t)
    torch.testing.assert_close(inv, 0.2 / torch.sqrt(1 + 0.5 * t.double()))
    warm = S.linear_warmup(S.constant_schedule(1.0), warmup_steps=10, start_factor=0.0)(t)
    assert warm[0] == 0 and warm[5] == pytest.approx(0.5) and (warm[10:] == 1).all()
    # warm-up then cosine: the cosine starts at t = W with its full value
    cos = S.linear_warmup(S.cosine_schedule(1.0, 10), 5, 0.2)(t)
    assert cos[0] == pytest.approx(0.2) and cos[5] == pytest.approx(1.0) and cos[15] == pytest.approx(0.0)


def test_lr_transform_counts_per_replicate_and_freezes():
    tx = T.scale_by_learning_rate(S.exponential_schedule(1.0, 0.5))
    p = torch.zeros(2, 1)
    s = tx.init(p)
    g = torch.ones(2, 1)
    u, s1 = tx.update(g, s, p)
    s = T.tree_where(torch.tensor([True, False]), s1, s)  # replicate 1 frozen
    u, s = tx.update(g, s, p)
    assert u.flatten().tolist() == [-0.5, -1.0]
    assert T.transform_metrics(s)["lr"].tolist() == [0.5, 1.0]


def test_clip_by_global_norm_bounds_norm_and_keeps_direction():
    g = torch.randn(50, 7, generator=torch.Generator().manual_seed(4)) * torch.logspace(-2, 2, 50).unsqueeze(1)
    tx = T.clip_by_global_norm(1.0)
    u, s = tx.update(g, tx.init(g), g)
    norms = u.norm(dim=1)
    assert (norms <= 1.0 * (1 + 1e-6)).all()
    cos = torch.nn.functional.cosine_similarity(u, g, dim=1)
    torch.testing.assert_close(cos, torch.ones(50), rtol=0, atol=1e-6)
    small = g.norm(dim=1) <= 1.0
    torch.testing.assert_close(u[small], g[small])  # below the threshold: untouched
    frac = T.transform_metrics(s)["clip_fraction"]
    assert frac.tolist() == (~small).double().tolist()
    z = torch.zeros(1, 3)
    assert tx.update(z, tx.init(z), z)[0].eq(0).all()  # zero gradient: no NaN


def test_clip_by_value():
    g = torch.tensor([[-3.0, 0.5, 2.0, 0.1]], dtype=torch.float64)
    u, s = T.clip_by_value(1.0).update(g, T.clip_by_value(1.0).init(g), g)
    assert u.tolist() == [[-1.0, 0.5, 1.0, 0.1]]
    assert s.fraction.item() == pytest.approx(0.5)


def test_confidence_factor_formula_and_needs():
    g = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])  # ||g||^2 = 25, 1, 0
    V = torch.tensor([50.0, 8.0, 1.0])
    tx = T.scale_by_confidence("snr")
    assert tx.needs == {"grad_variance", "batch_size"}
    u, s = tx.update(g, tx.init(g), g, grad_variance=V, batch_size=4)
    # noise V/b = 12.5, 2, .25: factor = max(0, 1 - noise/||g||^2) = 0.5, 0, (zero gradient) 1
    torch.testing.assert_close(s.factor, torch.tensor([0.5, 0.0, 1.0]))
    torch.testing.assert_close(u[0], g[0] * 0.5)
    nt = T.scale_by_confidence("norm_test", theta=0.5)
    _, s = nt.update(g, nt.init(g), g, grad_variance=V, batch_size=4)
    torch.testing.assert_close(s.factor, torch.tensor([0.5, 0.125, 0.0]))
    with pytest.raises(ValueError, match="grad_variance"):
        tx.update(g, tx.init(g), g)
    assert T.chain(T.clip_by_global_norm(1.0), tx, T.scale_by_learning_rate(0.1)).needs == tx.needs


def test_confidence_snr_is_optimal_step_on_noisy_quadratic():
    """On f = ||x||^2/2 with unbiased noisy gradients, the expected loss after a step x - a g is
    minimised at a* = ||x||^2/E||g||^2, the factor of rule 'snr'.  Check: the measured expected
    loss at a* is below those at a*(1 +- 0.3), with 4000 draws (std error of each mean << gaps)."""
    gen = torch.Generator().manual_seed(5)
    x = torch.ones(1, 4)
    sigma2, b, n = 2.0, 4, 4000
    noise = torch.randn(n, 4, generator=gen, dtype=torch.float64) * math.sqrt(sigma2 / b)
    g = x.double() + noise
    a_star = x.pow(2).sum().item() / (x.pow(2).sum().item() + 4 * sigma2 / b)
    loss = lambda a: (0.5 * (x.double() - a * g).pow(2).sum(1)).mean().item()
    assert loss(a_star) < loss(0.7 * a_star) and loss(a_star) < loss(1.3 * a_star)


def test_build_transform_spec_order_and_errors():
    tx = T.build_transform([
        {"kind": "clip_norm", "max_norm": 1.0},
        {"kind": "momentum", "beta": 0.9},
        {"kind": "lr", "lr": 0.1, "schedule": {"kind": "cosine", "total_steps": 100, "warmup_steps": 2}},
    ])
    ref = T.chain(T.clip_by_global_norm(1.0), T.momentum(0.9),
                  T.scale_by_learning_rate(S.linear_warmup(S.cosine_schedule(0.1, 100), 2)))
    p0 = torch.zeros(R, D, dtype=torch.float64)
    grads = _gradients(6)[:20] * 3
    torch.testing.assert_close(_run_chain(tx, p0, grads), _run_chain(ref, p0, grads))
    with pytest.raises(ConfigError, match="max_norm"):
        T.build_transform([{"kind": "clip_norm", "max_norm": -1.0}])
    with pytest.raises(ConfigError, match="bogus"):
        T.build_transform([{"kind": "bogus"}])
    with pytest.raises(ConfigError, match="unknown key|extra"):
        T.build_transform([{"kind": "momentum", "betaa": 0.9}])


def test_staleness_transform():
    tx = T.scale_by_staleness()
    g = torch.ones(3, 2)
    u, _ = tx.update(g, tx.init(g), g, staleness=torch.tensor([0, 1, 4]))
    assert u[:, 0].tolist() == [1.0, 1.0, 0.25]
