"""Evolution strategies: (1+1)-ES with the 1/5th rule, CSA-ES, and the protocol shared by every ES
(budget charged exactly, divergence freezes a replicate, determinism, bad params refused)."""

import math

import numpy as np
import pytest
import torch

import evosgd.evolution  # noqa: F401  (registers)
from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.errors import ConfigError, ParameterError
from evosgd.core.registry import OPTIMIZERS
from evosgd.core.seeding import make_generator
from evosgd.landscapes import build_landscape

ES_KINDS = ["one_plus_one_es", "csa_es", "cmaes", "sep_cmaes", "openai_es"]


@pytest.fixture(autouse=True)
def one_thread():
    # the machine is shared: tiny tensors run fastest (and steadiest) on one thread
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(kind, params=None, *, landscape="sphere", lparams=None, R=4, seed=1, dtype=torch.float64, limits=None, gen_seed=0):
    L = build_landscape(landscape, {"dim": 10, **(lparams or {})}, replicates=R, seed=seed, dtype=dtype)
    B = Budget(R, limits=limits)
    opt = OPTIMIZERS.build(kind, params or {}, landscape=L, budget=B, generator=make_generator(gen_seed))
    return L, B, opt


def error(L, opt):
    return (L.true_loss(opt.recommend().unsqueeze(1)).squeeze(1) - L.optimal_loss()).numpy()


# ----------------------------------------------------------------------------- (1+1)-ES
def test_one_plus_one_converges_linearly_and_success_rate_settles_near_one_fifth():
    D, R, G = 10, 8, 1200
    L, B, opt = make("one_plus_one_es", R=R)
    log_f, evals, rate = [], [], []
    for _ in range(G):
        opt.step()
        log_f.append(np.log(error(L, opt)))
        evals.append(B.evaluations.copy())
        rate.append(float(opt.metrics()["success_rate"].mean()))
    log_f, evals = np.array(log_f), np.array(evals)
    # drop the first 200 generations (sigma adapts from sigma0 to the distance scale), fit the rest
    x, y = evals[200:, 0], log_f[200:].mean(axis=1)
    slope, icept = np.polyfit(x, y, 1)
    resid = y - (slope * x + icept)
    r2 = 1 - resid.var() / y.var()
    # Linear convergence: log f is a straight line in evaluations.  At the optimal step size the
    # (1+1)-ES progresses by phi* ~ 0.202 in normalized distance per evaluation for large D (Rechenberg;
    # Beyer 2001), i.e. log f decreases by 2 phi*/D ~ 0.040 per evaluation at D = 10; the 1/5th rule
    # runs somewhat below the optimal step size.  Measured here: -0.031 per evaluation.
    assert r2 > 0.99
    assert -0.45 / D < slope < -0.2 / D
    # Success rate: log sigma_T - log sigma_0 = (S - T/5)/d exactly (d = sqrt(D+1)), so S/T = 1/5 + d ln(sigma_T/sigma_0)/T.
    st = opt.state
    T = st.generations.numpy()
    S = st.successes.numpy()
    d = math.sqrt(D + 1)
    np.testing.assert_allclose(S / T, 0.2 + d * np.log(st.sigma.numpy() / opt.sigma0) / T, atol=1e-9)
    # ... and so near (a little below) 1/5 in steady state: sigma shrinks as fast as the distance, i.e. as
    # f^(1/2), by 0.5 |slope| per generation, so the stationary rate is 1/5 - d * 0.5 |slope| = 0.2 - 3.32 * 0.0165
    # = 0.145.  Over the last 600 generations x 8 replicates the smoothed metric averages 4800 indicators
    # (standard error < 0.01 even allowing for the correlation of successive generations).
    steady = np.mean(rate[600:])
    expected = 0.2 + d * 0.5 * slope
    assert abs(steady - expected) < 0.03, (steady, expected)
    assert 0.1 < steady < 0.25


def test_one_plus_one_charges_parent_once_with_full_objective_and_twice_with_minibatch():
    L, B, opt = make("one_plus_one_es")
    opt.step()
    assert np.all(B.evaluations == 2)  # parent + offspring
    opt.step()
    assert np.all(B.evaluations == 3)
    L, B, opt = make("one_plus_one_es", {"batch_size": 5}, lparams={"noise_std": 0.1})
    for _ in range(3):
        opt.step()
    np.testing.assert_array_equal(B.evaluations, 3 * 2 * 5)  # parent re-evaluated on each batch


# ----------------------------------------------------------------------------- CSA-ES
def test_csa_es_converges_on_sphere_with_tutorial_constants():
    L, B, opt = make("csa_es")
    assert opt.lam == 10 and opt.mu == 5  # 4 + floor(3 ln 10) = 10
    np.testing.assert_allclose(opt.mu_eff, 3.1672992814107, rtol=1e-12)  # (sum w')^2 / sum w'^2 (also pycma's)
    for _ in range(250):
        opt.step()
    e = error(L, opt)
    assert np.all(e < 1e-8), e  # measured ~1e-13 after 2500 evaluations (seed 1)
    # linear convergence also means the step size shrank by orders of magnitude, in step with the distance
    assert np.all(opt.state.sigma.numpy() < 1e-4)


# ----------------------------------------------------------------------------- the common protocol
@pytest.mark.parametrize("kind", ES_KINDS)
@pytest.mark.parametrize("batch_size", [None, 4])
def test_budget_charged_exactly_popsize_times_cost(kind, batch_size):
    params = {"batch_size": batch_size}
    if kind == "openai_es":
        params["popsize"] = 6
    elif kind != "one_plus_one_es":
        params["popsize"] = 7
    L, B, opt = make(kind, params, lparams={"noise_std": 0.1}, R=3)
    cost = 1 if batch_size is None else batch_size
    P = 6 if kind == "openai_es" else 7
    for g in range(1, 4):
        opt.step()
        if kind == "one_plus_one_es":
            # full objective: the parent once (first generation) + one offspring per generation;
            # mini-batch: parent and offspring on every batch
            expected = (g + 1) * cost if batch_size is None else 2 * g * cost
        else:
            expected = g * P * cost
        np.testing.assert_array_equal(B.evaluations, expected)
        np.testing.assert_array_equal(B.steps, g)
    assert np.all(B.gradient_evaluations == 0)


@pytest.mark.parametrize("kind", ES_KINDS)
def test_protocol_shapes_determinism_and_budget_limit(kind):
    runs = []
    for _ in range(2):
        L, B, opt = make(kind, R=3, dtype=torch.float32, limits=BudgetLimits(max_cost=60))
        while not B.done():
            opt.step()
        x = opt.recommend()
        assert x.shape == (3, 10) and x.dtype == torch.float32
        for name, v in opt.metrics().items():
            assert tuple(np.shape(v)) == (3,), name
        runs.append(x)
        assert np.all(B.cost >= 60) and np.all(B.cost < 60 + 20)  # stops within one generation of the limit
        steps = B.steps.copy()
        opt.step()  # out of budget: nothing moves, nothing is charged
        np.testing.assert_array_equal(B.steps, steps)
        assert torch.equal(opt.recommend(), x)
    assert torch.equal(runs[0], runs[1])  # same seed => bit-identical


@pytest.mark.parametrize("kind", ES_KINDS)
def test_divergence_freezes_only_the_bad_replicate(kind):
    L, B, opt = make(kind, R=3)
    opt.step()
    # poison replicate 1's landscape: its losses become non-finite from now on
    L.shift[1] = float("inf")
    before = opt.recommend().clone()
    opt.step()
    assert opt.diverged.tolist() == [False, True, False]
    assert opt.diverged_step[1] == 1
    x = opt.recommend()
    assert torch.isfinite(x).all()  # the frozen replicate keeps its last finite state
    assert torch.equal(x[1], before[1])
    evals = B.evaluations.copy()
    opt.step()
    assert B.evaluations[1] == evals[1] and B.evaluations[0] > evals[0]  # no longer charged; the others go on


def test_recommend_best_returns_the_best_point_evaluated():
    L, B, opt = make("csa_es", {"recommend": "best"})
    assert torch.equal(opt.recommend(), L.initial_point)  # nothing evaluated yet: the mean (x0)
    best = np.full(4, np.inf)
    for _ in range(20):
        opt.step()
        best = np.minimum(best, opt.best_f.numpy())
        np.testing.assert_allclose(L.true_loss(opt.recommend().unsqueeze(1)).squeeze(1).numpy(), best, rtol=1e-12)


def test_x0_and_sigma0_defaults_and_overrides():
    L, B, opt = make("csa_es")
    assert torch.equal(opt.recommend(), L.initial_point)
    assert opt.sigma0 == pytest.approx(0.3 * (L.domain[1] - L.domain[0]))  # 3.0 on the [-5, 5] domain
    L, B, opt = make("csa_es", {"x0": 1.5, "sigma0": 0.2})
    assert torch.all(opt.recommend() == 1.5) and opt.sigma0 == 0.2
    with pytest.raises(ParameterError, match="x0"):
        make("csa_es", {"x0": [1.0, 2.0]})


@pytest.mark.parametrize(
    "kind,params,match",
    [
        ("one_plus_one_es", {"target_success": 1.5}, "target_success"),
        ("one_plus_one_es", {"sigma0": -1.0}, "sigma0"),
        ("csa_es", {"popsize": 1}, "popsize"),
        ("csa_es", {"popsize": 4, "mu": 6}, "mu"),
        ("csa_es", {"batch_size": 0}, "batch_size"),
        ("cmaes", {"restarts": "bipop"}, "restarts"),
        ("cmaes", {"max_condition": 0.5}, "max_condition"),
        ("sep_cmaes", {"popsize": 3, "lr": 0.1}, "lr"),
        ("openai_es", {"popsize": 7}, "even"),
        ("openai_es", {"sigma": 0.0}, "sigma"),
        ("openai_es", {"transforms": [{"kind": "lr", "lr": -1.0}]}, "lr"),
        ("openai_es", {"sigma0": 1.0}, "sigma0"),
    ],
)
def test_bad_params_are_refused(kind, params, match):
    with pytest.raises(ConfigError, match=match):
        OPTIMIZERS.validate(kind, params)


def test_csa_mu_larger_than_default_popsize_is_refused():
    with pytest.raises(ParameterError, match="mu"):
        make("csa_es", {"mu": 20})


def test_every_es_is_registered_with_described_fields():
    for kind in ES_KINDS:
        entry = OPTIMIZERS.get(kind)
        assert entry.family == "evolution"
        for name, _, _, desc in entry.fields():
            assert desc, f"{kind}.{name} has no description"


@pytest.mark.parametrize("kind", ES_KINDS)
def test_minibatch_fitness_still_finds_the_region_of_the_optimum(kind):
    """Noisy sphere (each example shifts the optimum by N(0, 0.5^2 I)), fitness on mini-batches of 8: the
    population compares its members on the same batch, so selection still points the right way while the
    distance is large against the noise.  From distances 9-13, 400 generations bring every replicate within 2
    (measured: 0.5-1.2 for the (1+1)-ES, 0.1-0.5 for the others).
    (At the end the fitness noise, not the method, limits precision.)"""
    params = {"batch_size": 8}
    if kind == "openai_es":
        params.update(sigma=0.3, transforms=[{"kind": "adam"}, {"kind": "lr", "lr": 0.1}])
    L, B, opt = make(kind, params, lparams={"noise_std": 0.5})
    d0 = L.distance_to_optimum(opt.recommend().unsqueeze(1)).squeeze(1)
    for _ in range(400):
        opt.step()
    d = L.distance_to_optimum(opt.recommend().unsqueeze(1)).squeeze(1)
    assert torch.all(d0 > 5) and torch.all(d < 2), (d0, d)
    assert not opt.diverged.any()
