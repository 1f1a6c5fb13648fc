"""A Wright-Fisher population of quantitative genotypes with the three textbook extensions of the
plain model: a given initial genetic covariance G, heritability below one, and a mutation with a
nonzero mean (a transmission bias in Price's equation).

Per generation (continuous genotypes g in R^D, Falconer & Mackay 1996; Lande 1976; Price 1970):

1. **phenotype**: ``z = g + e``, ``e ~ N(0, E I)`` drawn afresh for every individual and generation
   (``environmental_variance`` E; not inherited), so the narrow-sense heritability of each
   coordinate is ``h^2 = G_dd / (G_dd + E)``;
2. **selection and drift**: N offspring pick their parents with probability proportional to
   ``exp(-beta * loss(z))`` (selection sees the phenotype, offspring inherit the genotype: the
   response of the mean genotype is ``R = G P^{-1} S``, the breeder's equation ``R = h^2 S`` per
   coordinate; :mod:`evosgd.analysis.selection_theory`);
3. **free recombination** as in Wright-Fisher (``recombination_rate``);
4. **mutation**: with probability ``mutation_rate``, ``g <- g + mu_m + mutation_effect * N(0, I)``,
   ``mu_m = mutation_mean`` (a number for every coordinate, or D numbers): the transmission term of
   Price's equation, ``E(w Delta g) / wbar``, is ``mutation_rate * mu_m`` in expectation.

The initial genotypes are ``N(initial_point, G_0)`` with ``G_0 = initial_covariance`` (a D x D
matrix, or its diagonal as D numbers; positive semi-definite, factorised by ``eigh`` so a singular
G_0 is allowed), or ``init_std^2 I`` when it is unset.  Cost: N charged evaluations of the phenotypes
per generation, as in Wright-Fisher.  ``recommend()`` is the mean genotype (the breeding value).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from evosgd.core.device import host_bool
from evosgd.core.errors import ParameterError
from evosgd.core.registry import OPTIMIZERS
from evosgd.evolution import operators as ops
from evosgd.evolution.fitness import evaluate_population
from evosgd.evolution.wright_fisher import WrightFisher, WrightFisherParams, recombine, sample_parents


def quantitative_generation(
    genotypes: torch.Tensor, log_fitness: torch.Tensor, generator: torch.Generator, *, mutation_rate: float = 0.0,
    mutation_effect: float = 0.0, mutation_mean: torch.Tensor | float = 0.0, recombination_rate: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One generation of continuous genotypes ``[R, N, D]`` with log fitness ``[R, N]`` -> (offspring
    ``[R, N, D]``, index of each offspring's (first) parent ``[R, N]``, for Price's equation)."""
    n = genotypes.shape[1]
    parents = sample_parents(log_fitness, n, generator)
    children = ops.gather(genotypes, parents)
    if recombination_rate > 0:
        second = ops.gather(genotypes, sample_parents(log_fitness, n, generator))
        children = recombine(children, second, recombination_rate, generator)
    if mutation_rate > 0:
        R, N, D = children.shape
        hit = torch.rand(R, N, 1, generator=generator, device=children.device, dtype=children.dtype) < mutation_rate
        step = mutation_effect * torch.randn(R, N, D, generator=generator, device=children.device, dtype=children.dtype) + mutation_mean
        children = torch.where(hit, children + step, children)
    return children, parents


class QuantitativeParams(WrightFisherParams):
    """Continuous Wright-Fisher genotypes with a given initial G, an environmental variance, a biased mutation."""

    initial_covariance: list[float] | list[list[float]] | None = Field(
        None, description="G_0: initial genetic covariance, a D x D matrix or its diagonal (D numbers); None: init_std^2 I")
    environmental_variance: float = Field(
        0.0, ge=0.0, description="E: variance of the non-heritable noise on each phenotype coordinate (h^2 = G / (G + E)); 0: h^2 = 1")
    mutation_mean: float | list[float] = Field(
        0.0, description="mean of a mutation's step (a number for every coordinate, or D numbers): the transmission bias of Price's equation")

    @model_validator(mode="after")
    def _continuous(self) -> QuantitativeParams:
        if self.genotype != "continuous":
            raise ValueError("wright_fisher_quantitative has continuous genotypes only (genotype = 'continuous')")
        return self


@OPTIMIZERS.register("wright_fisher_quantitative", QuantitativeParams,
                     "Wright-Fisher population of quantitative genotypes: initial covariance G_0, heritability below one "
                     "(environmental noise on the phenotype), mutation with a nonzero mean", family="evolution")
class QuantitativeWrightFisher(WrightFisher):
    kind = "wright_fisher_quantitative"

    def __init__(self, params: QuantitativeParams, *, landscape, budget, generator: torch.Generator) -> None:
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        D, where = landscape.dim, "optimizer 'wright_fisher_quantitative'"
        kw = {"device": self.device, "dtype": self.dtype}
        self.mutation_mean = self._vector(params.mutation_mean, "mutation_mean", D, where)
        if params.initial_covariance is not None:
            G0 = torch.tensor(params.initial_covariance, dtype=torch.float64)
            if G0.dim() == 1:
                G0 = torch.diag(G0)
            if G0.shape != (D, D) or not torch.allclose(G0, G0.T):
                raise ParameterError("initial_covariance", params.initial_covariance, f"a symmetric {D} x {D} matrix or D = {D} variances", where=where)
            evals, evecs = torch.linalg.eigh(G0)
            if float(evals.min()) < -1e-12 * max(1.0, float(evals.abs().max())):
                raise ParameterError("initial_covariance", params.initial_covariance, "a positive semi-definite matrix", where=where)
            root = (evecs * evals.clamp(min=0).sqrt()).to(**kw)  # G0 = root root^T
            z = torch.randn(self.replicates, params.population_size, D, generator=generator, **kw)
            self.population = landscape.initial_point.unsqueeze(1) + z @ root.T

    def _vector(self, value, name: str, D: int, where: str) -> torch.Tensor | float:
        if isinstance(value, (int, float)):
            return float(value)
        if len(value) != D:
            raise ParameterError(name, value, f"a number or D = {D} numbers", where=where)
        return torch.tensor(value, device=self.device, dtype=self.dtype)

    def phenotypes(self) -> torch.Tensor:
        """``z = g + e``, a fresh environmental deviation ``e ~ N(0, E I)`` per individual."""
        E = self.params.environmental_variance
        if E == 0:
            return self.population
        return self.population + E ** 0.5 * torch.randn(self.population.shape, generator=self.generator, device=self.device,
                                                        dtype=self.dtype)

    def step(self) -> None:
        active = self.active
        if not host_bool(active.any()):
            return
        p = self.params
        losses = evaluate_population(self.landscape, self.budget, self.generator, self.phenotypes(), p.batch_size, mask=active)
        log_w = torch.zeros_like(losses) if p.beta == 0 else -p.beta * losses
        children, _ = quantitative_generation(self.population, log_w, self.generator, mutation_rate=p.mutation_rate,
                                              mutation_effect=p.mutation_effect, mutation_mean=self.mutation_mean,
                                              recombination_rate=p.recombination_rate)
        was = self.diverged.clone()
        self.check_divergence(children)
        keep = active & ~(self.diverged & ~was)
        self.population = torch.where(keep.view(-1, 1, 1), children, self.population)
        self.budget.step(active)
        self.generation += 1
