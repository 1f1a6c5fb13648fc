"""(mu/mu_w, lambda)-ES with cumulative step-size adaptation (CSA; Ostermeier, Gawelczyk & Hansen
1994; Hansen & Ostermeier 2001).  Isotropic mutations: CMA-ES with the covariance fixed to I.

Generation (Hansen 2016, "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772, with C = I):

    z_k ~ N(0, I),  x_k = m + sigma z_k,  k = 1..lambda;   sort by loss
    <z>_w   = sum_{i<=mu} w_i z_{i:lambda}
    m      <- m + sigma <z>_w                                        (c_m = 1)
    p_sigma <- (1 - c_sigma) p_sigma + sqrt(c_sigma (2 - c_sigma) mu_eff) <z>_w
    sigma  <- sigma exp( c_sigma/d_sigma (||p_sigma|| / E||N(0,I)|| - 1) )

Defaults (tutorial, Table 1): lambda = 4 + floor(3 ln D), mu = floor(lambda/2),
w_i proportional to ln((lambda+1)/2) - ln i (``weights = "equal"``: w_i = 1/mu, the (mu/mu_I, lambda)-ES
of Beyer's progress-rate theory), mu_eff = 1/sum w_i^2,
c_sigma = (mu_eff + 2)/(D + mu_eff + 5), d_sigma = 1 + 2 max(0, sqrt((mu_eff-1)/(D+1)) - 1) + c_sigma.

The evolution path p_sigma compares the length of the recent steps with their length under random
selection: longer (consistent progress) increases sigma, shorter (steps cancel) decreases it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field, model_validator

from evosgd.core.errors import ParameterError
from evosgd.core.registry import OPTIMIZERS
from evosgd.evolution.es_base import (
    EvolutionStrategy,
    RecombinationParams,
    default_popsize,
    expected_norm,
    recombination_weights,
)


class CSAParams(RecombinationParams):
    """(mu/mu_w, lambda)-ES with cumulative step-size adaptation."""

    popsize: int | None = Field(None, ge=2, description="offspring per generation lambda; None: 4 + floor(3 ln D) (Hansen 2016)")
    mu: int | None = Field(None, ge=1, description="number of parents mu (recombined with the chosen weights); None: floor(lambda/2)")

    @model_validator(mode="after")
    def _mu_at_most_lambda(self) -> CSAParams:
        if self.mu is not None and self.popsize is not None and self.mu > self.popsize:
            raise ValueError(f"mu = {self.mu} must be at most popsize = {self.popsize}")
        return self


@dataclass
class CSAState:
    mean: torch.Tensor     # [R, D]
    sigma: torch.Tensor    # [R]
    p_sigma: torch.Tensor  # [R, D]


@OPTIMIZERS.register("csa_es", CSAParams,
                     "(mu/mu_w, lambda)-ES with cumulative step-size adaptation (isotropic mutations)", family="evolution")
class CSAES(EvolutionStrategy):
    kind = "csa_es"

    def setup(self) -> None:
        n = self.dim
        self.lam = self.params.popsize or default_popsize(n)
        self.mu = self.params.mu or self.lam // 2
        if self.mu > self.lam:
            raise ParameterError("mu", self.mu, f"an integer <= popsize = {self.lam}", where="optimizer 'csa_es'")
        w, self.mu_eff = recombination_weights(self.lam, self.mu, self.params.weights)
        self.weights = torch.tensor(w, device=self.device, dtype=self.dtype)
        self.c_sigma = (self.mu_eff + 2.0) / (n + self.mu_eff + 5.0)
        self.d_sigma = 1.0 + 2.0 * max(0.0, math.sqrt((self.mu_eff - 1.0) / (n + 1.0)) - 1.0) + self.c_sigma
        self.chi_n = expected_norm(n)

    def init_state(self) -> CSAState:
        R, D = self.replicates, self.dim
        return CSAState(mean=self.x0.clone(), sigma=torch.full((R,), self.sigma0, device=self.device, dtype=self.dtype),
                        p_sigma=torch.zeros(R, D, device=self.device, dtype=self.dtype))

    def ask(self, state: CSAState) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._randn(self.replicates, self.lam, self.dim)
        return state.mean.unsqueeze(1) + state.sigma.view(-1, 1, 1) * z, z

    def tell(self, state: CSAState, population: torch.Tensor, losses: torch.Tensor, z: torch.Tensor) -> CSAState:
        order = torch.argsort(losses, dim=1, stable=True)[:, : self.mu]
        z_best = torch.gather(z, 1, order.unsqueeze(-1).expand(-1, -1, self.dim))
        z_w = torch.einsum("p,rpd->rd", self.weights, z_best)
        cs = self.c_sigma
        p_sigma = (1 - cs) * state.p_sigma + math.sqrt(cs * (2 - cs) * self.mu_eff) * z_w
        sigma = state.sigma * torch.exp((cs / self.d_sigma) * (p_sigma.norm(dim=1) / self.chi_n - 1.0))
        return CSAState(mean=state.mean + state.sigma.unsqueeze(1) * z_w, sigma=sigma, p_sigma=p_sigma)

    def mean(self) -> torch.Tensor:
        return self.state.mean

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"sigma": self.state.sigma}
