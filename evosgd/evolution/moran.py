"""The Moran process: overlapping generations, one birth-death event at a time.

Moran (1958, *Random processes in genetics*, Proc. Camb. Phil. Soc. 54:60; Ewens 2004, ch. 2.10
and 3.4; Nowak 2006, *Evolutionary Dynamics*, ch. 6).  A population of N haploid individuals with
fitness ``w_i = exp(-beta * loss_i)``.  One **event**:

1. **birth**: one individual reproduces, chosen with probability ``w_i / sum_j w_j``;
2. **death**: one individual, chosen uniformly among all N (the parent included), dies and is
   replaced by the offspring, which mutates as in Wright-Fisher (continuous: with probability
   ``mutation_rate`` a step ``N(0, mutation_effect^2 I)``; biallelic: each locus flips with
   probability ``mutation_rate``).

N events make one **generation** (each individual lives N events on average), the unit in which
the Moran process is compared with Wright-Fisher.  A mutant of relative fitness r among N - i
residents moves ``i -> i + 1`` with probability ``r i (N - i) / ((r i + N - i) N)`` and
``i -> i - 1`` with ``i (N - i) / ((r i + N - i) N)``: a birth-death chain whose fixation
probability from i copies is exact (Moran 1958; Nowak 2006, ch. 6):

    rho_i = (1 - r^-i) / (1 - r^-N),     rho_i = i / N  when r = 1,

(a new mutant: ``(1 - 1/r) / (1 - 1/r^N)``).  Its genetic drift is twice that of Wright-Fisher
with the same N (the variance of the change of p per generation is ``2 p q / N`` against ``p q / N``; Ewens 2004, ch. 3),
so the Moran process behaves like a Wright-Fisher population of N/2: against Kimura's
``(1 - e^{-2s}) / (1 - e^{-2Ns})`` the Moran value is close to ``(1 - e^{-s}) / (1 - e^{-Ns})``.
The expected absorption time and the time to fixation conditional on fixation are solved exactly
from the chain (:func:`moran_chain`); for the neutral chain from one copy they are ``N H_{N-1}``
and ``N (N - 1)`` events (Ewens 2004, ch. 2; checked in ``tests/test_moran.py``).

The optimizer ``moran`` runs the process on the product's landscapes, vectorized over replicates
(one event for all replicates at once; the N events of a generation are sequential, as the model
is).  Each individual's loss is kept; an event evaluates the newborn only, charged as one
individual (``cost`` per event, ``N * cost`` per generation, the same as a Wright-Fisher
generation).  With mini-batch fitness (``batch_size``) every newborn is evaluated on a fresh
batch, so the kept losses are of different batches (on a drifting landscape: of their birth time).  Recombination does not exist in this
model (one parent per birth): ``recombination_rate`` must be 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import model_validator

from evosgd.core.device import host_bool, to_host
from evosgd.core.registry import OPTIMIZERS
from evosgd.evolution import operators as ops
from evosgd.evolution.fitness import evaluate_population
from evosgd.evolution.wright_fisher import (
    WrightFisher,
    WrightFisherParams,
    mutate_continuous,
    mutate_loci,
    selection_weights,
)

# ----------------------------------------------------------------------------- theory


def moran_fixation_probability(r: float, N: int, i: int = 1) -> float:
    """``rho_i = (1 - r^-i) / (1 - r^-N)`` (``i / N`` when r = 1): exact fixation probability of i
    mutants of relative fitness r among N in the Moran process (Moran 1958; Nowak 2006, ch. 6)."""
    if not 0 <= i <= N:
        raise ValueError(f"i = {i} must lie in [0, N = {N}]")
    if r <= 0:
        raise ValueError(f"relative fitness r = {r} must be positive")
    if r == 1:
        return i / N
    lr = math.log(r)
    return math.expm1(-i * lr) / math.expm1(-N * lr)


def moran_transition_probabilities(N: int, r: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-event probabilities ``up[i]`` (i -> i + 1) and ``down[i]`` (i -> i - 1), i = 0..N, of the
    mutant count in the Moran process with mutant fitness r (residents 1)."""
    i = np.arange(N + 1, dtype=float)
    total = r * i + (N - i)
    up = r * i / total * (N - i) / N
    down = (N - i) / total * i / N
    return up, down


def moran_chain(N: int, r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact fixation probability ``u[i]``, mean absorption time ``t[i]`` and mean time to fixation
    conditional on fixation ``t1[i]`` (in **events**; divide by N for generations) from every count
    i = 0..N, by solving the linear systems of the birth-death chain on its transient states:

        (I - Q) t = 1,   (I - Q) u = e_{N-1} up[N-1],   t1 = ((I - Q)^{-1} u) / u,

    Q the transient block (``E[T 1{fix}] = sum_j G_ij u_j`` with G = (I - Q)^{-1}, as in
    :func:`evosgd.analysis.popgen.wright_fisher_chain`)."""
    up, down = moran_transition_probabilities(N, r)
    n = N - 1
    Q = np.diag(1.0 - up[1:N] - down[1:N]) + np.diag(up[1:N - 1], 1) + np.diag(down[2:N], -1)
    A = np.eye(n) - Q
    rhs_fix = np.zeros(n)
    rhs_fix[-1] = up[N - 1]
    u_in = np.linalg.solve(A, rhs_fix)
    t_in = np.linalg.solve(A, np.ones(n))
    t1_in = np.linalg.solve(A, u_in) / np.where(u_in > 0, u_in, np.nan)
    u = np.concatenate([[0.0], u_in, [1.0]])
    t = np.concatenate([[0.0], t_in, [0.0]])
    t1 = np.concatenate([[np.nan], t1_in, [0.0]])
    return u, t, t1


# ----------------------------------------------------------------------------- one event


def moran_event(
    population: torch.Tensor, log_fitness: torch.Tensor, generator: torch.Generator, *,
    mutation_rate: float = 0.0, mutation_effect: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One birth-death event in every replicate: ``population [R, N, D]`` (bool: biallelic loci;
    float: continuous) with ``log_fitness [R, N]`` -> (new population, index of the dead ``[R]``,
    the newborn ``[R, 1, D]``).  The parent is drawn proportional to fitness, the dead uniformly
    among all N; the caller updates the fitness of the dead slot from the newborn."""
    R, N = population.shape[:2]
    parent = ops.sel_roulette(selection_weights(log_fitness), 1, generator)  # [R, 1]
    dead = torch.randint(0, N, (R,), generator=generator, device=population.device)
    child = ops.gather(population, parent)
    if population.dtype == torch.bool:
        child = mutate_loci(child, mutation_rate, generator)
    else:
        child = mutate_continuous(child, mutation_rate, mutation_effect, generator)
    new = population.clone()
    new[torch.arange(R, device=population.device), dead] = child[:, 0]
    return new, dead, child


@torch.no_grad()
def simulate_moran_fixation(
    N: int, s: torch.Tensor, initial_count: int, replicates: int, generator: torch.Generator, max_events: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``replicates`` Moran populations of N for each selection coefficient in ``s`` ``[S]`` (allele 1
    has relative fitness ``1 + s``), run event by event with :func:`moran_event` until allele 1 is
    lost or fixed.  Absorbed populations are dropped from the working set as they absorb.  Returns ``fixed [S, R]`` (bool) and ``events [S, R]`` (the event of
    absorption; -1 if still segregating after ``max_events``)."""
    S, device = s.shape[0], s.device
    total = S * replicates
    fixed = torch.zeros(total, dtype=torch.bool, device=device)
    when = torch.full((total,), -1, dtype=torch.long, device=device)
    ids = torch.arange(total, device=device)
    log_r = torch.log1p(s.to(torch.float64)).repeat_interleave(replicates)
    g = torch.zeros(total, N, 1, dtype=torch.bool, device=device)
    g[:, :initial_count] = True
    for e in range(1, max_events + 1):
        g, _, _ = moran_event(g, log_r[ids].unsqueeze(1) * g[:, :, 0].to(torch.float64), generator)
        count = g[:, :, 0].sum(dim=1)
        done = (count == 0) | (count == N)
        if host_bool(done.any()):  # drop absorbed populations at once: most new mutants are lost in a few events
            when[ids[done]] = e
            fixed[ids[done]] = count[done] == N
            keep = ~done
            ids, g = ids[keep], g[keep]
            if ids.numel() == 0:
                break
    return fixed.reshape(S, replicates), when.reshape(S, replicates)


# ----------------------------------------------------------------------------- optimizer


class MoranParams(WrightFisherParams):
    """Moran birth-death population: the Wright-Fisher options without recombination; one step is one
    generation of N events."""

    @model_validator(mode="after")
    def _no_recombination(self) -> MoranParams:
        if self.recombination_rate != 0:
            raise ValueError("the Moran process has one parent per birth: recombination_rate must be 0")
        return self


@OPTIMIZERS.register("moran", MoranParams, "Moran process: overlapping generations, one fitness-proportional birth and "
                     "one uniform death per event (N events per step); continuous or biallelic loci", family="evolution")
class Moran(WrightFisher):
    """Moran population of N haploid individuals, ``[R, N, D]``; one step = N birth-death events."""

    kind = "moran"

    def __init__(self, params: MoranParams, *, landscape, budget, generator: torch.Generator) -> None:
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        self._loss: torch.Tensor | None = None  # [R, N] the kept losses

    def _newborn_loss(self, child: torch.Tensor, active: Any) -> torch.Tensor:
        """Charged evaluation of the newborns ``[R, 1, D]`` -> ``[R]``; ``active`` is the host mask
        of the replicates to charge (None: all)."""
        if self.additive:
            self.budget.charge(evaluations=1, mask=active)
            return self._additive_loss(child)[:, 0]
        return evaluate_population(self.landscape, self.budget, self.generator, self.phenotype(child),
                                   self.params.batch_size, mask=active)[:, 0]

    def step(self) -> None:
        active = self.active
        if not host_bool(active.any()):
            return
        p = self.params
        if self._loss is None:
            self._loss = self._losses(active)
        pop, loss = self.population, self._loss
        rows = torch.arange(self.replicates, device=self.device)
        # the ledger is on the host: one read of the mask per step, not one per event
        charge_mask = None if host_bool(active.all()) else to_host(active)
        for _ in range(p.population_size):
            # beta = 0 is exactly neutral, even where a loss is infinite (0 * inf = nan)
            log_w = torch.zeros_like(loss) if p.beta == 0 else -p.beta * loss
            pop, dead, child = moran_event(pop, log_w, self.generator, mutation_rate=p.mutation_rate,
                                           mutation_effect=p.mutation_effect)
            loss = loss.clone()
            loss[rows, dead] = self._newborn_loss(child, charge_mask).to(loss.dtype)
        was = self.diverged.clone()
        if not self.biallelic:
            self.check_divergence(pop)
        keep = active & ~(self.diverged & ~was)
        self.population = torch.where(keep.view(-1, 1, 1), pop, self.population)
        self._loss = torch.where(keep.view(-1, 1), loss, self._loss)
        if self.biallelic:
            self._count_absorptions(keep)
        self.budget.step(active)
        self.generation += 1
