"""The interface of ``[[analysis]]`` entries: measurements that are not optimizer runs.

An analysis is registered in ``evosgd.core.registry.ANALYSES`` with a pydantic params model and a
factory ``fn(params, *, context: AnalysisContext) -> AnalysisResult``.  The runner executes it
(with the scenario's seed, device, dtype and landscape) and stores the result; the report draws
every analysis the same way: the measured value with its confidence interval against the
theory's prediction (a line or band), over ``x``.

``AnalysisResult.comparison`` is a tidy table with these columns (``COMPARISON_COLUMNS``):

=================  ==========================================================================
quantity           what is measured (str), e.g. "Var of the mini-batch gradient"
series             a sub-group (str), e.g. "with replacement"; "" if none
x_name, x          the independent variable's name (str) and value (float), e.g. "batch size"
measured           the measurement (float)
measured_low/high  its confidence interval (float, NaN if none), at ``confidence``
predicted          the theory's prediction (float, NaN if none)
predicted_low/high a predicted band (float, NaN if none)
unit               unit of measured/predicted (str, may be "")
log_x, log_y       whether the figure should use log axes (bool)
=================  ==========================================================================

``tables`` holds any further tidy tables (name -> DataFrame) the report shows as CSV/tables;
``notes`` are sentences *computed from the data* (never pre-written claims), e.g.
"measured variance within its 95% CI of sigma^2/b at 9 of 10 batch sizes".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd
import torch

COMPARISON_COLUMNS = [
    "quantity", "series", "x_name", "x", "measured", "measured_low", "measured_high",
    "predicted", "predicted_low", "predicted_high", "unit", "log_x", "log_y",
]


@dataclass
class AnalysisContext:
    """What the runner hands an analysis."""

    scenario: str
    label: str
    seed: int
    replicates: int
    device: torch.device
    dtype: torch.dtype
    quick: bool = False
    #: build a landscape: make_landscape(kind=None, params=None, drift=None, replicates=None, seed=None)
    #: with None meaning "as in the scenario's [landscape] table"
    make_landscape: Callable[..., Any] | None = None
    #: grad_cost of the scenario's budget
    grad_cost: float = 3.0


@dataclass
class AnalysisResult:
    comparison: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    confidence: float = 0.95
    title: str = ""

    def __post_init__(self) -> None:
        missing = [c for c in COMPARISON_COLUMNS if c not in self.comparison.columns]
        for c in missing:  # optional columns default to "none"
            if c in ("series", "unit"):
                self.comparison[c] = ""
            elif c in ("log_x", "log_y"):
                self.comparison[c] = False
            elif c in ("quantity", "x_name", "x", "measured"):
                raise ValueError(f"analysis comparison table lacks required column {c!r}")
            else:
                self.comparison[c] = float("nan")
        self.comparison = self.comparison[COMPARISON_COLUMNS + [c for c in self.comparison.columns if c not in COMPARISON_COLUMNS]]


def comparison_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Build a comparison table from a list of row dicts (missing optional columns filled)."""
    return AnalysisResult(pd.DataFrame(rows)).comparison
