"""(1+1)-ES with the 1/5th success rule (Rechenberg 1973; Schwefel 1981).

One parent x, one offspring y = x + sigma z, z ~ N(0, I); the better of the two survives
(elitist "plus" selection, ties to the offspring).  The step size follows the success rule in the
multiplicative form of Hansen, Arnold & Auger (2015, "Evolution Strategies", Springer Handbook of
Computational Intelligence, Algorithm 1; also Auger & Hansen's tutorials):

    sigma <- sigma * exp( (1[f(y) <= f(x)] - p_target) / d ),   p_target = 1/5,  d = sqrt(D + 1).

log sigma drifts by (p_s - 1/5)/d per generation, so sigma grows while more than one offspring in
five succeeds and shrinks otherwise; on the sphere this keeps sigma proportional to the distance
to the optimum, and the distance (hence log f) decreases linearly in the number of evaluations.
An identity follows that the tests use: after T generations with S successes,
S/T = p_target + d * ln(sigma_T / sigma_0) / T.

Parent re-evaluation: with mini-batch fitness (or a drifting landscape) the parent's stored loss
is stale, and a lucky draw would never be beaten; by default the parent is then re-evaluated on
the offspring's mini-batch every generation (P = 2, a paired comparison on the same data).  With
the full objective of a static landscape it is evaluated once, in the first generation (which
therefore costs 2, every later one 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field

from evosgd.core.registry import OPTIMIZERS
from evosgd.evolution.es_base import ESParams, EvolutionStrategy


class OnePlusOneParams(ESParams):
    """(1+1)-ES with the 1/5th success rule."""

    target_success: float = Field(
        0.2, gt=0.0, lt=1.0, description="target success probability p_target of the success rule (1/5: Rechenberg)"
    )
    damping: float | None = Field(
        None, gt=0.0, description="damping d of the step-size update; None: sqrt(D + 1) (Hansen, Arnold & Auger 2015)"
    )
    success_smoothing: float = Field(
        0.1, gt=0.0, le=1.0,
        description="weight of the newest generation in the exponentially smoothed success-rate metric "
        "(0.1: an average over about the last 10 generations)",
    )
    reevaluate_parent: bool | None = Field(
        None,
        description="re-evaluate the parent every generation on the offspring's mini-batch; None: yes with "
        "mini-batch fitness or a drifting landscape, no otherwise",
    )


@dataclass
class OnePlusOneState:
    x: torch.Tensor          # [R, D] parent
    f: torch.Tensor          # [R] parent loss (inf until evaluated)
    sigma: torch.Tensor      # [R]
    success_rate: torch.Tensor  # [R] exponentially smoothed success indicator
    successes: torch.Tensor  # [R] number of successful generations
    generations: torch.Tensor  # [R] number of generations


@OPTIMIZERS.register("one_plus_one_es", OnePlusOneParams,
                     "(1+1)-ES with the 1/5th success rule (elitist, one offspring per generation)", family="evolution")
class OnePlusOneES(EvolutionStrategy):
    kind = "one_plus_one_es"

    def setup(self) -> None:
        p = self.params
        self.damping = p.damping if p.damping is not None else math.sqrt(self.dim + 1.0)
        self.reevaluate = (p.reevaluate_parent if p.reevaluate_parent is not None
                           else (p.batch_size is not None or bool(self.landscape.drifting)))
        self._parent_evaluated = False

    def init_state(self) -> OnePlusOneState:
        R = self.replicates
        z = lambda: torch.zeros(R, device=self.device, dtype=self.dtype)  # noqa: E731
        return OnePlusOneState(
            x=self.x0.clone(), f=torch.full((R,), math.inf, device=self.device, dtype=self.dtype),
            sigma=torch.full((R,), self.sigma0, device=self.device, dtype=self.dtype),
            success_rate=z() + self.params.target_success, successes=z(), generations=z(),
        )

    def ask(self, state: OnePlusOneState) -> tuple[torch.Tensor, None]:
        offspring = state.x + state.sigma.unsqueeze(1) * self._randn(self.replicates, self.dim)
        if self.reevaluate or not self._parent_evaluated:
            return torch.stack([state.x, offspring], dim=1), None
        return offspring.unsqueeze(1), None

    def tell(self, state: OnePlusOneState, population: torch.Tensor, losses: torch.Tensor, aux: None) -> OnePlusOneState:
        p = self.params
        f_parent = losses[:, 0] if population.shape[1] == 2 else state.f
        f_child, child = losses[:, -1], population[:, -1]
        self._parent_evaluated = True
        success = f_child <= f_parent
        s = success.to(self.dtype)
        return OnePlusOneState(
            x=torch.where(success.unsqueeze(1), child, state.x),
            f=torch.where(success, f_child, f_parent),
            sigma=state.sigma * torch.exp((s - p.target_success) / self.damping),
            success_rate=(1 - p.success_smoothing) * state.success_rate + p.success_smoothing * s,
            successes=state.successes + s,
            generations=state.generations + 1,
        )

    def mean(self) -> torch.Tensor:
        return self.state.x

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"sigma": self.state.sigma, "success_rate": self.state.success_rate}
