"""Test-only components for the runner tests (no tests here).

Registered under names starting with ``test_`` so they never clash with real ones.  The runner's
worker processes import this module by name (the module of the factory of a component used by a
run), which is how user plugins reach spawned workers too.
"""

from __future__ import annotations

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.core.analysis_api import AnalysisResult, comparison_rows
from evosgd.core.optimizer import Optimizer
from evosgd.core.registry import ANALYSES, OPTIMIZERS


def _register(registry, name, params, description):
    def deco(cls):
        if name not in registry:  # this module may be imported under two names (pytest, workers)
            registry.register(name, params, description)(cls)
        return cls

    return deco


class RandomSearchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: int = Field(4, ge=1, description="candidates per step")
    sigma: float = Field(0.5, gt=0, description="Gaussian radius around the incumbent")


@_register(OPTIMIZERS, "test_random_search", RandomSearchParams, "test-only: local random search")
class RandomSearch(Optimizer):
    """Each step: ``samples`` Gaussian candidates around the incumbent, keep the best (elitist).
    Costs ``samples * full_cost`` per step."""

    def __init__(self, params, *, landscape, budget, generator):
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        self.x = landscape.initial_point.clone()
        with torch.no_grad():
            self.fx = landscape.true_loss(self.x)

    @torch.no_grad()
    def step(self):
        active = self.active
        R, D, S = self.replicates, self.landscape.dim, self.params.samples
        cand = self.x.unsqueeze(1) + self.params.sigma * torch.randn(
            R, S, D, generator=self.generator, device=self.device, dtype=self.dtype)
        f = self.landscape.true_loss(cand)
        best, idx = f.min(dim=1)
        better = active & (best < self.fx)
        self.x = torch.where(better.unsqueeze(1), cand[torch.arange(R), idx], self.x)
        self.fx = torch.where(better, best, self.fx)
        self.budget.charge(evaluations=S * self.landscape.full_cost, mask=active)
        self.budget.step(active)

    def recommend(self):
        return self.x

    def metrics(self):
        return {"sigma": torch.full((self.replicates,), self.params.sigma)}


class DivergingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    growth: float = Field(1e6, gt=1, description="theta is multiplied by this every step")
    replicates_diverging: int = Field(1, ge=0, description="how many of the first replicates blow up")


@_register(OPTIMIZERS, "test_diverging", DivergingParams, "test-only: blows up the first k replicates")
class Diverging(Optimizer):
    def __init__(self, params, *, landscape, budget, generator):
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        self.x = landscape.initial_point.clone()

    @torch.no_grad()
    def step(self):
        active = self.active
        k = self.params.replicates_diverging
        factor = torch.ones(self.replicates, 1, dtype=self.dtype)
        factor[:k] = self.params.growth
        new = self.x * factor
        loss = self.landscape.true_loss(new)
        diverged = self.check_divergence(loss)
        ok = active & ~diverged
        self.x = torch.where(ok.unsqueeze(1), new, self.x)
        self.budget.charge(evaluations=1, mask=ok)
        self.budget.step(ok)

    def recommend(self):
        return self.x


class FailingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fail_at: int = Field(2, ge=0, description="step at which it raises")
    exception: str = Field("runtime", description="runtime | interrupt")


@_register(OPTIMIZERS, "test_failing", FailingParams, "test-only: raises at a given step")
class Failing(Optimizer):
    def __init__(self, params, *, landscape, budget, generator):
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        self.x = landscape.initial_point.clone()
        self.n = 0

    def step(self):
        self.n += 1
        if self.n >= self.params.fail_at:
            if self.params.exception == "interrupt":
                raise KeyboardInterrupt
            raise RuntimeError("deliberate failure for the test")
        self.budget.charge(evaluations=1)
        self.budget.step()

    def recommend(self):
        return self.x


class StallingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@_register(OPTIMIZERS, "test_stalling", StallingParams, "test-only: never spends budget")
class Stalling(Optimizer):
    def step(self):
        pass

    def recommend(self):
        return self.landscape.initial_point


class TinyAnalysisParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: int = Field(100, ge=1, description="Monte Carlo samples")
    fail: bool = Field(False, description="raise instead of measuring")


@_register(ANALYSES, "test_tiny_analysis", TinyAnalysisParams, "test-only: mean of the true loss at the start")
def tiny_analysis(params, *, context):
    if params.fail:
        raise ValueError("deliberate analysis failure")
    land = context.make_landscape()
    g = torch.Generator().manual_seed(context.seed)
    x = land.initial_point.unsqueeze(1) + torch.randn(params.samples, *land.initial_point.shape, generator=g).transpose(0, 1)
    values = land.true_loss(x)  # [R, samples]
    rows = [{"quantity": "true loss", "x_name": "replicate", "x": float(r), "measured": float(values[r].mean()),
             "predicted": float("nan")} for r in range(values.shape[0])]
    return AnalysisResult(comparison_rows(rows), tables={"raw": pd.DataFrame({"v": values.flatten().numpy()})},
                          notes=[f"{params.samples} samples on {land.replicates} replicates"],
                          title="tiny test analysis")


class PickyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at_most_dim: int = Field(1, ge=1, description="must not exceed the landscape's dimension")


@_register(OPTIMIZERS, "test_picky", PickyParams, "test-only: its constructor checks a parameter against the landscape")
class Picky(RandomSearch):
    def __init__(self, params, *, landscape, budget, generator):
        from evosgd.core.errors import ParameterError

        if params.at_most_dim > landscape.dim:
            raise ParameterError("at_most_dim", params.at_most_dim, f"an integer <= dim = {landscape.dim}",
                                 where="optimizer 'test_picky'")
        super().__init__(RandomSearchParams(), landscape=landscape, budget=budget, generator=generator)
