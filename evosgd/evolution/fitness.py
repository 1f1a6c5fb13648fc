"""Fitness evaluation of a population, charged to the shared budget (contract 2).

Every evolutionary optimizer takes the same two fitness options, so that "full-data fitness"
and "mini-batch fitness" mean the same thing for all of them:

* ``batch_size = None`` (default): each individual is evaluated on the full objective
  (``landscape.true_loss``), costing ``landscape.full_cost`` sample-evaluations (n for a finite
  sum of n examples, 1 for an analytic function);
* ``batch_size = b``: one fresh mini-batch of b examples is drawn per replicate and generation
  and shared by the whole population (so selection compares individuals on the same data, as
  SGD compares nothing), costing b per individual — an unbiased but noisy fitness, the
  population analogue of a mini-batch gradient.

Losses are minimised; fitness-proportional methods convert them as they need.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.core.budget import Budget
from evosgd.landscapes.base import Landscape


class FitnessParams(BaseModel):
    """Fitness options shared by every evolutionary optimizer (inherit from this model)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int | None = Field(
        None, ge=1, description="None: fitness on the full objective; b: on a fresh mini-batch of b examples per generation"
    )


@torch.no_grad()
def evaluate_population(
    landscape: Landscape,
    budget: Budget,
    generator: torch.Generator,
    population: torch.Tensor,
    batch_size: int | None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Losses ``[R, P]`` of ``population`` ``[R, P, D]``, charging ``P * cost_per_individual``
    to the replicates selected by ``mask`` (all by default)."""
    t = budget.time(landscape.device, landscape.dtype) if landscape.drifting else None
    P = population.shape[1]
    if batch_size is None:
        losses = landscape.true_loss(population, t)
        budget.charge(evaluations=P * landscape.full_cost, mask=mask)
    else:
        batch = landscape.sample(batch_size, generator, t)
        losses = landscape.loss(population, batch, t)
        budget.charge(evaluations=P * batch_size, mask=mask)
    return losses
