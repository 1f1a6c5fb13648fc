"""Wright-Fisher populations (evosgd/evolution/wright_fisher.py) against the classic results of
population genetics, with tolerances derived from the number of replicates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import evosgd.evolution  # noqa: F401  (registers)
from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.registry import OPTIMIZERS
from evosgd.core.seeding import make_generator
from evosgd.evolution.wright_fisher import (
    kimura_fixation_probability,
    mutate_continuous,
    recombine,
    wright_fisher_generation,
)
from evosgd.landscapes import build_landscape


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tests run many small tensor ops; on a shared 2-core machine torch's intra-op thread
    pool makes each op ~20x slower than one thread (measured), so run them single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make(params, *, R=4, dim=3, noise=0.0, limits=None, seed=0):
    land = build_landscape("sphere", {"dim": dim, "noise_std": noise}, replicates=R, seed=1)
    budget = Budget(R, limits=limits)
    return land, budget, OPTIMIZERS.build("wright_fisher", params, landscape=land, budget=budget, generator=make_generator(seed))


def exact_haploid_fixation(N: int, s: float, copies: int = 1) -> float:
    """Exact fixation probability of the haploid Wright-Fisher Markov chain (binomial transitions,
    relative fitness exp(s)): absorption probability at N from ``copies``."""
    i = np.arange(N + 1)
    p = i * math.exp(s) / (i * math.exp(s) + N - i)
    T = stats.binom.pmf(i[None, :], N, p[:, None])
    u = np.linalg.solve(np.eye(N - 1) - T[1:N, 1:N], T[1:N, N])
    return float(u[copies - 1])


# ----------------------------------------------------------------------------- budget and protocol


@pytest.mark.parametrize("batch_size", [None, 5])
def test_budget_charged_population_times_cost_per_generation(batch_size):
    N = 30
    land, budget, opt = make({"population_size": N, "batch_size": batch_size}, noise=0.2)
    for g in range(1, 4):
        opt.step()
        assert np.allclose(budget.cost, g * N * (batch_size or land.full_cost)) and (budget.steps == g).all()


def test_recommend_is_the_mean_genotype_and_metrics_are_defined():
    land, budget, opt = make({"population_size": 50, "init_std": 0.5, "mutation_rate": 0.2})
    opt.step()
    assert torch.allclose(opt.recommend(), opt.population.mean(dim=1))
    assert torch.equal(opt.mean_genotype(), opt.recommend())
    m = opt.metrics()
    G = torch.stack([torch.cov(opt.population[r].T, correction=0).trace() for r in range(4)])
    assert torch.allclose(m["genetic_variance"], G, rtol=1e-4)
    true = land.true_loss(opt.population)
    assert torch.allclose(m["mean_fitness"], torch.exp(-true.double()).mean(1), rtol=1e-5)


def test_selection_on_the_sphere_moves_the_population_downhill():
    land, budget, opt = make({"population_size": 200, "beta": 2.0, "mutation_rate": 0.5, "mutation_effect": 0.2},
                             limits=BudgetLimits(max_steps=150))
    start = land.true_loss(opt.recommend().unsqueeze(1)).squeeze(1)
    while not budget.done():
        opt.step()
    end = land.true_loss(opt.recommend().unsqueeze(1)).squeeze(1)
    assert (end < 0.05 * start).all()


# ----------------------------------------------------------------------------- reproduction


def test_recombination_rate_zero_never_mixes_parents():
    R, N, D = 5, 40, 6
    pop = torch.randn(R, N, D, generator=gen(1))  # all rows distinct
    children = wright_fisher_generation(pop, torch.randn(R, N, generator=gen(2)), gen(3), recombination_rate=0.0)
    # every child is exactly one parent row
    same = (children.unsqueeze(2) == pop.unsqueeze(1)).all(dim=-1)  # [R, N_child, N_parent]
    assert (same.sum(-1) >= 1).all()
    # with recombination some children take genes from two parents, each gene from one of them
    mixed = recombine(pop, pop.flip(1), 1.0, gen(4))
    assert ((mixed == pop) | (mixed == pop.flip(1))).all()
    assert ((mixed == pop).any(-1) & (mixed == pop.flip(1)).any(-1) & (mixed != pop).any(-1)).float().mean() > 0.9


def test_mutation_rate_and_effect_size_match_parameters():
    # n = R*N = 200,000 offspring: mutated fraction SE sqrt(mu(1-mu)/n); the m ~ 2e4 mutants'
    # D = 4 gene steps (4m values) have std SE ~ effect/sqrt(2*4m).  5 SE tolerances.
    R, N, D, mu, eff = 100, 2000, 4, 0.1, 0.3
    x = torch.zeros(R, N, D, dtype=torch.float64)
    y = mutate_continuous(x, mu, eff, gen(5))
    hit = (y != 0).any(-1)
    n, m = hit.numel(), int(hit.sum())
    assert abs(m / n - mu) < 5 * math.sqrt(mu * (1 - mu) / n)
    steps = y[hit]
    assert abs(steps.std().item() - eff) < 5 * eff / math.sqrt(2 * steps.numel())
    assert abs(steps.mean().item()) < 5 * eff / math.sqrt(steps.numel())


def test_loci_mutation_flips_at_the_per_locus_rate():
    land, budget, opt = make({"population_size": 500, "beta": 0.0, "genotype": "biallelic", "loci_fitness": "additive",
                              "loci": 50, "mutation_rate": 0.02}, R=8)
    opt.step()  # from all-zero genotypes, one generation: flips ~ Binomial(R*N*L, u); 5 SE
    n, u = 8 * 500 * 50, 0.02
    assert abs(opt.population.float().mean().item() - u) < 5 * math.sqrt(u * (1 - u) / n)


# ----------------------------------------------------------------------------- classic results


@pytest.mark.slow
def test_neutral_heterozygosity_decays_as_one_minus_one_over_n_to_the_t():
    # Haploid WF: E[H_t] = H_0 (1 - 1/N)^t exactly (E[p'(1-p')] = p(1-p)(1-1/N)).  R = 1000
    # replicates, each the mean over D = 4 loci on the sphere landscape (beta = 0: neutral); the
    # replicates are i.i.d., so the mean's SE is sd/sqrt(R); tolerance 4 SE.
    R, N = 1000, 50
    land, budget, opt = make({"population_size": N, "beta": 0.0, "mutation_rate": 0.0, "genotype": "biallelic",
                              "initial_frequency": 0.5}, R=R, dim=4)
    assert torch.allclose(opt.metrics()["heterozygosity"], torch.full((R,), 0.5, dtype=torch.float64))
    for t in range(1, 61):
        opt.step()
        if t in (10, 30, 60):
            H = opt.metrics()["heterozygosity"].numpy()
            predicted = 0.5 * (1 - 1 / N) ** t
            se = H.std(ddof=1) / math.sqrt(R)
            assert abs(H.mean() - predicted) < 4 * se, (t, H.mean(), predicted, se)
    # and the diploid-style (1 - 1/(2N))^t would be far outside: the test can fail
    assert abs(H.mean() - 0.5 * (1 - 1 / (2 * N)) ** 60) > 10 * se


@pytest.mark.slow
def test_neutral_fixation_probability_equals_initial_frequency():
    # R = 3000 independent single-locus populations (N = 20, p0 = 0.3, beta = 0) run to absorption
    # through the optimizer; the fixed count is Binomial(R, p0): exact 99.9% CI must contain 0.3.
    R, N = 3000, 20
    land, budget, opt = make({"population_size": N, "beta": 0.0, "mutation_rate": 0.0, "genotype": "biallelic",
                              "loci_fitness": "additive", "loci": 1, "initial_frequency": 0.3}, R=R)
    for _ in range(1000):
        opt.step()
        f = opt.allele_frequencies()
        if ((f == 0) | (f == 1)).all():
            break
    m = opt.metrics()
    assert torch.equal(m["fixations"] + m["extinctions"], torch.ones(R, dtype=torch.float64))
    k = int(m["fixations"].sum())
    ci = stats.binomtest(k, R).proportion_ci(confidence_level=0.999)
    assert ci.low < 0.3 < ci.high, (k / R, ci)
    assert not ci.low < 1 / N < ci.high


@pytest.mark.slow
def test_fixation_of_a_new_beneficial_mutant_matches_kimura():
    # One mutant copy (p = 1/N), relative fitness exp(s) (additive loss -s g, beta = 1), N = 50,
    # s = 0.04: Kimura u = (1 - e^{-2s}) / (1 - e^{-2Ns}) = 0.0783 (the exact Markov chain gives
    # 0.0786: the diffusion error is far inside the CI).  R = 10,000 independent populations:
    # binomial SE = sqrt(u(1-u)/R) = 0.0027; the exact 99.9% CI of the fixed fraction must contain
    # u, and not the neutral 1/N.  Populations are run with the engine's one-generation function and
    # dropped once absorbed (so the cost falls as they are lost).
    R, N, s = 10_000, 50, 0.04
    u = kimura_fixation_probability(s, N)
    assert abs(u - exact_haploid_fixation(N, s)) < 1e-3
    g = torch.zeros(R, N, 1, dtype=torch.bool)
    g[:, 0] = True
    fixed, generator = 0, gen(11)
    while g.shape[0] > 0:
        g = wright_fisher_generation(g, s * g.sum(dim=2).double(), generator)
        copies = g.sum(dim=(1, 2))
        fixed += int((copies == N).sum())
        g = g[(copies > 0) & (copies < N)]
    ci = stats.binomtest(fixed, R).proportion_ci(confidence_level=0.999)
    assert ci.low < u < ci.high, (fixed / R, u, ci)
    assert not ci.low < 1 / N < ci.high


@pytest.mark.parametrize("recombination_rate", [0.0, 1.0])
def test_one_generation_of_log_linear_selection_moves_the_mean_by_G_beta(recombination_rate):
    # Lande (1976): Gaussian population x ~ N(0, G), log w = beta a.x  =>  the selected (and
    # offspring) mean moves by G beta a exactly in expectation for an infinite population; finite
    # N adds O(1/N) bias and sampling noise.  R = 200 i.i.d. replicates of N = 4000: tolerance
    # 4 SE per coordinate, SE = sd(change)/sqrt(R) (~0.004 here; the O(1/N) bias is ~3e-4).
    # Free recombination leaves the expected mean change unchanged.
    R, N, beta = 200, 4000, 0.3
    sd = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    a = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    pop = torch.randn(R, N, 3, generator=gen(7), dtype=torch.float64) * sd
    children = wright_fisher_generation(pop, beta * pop @ a, gen(8), recombination_rate=recombination_rate)
    change = children.mean(1) - pop.mean(1)
    predicted = beta * sd**2 * a  # G = diag(sd^2)
    se = change.std(0) / math.sqrt(R)
    assert ((change.mean(0) - predicted).abs() < 4 * se).all(), (change.mean(0), predicted, se)
    assert (predicted.abs() > 10 * se).all()  # the prediction is far from "no change"


def test_overflowing_genotypes_mark_the_replicate_diverged():
    land, budget, opt = make({"population_size": 10, "mutation_rate": 1.0, "mutation_effect": 1e38}, R=2)
    opt.step()
    opt.step()
    assert opt.diverged.all() and torch.isfinite(opt.population).all()  # the last finite state is kept
    cost = budget.cost.copy()
    opt.step()
    assert np.array_equal(budget.cost, cost)


def test_optimizer_generation_on_the_sphere_follows_lande_gradient_step():
    # Through the optimizer: population N(z, g I) (init_std = sqrt g), fitness exp(-beta ||x - s||^2),
    # no mutation.  Lande: mean change = -beta G grad L(z) = 2 beta g (s - z)  (the exact Gaussian
    # answer is 2 beta g (s - z) / (1 + 2 beta g), 1% smaller here).  Regress the R*D measured
    # changes on the prediction: slope = sum(d p) / sum(p^2), SE = sd(residual) / sqrt(sum p^2);
    # |slope - 1/(1 + 2 beta g)| < 4 SE, and the slope is far from 0.
    R, N, D, g, beta = 100, 4000, 3, 0.01, 0.5
    land, budget, opt = make({"population_size": N, "beta": beta, "mutation_rate": 0.0, "init_std": math.sqrt(g)},
                             R=R, dim=D, seed=3)
    z = opt.population.double().mean(1)
    land_shift = land.shift.double()
    opt.step()
    change = (opt.population.double().mean(1) - z).flatten()
    pred = (2 * beta * g * (land_shift - z)).flatten()
    slope = float((change * pred).sum() / (pred * pred).sum())
    se = float((change - slope * pred).std() / (pred * pred).sum().sqrt())
    assert abs(slope - 1 / (1 + 2 * beta * g)) < 4 * se, (slope, se)
    assert slope > 20 * se


def test_continuous_mutation_moves_whole_mutant_rows_by_fresh_normals():
    """CPU path: one uniform per offspring decides who mutates; each mutant row gets the next D
    normals of the stream (times the effect); the others are copied unchanged."""
    x = torch.randn(2, 300, 5, generator=gen(1))
    g = gen(2)
    replay = torch.Generator()
    replay.set_state(g.get_state())
    y = mutate_continuous(x, 0.05, 0.3, g)
    hit = (torch.rand(2, 300, 1, generator=replay) < 0.05).squeeze(-1)
    assert torch.equal((y != x).any(-1), hit) and torch.equal((y != x).all(-1), hit) and hit.any()
    torch.testing.assert_close(y[hit], x[hit] + 0.3 * torch.randn(int(hit.sum()), 5, generator=replay), rtol=0, atol=0)
