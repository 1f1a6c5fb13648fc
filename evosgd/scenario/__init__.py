"""Scenario files: schema, validation with clear errors, sweep expansion (see ``loader``)."""

from evosgd.scenario.loader import (
    ComponentSpec,
    LandscapeSpec,
    RunSpec,
    Scenario,
    load_scenario,
    validate_file,
)
from evosgd.scenario.schema import BudgetSpec, RecordSpec, ScenarioSpec

__all__ = ["BudgetSpec", "ComponentSpec", "LandscapeSpec", "RecordSpec", "RunSpec", "Scenario", "ScenarioSpec",
           "load_scenario", "validate_file"]
