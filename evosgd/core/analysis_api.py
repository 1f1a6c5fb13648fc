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

Optional sweep columns (``SWEEP_COLUMNS``; additive: a table without them is unchanged).  A row
may say that its ``predicted`` value (and band) is a curve for one panel of the report's sweep
figure, so the report overlays it on the runs the scenario swept:

=================  ==========================================================================
sweep_key          the scenario's dotted sweep key (str) the prediction is a function of, e.g.
                   "optimizer.sgd.batch_size"; ``x`` is that key's value.  "" = not a sweep curve
sweep_measure      which measure of the swept runs it predicts (str), one of ``SWEEP_MEASURES``
sweep_target       the loss-error target of a runtime measure (float); NaN = any target.  The
                   report draws the curve only on a panel at this target (the hardest target the
                   swept runs reached), and says so in the caption when they differ
=================  ==========================================================================

A row can carry both roles: its measured/predicted pair is drawn in the analysis' own section as
always, and its ``predicted`` (with its band) is also drawn as a line on the sweep panel, within
the swept range of ``x``; the points of that panel are the swept runs' measure, computed by the
report (the row's ``measured`` is not drawn there).

``tables`` holds any further tidy tables (name -> DataFrame) the report shows as CSV/tables;
``notes`` are sentences *computed from the data* (never pre-written claims), e.g.
"measured variance within its 95% CI of sigma^2/b at 9 of 10 batch sizes".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

COMPARISON_COLUMNS = [
    "quantity", "series", "x_name", "x", "measured", "measured_low", "measured_high",
    "predicted", "predicted_low", "predicted_high", "unit", "log_x", "log_y",
]

#: optional columns naming the sweep panel a row's prediction belongs to (see the module docstring)
SWEEP_COLUMNS = ["sweep_key", "sweep_measure", "sweep_target"]

#: the measures the report draws against a swept parameter (one panel each), by the name a
#: comparison row gives in ``sweep_measure``; the value says what the report plots
SWEEP_MEASURES = {
    "final_quality": "median over replicates of the final loss error (true loss when the optimum is unknown)",
    "cost_to_target": "expected running time (ERT, COCO) in cost to the target: evaluations + grad_cost x gradient evaluations",
    "steps_to_target": "expected running time (ERT, COCO) in optimizer steps to the target",
}


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
        if any(c in self.comparison.columns for c in SWEEP_COLUMNS):
            self.comparison = _fill_sweep_columns(self.comparison)
        self.comparison = self.comparison[COMPARISON_COLUMNS + [c for c in self.comparison.columns if c not in COMPARISON_COLUMNS]]


def _fill_sweep_columns(comp: pd.DataFrame) -> pd.DataFrame:
    """Fill absent sweep columns ("" / NaN = not a sweep curve) and refuse unknown measures."""
    comp = comp.copy()
    for c in ("sweep_key", "sweep_measure"):
        comp[c] = comp[c].fillna("").astype(str) if c in comp.columns else ""
    comp["sweep_target"] = pd.to_numeric(comp["sweep_target"], errors="coerce") if "sweep_target" in comp.columns else float("nan")
    tagged = comp["sweep_key"] != ""
    bad = sorted(set(comp.loc[tagged, "sweep_measure"]) - set(SWEEP_MEASURES))
    if bad:
        raise ValueError(f"analysis comparison table: sweep_measure {bad} not among {sorted(SWEEP_MEASURES)}")
    if (comp.loc[~tagged, "sweep_measure"] != "").any():
        raise ValueError("analysis comparison table: a row with a sweep_measure lacks its sweep_key")
    return comp[[c for c in comp.columns if c not in SWEEP_COLUMNS] + SWEEP_COLUMNS]


def sweep_curves(comparison: pd.DataFrame, key: str | None = None, measure: str | None = None) -> pd.DataFrame:
    """The rows of a comparison table that predict a sweep measure (``sweep_key`` not empty),
    optionally those of one dotted ``key`` (without the run table's ``p_`` prefix) and ``measure``.
    A table without the sweep columns has none."""
    if comparison is None or "sweep_key" not in comparison.columns:
        return pd.DataFrame(columns=COMPARISON_COLUMNS + SWEEP_COLUMNS)
    c = comparison[comparison["sweep_key"].fillna("").astype(str) != ""]
    if key is not None:
        c = c[c["sweep_key"] == key]
    if measure is not None:
        c = c[c["sweep_measure"] == measure]
    return c


def comparison_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Build a comparison table from a list of row dicts (missing optional columns filled)."""
    return AnalysisResult(pd.DataFrame(rows)).comparison
