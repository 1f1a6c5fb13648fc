"""Quantitative Wright-Fisher genotypes (evosgd/evolution/quantitative.py): initial covariance G_0,
heritability below one (breeder's equation), and Price's equation with a biased mutation.
Tolerances: 4 standard errors estimated from the replicates (a correct model fails with
probability ~6e-5 per check; seeds are fixed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import evosgd.evolution  # noqa: F401  (registers)
from evosgd.analysis.selection_theory import heritability, price_equation
from evosgd.core.budget import Budget
from evosgd.core.registry import OPTIMIZERS
from evosgd.core.seeding import make_generator
from evosgd.evolution.quantitative import quantitative_generation
from evosgd.landscapes import build_landscape


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(params, *, R, dim, seed=0):
    land = build_landscape("sphere", {"dim": dim}, replicates=R, seed=1, dtype=torch.float64)
    budget = Budget(R)
    return land, budget, OPTIMIZERS.build("wright_fisher_quantitative", params, landscape=land, budget=budget,
                                          generator=make_generator(seed))


def test_initial_population_has_the_given_covariance():
    """N = 20000 genotypes from G_0: each sample covariance entry within 4 standard errors
    sqrt((G_ii G_jj + G_ij^2) / N) (Wishart) of G_0."""
    G0 = [[1.0, 0.5, 0.0], [0.5, 2.0, -0.3], [0.0, -0.3, 0.5]]
    land, _, opt = build({"population_size": 20000, "initial_covariance": G0}, R=1, dim=3)
    x = opt.population[0] - land.initial_point[0]
    C = (x.T @ x / x.shape[0]).numpy()
    G = np.array(G0)
    se = np.sqrt((np.outer(np.diag(G), np.diag(G)) + G**2) / x.shape[0])
    assert np.all(np.abs(C - G) < 4 * se)
    with pytest.raises(Exception, match="positive semi-definite"):
        build({"initial_covariance": [[1.0, 2.0], [2.0, 1.0]]}, R=1, dim=2)


def test_price_equation_with_a_transmission_bias():
    """One asexual generation under selection with a biased mutation (rate 1, mean 0.3): Price's
    decomposition of the change of the mean is an identity (selection + transmission = Delta mean,
    to rounding), and the transmission term's mean over 300 replicates lies within 4 standard errors
    of mutation_rate * mutation_mean."""
    R, N = 300, 50
    g = torch.Generator().manual_seed(0)
    z = torch.randn(R, N, 1, generator=g, dtype=torch.float64)
    children, parents = quantitative_generation(z, 2.0 * z[:, :, 0], g, mutation_rate=1.0, mutation_effect=0.5, mutation_mean=0.3)
    trans = []
    for r in range(R):
        par = parents[r].numpy()
        w = np.bincount(par, minlength=N)
        zo = np.zeros(N)
        np.add.at(zo, par, children[r, :, 0].numpy())
        zo = np.where(w > 0, zo / np.maximum(w, 1), np.nan)
        sel, tr, total = price_equation(z[r, :, 0].numpy(), w, zo)
        assert total == pytest.approx(float(children[r, :, 0].mean() - z[r, :, 0].mean()), abs=1e-12)
        assert sel > 0  # selection for larger z
        trans.append(tr)
    trans = np.array(trans)
    assert abs(trans.mean() - 0.3) < 4 * trans.std(ddof=1) / math.sqrt(R)


def test_breeders_equation_with_heritability_below_one():
    """One generation of the optimizer on the 1D sphere with the population far from the optimum
    (G = 1, E = 3: h^2 = 1/4), 600 replicates of N = 400.  On a quadratic the selected phenotypes
    stay Gaussian: selection differential S = -2 beta P' (m - x*), P' = 1/(1/P + 2 beta), and the
    response of the mean genotype is h^2 S (Gaussian regression of g on z).  The mean response lies
    within 4 standard errors of the band [(1 - 1/N) h^2 S, h^2 S] (leading finite-N factor, as in
    the selection_gradient analysis); it is also far from the full S (heritability 1)."""
    R, N, G, E, beta = 600, 400, 1.0, 3.0, 0.05
    land, _, opt = build({"population_size": N, "initial_covariance": [G], "environmental_variance": E, "beta": beta,
                          "mutation_rate": 0.0}, R=R, dim=1, seed=2)
    m0 = opt.population.mean(1)[:, 0].clone()
    dist = (m0 - land.optimum()[:, 0]).numpy()
    opt.step()
    resp = (opt.population.mean(1)[:, 0] - m0).numpy()
    P = G + E
    S = -2 * beta * dist / (1 / P + 2 * beta)
    h2 = heritability(G, E)
    ratio = resp / S  # per replicate (S differs a little between replicates: their own start)
    se = ratio.std(ddof=1) / math.sqrt(R)
    assert (1 - 1 / N) * h2 - 4 * se < ratio.mean() < h2 + 4 * se
    assert ratio.mean() < 0.5
