"""The fast GA optimizer (evosgd/evolution/ga.py): budget, recommendation, convergence, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import evosgd.evolution  # noqa: F401  (registers)
from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.errors import ConfigError
from evosgd.core.registry import OPTIMIZERS
from evosgd.core.seeding import make_generator
from evosgd.landscapes import build_landscape


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tests run many small tensor ops; on a shared 2-core machine torch's intra-op thread
    pool makes each op ~20x slower than one thread (measured), so run them single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(params, *, R=4, dim=5, noise=0.0, seed=0, limits=None, kind="ga"):
    land = build_landscape("sphere", {"dim": dim, "noise_std": noise}, replicates=R, seed=1)
    budget = Budget(R, limits=limits)
    opt = OPTIMIZERS.build(kind, params, landscape=land, budget=budget, generator=make_generator(seed))
    return land, budget, opt


@pytest.mark.parametrize("batch_size", [None, 8])
def test_budget_charged_population_times_cost_per_generation(batch_size):
    P = 12
    land, budget, opt = make({"population_size": P, "batch_size": batch_size}, noise=0.1)
    per = P * (batch_size or land.full_cost)
    for g in range(1, 5):  # generation 0 evaluates the initial population, each later one P offspring
        opt.step()
        assert np.allclose(budget.cost, g * per) and (budget.steps == g).all()


def test_plus_and_comma_charge_lambda_and_reevaluation():
    land, budget, opt = make({"population_size": 6, "offspring_size": 10, "replacement": "plus",
                              "reevaluate_parents": True, "batch_size": 4}, noise=0.1)
    opt.step()
    assert np.allclose(budget.cost, 6 * 4)
    opt.step()
    assert np.allclose(budget.cost, 6 * 4 + (10 + 6) * 4)
    land, budget, opt = make({"population_size": 6, "offspring_size": 10, "replacement": "comma"})
    opt.step()
    opt.step()
    assert np.allclose(budget.cost, 6 + 10) and opt.population.shape == (4, 6, 5)


def test_initial_population_contains_the_initial_point_and_recommend_is_best_evaluated():
    land, budget, opt = make({"population_size": 10, "init_radius": 0.5})
    assert torch.equal(opt.recommend(), land.initial_point)  # before any evaluation
    assert torch.equal(opt.population[:, 0], land.initial_point)
    assert ((opt.population - land.initial_point.unsqueeze(1)).abs() <= 0.5 + 1e-6).all()
    opt.step()
    best = opt.losses.argmin(dim=1)
    assert torch.equal(opt.recommend(), opt.population[torch.arange(4), best])
    assert torch.allclose(opt.metrics()["best_loss"], land.true_loss(opt.recommend().unsqueeze(1)).squeeze(1))


def test_elitist_ga_best_loss_never_increases_and_converges_on_the_sphere():
    land, budget, opt = make({"population_size": 30, "elitism": 1, "mutation": {"sigma": 0.3, "indpb": 0.3}},
                             R=6, limits=BudgetLimits(max_cost=30 * 120))
    best = []
    while not budget.done():
        opt.step()
        best.append(opt.metrics()["best_loss"].clone())
    best = torch.stack(best)
    assert (best[1:] <= best[:-1] + 1e-7).all()
    assert (best[-1] < 1e-2 * best[0]).all()  # a hundredfold reduction from the initial population
    dist = land.distance_to_optimum(opt.recommend().unsqueeze(1)).squeeze(1)
    assert (dist < 0.2).all()


@pytest.mark.parametrize("selection", ["tournament", "truncation", "roulette", "sus", "linear_rank"])
@pytest.mark.parametrize("crossover", ["blend", "uniform", "two_point", "sbx", "intermediate"])
def test_every_operator_combination_improves(selection, crossover):
    land, budget, opt = make({"population_size": 20, "selection": {"kind": selection}, "crossover": {"kind": crossover},
                              "mutation": {"kind": "polynomial" if crossover == "sbx" else "gaussian", "sigma": 0.3}},
                             R=3, limits=BudgetLimits(max_steps=30))
    opt.step()
    first = opt.metrics()["mean_loss"].clone()
    while not budget.done():
        opt.step()
    assert (opt.metrics()["mean_loss"] < first).all()
    assert opt.metrics()["diversity"].shape == (3,)


def test_same_seed_same_result_and_inactive_replicates_freeze():
    runs = []
    for _ in range(2):
        land, budget, opt = make({"population_size": 8}, limits=BudgetLimits(max_steps=5))
        while not budget.done():
            opt.step()
        runs.append(opt.population.clone())
        assert (budget.steps == 5).all()
        opt.step()  # exhausted: nothing moves, nothing charged
        assert torch.equal(opt.population, runs[-1]) and (budget.steps == 5).all()
    assert torch.equal(runs[0], runs[1])


def test_bad_parameters_are_refused_with_clear_messages():
    with pytest.raises(ConfigError, match="offspring_size == population_size"):
        OPTIMIZERS.validate("ga", {"population_size": 10, "offspring_size": 20})
    with pytest.raises(ConfigError, match="elitism"):
        OPTIMIZERS.validate("ga", {"population_size": 3, "elitism": 3})
    with pytest.raises(ConfigError, match="unknown key"):
        OPTIMIZERS.validate("ga", {"selection": {"kind": "tournament", "size": 3}})
    with pytest.raises(ConfigError, match="crossover.kind"):
        OPTIMIZERS.validate("ga", {"crossover": {"kind": "cxBlend"}})


@pytest.mark.parametrize("kind", ["ga", "ga_deap"])
def test_a_replicate_whose_losses_overflow_is_marked_diverged_and_no_longer_charged(kind):
    # float32 sphere with genes ~1e30: every loss overflows to inf in generation 0
    land = build_landscape("sphere", {"dim": 3}, replicates=2, seed=1)
    land.initial_point[0] = 1e30
    budget = Budget(2)
    opt = OPTIMIZERS.build(kind, {"population_size": 6}, landscape=land, budget=budget, generator=make_generator(0))
    opt.step()
    assert opt.diverged.tolist() == [True, False] and opt.diverged_step.tolist() == [0, -1]
    opt.step()
    assert budget.cost.tolist() == [6.0, 12.0]
    assert torch.isfinite(opt.recommend()[1]).all()


def test_elites_are_reevaluated_on_a_drifting_landscape():
    """Under drift an elite's old loss is stale: by default the GA re-evaluates its elites with the
    offspring (cost elitism * full_cost more per generation) and so keeps tracking the optimum."""
    import numpy as np

    from evosgd.core.budget import Budget, BudgetLimits
    from evosgd.core.registry import OPTIMIZERS
    from evosgd.core.seeding import make_generator
    from evosgd.landscapes import build_landscape

    def run(reeval):
        land = build_landscape("sphere", {"dim": 3}, replicates=2, seed=3, dtype=torch.float64,
                               drift={"kind": "linear", "speed": 2e-3})
        budget = Budget(2, limits=BudgetLimits(max_cost=4e4))
        params = {"population_size": 20, "elitism": 1, "mutation": {"kind": "gaussian", "sigma": 0.1, "indpb": 1.0}}
        if reeval is not None:
            params["reevaluate_parents"] = reeval
        opt = OPTIMIZERS.build("ga", params, landscape=land, budget=budget, generator=make_generator(0))
        opt.step()  # generation 0
        c0 = budget.cost.copy()
        opt.step()
        per_gen = budget.cost - c0
        while not budget.done():
            opt.step()
        t = budget.time(land.device, land.dtype)
        return per_gen, land.distance_to_optimum(opt.recommend()[:, None], t).squeeze(1)

    per_gen_default, dist_default = run(None)
    per_gen_off, dist_off = run(False)
    np.testing.assert_array_equal(per_gen_default, 21.0)  # 20 offspring + 1 elite, full objective costs 1
    np.testing.assert_array_equal(per_gen_off, 20.0)
    # a stale elite is recommended for ever and falls behind (80 units of drift at speed 2e-3 = 80);
    # re-evaluated elites keep up within a small lag
    assert bool((dist_default < 5.0).all()) and bool((dist_off > 20.0).all()), (dist_default, dist_off)
