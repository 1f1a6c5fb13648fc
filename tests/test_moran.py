"""The Moran process (evosgd/evolution/moran.py) against its exact results: the fixation formula,
the birth-death chain enumerated event by event, the neutral absorption times, and Monte Carlo
runs of the engine with tolerances derived from the number of replicates."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import evosgd.evolution  # noqa: F401  (registers)
from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.registry import OPTIMIZERS
from evosgd.core.seeding import make_generator
from evosgd.evolution.moran import (
    moran_chain,
    moran_event,
    moran_fixation_probability,
    moran_transition_probabilities,
    simulate_moran_fixation,
)
from evosgd.landscapes import build_landscape


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def z_tolerance(p: float, n: int, z: float = 4.0) -> float:
    """``z`` binomial standard errors ``sqrt(p (1-p) / n)``: a correct model fails such a check with
    probability ~6e-5 at z = 4 (normal tail), and the seeds are fixed."""
    return z * math.sqrt(p * (1 - p) / n)


# ----------------------------------------------------------------------------- exact cases


@pytest.mark.parametrize("N,r", [(4, 1.0), (5, 1.7), (6, 0.6)])
def test_transition_probabilities_by_enumerating_every_birth_and_death(N, r):
    """Enumeration: with i mutants, every (parent, dead) pair has probability w_parent / W * 1/N;
    the count goes up when a mutant parent replaces a resident, down in the opposite case."""
    up, down = moran_transition_probabilities(N, r)
    for i in range(N + 1):
        w = [r] * i + [1.0] * (N - i)
        pu = pd = 0.0
        for parent, dead in itertools.product(range(N), range(N)):
            p = w[parent] / sum(w) / N
            pu += p * (parent < i <= dead)
            pd += p * (dead < i <= parent)
        assert up[i] == pytest.approx(pu, abs=1e-14) and down[i] == pytest.approx(pd, abs=1e-14)


@pytest.mark.parametrize("N,r", [(2, 2.0), (10, 1.3), (25, 0.9), (40, 1.05)])
def test_fixation_formula_is_the_chain_solution(N, r):
    u, _, _ = moran_chain(N, r)
    for i in (1, N // 2, N - 1):
        assert u[i] == pytest.approx(moran_fixation_probability(r, N, i), rel=1e-9)
    assert moran_fixation_probability(1.0, N, 3 if N > 3 else 1) == (3 if N > 3 else 1) / N


@pytest.mark.parametrize("N", [3, 10, 50])
def test_neutral_absorption_times_closed_forms(N):
    """Neutral Moran from one copy (Ewens 2004, in events): absorption N H_{N-1}, fixation given
    fixation N (N - 1); from i copies the absorption time is
    N [ sum_{j<i} (N-i)/(N-j) + sum_{j>=i} i/j ]."""
    _, t, t1 = moran_chain(N, 1.0)
    assert t[1] == pytest.approx(N * sum(1 / j for j in range(1, N)), rel=1e-10)
    assert t1[1] == pytest.approx(N * (N - 1), rel=1e-10)
    for i in range(1, N):
        closed = N * (sum((N - i) / (N - j) for j in range(1, i)) + sum(i / j for j in range(i, N)))
        assert t[i] == pytest.approx(closed, rel=1e-10)


# ----------------------------------------------------------------------------- the engine, Monte Carlo


def test_one_event_moves_the_count_with_the_chain_probabilities():
    """20000 replicate events from i = 2 of N = 5, r = 2 on the population tensor: the frequencies
    of up and down moves within 4 binomial standard errors of the enumerated probabilities."""
    N, i, r, R = 5, 2, 2.0, 20000
    g = torch.zeros(R, N, 1, dtype=torch.bool)
    g[:, :i] = True
    new, dead, child = moran_event(g, math.log(r) * g[:, :, 0].double(), gen(1))
    change = new[:, :, 0].sum(1) - i
    up, down = moran_transition_probabilities(N, r)
    for measured, p in (((change == 1).double().mean(), up[i]), ((change == -1).double().mean(), down[i])):
        assert abs(float(measured) - p) < z_tolerance(p, R)
    rows = torch.arange(R)
    assert torch.equal(new[rows, dead], child[:, 0])  # the newborn sits where the dead was
    assert int((change.abs() > 1).sum()) == 0


@pytest.mark.parametrize("N,s", [(8, 0.25), (8, 0.0), (12, -0.1)])
def test_simulated_fixation_probability_and_time(N, s):
    """R = 3000 new mutants: the fixed fraction within 4 binomial standard errors of the exact
    (1 - 1/r)/(1 - 1/r^N); the mean conditional fixation time (events) within 4 standard errors
    of the mean (its sd estimated from the sample) of the exact chain value."""
    R = 3000
    fixed, events = simulate_moran_fixation(N, torch.tensor([s], dtype=torch.float64), 1, R, gen(2), max_events=200 * N * N)
    rho = moran_fixation_probability(1 + s, N)
    assert int((events < 0).sum()) == 0
    assert abs(float(fixed.double().mean()) - rho) < z_tolerance(rho, R)
    times = events[fixed].double().numpy()
    _, _, t1 = moran_chain(N, 1 + s)
    assert abs(times.mean() - t1[1]) < 4 * times.std(ddof=1) / math.sqrt(len(times))


def run_moran(params, *, land, generations, seed=0):
    budget = Budget(land.replicates, limits=BudgetLimits(max_steps=generations))
    opt = OPTIMIZERS.build("moran", params, landscape=land, budget=budget, generator=make_generator(seed))
    while (~budget.exhausted()).any():
        opt.step()
    return opt, budget


def test_optimizer_charges_one_evaluation_per_event_and_descends():
    land = build_landscape("sphere", {"dim": 3}, replicates=4, seed=1)
    N = 20
    opt, budget = run_moran({"population_size": N, "beta": 5.0, "mutation_rate": 1.0, "mutation_effect": 0.05, "init_std": 0.5},
                            land=land, generations=30)
    # N initial evaluations, then one newborn per event: N per generation
    assert np.allclose(budget.evaluations, N + 30 * N)
    start = float(land.true_loss(land.initial_point).mean())
    assert float(land.true_loss(opt.recommend()).mean()) < 0.5 * start


def test_optimizer_refuses_recombination():
    land = build_landscape("sphere", {"dim": 2}, replicates=1, seed=1)
    with pytest.raises(Exception, match="recombination_rate must be 0"):
        OPTIMIZERS.build("moran", {"recombination_rate": 0.5}, landscape=land, budget=Budget(1), generator=make_generator(0))


def test_neutral_heterozygosity_decays_by_moran_rate():
    """Neutral Moran: E[p'(1-p')] = p(1-p)(1 - 2/N^2) per event, so H falls by (1 - 2/N^2)^N per
    generation (exact for the neutral Moran step; Wright-Fisher: 1 - 1/N).  200 replicates x 50 loci of N = 10
    after 5 generations: the mean H / H_0 within 4 standard errors (sd over replicates) of the value."""
    land = build_landscape("sphere", {"dim": 2}, replicates=200, seed=1)
    N, T = 10, 5
    opt, _ = run_moran({"population_size": N, "beta": 0.0, "mutation_rate": 0.0, "genotype": "biallelic",
                        "loci_fitness": "additive", "loci": 50, "initial_frequency": 0.5}, land=land, generations=T)
    H = opt.metrics()["heterozygosity"].double().numpy() / 0.5
    pred = (1 - 2 / N**2) ** (N * T)
    assert abs(H.mean() - pred) < 4 * H.std(ddof=1) / math.sqrt(len(H))
    assert abs(H.mean() - (1 - 1 / N) ** T) > 4 * H.std(ddof=1) / math.sqrt(len(H))  # not the Wright-Fisher rate


def test_analysis_interval_and_verdict_rule():
    """The Clopper-Pearson interval of scipy's binomtest covers k/n, and the misses allowed by
    chance follow Binomial(m, 1 - c): 10 intervals at 95% may miss up to 3 at the 99% quantile."""
    from evosgd.analysis.moran_fixation import binomial_ci, misses_allowed

    u, lo, hi = binomial_ci(30, 600, 0.95)
    assert u == 0.05 and lo < 0.05 < hi and hi - lo == pytest.approx(0.037, abs=0.005)
    assert misses_allowed(10, 0.95) == 3 and misses_allowed(1, 0.95) == 1
