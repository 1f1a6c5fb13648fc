"""Wright-Fisher populations: selection, genetic drift, mutation and recombination.

The Wright-Fisher model (Fisher 1930; Wright 1931; Ewens 2004, *Mathematical Population
Genetics I*, ch. 1.5 and 3) with non-overlapping generations of N haploid individuals.  One
generation:

1. **selection and drift in one step**: each of the N offspring picks its parent independently
   with probability proportional to fitness ``w_i = exp(-beta * loss_i)`` (multinomial sampling;
   ``beta = 0`` is neutral evolution, where only drift acts);
2. **recombination** (sexual reproduction): with probability ``recombination_rate`` an offspring
   has a second parent, drawn independently in the same way, and takes each gene from either parent
   with probability 1/2 (free recombination, no linkage); otherwise it copies its first parent
   (``recombination_rate = 0`` is asexual reproduction);
3. **mutation**:
   * ``continuous`` genotype (the flat parameter vector theta of the shared landscapes): with
     probability ``mutation_rate`` per offspring, the whole genotype moves by
     ``N(0, mutation_effect^2 I_D)`` — so the mutational covariance per generation is
     ``M = mutation_rate * mutation_effect^2 * I`` (Lande 1975).  Weak mutation when
     ``N * mutation_rate << 1`` (the population is mostly monomorphic and moves by sweeps), strong
     otherwise;
   * ``biallelic`` genotype ``g in {0, 1}^L``: each locus flips with probability ``mutation_rate``
     per offspring (the classic per-locus rate u).

Biallelic loci.  ``loci_fitness = "landscape"`` maps a genotype onto the landscape by
``theta = initial_point + allele_effect * g`` (L = D loci, allele 1 at locus d moves coordinate d);
``loci_fitness = "additive"`` ignores the landscape and uses ``loss = -s * sum_l g_l`` with
``s = selection_coefficient``: each allele 1 multiplies fitness by ``exp(beta * s)`` (log-additive
fitness, no epistasis), the setting of Kimura's fixation formula.  ``initial_frequency`` p0 gives
every locus exactly ``round(p0 * N)`` carriers of allele 1 at random individuals.

Classic results this model reproduces (checked in ``tests/test_wright_fisher.py``):

* neutral drift: expected heterozygosity ``H = 2 p (1 - p)`` decays as ``H_t = H_0 (1 - 1/N)^t``;
* neutral fixation probability of an allele = its initial frequency;
* fixation probability of a new mutant with selective advantage s (haploid, Kimura 1962):
  ``u = (1 - exp(-2 s)) / (1 - exp(-2 N s))``;
* Lande's equation (Lande 1976; Lande & Arnold 1983): for a Gaussian population under
  log-linear fitness ``log w = beta * a . x``, one generation of selection moves the mean by
  ``G beta a``, G the genetic covariance.  Since ``log w = -beta * loss``, in general the mean
  moves by ``-beta G grad(loss)`` to first order: gradient descent with a "learning rate" G * beta.

Cost: each generation evaluates the N parents (``N * cost``, through the shared fitness helper; in
the ``additive`` mode one evaluation per individual, ``N``).  ``recommend()`` is the population
mean genotype (mapped to theta in loci mode), the quantity the source text compares with a
gradient-descent iterate.  Metrics (measured on the current population with the true loss, never
charged): ``mean_fitness`` (mean of ``exp(-beta * true_loss)``), ``mean_loss``,
``genetic_variance`` (tr G), ``diversity`` (sqrt tr G); in loci mode also ``heterozygosity`` (mean
over loci of 2p(1-p)), and the cumulative counts ``fixations`` / ``extinctions`` of allele 1
reaching frequency 1 / 0.  The mean genotype itself is :meth:`WrightFisher.mean_genotype` (and
:meth:`WrightFisher.allele_frequencies` in loci mode).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from evosgd.core.device import host_bool
from evosgd.core.optimizer import Optimizer
from evosgd.core.registry import OPTIMIZERS
from evosgd.evolution import operators as ops
from evosgd.evolution.fitness import FitnessParams, evaluate_population

# ----------------------------------------------------------------------------- pure functions


def selection_weights(log_fitness: torch.Tensor) -> torch.Tensor:
    """``[R, N]`` relative fitness ``exp(log w - max log w)`` (overflow-safe).  Non-finite log
    fitness (a diverged individual) gets weight 0; a row with no finite value is uniform."""
    finite = torch.isfinite(log_fitness)
    lw = torch.where(finite, log_fitness, torch.full_like(log_fitness, -math.inf)).to(torch.float64)
    top = lw.amax(dim=1, keepdim=True)
    w = torch.exp(lw - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
    w = torch.where(finite, w, torch.zeros_like(w))
    none = ~finite.any(dim=1, keepdim=True)
    return torch.where(none, torch.ones_like(w), w)


def sample_parents(log_fitness: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices ``[R, n]`` of n parents drawn independently with probability proportional to
    ``exp(log_fitness)`` (Wright-Fisher multinomial sampling: selection and drift together)."""
    return ops.sel_roulette(selection_weights(log_fitness), n, generator)


def recombine(first: torch.Tensor, second: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Free recombination: each offspring is, with probability ``rate``, a per-gene mix of its two
    parents (each gene from either with probability 1/2), else a copy of ``first``.  ``[R, N, D]``."""
    if rate <= 0:
        return first.clone()
    R, N, D = first.shape
    mixed = torch.rand(R, N, 1, generator=generator, device=first.device) < rate
    take_second = torch.rand(R, N, D, generator=generator, device=first.device) < 0.5
    return ops.select(mixed & take_second, second, first)  # a coin flip per gene: see ops.select


def mutate_continuous(x: torch.Tensor, rate: float, effect: float, generator: torch.Generator) -> torch.Tensor:
    """With probability ``rate`` per individual, add ``N(0, effect^2 I_D)`` to its genotype."""
    if rate <= 0 or effect <= 0:
        return x
    R, N, D = x.shape
    hit = torch.rand(R, N, 1, generator=generator, device=x.device, dtype=x.dtype) < rate
    if x.device.type != "cpu":  # a GPU draws every normal faster than it finds the hits
        step = effect * torch.randn(R, N, D, generator=generator, device=x.device, dtype=x.dtype)
        return torch.where(hit, x + step, x)
    # CPU: normals for the mutants only (about rate * N rows instead of N; the full draw was a
    # third of a generation at N = 1e4, D = 100).  Same distribution, different random stream.
    return ops.add_at(x, hit, lambda k: effect * torch.randn(k, D, generator=generator, dtype=x.dtype))


def mutate_loci(g: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Flip each locus of the boolean genotypes ``g`` ``[R, N, L]`` with probability ``rate``."""
    if rate <= 0:
        return g
    return g ^ (torch.rand(g.shape, generator=generator, device=g.device) < rate)


def wright_fisher_generation(
    population: torch.Tensor,
    log_fitness: torch.Tensor,
    generator: torch.Generator,
    *,
    mutation_rate: float = 0.0,
    mutation_effect: float = 0.0,
    recombination_rate: float = 0.0,
    offspring: int | None = None,
) -> torch.Tensor:
    """One Wright-Fisher generation: parents ``[R, N, D]`` with log fitness ``[R, N]`` ->
    ``offspring`` (default N) individuals ``[R, N', D]``.

    A boolean ``population`` is a biallelic genotype (``mutation_rate`` per locus); a floating one
    is continuous (``mutation_rate`` per individual, effect ``N(0, mutation_effect^2 I)``)."""
    n = population.shape[1] if offspring is None else offspring
    first = ops.gather(population, sample_parents(log_fitness, n, generator))
    if recombination_rate > 0:
        second = ops.gather(population, sample_parents(log_fitness, n, generator))
        children = recombine(first, second, recombination_rate, generator)
    else:
        children = first
    if population.dtype == torch.bool:
        return mutate_loci(children, mutation_rate, generator)
    return mutate_continuous(children, mutation_rate, mutation_effect, generator)


def heterozygosity(frequencies: torch.Tensor) -> torch.Tensor:
    """Expected heterozygosity (gene diversity) ``2 p (1 - p)`` of biallelic frequencies."""
    return 2.0 * frequencies * (1.0 - frequencies)


def kimura_fixation_probability(s: float, N: int, p: float | None = None) -> float:
    """Fixation probability of an allele with selective advantage s at initial frequency p
    (default one copy, 1/N) in a haploid Wright-Fisher population of N (Kimura 1962, *On the
    probability of fixation of mutant genes in a population*, Genetics 47; diffusion with
    mean change s p q and variance p q / N):  ``u(p) = (1 - exp(-2 N s p)) / (1 - exp(-2 N s))``,
    and ``u = p`` when s = 0."""
    p = 1.0 / N if p is None else p
    if s == 0:
        return p
    return -math.expm1(-2 * N * s * p) / -math.expm1(-2 * N * s)


# ----------------------------------------------------------------------------- optimizer


class WrightFisherParams(FitnessParams):
    """Wright-Fisher population with selection strength beta, mutation and recombination."""

    population_size: int = Field(100, ge=2, description="N: haploid individuals (also the drift strength, Var dp = pq/N)")
    beta: float = Field(1.0, ge=0.0, description="selection strength: fitness w = exp(-beta * loss); 0 = neutral (drift only)")
    mutation_rate: float = Field(0.01, ge=0.0, le=1.0, description="continuous: probability per offspring of a mutation; biallelic: per locus per offspring")
    mutation_effect: float = Field(0.1, ge=0.0, description="continuous: standard deviation per gene of a mutation's Gaussian step (units of theta)")
    recombination_rate: float = Field(0.0, ge=0.0, le=1.0, description="probability an offspring is a free recombinant of two parents; 0 = asexual")
    init_std: float = Field(0.0, ge=0.0, description="continuous: initial genotypes N(initial_point, init_std^2 I); 0 = monomorphic start")
    genotype: Literal["continuous", "biallelic"] = Field("continuous", description="flat continuous theta, or biallelic loci {0,1}^L")
    loci_fitness: Literal["landscape", "additive"] = Field(
        "landscape", description="biallelic: theta = initial_point + allele_effect * g on the landscape (L = D), or additive loss -s*sum(g)")
    loci: int | None = Field(None, ge=1, description="biallelic additive: number of loci L (landscape mode: L = D)")
    selection_coefficient: float = Field(0.01, description="biallelic additive: s, the loss decrease per allele 1 (fitness x exp(beta s))")
    allele_effect: float = Field(1.0, description="biallelic landscape: displacement of coordinate d by allele 1 at locus d")
    initial_frequency: float = Field(0.0, ge=0.0, le=1.0, description="biallelic: initial frequency of allele 1 (round(p*N) random carriers per locus)")

    @model_validator(mode="after")
    def _consistent(self) -> WrightFisherParams:
        if self.genotype == "biallelic" and self.loci_fitness == "additive" and self.loci is None:
            raise ValueError("biallelic additive fitness needs loci (the number of loci L)")
        if self.genotype == "biallelic" and self.loci_fitness == "additive" and self.batch_size is not None:
            raise ValueError("batch_size has no meaning for additive loci fitness (no data); leave it unset")
        return self


@OPTIMIZERS.register("wright_fisher", WrightFisherParams, "Wright-Fisher population: fitness-proportional multinomial "
                     "reproduction (selection + drift), mutation, recombination; continuous or biallelic loci", family="evolution")
class WrightFisher(Optimizer):
    """Wright-Fisher population of N haploid individuals, vectorized over ``[R, N, D]``."""

    kind = "wright_fisher"

    def __init__(self, params: WrightFisherParams, *, landscape, budget, generator: torch.Generator) -> None:
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        p = params
        R, N, D = self.replicates, p.population_size, landscape.dim
        x0 = landscape.initial_point
        self.biallelic = p.genotype == "biallelic"
        self.additive = self.biallelic and p.loci_fitness == "additive"
        if self.biallelic:
            L = p.loci if self.additive else D
            carriers = int(round(p.initial_frequency * N))
            keys = torch.rand(R, L, N, generator=generator, device=self.device, dtype=torch.float64)
            rank = keys.argsort(dim=2).argsort(dim=2)  # a uniformly random rank of each individual, per locus
            self.population = (rank < carriers).transpose(1, 2).contiguous()  # [R, N, L] bool
            freq = self.allele_frequencies()
            self.fixations = torch.zeros(R, dtype=torch.long, device=self.device)
            self.extinctions = torch.zeros(R, dtype=torch.long, device=self.device)
            self._fixed, self._lost = freq >= 1, freq <= 0
        else:
            noise = torch.randn(R, N, D, generator=generator, device=self.device, dtype=self.dtype)
            self.population = x0.unsqueeze(1) + p.init_std * noise
        self.generation = 0

    # -- genotype -> phenotype ------------------------------------------------------
    def phenotype(self, genotype: torch.Tensor | None = None) -> torch.Tensor:
        """theta ``[R, N, D]`` of the population (loci mode: ``initial_point + allele_effect * g``)."""
        g = self.population if genotype is None else genotype
        if not self.biallelic:
            return g
        if self.additive:
            raise ValueError("additive loci fitness has no phenotype on the landscape")
        return self.landscape.initial_point.unsqueeze(1) + self.params.allele_effect * g.to(self.dtype)

    def _losses(self, active: torch.Tensor) -> torch.Tensor:
        """Charged evaluation of the current population's losses ``[R, N]``."""
        if self.additive:
            self.budget.charge(evaluations=self.params.population_size, mask=active)
            return self._additive_loss(self.population)
        return evaluate_population(self.landscape, self.budget, self.generator, self.phenotype(),
                                   self.params.batch_size, mask=active)

    def _additive_loss(self, g: torch.Tensor) -> torch.Tensor:
        return -self.params.selection_coefficient * g.to(self.dtype).sum(dim=2)

    # -- protocol ---------------------------------------------------------------------
    def step(self) -> None:
        active = self.active
        if not host_bool(active.any()):  # the step's documented host read
            return
        p = self.params
        losses = self._losses(active)
        # beta = 0 must be exactly neutral, even where a loss is infinite (0 * inf = nan)
        log_w = torch.zeros_like(losses) if p.beta == 0 else -p.beta * losses
        children = wright_fisher_generation(self.population, log_w, self.generator, mutation_rate=p.mutation_rate,
                                            mutation_effect=p.mutation_effect, recombination_rate=p.recombination_rate)
        was = self.diverged.clone()
        if not self.biallelic:
            self.check_divergence(children)
        keep = active & ~(self.diverged & ~was)
        self.population = torch.where(keep.view(-1, 1, 1), children, self.population)
        if self.biallelic:
            self._count_absorptions(keep)
        self.budget.step(active)
        self.generation += 1

    def _count_absorptions(self, keep: torch.Tensor) -> None:
        freq = self.allele_frequencies()
        fixed, lost = freq >= 1, freq <= 0
        self.fixations += ((fixed & ~self._fixed).sum(dim=1) * keep).long()
        self.extinctions += ((lost & ~self._lost).sum(dim=1) * keep).long()
        self._fixed, self._lost = fixed, lost

    def allele_frequencies(self) -> torch.Tensor:
        """Loci mode: ``[R, L]`` frequency of allele 1 at each locus."""
        if not self.biallelic:
            raise ValueError("allele frequencies exist only for genotype = 'biallelic'")
        return self.population.to(torch.float64).mean(dim=1)

    def mean_genotype(self) -> torch.Tensor:
        """Population mean genotype: ``[R, D]`` (continuous) or ``[R, L]`` allele frequencies."""
        if self.biallelic:
            return self.allele_frequencies().to(self.dtype)
        return self.population.mean(dim=1)

    def recommend(self) -> torch.Tensor:
        if not self.biallelic:
            return self.population.mean(dim=1)
        if self.additive:  # the landscape plays no part: nothing to recommend but the start
            return self.landscape.initial_point.clone()
        return self.landscape.initial_point + self.params.allele_effect * self.mean_genotype()

    @torch.no_grad()
    def metrics(self) -> dict[str, torch.Tensor]:
        p = self.params
        if self.additive:
            loss = self._additive_loss(self.population)
        else:
            t = self.time() if self.landscape.drifting else None
            loss = self.landscape.true_loss(self.phenotype(), t)
        w = torch.exp(-p.beta * loss.to(torch.float64)) if p.beta > 0 else torch.ones_like(loss, dtype=torch.float64)
        out = {"mean_fitness": w.mean(dim=1), "mean_loss": loss.mean(dim=1)}
        if self.biallelic:
            freq = self.allele_frequencies()
            out["genetic_variance"] = (freq * (1 - freq)).sum(dim=1)
            out["diversity"] = out["genetic_variance"].sqrt()
            out["heterozygosity"] = heterozygosity(freq).mean(dim=1)
            out["fixations"] = self.fixations.to(torch.float64)
            out["extinctions"] = self.extinctions.to(torch.float64)
        else:
            out["genetic_variance"] = ops.genetic_variance(self.population)
            out["diversity"] = ops.diversity(self.population)
        return out
