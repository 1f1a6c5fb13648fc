"""The DEAP reference backend: the GA and CMA-ES run through DEAP's own toolbox.

DEAP (Fortin et al. 2012, JMLR 13) is the field's reference implementation of the classic
operators.  These two optimizers run *DEAP's* code — ``tools.selTournament``, ``tools.cxBlend``,
``tools.mutGaussian``, ``algorithms.varAnd``, ``tools.selBest``, ``deap.cma.Strategy`` — on the same
landscape and the same budget as the fast torch engines, so a user can check the fast engine
against the reference (same settings => statistically indistinguishable results; the tests check
it with a Mann-Whitney U test) and the benchmarks can measure how far ahead the fast engine is.

* ``ga_deap`` takes exactly the parameters of ``ga`` (:class:`~evosgd.evolution.ga.GAParams`) and
  runs the same generation: DEAP selection of lambda parents, ``algorithms.varAnd`` (crossover of
  adjacent pairs with ``crossover.prob``, then mutation with ``mutation.prob``), evaluation of every
  offspring, then generational (+ elitism via ``tools.selBest``), (mu + lambda) or (mu, lambda)
  replacement via ``tools.selBest`` — the ``eaSimple`` / ``eaMuPlusLambda`` / ``eaMuCommaLambda``
  loops, written out so that every offspring is evaluated and charged (``eaSimple`` re-evaluates
  only changed individuals, which under mini-batch fitness would compare individuals on different
  batches).  Operators DEAP lacks (linear-rank selection, arithmetic/intermediate crossover,
  tournaments without replacement) are refused with a clear error.
* ``cmaes_deap`` is ``deap.cma.Strategy`` (Hansen's CMA-ES with DEAP's default parameters,
  lambda = 4 + floor(3 ln D)) started at ``landscape.initial_point`` with step size ``sigma0``;
  ``recommend()`` is its centroid.

Cost and vectorization.  Fitness is evaluated for all replicates at once through the shared helper
(:func:`~evosgd.evolution.fitness.evaluate_population`: full objective or one mini-batch per
replicate and generation, charged ``lambda * cost``), so both backends meet the same data.  The
DEAP operators themselves run in a Python loop over replicates and individuals: that is unavoidable
(DEAP is per-individual Python) and is the point of a reference — it is slow, and known to be right.

Randomness.  DEAP draws from the global ``random`` module (and CMA-ES from ``numpy.random``).  Each
replicate gets its own Python and NumPy random states, seeded once from the optimizer's torch
generator; a step swaps a replicate's states in, runs DEAP, and swaps them out, restoring the
global states afterwards.  So runs are reproducible from the scenario seed and do not disturb
other users of the global generators.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from pydantic import Field

from evosgd.core.errors import ParameterError
from evosgd.core.optimizer import Optimizer
from evosgd.core.registry import OPTIMIZERS
from evosgd.evolution.fitness import FitnessParams, evaluate_population
from evosgd.evolution.ga import GAParams, initial_population, mutation_bounds

try:  # DEAP is a declared dependency; keep the package importable if an environment lacks it
    from deap import algorithms, base, cma, creator, tools

    HAVE_DEAP = True
except ImportError:  # pragma: no cover
    HAVE_DEAP = False


def _deap_types() -> tuple[Any, Any]:
    """DEAP's creator classes for a minimised loss (created once per process)."""
    if not HAVE_DEAP:
        raise ParameterError("kind", "deap backend", "an environment with the 'deap' package installed")
    if not hasattr(creator, "EvosgdFitnessMin"):
        creator.create("EvosgdFitnessMin", base.Fitness, weights=(-1.0,))
        creator.create("EvosgdFitnessMax", base.Fitness, weights=(1.0,))
        creator.create("EvosgdIndividual", list, fitness=creator.EvosgdFitnessMin)
    return creator.EvosgdIndividual, creator.EvosgdFitnessMax


class _ReplicateRandomness:
    """One Python ``random`` state and one NumPy global state per replicate."""

    def __init__(self, replicates: int, generator: torch.Generator) -> None:
        seeds = torch.randint(0, 2**62, (replicates,), generator=generator, device=generator.device).tolist()
        self.py_states, self.np_states = [], []
        outer_py, outer_np = random.getstate(), np.random.get_state()
        try:
            for s in seeds:
                random.seed(int(s))
                np.random.seed(int(s) % (2**32))
                self.py_states.append(random.getstate())
                self.np_states.append(np.random.get_state())
        finally:
            random.setstate(outer_py)
            np.random.set_state(outer_np)

    @contextlib.contextmanager
    def of(self, r: int) -> Iterator[None]:
        outer_py, outer_np = random.getstate(), np.random.get_state()
        random.setstate(self.py_states[r])
        np.random.set_state(self.np_states[r])
        try:
            yield
        finally:
            self.py_states[r] = random.getstate()
            self.np_states[r] = np.random.get_state()
            random.setstate(outer_py)
            np.random.set_state(outer_np)


def _stack(individuals: list[list[list[float]]], landscape) -> torch.Tensor:
    return torch.as_tensor(np.asarray(individuals, dtype=np.float64), device=landscape.device, dtype=landscape.dtype)


def _set_losses(individuals: list, losses: np.ndarray) -> None:
    for ind, value in zip(individuals, losses):
        ind.fitness.values = (float(value),)


def _population_metrics(pops: list[list], losses_attr: str = "fitness") -> dict[str, np.ndarray]:
    best, mean, div = [], [], []
    for pop in pops:
        vals = np.array([ind.fitness.values[0] if ind.fitness.valid else np.nan for ind in pop], dtype=np.float64)
        x = np.asarray(pop, dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        best.append(finite.min() if finite.size else np.nan)
        mean.append(finite.mean() if finite.size else np.nan)
        div.append(math.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean()))
    return {"best_loss": np.array(best), "mean_loss": np.array(mean), "diversity": np.array(div)}


# ----------------------------------------------------------------------------- GA through DEAP


@OPTIMIZERS.register("ga_deap", GAParams, "reference GA run through DEAP's toolbox (selTournament, cxBlend, mutGaussian, "
                     "varAnd, selBest); same parameters as 'ga', per-individual Python", family="evolution")
class DeapGA(Optimizer):
    """The GA of ``ga.py`` run by DEAP's operators, one Python population per replicate."""

    kind = "ga_deap"

    def __init__(self, params: GAParams, *, landscape, budget, generator: torch.Generator) -> None:
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        Individual, self._FitnessMax = _deap_types()
        self._toolbox = self._make_toolbox(params, landscape)
        start = initial_population(landscape, params.population_size, params.init_radius, generator)
        self.populations = [[Individual(row) for row in start[r].to(torch.float64).tolist()] for r in range(self.replicates)]
        self.rng = _ReplicateRandomness(self.replicates, generator)
        self.evaluated = False
        self.generation = 0

    def _make_toolbox(self, p: GAParams, landscape) -> Any:
        where = "optimizer 'ga_deap'"
        D = landscape.dim
        tb = base.Toolbox()
        s, c, m = p.selection, p.crossover, p.mutation
        if s.kind == "tournament":
            if not s.replace:
                raise ParameterError("selection.replace", False, "true (DEAP's selTournament draws aspirants with replacement)", where)
            tb.register("select", tools.selTournament, tournsize=s.k)
        elif s.kind == "truncation":
            tb.register("select", self._sel_truncation, fraction=s.fraction)
        elif s.kind == "roulette":
            tb.register("select", self._sel_proportional, method=tools.selRoulette)
        elif s.kind == "sus":
            tb.register("select", self._sel_proportional, method=tools.selStochasticUniversalSampling)
        else:
            raise ParameterError("selection.kind", s.kind, "tournament, truncation, roulette or sus (DEAP has no linear rank)", where)
        if c.kind == "blend":
            tb.register("mate", tools.cxBlend, alpha=c.alpha)
        elif c.kind == "uniform":
            tb.register("mate", tools.cxUniform, indpb=c.indpb)
        elif c.kind in ("one_point", "two_point"):
            if D < 2:
                raise ParameterError("crossover.kind", c.kind, "a kind other than one_point/two_point when dim < 2", where)
            tb.register("mate", tools.cxOnePoint if c.kind == "one_point" else tools.cxTwoPoint)
        elif c.kind == "sbx":
            tb.register("mate", tools.cxSimulatedBinary, eta=c.eta)
        elif c.kind == "none":
            tb.register("mate", lambda a, b: (a, b))
        else:
            raise ParameterError("crossover.kind", c.kind, "blend, uniform, one_point, two_point, sbx or none (not in DEAP)", where)
        indpb = m.indpb if m.indpb is not None else 1.0 / D
        if m.kind == "gaussian":
            tb.register("mutate", tools.mutGaussian, mu=0.0, sigma=m.sigma, indpb=indpb)
        elif m.kind == "polynomial":
            low, up = mutation_bounds(m, landscape.initial_point, p.init_radius)
            tb.register("mutate", tools.mutPolynomialBounded, eta=m.eta, low=low, up=up, indpb=indpb)
        else:
            tb.register("mutate", lambda ind: (ind,))
        self._cxpb = c.prob if c.kind != "none" else 0.0
        self._mutpb = m.prob if m.kind != "none" else 0.0
        return tb

    # DEAP's selections return the chosen list in a biased order (SUS, selBest: best first); the
    # fast engine shuffles so that varAnd's adjacent pairs are random, and so do these.
    def _sel_truncation(self, pop: list, k: int, fraction: float) -> list:
        m = max(1, min(len(pop), math.ceil(fraction * len(pop))))
        best = tools.selBest(pop, m)
        chosen = [best[i % m] for i in range(k)]
        random.shuffle(chosen)
        return chosen

    def _sel_proportional(self, pop: list, k: int, method: Any) -> list:
        losses = np.array([ind.fitness.values[0] for ind in pop], dtype=np.float64)
        finite = np.isfinite(losses)
        w = np.where(finite, losses[finite].max() - losses if finite.any() else 0.0, 0.0)
        if w.sum() <= 0:  # all equal: uniform, as operators.window_weights
            w = finite.astype(np.float64)
        for ind, wi in zip(pop, w):
            ind.window = self._FitnessMax((float(wi),))
        chosen = method(pop, k, fit_attr="window")
        random.shuffle(chosen)
        return chosen

    def _evaluate(self, groups: list[list], active: torch.Tensor) -> None:
        """Evaluate every individual of ``groups`` (one equal-length list per replicate) at once."""
        n = max(len(g) for g in groups)  # inactive replicates have no offspring: padded, not charged
        rows = [[list(ind) for ind in g] if len(g) == n else [[0.0] * self.landscape.dim] * n for g in groups]
        losses = evaluate_population(self.landscape, self.budget, self.generator, _stack(rows, self.landscape),
                                     self.params.batch_size, mask=active)
        host = losses.detach().to("cpu", torch.float64).numpy()
        act = active.cpu().numpy()
        for r, g in enumerate(groups):
            if act[r]:
                _set_losses(g, host[r])

    def step(self) -> None:
        active = self.active
        if not bool(active.any()):
            return
        p = self.params
        act = active.cpu().numpy()
        if not self.evaluated:
            self._evaluate(self.populations, active)
            self.evaluated = True
            self._finish(self.populations, active)
            return
        tb, mu, lam = self._toolbox, p.population_size, p.lam
        offspring: list[list] = [[] for _ in range(self.replicates)]
        for r in np.flatnonzero(act):
            with self.rng.of(r):
                parents = tb.select(self.populations[r], lam)
                offspring[r] = algorithms.varAnd(parents, tb, self._cxpb, self._mutpb)
        # the parents that compete with the offspring (as in the fast engine): all (plus) or the elites
        elitist = p.replacement != "plus" and p.elitism > 0
        competing = [tools.selBest(pop, p.elitism) if elitist else pop for pop in self.populations]
        if p.reevaluates(self.landscape) and (p.replacement == "plus" or elitist):
            self._evaluate([list(c) + list(o) for c, o in zip(competing, offspring)], active)  # one batch
        else:
            self._evaluate(offspring, active)
        new = list(self.populations)
        for r in np.flatnonzero(act):
            if p.replacement == "plus":
                new[r] = tools.selBest(self.populations[r] + offspring[r], mu)
                continue
            off = offspring[r] if p.replacement == "generational" else tools.selBest(offspring[r], mu)
            if elitist:
                keep = sorted(off, key=lambda ind: ind.fitness, reverse=True)[: mu - p.elitism]  # best first
                off = keep + [tb.clone(ind) for ind in competing[r]]
            new[r] = off
        self._finish(new, active)

    def _finish(self, new: list[list], active: torch.Tensor) -> None:
        best = torch.as_tensor(_population_metrics(new)["best_loss"], device=self.device)
        bad_genes = torch.as_tensor([not np.isfinite(np.asarray(pop, dtype=np.float64)).all() for pop in new], device=self.device)
        was = self.diverged.clone()
        self.check_divergence(torch.where(bad_genes, torch.full_like(best, float("nan")), best))
        keep = (active & ~(self.diverged & ~was)).cpu().numpy()
        self.populations = [new[r] if keep[r] else self.populations[r] for r in range(self.replicates)]
        self.budget.step(active)
        self.generation += 1

    def recommend(self) -> torch.Tensor:
        if not self.evaluated:
            return self.landscape.initial_point.clone()
        best = [tools.selBest(pop, 1)[0] for pop in self.populations]
        return _stack(best, self.landscape)

    def metrics(self) -> dict[str, np.ndarray]:
        m = _population_metrics(self.populations)
        if not self.evaluated:
            m["best_loss"][:] = np.nan
            m["mean_loss"][:] = np.nan
        return m


# ----------------------------------------------------------------------------- CMA-ES through DEAP


class CMAESDeapParams(FitnessParams):
    """DEAP's CMA-ES (``deap.cma.Strategy``) with its default parameters."""

    sigma0: float = Field(1.0, gt=0.0, description="initial step size (units of theta); about a quarter of the search box is Hansen's advice")
    population_size: int | None = Field(None, ge=2, description="lambda; None = DEAP's default 4 + floor(3 ln D) (Hansen's tutorial)")


@OPTIMIZERS.register("cmaes_deap", CMAESDeapParams, "reference CMA-ES run through deap.cma.Strategy (per-replicate Python)",
                     family="evolution")
class DeapCMAES(Optimizer):
    """``deap.cma.Strategy`` per replicate; fitness evaluated for all replicates at once."""

    kind = "cmaes_deap"

    def __init__(self, params: CMAESDeapParams, *, landscape, budget, generator: torch.Generator) -> None:
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        self._Individual, _ = _deap_types()
        D = landscape.dim
        self.lam = params.population_size or int(4 + 3 * math.log(D))
        x0 = landscape.initial_point.to("cpu", torch.float64).numpy()
        self.strategies = [cma.Strategy(centroid=list(x0[r]), sigma=params.sigma0, lambda_=self.lam) for r in range(self.replicates)]
        self.rng = _ReplicateRandomness(self.replicates, generator)
        self._last = np.full((self.replicates, 2), np.nan)  # best and mean loss of the last generation
        self.generation = 0

    def step(self) -> None:
        active = self.active
        if not bool(active.any()):
            return
        act = active.cpu().numpy()
        groups: list[list] = [[] for _ in range(self.replicates)]
        for r in np.flatnonzero(act):
            with self.rng.of(r):
                groups[r] = self.strategies[r].generate(self._Individual)
        rows = [[list(ind) for ind in g] if g else [[0.0] * self.landscape.dim] * self.lam for g in groups]
        losses = evaluate_population(self.landscape, self.budget, self.generator, _stack(rows, self.landscape),
                                     self.params.batch_size, mask=active)
        host = losses.detach().to("cpu", torch.float64).numpy()
        was = self.diverged.clone()
        centroid_ok = torch.as_tensor([bool(np.isfinite(s.centroid).all()) for s in self.strategies], device=self.device)
        self.check_divergence(torch.where(centroid_ok, torch.nan_to_num(losses, nan=0.0, posinf=0.0).amin(1), float("nan")))
        keep = (active & ~(self.diverged & ~was)).cpu().numpy()
        for r in np.flatnonzero(keep):
            _set_losses(groups[r], host[r])
            with self.rng.of(r):
                self.strategies[r].update(groups[r])
            self._last[r] = (np.nanmin(host[r]), np.nanmean(host[r]))
        self.budget.step(active)
        self.generation += 1

    def recommend(self) -> torch.Tensor:
        return _stack([list(s.centroid) for s in self.strategies], self.landscape)

    def metrics(self) -> dict[str, np.ndarray]:
        return {"sigma": np.array([s.sigma for s in self.strategies], dtype=np.float64),
                "best_loss": self._last[:, 0].copy(), "mean_loss": self._last[:, 1].copy()}
