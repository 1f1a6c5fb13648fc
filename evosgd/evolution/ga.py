"""Genetic algorithm on the flat parameter vector, built from the operators of ``operators.py``.

One generation (DEAP's ``eaSimple`` / ``eaMuPlusLambda`` / ``eaMuCommaLambda`` shape; Bäck,
Fogel & Michalewicz 2000, *Evolutionary Computation 1*, ch. 6 and 30):

1. **selection**: lambda parents drawn from the current population of mu by the selection operator
   (tournament, truncation, roulette, SUS, linear rank) on the losses they were evaluated with;
2. **variation** (DEAP ``varAnd``): adjacent pairs are recombined with probability
   ``crossover.prob``; each offspring is then mutated with probability ``mutation.prob`` (each
   gene with probability ``mutation.indpb``);
3. **evaluation** of the lambda offspring through the shared fitness helper (full objective or a
   fresh mini-batch shared by the generation), charging ``lambda * cost`` to the budget;
4. **replacement**: ``generational`` (offspring replace parents, lambda = mu; the ``elitism`` best
   parents replace the worst offspring), ``plus`` ((mu + lambda): the best mu of parents and
   offspring; elitist by construction) or ``comma`` ((mu, lambda): the best mu of the offspring,
   lambda >= mu; ``elitism`` best parents may replace its worst).

Generation 0.  The first ``step()`` evaluates the initial population only (as ``eaSimple`` does
before its loop), costing ``mu * cost``.  The initial population holds ``landscape.initial_point``
itself (member 0, so the GA starts from the common starting point of every optimizer) and
``mu - 1`` points drawn uniformly in the box ``initial_point +- init_radius`` (per coordinate).

Recommendation.  ``recommend()`` is the population member with the lowest loss *as it was
evaluated* (DESIGN: "GA: its best member").  Under mini-batch fitness that loss is a noisy
estimate on one batch, so the recommended member is the best on its batch, not necessarily the
best in true loss (the winner's curse); no extra evaluation is spent to decide, so the budget is
exactly what selection used.  Before the first step it is ``landscape.initial_point``.

Stale parents.  Parents keep the loss of the batch (and the time) they were evaluated at; under
mini-batch fitness a lucky parent, and under drift an elite evaluated before the optimum moved,
may then survive for ever (measured on a linearly drifting ellipsoid: final error 158 with a
stale elite against 0.003 without).  ``reevaluate_parents`` re-evaluates the parents that
compete with the offspring -- all of them for (mu + lambda), the elites otherwise -- in the same
call as the offspring (the same mini-batch, the same time), costing ``mu * b`` or
``elitism * b`` more.  Its default (unset) does so exactly when the landscape drifts.

Metrics: ``best_loss`` and ``mean_loss`` (the population's evaluated losses, lower is better) and
``diversity`` (RMS distance of the members to their centroid, ``sqrt(tr G)``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evosgd.core.device import host_bool
from evosgd.core.optimizer import Optimizer
from evosgd.core.registry import OPTIMIZERS
from evosgd.evolution import operators as ops
from evosgd.evolution.fitness import FitnessParams, evaluate_population


class SelectionParams(BaseModel):
    """Parent selection (losses are minimised)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["tournament", "truncation", "roulette", "sus", "linear_rank"] = Field(
        "tournament", description="tournament (selTournament), truncation (best fraction), roulette and sus "
        "(fitness-proportional on windowed weights max(L) - L), linear_rank (Baker 1985)")
    k: int = Field(3, ge=1, description="tournament size; 3 is DEAP's tutorial value (moderate pressure)")
    replace: bool = Field(True, description="tournament aspirants drawn with replacement (DEAP) or as a distinct k-subset")
    fraction: float = Field(0.5, gt=0.0, le=1.0, description="truncation: fraction of the population that breeds")
    pressure: float = Field(1.5, ge=1.0, le=2.0, description="linear rank: expected copies of the best (1 = uniform, 2 = maximal)")


class CrossoverParams(BaseModel):
    """Recombination of adjacent pairs of selected parents."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["blend", "uniform", "one_point", "two_point", "sbx", "arithmetic", "intermediate", "none"] = Field(
        "blend", description="blend (BLX-alpha, cxBlend), uniform, one_point, two_point, sbx (Deb & Agrawal), "
        "arithmetic (random weight per pair), intermediate (midpoint), none")
    prob: float = Field(0.9, ge=0.0, le=1.0, description="probability that a pair is recombined (DEAP cxpb); 0.9 is a common GA default")
    alpha: float = Field(0.5, ge=0.0, description="blend: interval extension; 0.5 is Eshelman & Schaffer's BLX-0.5")
    eta: float = Field(20.0, ge=0.0, description="sbx: distribution index; 20 is Deb's usual value (children near parents)")
    indpb: float = Field(0.5, ge=0.0, le=1.0, description="uniform: per-gene swap probability (0.5 = unbiased)")
    weight: float | None = Field(None, ge=0.0, le=1.0, description="arithmetic: fixed weight a, or None for a ~ U(0, 1) per pair")


class MutationParams(BaseModel):
    """Mutation of each offspring."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["gaussian", "polynomial", "none"] = Field(
        "gaussian", description="gaussian (mutGaussian: + N(0, sigma^2) per gene), polynomial (Deb, bounded), none")
    prob: float = Field(1.0, ge=0.0, le=1.0, description="probability that an offspring is mutated at all (DEAP mutpb)")
    indpb: float | None = Field(None, ge=0.0, le=1.0, description="per-gene mutation probability; None = 1/D (one gene per offspring on average, Mühlenbein 1992)")
    sigma: float = Field(0.1, gt=0.0, description="gaussian: standard deviation of a mutated gene's change (units of theta)")
    eta: float = Field(20.0, ge=0.0, description="polynomial: distribution index (20 as in NSGA-II)")
    low: float | None = Field(None, description="polynomial: lower bound of every gene; None = min over the initial box")
    high: float | None = Field(None, description="polynomial: upper bound of every gene; None = max over the initial box")


class GAParams(FitnessParams):
    """Genetic algorithm: selection + crossover + mutation + replacement."""

    population_size: int = Field(50, ge=2, description="mu: individuals kept per generation")
    offspring_size: int | None = Field(None, ge=1, description="lambda: offspring per generation; None = population_size")
    replacement: Literal["generational", "plus", "comma"] = Field(
        "generational", description="generational (offspring replace parents), plus ((mu+lambda)), comma ((mu,lambda))")
    elitism: int = Field(1, ge=0, description="best parents carried over (generational/comma); 1 keeps the best-so-far (De Jong 1975)")
    reevaluate_parents: bool | None = Field(
        None, description="re-evaluate the competing parents (plus: all; else: the elites) with the offspring, on the same "
                          "batch and time; None: only on drifting landscapes, where old losses are stale")
    init_radius: float = Field(1.0, gt=0.0, description="initial population uniform in initial_point +- init_radius (member 0 = initial_point)")
    selection: SelectionParams = Field(default_factory=SelectionParams, description="parent selection operator")
    crossover: CrossoverParams = Field(default_factory=CrossoverParams, description="crossover operator")
    mutation: MutationParams = Field(default_factory=MutationParams, description="mutation operator")

    @model_validator(mode="after")
    def _consistent(self) -> GAParams:
        lam = self.offspring_size or self.population_size
        if self.replacement == "generational" and lam != self.population_size:
            raise ValueError(f"generational replacement needs offspring_size == population_size ({self.population_size}), got {lam}")
        if self.replacement == "comma" and lam < self.population_size:
            raise ValueError(f"comma replacement needs offspring_size >= population_size ({self.population_size}), got {lam}")
        if self.elitism >= self.population_size:
            raise ValueError(f"elitism ({self.elitism}) must be < population_size ({self.population_size})")
        if self.selection.kind == "tournament" and not self.selection.replace and self.selection.k > self.population_size:
            raise ValueError(f"tournament size k={self.selection.k} > population_size without replacement")
        return self

    @property
    def lam(self) -> int:
        return self.offspring_size or self.population_size

    def reevaluates(self, landscape) -> bool:
        """Whether competing parents are re-evaluated (``reevaluate_parents``; unset: on drift)."""
        return bool(landscape.drifting) if self.reevaluate_parents is None else self.reevaluate_parents


def initial_population(landscape, size: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """``[R, size, D]``: member 0 is ``landscape.initial_point``, the others uniform in the box
    ``initial_point +- radius``."""
    x0 = landscape.initial_point
    R, D = x0.shape
    u = torch.rand(R, size, D, generator=generator, device=x0.device, dtype=x0.dtype)
    pop = x0.unsqueeze(1) + radius * (2.0 * u - 1.0)
    pop[:, 0] = x0
    return pop


def select(p: SelectionParams, losses: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices ``[R, n]`` chosen by the configured selection operator."""
    if p.kind == "tournament":
        return ops.sel_tournament(losses, n, p.k, generator, replace=p.replace)
    if p.kind == "truncation":
        return ops.sel_truncation(losses, n, p.fraction, generator)
    if p.kind == "roulette":
        return ops.sel_roulette(ops.window_weights(losses), n, generator)
    if p.kind == "sus":
        return ops.sel_sus(ops.window_weights(losses), n, generator)
    return ops.sel_linear_rank(losses, n, p.pressure, generator)


def crossover_fn(p: CrossoverParams) -> ops.Crossover | None:
    """The configured crossover as ``f(p1, p2, generator) -> (c1, c2)``, or None."""
    if p.kind == "blend":
        return lambda a, b, g: ops.cx_blend(a, b, g, p.alpha)
    if p.kind == "uniform":
        return lambda a, b, g: ops.cx_uniform(a, b, g, p.indpb)
    if p.kind == "one_point":
        return ops.cx_one_point
    if p.kind == "two_point":
        return ops.cx_two_point
    if p.kind == "sbx":
        return lambda a, b, g: ops.cx_sbx(a, b, g, p.eta)
    if p.kind == "arithmetic":
        return lambda a, b, g: ops.cx_arithmetic(a, b, g, p.weight)
    if p.kind == "intermediate":
        return lambda a, b, g: ops.cx_arithmetic(a, b, g, 0.5)
    return None


def mutation_bounds(p: MutationParams, initial_point: torch.Tensor, radius: float) -> tuple[float, float]:
    """Bounds of polynomial mutation: as given, else the hull of every replicate's initial box."""
    low = p.low if p.low is not None else float(initial_point.min()) - radius
    high = p.high if p.high is not None else float(initial_point.max()) + radius
    return low, high


def mutate(p: MutationParams, x: torch.Tensor, generator: torch.Generator, bounds: tuple[float, float]) -> torch.Tensor:
    """Mutate each offspring of ``x`` ``[R, M, D]`` with probability ``p.prob`` (DEAP ``varAnd``)."""
    if p.kind == "none" or p.prob <= 0:
        return x
    indpb = p.indpb if p.indpb is not None else 1.0 / x.shape[-1]
    if p.kind == "gaussian":
        y = ops.mut_gaussian(x, generator, p.sigma, indpb)
    else:
        y = ops.mut_polynomial(x, generator, p.eta, bounds[0], bounds[1], indpb)
    if p.prob >= 1:
        return y
    hit = torch.rand(x.shape[:-1] + (1,), generator=generator, device=x.device, dtype=x.dtype) < p.prob
    return torch.where(hit, y, x)


@OPTIMIZERS.register("ga", GAParams, "genetic algorithm: tournament/rank/proportional selection, crossover, mutation, "
                     "generational or (mu+lambda)/(mu,lambda) replacement", family="evolution")
class GeneticAlgorithm(Optimizer):
    """Vectorized GA over ``[R, mu, D]`` (see the module docstring for one generation)."""

    kind = "ga"

    def __init__(self, params: GAParams, *, landscape, budget, generator: torch.Generator) -> None:
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        p = params
        self.population = initial_population(landscape, p.population_size, p.init_radius, generator)
        self.losses: torch.Tensor | None = None
        self.generation = 0
        self._crossover = crossover_fn(p.crossover)
        self._bounds = mutation_bounds(p.mutation, landscape.initial_point, p.init_radius)

    def _evaluate(self, pop: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return evaluate_population(self.landscape, self.budget, self.generator, pop, self.params.batch_size, mask=mask)

    def variation(self, parents: torch.Tensor) -> torch.Tensor:
        """Crossover of adjacent pairs, then mutation (DEAP ``varAnd``)."""
        p, g = self.params, self.generator
        off = parents
        if self._crossover is not None:
            off = ops.mate_pairs(off, self._crossover, p.crossover.prob, g)
        return mutate(p.mutation, off, g, self._bounds)

    def step(self) -> None:
        active = self.active
        if not host_bool(active.any()):  # the step's documented host read
            return
        p = self.params
        if self.losses is None:  # generation 0: evaluate the initial population
            self.losses = self._evaluate(self.population, active)
            self._finish(self.population, self.losses, active)
            return
        idx = select(p.selection, self.losses, p.lam, self.generator)
        offspring = self.variation(ops.gather(self.population, idx))
        mu = p.population_size
        # the parents that compete with the offspring: all of them (plus) or the elites
        parents, parent_losses = self.population, self.losses
        if p.replacement != "plus" and p.elitism > 0:
            elite = ops.sel_best(self.losses, p.elitism)
            parents, parent_losses = ops.gather(self.population, elite), torch.gather(self.losses, 1, elite)
        if p.reevaluates(self.landscape) and (p.replacement == "plus" or p.elitism > 0):
            k = parents.shape[1]  # one call: parents and offspring meet the same batch and time
            both = self._evaluate(torch.cat([parents, offspring], dim=1), active)
            parent_losses, off_losses = both[:, :k], both[:, k:]
        else:
            off_losses = self._evaluate(offspring, active)
        if p.replacement == "plus":
            pool = torch.cat([parents, offspring], dim=1)
            pool_losses = torch.cat([parent_losses, off_losses], dim=1)
            keep = ops.sel_best(pool_losses, mu)
            new_pop, new_losses = ops.gather(pool, keep), torch.gather(pool_losses, 1, keep)
        else:
            if p.replacement == "comma":
                keep = ops.sel_best(off_losses, mu)
                offspring, off_losses = ops.gather(offspring, keep), torch.gather(off_losses, 1, keep)
            new_pop, new_losses = ops.elitism(parents, parent_losses, offspring, off_losses, p.elitism)
        self._finish(new_pop, new_losses, active)

    def _finish(self, pop: torch.Tensor, losses: torch.Tensor, active: torch.Tensor) -> None:
        """Commit the new generation for active replicates, count the step, flag divergence."""
        best = torch.where(torch.isnan(losses), torch.full_like(losses, float("inf")), losses).amin(dim=1)
        was = self.diverged.clone()
        self.check_divergence(best, pop)
        keep = active & ~(self.diverged & ~was)  # a replicate that just diverged keeps its last finite state
        self.population = torch.where(keep[:, None, None], pop, self.population)
        self.losses = torch.where(keep[:, None], losses, self.losses) if self.losses is not None else losses
        self.budget.step(active)
        self.generation += 1

    def recommend(self) -> torch.Tensor:
        if self.losses is None:
            return self.landscape.initial_point.clone()
        best = ops.sel_best(self.losses, 1)
        return ops.gather(self.population, best).squeeze(1)

    def metrics(self) -> dict[str, torch.Tensor]:
        R = self.replicates
        if self.losses is None:
            nan = torch.full((R,), float("nan"), device=self.device, dtype=self.dtype)
            return {"best_loss": nan, "mean_loss": nan.clone(), "diversity": ops.diversity(self.population)}
        finite = torch.isfinite(self.losses)
        mean = torch.where(finite, self.losses, torch.zeros_like(self.losses)).sum(1) / finite.sum(1).clamp_min(1)
        best = torch.where(finite, self.losses, torch.full_like(self.losses, float("inf"))).amin(1)
        return {"best_loss": best, "mean_loss": mean, "diversity": ops.diversity(self.population)}
