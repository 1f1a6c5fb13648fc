"""The fixed part of the scenario file schema: ``[scenario]`` (with its budget and record
schedule) and ``[sweep]``.  The open parts (``[landscape]``, ``[[optimizer]]``, ``[[analysis]]``)
are validated against the registries, where each component declares its own parameters."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evosgd.core.budget import CLOCK_UNITS

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]*$"
#: optimizer/analysis labels appear inside dotted keys (``optimizer.<label>.lr``): no dots
LABEL_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_+\-]*$"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class BudgetSpec(BaseModel):
    """When a replicate stops: the first limit it reaches (at least one is required)."""

    model_config = ConfigDict(extra="forbid")

    max_cost: float | None = Field(None, gt=0, description="sample-evaluations (gradients cost grad_cost each)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps / generations")
    max_sim_time: float | None = Field(None, gt=0, description="simulated wall-clock (distributed models)")

    @field_validator("max_cost", "max_sim_time")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _one_limit(self) -> BudgetSpec:
        if self.max_cost is None and self.max_steps is None and self.max_sim_time is None:
            raise ValueError("set at least one of max_cost, max_steps, max_sim_time")
        return self

    def axis(self) -> str:
        """The counter the record schedule is spaced in: cost, else steps, else sim_time."""
        if self.max_cost is not None:
            return "cost"
        if self.max_steps is not None:
            return "steps"
        return "sim_time"

    def axis_limit(self) -> float:
        return float({"cost": self.max_cost, "steps": self.max_steps, "sim_time": self.max_sim_time}[self.axis()])


class RecordSpec(BaseModel):
    """When the recorder samples a run (always also at the start and at the end)."""

    model_config = ConfigDict(extra="forbid")

    log_points: int | None = Field(
        None, ge=2, le=100_000,
        description="record at this many log-spaced points of the budget axis (default 40 when 'every' is unset)")
    every: float | None = Field(None, gt=0, description="record every this many units of the budget axis (cost by default)")

    @model_validator(mode="after")
    def _one_schedule(self) -> RecordSpec:
        if self.log_points is not None and self.every is not None:
            raise ValueError("set either log_points or every, not both")
        if self.log_points is None and self.every is None:
            self.log_points = 40
        return self


class ScenarioSpec(BaseModel):
    """The ``[scenario]`` table."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME_PATTERN, max_length=100,
                      description="results go to <out>/<name>/ (letters, digits, _ . + -)")
    description: str = Field("", description="one or two sentences for the report")
    replicates: int = Field(10, ge=1, le=1_000_000, description="independent runs vectorized together (paired across optimizers)")
    seed: int = Field(0, ge=0, lt=2**63, description="base seed: landscapes from (seed, replicate), optimizers from (seed, run id)")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto (CUDA if available), cpu, cuda or cuda:N")
    dtype: Literal["float32", "float64"] = Field("float32", description="floating-point type of every tensor")
    grad_cost: float = Field(3.0, ge=0, description="cost of one per-example gradient in sample-evaluations")
    clock: Literal[CLOCK_UNITS] = Field("cost", description="unit of the drift clock t")  # type: ignore[valid-type]
    targets: list[float] = Field(default_factory=list, description="loss-error targets for runtime-to-target measures")
    offline_error_from: float = Field(
        0.0, ge=0, description="drifting landscapes: the offline error averages the error from this env-time on (a burn-in "
        "that leaves out the first convergence; 0: the whole run)")
    budget: BudgetSpec = Field(..., description="stopping limits")
    record: RecordSpec = Field(default_factory=RecordSpec, description="record schedule")
    plugins: list[str] = Field(
        default_factory=list, description="plugins whose components this scenario names (a .py path relative to this "
        "file, or a module name): never loaded from here (a scenario file runs no code); named so that an error can "
        "say which --plugin is missing")

    @field_validator("targets")
    @classmethod
    def _positive_targets(cls, v: list[float]) -> list[float]:
        bad = [t for t in v if not (t > 0 and math.isfinite(t))]
        if bad:
            raise ValueError(f"targets must be finite numbers > 0, got {bad}")
        return sorted(set(v), reverse=True)


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["grid", "zip"] = Field("grid", description="grid: every combination; zip: the i-th values together")


def check_label(label: object) -> str | None:
    """None if ``label`` is a valid label, else the reason."""
    if not isinstance(label, str):
        return "must be a string"
    if not re.fullmatch(LABEL_PATTERN, label) or len(label) > 80:
        return "must be letters, digits, _ + - (no dots or spaces, at most 80 characters)"
    return None
