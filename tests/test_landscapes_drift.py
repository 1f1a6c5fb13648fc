"""Concept drift (the wrapper and its kinds) and the Moving Peaks benchmark."""

import math

import pytest
import torch

from evosgd.core.errors import ConfigError, ParameterError
from evosgd.landscapes import DRIFTS, DriftingLandscape, build_landscape
from evosgd.landscapes.drift import RandomWalkDrift

F64 = torch.float64


def make(kind="ellipsoid", drift=None, replicates=3, seed=0, **params):
    params = {"dim": 4, **params} if kind in ("ellipsoid", "sphere", "rastrigin", "moving_peaks") else params
    return build_landscape(kind, params, replicates=replicates, seed=seed, dtype=F64, drift=drift)


def test_registry_and_wrapper_flags():
    assert DRIFTS.names() == ["linear", "periodic", "random_walk", "rotation", "switch"]
    for e in DRIFTS.entries():
        assert e.description and all(f.description for f in e.params.model_fields.values())
    L = make(drift={"kind": "linear", "speed": 0.1})
    assert isinstance(L, DriftingLandscape) and L.drifting and not make().drifting
    assert L.describe()["drift"] == {"kind": "linear", "speed": 0.1}


def test_linear_drift_moves_the_optimum_at_the_stated_speed():
    static = make(rotate=True)
    L = make(drift={"kind": "linear", "speed": 0.01}, rotate=True)
    u = L.drift.direction
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(3, dtype=F64))
    t = torch.tensor([0.0, 10.0, 250.0], dtype=F64)
    torch.testing.assert_close(L.optimum(t), static.optimum() + 0.01 * t.unsqueeze(-1) * u)
    torch.testing.assert_close(L.optimum(100.0), static.optimum() + 1.0 * u)  # float t: every replicate
    torch.testing.assert_close(L.optimum(None), static.optimum())
    # the whole landscape is carried along: f_t(theta + delta(t)) = f(theta), value at optimum(t) stays optimal
    theta = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(L.true_loss(theta + (0.01 * t.unsqueeze(-1) * u).unsqueeze(1), t), static.true_loss(theta))
    torch.testing.assert_close(L.true_loss(L.optimum(t).unsqueeze(1), t).squeeze(1), L.optimal_loss(t))


def test_rotation_turns_the_ravine_about_the_optimum():
    static = make(condition=100.0)
    L = make(drift={"kind": "rotation", "angular_speed": 0.01}, condition=100.0)
    t = torch.tensor([0.0, 50.0, 157.0], dtype=F64)
    torch.testing.assert_close(L.optimum(t), static.optimum())  # the centre stays
    x = static.optimum().unsqueeze(1) + torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    moved = L.drift.forward(x, t)
    # an isometry about the optimum, by the angle angular_speed * t in the plane (u, v)
    c = static.optimum().unsqueeze(1)
    torch.testing.assert_close((moved - c).norm(dim=-1), (x - c).norm(dim=-1))
    u = L.drift.u.unsqueeze(1)
    mu = moved - c
    cos = ((mu * u).sum(-1) / 1.0)
    v = L.drift.v.unsqueeze(1)
    a = 0.01 * t.view(3, 1)
    torch.testing.assert_close(cos, ((x - c) * u).sum(-1) * torch.cos(a) - ((x - c) * v).sum(-1) * torch.sin(a))
    torch.testing.assert_close(L.true_loss(moved, t), static.true_loss(x))
    torch.testing.assert_close(L.drift.inverse(moved, t), x)


def test_periodic_drift_returns_after_one_period():
    static = make()
    L = make(drift={"kind": "periodic", "amplitude": 2.0, "period": 40.0})
    torch.testing.assert_close(L.optimum(40.0), static.optimum())
    torch.testing.assert_close((L.optimum(10.0) - static.optimum()).norm(dim=-1), torch.full((3,), 2.0, dtype=F64))
    torch.testing.assert_close(L.optimum(30.0) - static.optimum(), -(L.optimum(10.0) - static.optimum()))


def test_switch_happens_exactly_every_k_units():
    static = make()
    for every in (250.0, 0.1):
        L = make(drift={"kind": "switch", "every": every, "regimes": 3, "magnitude": 5.0})
        for j in range(1, 8):
            at = j * every
            before = math.nextafter(at, -math.inf)
            assert L.drift.regime(before).tolist() == [(j - 1) % 3] * 3
            assert L.drift.regime(at).tolist() == [j % 3] * 3
        dist = (L.optimum(torch.tensor([0.0, every, 2 * every], dtype=F64)) - static.optimum()).norm(dim=-1)
        torch.testing.assert_close(dist, torch.tensor([0.0, 5.0, 5.0], dtype=F64))
        torch.testing.assert_close(L.optimum(3 * every), static.optimum())  # back to regime 0 after a cycle


def test_random_walk_is_deterministic_whatever_the_query_order():
    spec = {"kind": "random_walk", "step_std": 0.5, "dt": 1.0}
    times = [0.0, 3.5, 2047.25, 5000.0, 1025.0, 7.0]
    a, b = make(drift=spec), make(drift=spec)
    fwd = {t: a.optimum(t) for t in times}
    back = {t: b.optimum(t) for t in reversed(times)}
    for t in times:
        assert torch.equal(fwd[t], back[t])
    # mixed per-replicate times in one query agree with single-time queries
    mixed = a.optimum(torch.tensor([7.0, 5000.0, 3.5], dtype=F64))
    for r, t in enumerate([7.0, 5000.0, 3.5]):
        assert torch.equal(mixed[r], fwd[t][r])
    # linear interpolation between grid points
    torch.testing.assert_close(a.optimum(3.5), 0.5 * (a.optimum(3.0) + a.optimum(4.0)))
    torch.testing.assert_close(a.optimum(0.0), make().optimum())


def test_random_walk_has_the_stated_variance_per_unit_time():
    # 60 replicates x 50 coordinates: N = 3000 iid N(0, s^2 T) displacements at T = 3000 (crossing
    # two chunk boundaries).  The sample variance's relative std is sqrt(2/N) = 0.026; allow 5x.
    d = RandomWalkDrift(DRIFTS.validate("random_walk", {"step_std": 0.1, "dt": 2.0}), replicates=60, seed=0, dim=50,
                        center=torch.zeros(60, 50), device="cpu", dtype=F64)
    x = d.offset(3000.0)
    var = (x * x).mean().item()
    assert var == pytest.approx(0.1**2 * 3000, rel=5 * math.sqrt(2 / 3000))
    inc = d.offset(3002.0) - x  # one grid step
    assert (inc * inc).mean().item() == pytest.approx(0.1**2 * 2.0, rel=5 * math.sqrt(2 / 3000))


def test_data_drift_moves_the_concept_new_examples_come_from():
    spec = {"kind": "linear", "speed": 0.1}
    base = {"n_examples": 30, "features": 3}
    static = build_landscape("linear_regression", base, replicates=2, seed=1, dtype=F64)
    L = build_landscape("linear_regression", base, replicates=2, seed=1, dtype=F64, drift=spec)
    t = torch.tensor([0.0, 20.0], dtype=F64)
    w_t = static.concept + 0.1 * t.unsqueeze(-1) * L.drift.direction
    torch.testing.assert_close(L.concept_at(t), w_t)
    idx = torch.randint(0, 30, (2, 7), generator=torch.Generator().manual_seed(0))
    batch = L.take(idx, t)  # labels come from the concept at t; only the example's own noise is left
    noise = L.inner.data["noise"][torch.arange(2).unsqueeze(1), idx]
    torch.testing.assert_close(batch["y"], (batch["x"] * w_t.unsqueeze(1)).sum(-1) + noise)
    sampled = L.sample(5, torch.Generator().manual_seed(1), t)
    assert sampled["y"].shape == (2, 5)
    # least squares is linear in the labels: the optimum moves exactly like the concept
    torch.testing.assert_close(L.optimum(t) - static.optimum(), w_t - static.concept)
    torch.testing.assert_close(L.optimal_loss(t), static.optimal_loss())
    everything = L.take(torch.arange(30).expand(2, 30), t)
    theta = torch.randn(2, 3, dtype=F64)
    torch.testing.assert_close(L.true_loss(theta, t), L.loss(theta, everything, t))


def test_rotating_hyperplane_keeps_the_concept_norm_and_turns_it():
    base = {"n_examples": 50, "features": 4}
    L = build_landscape("logistic_regression", base, replicates=2, seed=2, dtype=F64,
                        drift={"kind": "rotation", "angular_speed": 0.01})
    w0, w1 = L.concept_at(0.0), L.concept_at(100.0)
    torch.testing.assert_close(w1.norm(dim=-1), w0.norm(dim=-1))
    assert not torch.allclose(w0, w1)
    opt = L.optimum(100.0)  # Newton under the rotated concept: the gradient vanishes there
    th = opt.clone().requires_grad_(True)
    L.true_loss(th, 100.0).sum().backward()
    assert th.grad.abs().max() < 1e-8
    torch.testing.assert_close(L.true_loss(opt, 100.0), L.optimal_loss(100.0))


def test_same_seed_same_drift_bit_for_bit():
    for spec in ({"kind": "random_walk", "step_std": 0.1}, {"kind": "rotation"}, {"kind": "switch", "every": 5.0}):
        a, b = make(drift=spec, seed=4), make(drift=spec, seed=4)
        t = torch.tensor([3.0, 77.5, 1200.0], dtype=F64)
        assert torch.equal(a.optimum(t), b.optimum(t))
        x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
        assert torch.equal(a.true_loss(x, t), b.true_loss(x, t))


def test_bad_drift_specifications_are_clear_errors():
    with pytest.raises(ConfigError, match=r"unknown drift 'wobble'.*allowed: linear, periodic, random_walk, rotation, switch"):
        make(drift={"kind": "wobble"})
    with pytest.raises(ConfigError, match=r"'kind' is missing; allowed: linear"):
        make(drift={"speed": 1.0})
    with pytest.raises(ConfigError, match=r"speed.*greater than or equal to 0"):
        make(drift={"kind": "linear", "speed": -1.0})
    with pytest.raises(ConfigError, match=r"every.*greater than 0"):
        make(drift={"kind": "switch", "every": 0})
    with pytest.raises(ConfigError, match=r"unknown key"):
        make(drift={"kind": "periodic", "amplitud": 1.0})


# -- Moving Peaks -------------------------------------------------------------------------------

def peaks(**over):
    return build_landscape("moving_peaks", {"dim": 3, "peaks": 5, "change_every": 100.0, **over}, replicates=4, seed=0, dtype=F64)


def test_moving_peaks_bounds_and_known_optimum_at_every_t():
    L = peaks()
    p = L.params
    g = torch.Generator().manual_seed(0)
    for e in range(0, 60, 3):
        t = e * 100.0 + 50.0
        H, W, X = L.peaks_at(t)
        assert bool(((H >= p.min_height) & (H <= p.max_height)).all())
        assert bool(((W >= p.min_width) & (W <= p.max_width)).all())
        assert bool(((X >= p.lower) & (X <= p.upper)).all())
        opt = L.optimum(t)
        torch.testing.assert_close(L.true_loss(opt.unsqueeze(1), t).squeeze(1), L.optimal_loss(t))
        torch.testing.assert_close(L.optimal_loss(t), -H.max(-1).values)
        x = p.lower + (p.upper - p.lower) * torch.rand(4, 200, 3, generator=g, dtype=F64)
        assert bool((L.true_loss(x, t) >= L.optimal_loss(t).unsqueeze(1)).all())


def test_moving_peaks_change_exactly_every_k_and_move_by_the_severity():
    L = peaks(shift_severity=1.5, lower=-1e6, upper=1e6)  # a huge box: no reflections
    for j in range(1, 6):
        _, _, before = L.peaks_at(math.nextafter(j * 100.0, 0.0))
        _, _, same = L.peaks_at((j - 1) * 100.0)
        _, _, after = L.peaks_at(j * 100.0)
        assert torch.equal(before, same)
        torch.testing.assert_close((after - before).norm(dim=-1), torch.full((4, 5), 1.5, dtype=F64))
    straight = peaks(correlation=1.0, lower=-1e6, upper=1e6)  # lambda = 1: every peak keeps its direction
    X = torch.stack([straight.peaks_at(e * 100.0)[2] for e in range(1, 5)])
    steps = X[1:] - X[:-1]
    torch.testing.assert_close(steps[1:], steps[:-1].expand_as(steps[1:]))


def test_moving_peaks_determinism_and_errors():
    a, b = peaks(), peaks()
    b.peaks_at(2000.0)  # b generates epochs first far ahead; a in small steps
    for t in (150.0, 999.0, 2000.0):
        assert all(torch.equal(x, y) for x, y in zip(a.peaks_at(t), b.peaks_at(t)))
    assert a.drifting
    with pytest.raises(ParameterError, match=r"'max_height' = 10.0.*> min_height"):
        peaks(max_height=10.0)
    with pytest.raises(ConfigError, match=r"correlation.*less than or equal to 1"):
        peaks(correlation=2.0)


def test_wrapper_delegates_the_inner_landscapes_attributes():
    L = build_landscape("teacher_student", {"n_examples": 20, "inputs": 2, "widths": [3]}, replicates=2, seed=0,
                        dtype=F64, drift={"kind": "random_walk", "step_std": 0.1})
    assert L.unflatten(L.initial_point)[0][0].shape == (2, 2, 3) and L.params.widths == [3]
    assert L.finite_sum and L.n_examples == 20 and L.full_cost == 20.0
    torch.testing.assert_close(L.optimum(50.0), L.concept_at(50.0))  # realisable: the moving teacher
    torch.testing.assert_close(L.true_loss(L.optimum(50.0), 50.0), torch.zeros(2, dtype=F64))


def test_moving_peaks_observation_noise_is_unbiased():
    L = peaks(noise_std=2.0)
    x = L.initial_point
    batch = L.sample(20000, torch.Generator().manual_seed(0), 150.0)
    ex = L.example_losses(x, batch, 150.0)
    torch.testing.assert_close(L.loss(x, batch, 150.0), ex.mean(-1))
    # mean of 20000 draws of N(f, 2^2): standard error 2 / sqrt(20000) = 0.014; 5 of them
    assert bool(((ex.mean(-1) - L.true_loss(x, 150.0)).abs() < 5 * 2.0 / math.sqrt(20000)).all())


def test_change_times_are_exposed_for_tracking_measures():
    assert make(drift={"kind": "switch", "every": 250.0}).change_times(1000.0) == [250.0, 500.0, 750.0, 1000.0]
    assert make(drift={"kind": "linear"}).change_times(1000.0) is None
    assert peaks().change_times(350.0) == [100.0, 200.0, 300.0]


@pytest.mark.parametrize("kind,params,drift", [
    ("logistic_regression", {"n_examples": 50, "features": 4}, {"kind": "rotation", "angular_speed": 0.01}),
    ("linear_regression", {"n_examples": 50, "features": 4}, {"kind": "linear", "speed": 0.01}),
    ("sphere", {"dim": 4}, {"kind": "linear", "speed": 0.01}),
])
def test_drifting_loss_and_grad_is_the_gradient_at_time_t(kind, params, drift):
    """Concept drift hands the batch (labelled at t) to the inner closed form; a moved analytic
    function differentiates through the inverse drift map.  Either way it is the autograd gradient
    of ``loss`` at t."""
    L = build_landscape(kind, params, replicates=2, seed=3, dtype=F64, drift=drift)
    t = torch.tensor([50.0, 120.0], dtype=F64)
    theta = torch.randn(2, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    batch = L.sample(12, torch.Generator().manual_seed(5), t)
    loss, grad = L.loss_and_grad(theta, batch, t)
    th = theta.clone().requires_grad_(True)
    L.loss(th, batch, t).sum().backward()
    torch.testing.assert_close(loss, L.loss(theta, batch, t), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(grad, th.grad, rtol=1e-10, atol=1e-12)
