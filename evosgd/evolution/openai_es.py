"""OpenAI-ES / natural evolution strategy (Salimans, Ho, Chen, Sidor & Sutskever 2017, "Evolution
Strategies as a Scalable Alternative to Reinforcement Learning"; Wierstra et al. 2014, NES) — the
explicit bridge between the two worlds: a population estimates a gradient, and that gradient goes
through the same update transforms (SGD, momentum, Adam, clipping, schedules) as a mini-batch
gradient does in :mod:`evosgd.gradient`.

The Gaussian-smoothed objective and its gradient (Nesterov & Spokoiny 2017):

    F_sigma(theta) = E_eps f(theta + sigma eps),   eps ~ N(0, I)
    grad F_sigma(theta) = (1/sigma) E[ f(theta + sigma eps) eps ]

Estimator with P members (antithetic: P/2 directions eps_j, each evaluated at theta +- sigma eps_j,
Salimans et al.'s "mirrored sampling"):

    g = 1/(P sigma) sum_i s_i eps_i,           s_i = shaped loss of member i

* ``fitness_shaping = "none"``: s_i = f_i, the unbiased estimate of grad F_sigma (with antithetic
  pairs it equals 1/(P sigma) sum_j (f(theta + sigma eps_j) - f(theta - sigma eps_j)) eps_j);
* ``"centered_ranks"`` (Salimans et al.'s default): s_i = rank_i/(P - 1) - 1/2 with rank 0 for the
  lowest loss: invariant to monotone transformations of f and robust to outliers, but a *direction*
  rather than an unbiased gradient (its scale no longer follows f);
* ``"standardized"``: s_i = (f_i - mean f)/std f.

Then ``updates, tx_state = transform.update(g, tx_state, theta)`` and ``theta <- theta + updates``
(optax sign convention: the ``lr`` transform multiplies by -lr, so the default chain
``[{kind="lr", lr=0.01}]`` is plain gradient descent on F_sigma).  sigma is fixed (the smoothing
scale is a modelling choice here, not adapted).  Cost per generation: P x (full cost or batch size);
with mini-batch fitness all P members see the same batch (common random numbers for the pairs).
recommend(): theta (or the best member evaluated with ``recommend = "best"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from evosgd.core.registry import OPTIMIZERS
from evosgd.evolution.es_base import EvolutionStrategy, SearchParams, default_popsize
from evosgd.gradient.transform_specs import TransformSpec, build_transform
from evosgd.gradient.transforms import transform_metrics


def _default_transforms() -> list:
    return [{"kind": "lr", "lr": 0.01}]


class OpenAIESParams(SearchParams):
    """OpenAI-ES: antithetic Gaussian perturbations, fitness shaping, gradient update transforms."""

    popsize: int | None = Field(
        None, ge=2, description="members per generation P (even with antithetic sampling); None: 4 + floor(3 ln D) "
        "rounded up to even (the CMA-ES default size)"
    )
    sigma: float = Field(0.1, gt=0.0, description="smoothing scale: perturbation standard deviation (fixed)")
    antithetic: bool = Field(True, description="mirrored pairs theta +- sigma eps (Salimans et al. 2017): halves the directions, cancels even terms")
    fitness_shaping: Literal["centered_ranks", "standardized", "none"] = Field(
        "centered_ranks", description="centered_ranks: Salimans et al.'s rank transform; standardized: z-scores; "
        "none: raw losses (the unbiased gradient of the smoothed objective)"
    )
    transforms: list[TransformSpec] = Field(
        default_factory=_default_transforms,
        description="update transforms fed with the ES gradient, in order (same specs as the sgd optimizer); "
        "default [{kind='lr', lr=0.01}]: plain gradient descent",
    )

    @model_validator(mode="after")
    def _check(self) -> OpenAIESParams:
        if self.antithetic and self.popsize is not None and self.popsize % 2:
            raise ValueError(f"popsize = {self.popsize} must be even with antithetic sampling")
        return self


@dataclass
class OpenAIESState:
    theta: torch.Tensor   # [R, D]
    grad: torch.Tensor    # [R, D] the last gradient estimate
    tx_state: Any         # state of the chained update transforms


def centered_ranks(losses: torch.Tensor) -> torch.Tensor:
    """rank/(P - 1) - 1/2 per row (rank 0 = lowest loss), values in [-1/2, 1/2] summing to 0."""
    P = losses.shape[1]
    ranks = torch.argsort(torch.argsort(losses, dim=1, stable=True), dim=1).to(losses.dtype)
    return ranks / max(P - 1, 1) - 0.5


@OPTIMIZERS.register("openai_es", OpenAIESParams,
                     "OpenAI-ES: antithetic Gaussian gradient estimate fed to gradient update transforms (SGD, Adam, ...)",
                     family="evolution")
class OpenAIES(EvolutionStrategy):
    kind = "openai_es"

    def setup(self) -> None:
        p = self.params
        P = p.popsize or default_popsize(self.dim)
        self.popsize = P + (P % 2) if (p.antithetic and p.popsize is None) else P
        self.transform = build_transform(p.transforms)

    def init_state(self) -> OpenAIESState:
        theta = self.x0.clone()
        return OpenAIESState(theta=theta, grad=torch.zeros_like(theta), tx_state=self.transform.init(theta))

    def ask(self, state: OpenAIESState) -> tuple[torch.Tensor, torch.Tensor]:
        R, D, P = self.replicates, self.dim, self.popsize
        if self.params.antithetic:
            half = self._randn(R, P // 2, D)
            eps = torch.cat([half, -half], dim=1)
        else:
            eps = self._randn(R, P, D)
        return state.theta.unsqueeze(1) + self.params.sigma * eps, eps

    def shape(self, losses: torch.Tensor) -> torch.Tensor:
        kind = self.params.fitness_shaping
        if kind == "centered_ranks":
            return centered_ranks(losses)
        if kind == "standardized":
            std = losses.std(dim=1, keepdim=True)
            return (losses - losses.mean(dim=1, keepdim=True)) / torch.where(std > 0, std, torch.ones_like(std))
        return losses

    def tell(self, state: OpenAIESState, population: torch.Tensor, losses: torch.Tensor, eps: torch.Tensor) -> OpenAIESState:
        # non-finite losses would poison the ranks of the others: rank them last (divergence is flagged anyway)
        finite = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
        s = self.shape(finite)
        grad = torch.einsum("rp,rpd->rd", s, eps) / (self.popsize * self.params.sigma)
        updates, tx_state = self.transform.update(grad, state.tx_state, state.theta)
        return OpenAIESState(theta=state.theta + updates, grad=grad, tx_state=tx_state)

    def mean(self) -> torch.Tensor:
        return self.state.theta

    def metrics(self) -> dict[str, torch.Tensor]:
        out = {k: v.to(self.dtype) for k, v in transform_metrics(self.state.tx_state).items()}
        out["grad_norm"] = self.state.grad.norm(dim=1)
        out["sigma"] = torch.full((self.replicates,), self.params.sigma, device=self.device, dtype=self.dtype)
        return out

