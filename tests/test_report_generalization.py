"""The Generalization section: final gaps, early-stopping test accuracy and Student-t intervals on
hand-made run tables; no section for runs without held-out data."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from evosgd.report.document import Document
from evosgd.report.generalization import (
    final_heldout,
    generalization_section,
    summary_table,
)


def _runs(heldout: bool = True) -> pd.DataFrame:
    rows = []
    for label, base in (("a", 0.1), ("b", 0.5)):
        for rep in range(3):
            for k, cost in enumerate((0.0, 10.0, 20.0)):
                train = base / (k + 1) + 0.01 * rep
                val = [0.9, 0.3 + 0.01 * rep, 0.4][k]  # lowest validation loss at the middle record
                rows.append(dict(variant=label, run_id=f"id-{label}", replicate=rep, cost=cost, diverged=False,
                                 true_loss=train,
                                 validation_loss=val if heldout else np.nan,
                                 test_loss=(train + 0.2 + 0.1 * rep) if heldout else np.nan,
                                 train_accuracy=0.99 if heldout else np.nan,
                                 validation_accuracy=0.9 if heldout else np.nan,
                                 test_accuracy=([0.5, 0.8, 0.9][k] - 0.01 * rep) if heldout else np.nan))
    return pd.DataFrame(rows)


def test_final_gaps_and_accuracy_at_best_validation():
    f = final_heldout(_runs())
    assert len(f) == 6
    a0 = f[(f["variant"] == "a") & (f["replicate"] == 0)].iloc[0]
    assert np.isclose(a0["gap_loss"], 0.2)  # test - train at the last record
    assert np.isclose(a0["gap_accuracy"], 0.99 - 0.9)
    assert np.isclose(a0["test_accuracy_at_best_validation"], 0.8) and a0["cost_at_best_validation"] == 10.0


def test_summary_intervals_are_student_t():
    f = final_heldout(_runs())
    s = summary_table(f, ["a", "b"])
    gaps = f[f["variant"] == "b"]["gap_loss"].to_numpy()  # 0.2, 0.3, 0.4
    half = stats.t.ppf(0.975, 2) * gaps.std(ddof=1) / np.sqrt(3)
    row = s[s["variant"] == "b"].iloc[0]
    assert np.isclose(row["gap_loss"], 0.3) and np.isclose(row["gap_loss_hi"] - row["gap_loss"], half)


class _Writer:
    def __init__(self, tmp):
        self.fig = tmp
        self.tables = {}

    def table(self, name, raw, display, caption):
        self.tables[name] = raw
        return (name, display, caption)


def test_section_and_findings_only_with_heldout_data(tmp_path):
    doc = Document(title="t")
    w = _Writer(tmp_path)
    findings = generalization_section(doc, w, _runs(), {"a": (0, 0, 1), "b": (1, 0, 0)})
    assert [s.title for s in doc.sections] == ["Generalization"]
    assert "generalization" in w.tables
    assert findings[0].startswith("Best final test accuracy: a with 0.89")  # mean of 0.90, 0.89, 0.88
    doc2 = Document(title="t")
    assert generalization_section(doc2, w, _runs(heldout=False), {}) == [] and not doc2.sections
