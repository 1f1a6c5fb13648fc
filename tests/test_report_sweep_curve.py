"""Sweep panels with an analysis' predicted curve (issue #6: "a measure against the swept
parameter ..., with the fitted curve when an analysis supplies one").

The contract: comparison rows may carry ``sweep_key``/``sweep_measure``/``sweep_target``
(``evosgd.core.analysis_api``); the report overlays their prediction on the matching sweep panel,
says so in the caption and writes the overlaid points to ``tables/sweep_<key>_predicted.csv``.
"""

import json

import numpy as np
import pandas as pd
import pytest

from evosgd.core.analysis_api import (
    COMPARISON_COLUMNS,
    SWEEP_COLUMNS,
    SWEEP_MEASURES,
    comparison_rows,
    sweep_curves,
)
from evosgd.core.errors import ParameterError
from evosgd.report import build_report
from evosgd.report.build import SWEEP_PANEL_MEASURE, sweep_overlays

KEY = "optimizer.sgd.batch_size"
GRAD_COST = 3.0
S_MIN, B_CRIT = 10.0, 8.0
BATCHES = (2, 8, 40)  # S = S_min (1 + B_crit/B) = 50, 20, 12: whole steps, so records hit them exactly
TARGETS = [1e-1, 1e-2]


def steps(b):
    return S_MIN * (1 + B_CRIT / b)


def swept_runs(replicates=3, last_step=60):
    """SGD-like runs whose error falls a decade per 10 steps and equals the target 1e-2 exactly at
    step S(b) (10**0 = 1 exactly): the first record at or below 1e-2 is step S(b), on every
    replicate, so ERT in steps is S(b) and ERT in cost is grad_cost * b * S(b) (b examples a step)."""
    rows = []
    for b in BATCHES:
        s = steps(b)
        for r in range(replicates):
            for k in range(last_step + 1):
                err = 1e-2 * 10 ** ((s - k) / 10)
                cost = GRAD_COST * b * k
                rows.append(dict(scenario="sw", run_id=f"sgd-{b}", label="sgd", kind="sgd", config="{}",
                                 sweep=json.dumps({KEY: b}), replicate=r, seed=r, step=k, cost=cost, evaluations=0.0,
                                 gradient_evaluations=float(b * k), sim_time=cost, wall_time=0.0, env_time=cost,
                                 true_loss=err, error=err, best_so_far=err, distance=np.sqrt(err), optimal_loss=0.0,
                                 diverged=False, diverged_step=-1, **{f"p_{KEY}": float(b)}))
    return pd.DataFrame(rows)


def manifest(runs):
    return {"scenario": "sw", "description": "a swept test store", "seed": 1, "replicates": 3, "targets": TARGETS,
            "grad_cost": GRAD_COST, "clock": "cost", "landscape": {"kind": "sphere", "params": {}, "drift": None},
            "runs": {rid: {"label": "sgd", "status": "done"} for rid in runs["run_id"].unique()}}


def curve_analysis(target=1e-2, label="hw"):
    """An analysis predicting steps and cost to ``target`` at the swept batch sizes, plus one point
    (b = 1000) outside the swept range that the report must leave out."""
    rows = []
    for b in (*BATCHES, 1000):
        s = steps(b)
        rows.append(dict(quantity="steps to target", x_name="batch size", x=b, measured=s * 1.1, predicted=s,
                         predicted_low=0.9 * s, predicted_high=1.1 * s,
                         sweep_key=KEY, sweep_measure="steps_to_target", sweep_target=target))
        rows.append(dict(quantity="cost to target", x_name="batch size", x=b, measured=GRAD_COST * b * s * 1.1,
                         predicted=GRAD_COST * b * s, sweep_key=KEY, sweep_measure="cost_to_target", sweep_target=target))
    rows.append(dict(quantity="noise", x_name="batch size", x=1.0, measured=1.0, predicted=1.0))  # not a sweep curve
    return {"id": label, "label": label, "kind": "hardware_batch_scaling", "title": "Critical batch size",
            "notes": [], "confidence": 0.95, "params": {}, "comparison": comparison_rows(rows), "tables": {}}


BASE_CAPTION = f"Median final quality and expected cost / steps to the hardest target reached, vs {KEY}."


@pytest.fixture(scope="module")
def runs():
    return swept_runs()


def test_contract_columns():
    plain = comparison_rows([dict(quantity="q", x_name="b", x=1.0, measured=2.0)])
    assert list(plain.columns) == COMPARISON_COLUMNS  # a table without sweep columns is unchanged
    assert sweep_curves(plain).empty
    mixed = comparison_rows([dict(quantity="q", x_name="b", x=1.0, measured=2.0, sweep_key=KEY,
                                  sweep_measure="steps_to_target"),
                             dict(quantity="q", x_name="b", x=2.0, measured=2.0)])
    assert list(mixed.columns) == COMPARISON_COLUMNS + SWEEP_COLUMNS
    assert list(mixed["sweep_key"]) == [KEY, ""] and np.isnan(mixed["sweep_target"]).all()
    assert list(sweep_curves(mixed, KEY, "steps_to_target")["x"]) == [1.0]
    assert sweep_curves(mixed, KEY, "cost_to_target").empty and sweep_curves(mixed, "other.key").empty
    with pytest.raises(ValueError, match="sweep_measure"):
        comparison_rows([dict(quantity="q", x_name="b", x=1.0, measured=2.0, sweep_key=KEY, sweep_measure="speed")])
    with pytest.raises(ValueError, match="lacks its sweep_key"):
        comparison_rows([dict(quantity="q", x_name="b", x=1.0, measured=2.0, sweep_measure="final_quality")])
    # every panel of the report's sweep figure has a contract name, and every contract name a panel
    assert set(SWEEP_PANEL_MEASURE.values()) == set(SWEEP_MEASURES)


def test_report_overlays_the_curve(runs, tmp_path):
    index = build_report({"runs": runs, "manifest": manifest(runs), "analyses": [curve_analysis()]}, tmp_path)
    md = (tmp_path / "report.md").read_text()
    html = index.read_text()
    assert (tmp_path / "figures" / "sweep_batch_size.svg").stat().st_size > 0
    # the caption names the analysis and the measures it predicts
    caption = [ln for ln in md.splitlines() if ln.startswith("*" + BASE_CAPTION)]
    assert len(caption) == 1
    assert "analysis 'hw' (Critical batch size): cost to target (ERT), steps to target (ERT)" in caption[0]
    assert "Dashed lines" in caption[0] and "Dashed lines" in html
    assert "hw (predicted)" in (tmp_path / "figures" / "sweep_batch_size.svg").read_text()  # the legend entry
    # the overlaid prediction, within the swept range only (b = 1000 left out), at the panel's target
    pred = pd.read_csv(tmp_path / "tables" / "sweep_batch_size_predicted.csv")
    assert "sweep_batch_size_predicted.csv" in html
    st = pred[pred["measure"] == "steps_to_target"].set_index("x")
    assert sorted(st.index) == [2.0, 8.0, 40.0]
    np.testing.assert_allclose(st["predicted"], [steps(b) for b in st.index])
    np.testing.assert_allclose(st["predicted_low"], [0.9 * steps(b) for b in st.index])
    assert set(st["panel"]) == {"ert_steps"} and (st["sweep_target"] == 1e-2).all()
    co = pred[pred["measure"] == "cost_to_target"].set_index("x")
    np.testing.assert_allclose(co["predicted"], [GRAD_COST * b * steps(b) for b in co.index])
    # the swept runs' own measure, computed by the report, is exactly the constructed one ...
    sweep = pd.read_csv(tmp_path / "tables" / "sweep_batch_size.csv").set_index(f"p_{KEY}")
    np.testing.assert_allclose(sweep.loc[list(BATCHES), "ert_steps"], [steps(b) for b in BATCHES])
    np.testing.assert_allclose(sweep.loc[list(BATCHES), "ert"], [GRAD_COST * b * steps(b) for b in BATCHES])
    # ... so a finding computed from both says measured / predicted = 1 at the 3 batch sizes
    assert ("sgd: measured steps to target (ERT) / the curve predicted by analysis 'hw' = 1 to 1 at 3 of 3 values "
            "of batch_size (median 1).") in md
    # the analysis' own section is drawn as before
    assert (tmp_path / "figures" / "analysis_hw_0.svg").exists()


def test_store_without_curve_is_unchanged(runs, tmp_path):
    plain = curve_analysis()
    plain["comparison"] = plain["comparison"].drop(columns=SWEEP_COLUMNS)
    build_report({"runs": runs, "manifest": manifest(runs), "analyses": [plain]}, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert f"*{BASE_CAPTION}*" in md and "Dashed lines" not in md and "predicted by analysis" not in md
    assert not (tmp_path / "tables" / "sweep_batch_size_predicted.csv").exists()
    assert (tmp_path / "figures" / "sweep_batch_size.svg").stat().st_size > 0


def test_overlay_matches_key_and_target(runs):
    swept = np.array(BATCHES, dtype=float)
    colors = {"sgd": (0.1, 0.2, 0.3)}
    curves, skipped = sweep_overlays([curve_analysis()], f"p_{KEY}", swept, 1e-2, colors)
    assert set(curves["measure"]) == {"steps_to_target", "cost_to_target"} and not skipped
    assert all(tuple(c) == (0.1, 0.2, 0.3) for c in curves["color"])  # the swept optimizer's colour
    # another key: nothing; another target: nothing drawn, and the caption says why
    assert sweep_overlays([curve_analysis()], "p_optimizer.sgd.lr", swept, 1e-2, colors)[0].empty
    curves, skipped = sweep_overlays([curve_analysis(target=1e-3)], f"p_{KEY}", swept, 1e-2, colors)
    assert curves.empty and len(skipped) == 2
    assert "to 0.001, not to 0.01 (the hardest target the swept runs reached)" in skipped[0]
    # NaN target = any target
    any_t = curve_analysis()
    any_t["comparison"]["sweep_target"] = np.nan
    assert len(sweep_overlays([any_t], f"p_{KEY}", swept, 1e-2, colors)[0]) == 6


def test_hardware_analysis_supplies_the_fitted_curve():
    """The shipped analysis at a fixed lr and an absolute target: steps rows tagged for the sweep,
    cost rows = grad_cost x B x steps, predictions from the two-parameter fit of its own runs."""
    from evosgd.analysis.hardware import (
        HardwareParams,
        fit_critical_batch,
        measure_hardware,
    )
    from evosgd.core.seeding import make_generator
    from evosgd.landscapes import build_landscape

    land = build_landscape("linear_regression", {"n_examples": 256, "features": 5}, replicates=2, seed=1)
    one = build_landscape("linear_regression", {"n_examples": 256, "features": 5}, replicates=1, seed=1)
    err0 = float((land.true_loss(land.initial_point) - land.optimal_loss()).min())
    params = HardwareParams(batch_sizes=[1, 8, 64], timing_repeats=3, warmup=0, noise_population=256, max_steps=1500,
                            lr=0.02, target=0.05 * err0, sweep_key=KEY)
    res = measure_hardware(one, params, make_generator(0), train_landscape=land, grad_cost=2.0)
    c = res.comparison
    st = sweep_curves(c, KEY, "steps_to_target").set_index("x")
    co = sweep_curves(c, KEY, "cost_to_target").set_index("x")
    assert len(st) >= 2 and list(st.index) == list(co.index)
    assert (st["sweep_target"] == params.target).all()
    np.testing.assert_allclose(co["measured"], 2.0 * st.index * st["measured"])
    s_min, b_crit = fit_critical_batch(st.index.to_numpy(), st["measured"].to_numpy())
    np.testing.assert_allclose(st["predicted"], s_min * (1 + b_crit / st.index.to_numpy()), rtol=1e-9)
    np.testing.assert_allclose(co["predicted"], 2.0 * st.index * st["predicted"], rtol=1e-9)
    assert sweep_curves(c, KEY)["quantity"].isin(["steps to target", "cost to target"]).all()
    assert any("fitted to this analysis' own training runs" in n for n in res.notes)
    with pytest.raises(ParameterError):
        measure_hardware(one, params.model_copy(update={"target": None}), make_generator(0), train_landscape=land)


def test_categorical_sweep_gets_no_curve_and_no_error():
    """A sweep over strings (batch composition) cannot carry a predicted curve; it must not crash."""
    import numpy as np

    from evosgd.report.build import sweep_overlays

    curves, skipped = sweep_overlays([], "p_optimizer.sgd.batch_sampling", np.array(["random", "hard_negatives"], dtype=object), None, {})
    assert curves.empty and skipped == []
