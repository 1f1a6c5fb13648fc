"""Shared machinery of the evolution strategies: parameters, explicit state records, ask/tell.

Every strategy here has the shape evosax made standard, wrapped in the common optimizer
protocol (contract 3)::

    population, aux = strategy.ask(state)                 # [R, P, D]
    losses = evaluate_population(...)                     # [R, P], charged P * cost
    state = strategy.tell(state, population, losses, aux)
    budget.step(active)

The state is an explicit record (a dataclass of tensors with leading dimension R).  A replicate
that is out of budget or has diverged keeps its old state: ``tell`` computes the new state for
every replicate and :func:`commit` selects, per replicate, the new or the old record.  A new
state that is non-finite (overflow of sigma, of the covariance, of a loss) marks its replicate
diverged through :meth:`Optimizer.check_divergence` and is never committed, so a frozen
replicate always holds its last finite state.

Losses are minimised throughout.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, Literal

import torch
from pydantic import Field

from evosgd.core.device import to_device
from evosgd.core.errors import ParameterError
from evosgd.core.optimizer import Optimizer
from evosgd.evolution.fitness import FitnessParams, evaluate_population


class SearchParams(FitnessParams):
    """Parameters shared by every evolution strategy (on top of the fitness options)."""

    x0: float | list[float] | None = Field(
        None,
        description="initial mean; None: landscape.initial_point (common to every optimizer, so comparisons are "
        "paired); a number: that value in every coordinate; a list: the D coordinates",
    )
    recommend: Literal["mean", "best"] = Field(
        "mean",
        description="what recommend() returns: the distribution mean (the estimate of the optimum), or the best "
        "point evaluated so far (with mini-batch fitness its value is a noisy, optimistically biased estimate)",
    )


class ESParams(SearchParams):
    """Parameters of the step-size adaptive strategies: the initial step size as well."""

    sigma0: float | None = Field(
        None,
        gt=0.0,
        description="initial step size sigma_0; None: 0.3 x the width of the landscape's search domain "
        "(Hansen's advice: about a third of the range where the optimum is expected), or 1.0 for landscapes "
        "without a declared domain",
    )


class RecombinationParams(ESParams):
    """Step-size adaptive strategies that recombine their mu best offspring: the choice of weights."""

    weights: Literal["log_rank", "equal"] = Field(
        "log_rank",
        description="recombination weights of the mu best: log_rank w_i ~ ln((lambda+1)/2) - ln i (Hansen 2016, the default), "
        "or equal w_i = 1/mu, the intermediate (mu/mu_I, lambda) recombination of Beyer's progress-rate theory (mu_eff = mu)",
    )


# --------------------------------------------------------------------------- helpers
def rows(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-replicate ``[R]`` tensor viewed to broadcast against ``like`` ``[R, ...]``."""
    return x.reshape(x.shape[:1] + (1,) * (like.dim() - 1))


def commit(mask: torch.Tensor, new: Any, old: Any) -> Any:
    """Per replicate, the ``new`` state record where ``mask`` ``[R]`` is true, else ``old``.

    Works on dataclass records (and tuples / NamedTuples inside them, e.g. the state of a chain of
    gradient transforms) whose tensors have leading dimension R; other leaves are taken from ``new``.
    """
    if isinstance(new, torch.Tensor):
        if new.dim() > 0 and new.shape[0] == mask.shape[0] and isinstance(old, torch.Tensor) and new.shape == old.shape:
            return torch.where(rows(mask, new), new, old)
        return new
    if dataclasses.is_dataclass(new):
        return dataclasses.replace(new, **{f.name: commit(mask, getattr(new, f.name), getattr(old, f.name))
                                           for f in dataclasses.fields(new)})
    if isinstance(new, tuple):
        items = [commit(mask, n, o) for n, o in zip(new, old)]
        return type(new)(*items) if hasattr(new, "_fields") else tuple(items)
    return new


def float_fields(state: Any) -> list[torch.Tensor]:
    """The floating-point tensor fields of a state record (checked for divergence)."""
    out = []
    for f in dataclasses.fields(state):
        v = getattr(state, f.name)
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() > 0:
            out.append(v)
    return out


def expected_norm(n: int) -> float:
    """E||N(0, I_n)|| ~ sqrt(n) (1 - 1/(4n) + 1/(21 n^2)) (Hansen 2016, tutorial, p. 29)."""
    return math.sqrt(n) * (1.0 - 1.0 / (4.0 * n) + 1.0 / (21.0 * n * n))


def default_popsize(n: int) -> int:
    """lambda = 4 + floor(3 ln n) (Hansen 2016, tutorial, Table 1)."""
    return 4 + int(math.floor(3.0 * math.log(n)))


def log_weights(lam: int) -> list[float]:
    """Raw weights w'_i = ln((lambda + 1)/2) - ln i, i = 1..lambda (Hansen 2016, eq. 49): positive for the
    better half, decreasing with rank."""
    return [math.log((lam + 1) / 2.0) - math.log(i) for i in range(1, lam + 1)]


def positive_weights(lam: int, mu: int) -> tuple[list[float], float]:
    """Recombination weights of the mu best (normalised to sum 1) and mu_eff = 1 / sum w_i^2."""
    raw = log_weights(lam)[:mu]
    # with mu > lambda/2 some raw weights are <= 0: keep them non-negative (equal weights at worst)
    raw = [max(w, 0.0) for w in raw] if any(w > 0 for w in raw) else [1.0] * mu
    s = sum(raw)
    w = [v / s for v in raw]
    return w, 1.0 / sum(v * v for v in w)


def recombination_weights(lam: int, mu: int, kind: str = "log_rank") -> tuple[list[float], float]:
    """Weights of the mu best (sum 1) and mu_eff = 1 / sum w_i^2: ``positive_weights`` for "log_rank",
    ``1/mu`` each (mu_eff = mu) for "equal"."""
    if kind == "equal":
        return [1.0 / mu] * mu, float(mu)
    if kind != "log_rank":
        raise ValueError(f"recombination weights {kind!r}: 'log_rank' or 'equal'")
    return positive_weights(lam, mu)


# --------------------------------------------------------------------------- base class
class EvolutionStrategy(Optimizer):
    """Base of the evolution strategies: resolves ``x0`` and ``sigma0``, evaluates populations
    through the shared fitness helper, commits states per replicate, tracks the best point."""

    def __init__(self, params: SearchParams, *, landscape: Any, budget: Any, generator: torch.Generator) -> None:
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        self.dim = int(landscape.dim)
        self.x0 = self._resolve_x0(params.x0)
        self.sigma0 = self._resolve_sigma0(getattr(params, "sigma0", None))
        R = self.replicates
        self.best_x = self.x0.clone()
        self.best_f = torch.full((R,), math.inf, device=self.device, dtype=self.dtype)
        self._all_active: torch.Tensor | None = None
        self.setup()
        self.state = self.init_state()

    # -- subclass hooks ------------------------------------------------------------------
    def setup(self) -> None:
        """Derive the strategy's constants from the params (before ``init_state``)."""

    @abc.abstractmethod
    def init_state(self) -> Any:
        """The initial state record."""

    @abc.abstractmethod
    def ask(self, state: Any) -> tuple[torch.Tensor, Any]:
        """A population ``[R, P, D]`` and whatever ``tell`` needs (e.g. the standard normal draws)."""

    @abc.abstractmethod
    def tell(self, state: Any, population: torch.Tensor, losses: torch.Tensor, aux: Any) -> Any:
        """The new state from the population's losses ``[R, P]``."""

    @abc.abstractmethod
    def mean(self) -> torch.Tensor:
        """The current distribution mean (or parent) ``[R, D]``."""

    def evaluate(self, population: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Losses ``[R, P]``, charging ``P x cost`` to the active replicates."""
        mask = None if active is self._all_active else active  # everybody pays: a scalar charge
        return evaluate_population(self.landscape, self.budget, self.generator, population, self.params.batch_size,
                                   mask=mask)

    def valid_members(self, population: torch.Tensor) -> torch.Tensor | None:
        """``[R, P]`` bool of the members that really belong to each replicate's population (None: all);
        strategies with per-replicate population sizes pad the rest."""
        return None

    def after_commit(self, committed: torch.Tensor, losses: torch.Tensor) -> None:
        """Hook run after the new state was committed for the replicates in ``committed`` (restarts)."""

    # -- the protocol --------------------------------------------------------------------
    def step(self) -> None:
        host_active = ~self.budget.exhausted() & (self.diverged_step < 0)
        if not host_active.any():
            return
        if host_active.all():
            self._step_all()
            return
        active = to_device(host_active, self.device)
        population, aux = self.ask(self.state)
        losses = self.evaluate(population, active)
        new = self.tell(self.state, population, losses, aux)
        valid = self.valid_members(population)
        checked = losses if valid is None else torch.where(valid, losses, torch.zeros_like(losses))
        # inactive replicates are not stepping: nothing they computed can mark them diverged
        values = [torch.where(rows(active, v), v, torch.zeros_like(v)) for v in [checked, *float_fields(new)]]
        self.check_divergence(*values)
        ok = active & ~self.diverged
        self.state = commit(ok, new, self.state)
        self._track_best(ok, population, checked if valid is None else torch.where(valid, losses, math.inf))
        self.after_commit(ok, losses)
        self.budget.step(active)

    def _step_all(self) -> None:
        """``step`` when every replicate steps (the common case): nothing to mask unless one diverges
        now, and the host ledger ``diverged_step`` says so without a device read, so the new state
        is taken whole instead of selected field by field."""
        if self._all_active is None:
            self._all_active = torch.ones(self.replicates, dtype=torch.bool, device=self.device)
        active = self._all_active
        population, aux = self.ask(self.state)
        losses = self.evaluate(population, active)
        new = self.tell(self.state, population, losses, aux)
        valid = self.valid_members(population)
        checked = losses if valid is None else torch.where(valid, losses, torch.zeros_like(losses))
        self.check_divergence(checked, *float_fields(new))
        if (self.diverged_step < 0).all():
            ok = active
            self.state = new
        else:
            ok = ~self.diverged
            self.state = commit(ok, new, self.state)
        self._track_best(ok, population, checked if valid is None else torch.where(valid, losses, math.inf))
        self.after_commit(ok, losses)
        self.budget.step(None)

    def _track_best(self, ok: torch.Tensor, population: torch.Tensor, losses: torch.Tensor) -> None:
        fmin, idx = losses.min(dim=1)
        xmin = torch.gather(population, 1, idx.view(-1, 1, 1).expand(-1, 1, population.shape[2])).squeeze(1)
        better = ok & (fmin < self.best_f)
        self.best_f = torch.where(better, fmin, self.best_f)
        self.best_x = torch.where(better.unsqueeze(1), xmin, self.best_x)

    def recommend(self) -> torch.Tensor:
        if self.params.recommend == "best":
            seen = torch.isfinite(self.best_f).unsqueeze(1)
            return torch.where(seen, self.best_x, self.mean())
        return self.mean()

    # -- setup ---------------------------------------------------------------------------
    def _resolve_x0(self, x0: float | list[float] | None) -> torch.Tensor:
        R, D = self.replicates, self.dim
        if x0 is None:
            return self.landscape.initial_point.to(self.device, self.dtype).clone()
        if isinstance(x0, (int, float)):
            return torch.full((R, D), float(x0), device=self.device, dtype=self.dtype)
        if len(x0) != D:
            raise ParameterError("x0", x0, f"None, a number, or a list of D = {D} numbers", where=f"optimizer {self.kind!r}")
        return torch.tensor(x0, device=self.device, dtype=self.dtype).expand(R, D).clone()

    def _resolve_sigma0(self, sigma0: float | None) -> float:
        if sigma0 is not None:
            return float(sigma0)
        domain = getattr(self.landscape, "domain", None)
        if domain is not None:
            return 0.3 * float(domain[1] - domain[0])
        return 1.0

    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator, device=self.device, dtype=self.dtype)
