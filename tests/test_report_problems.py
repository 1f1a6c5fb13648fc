"""The problem is an axis of the study: faceted figures, within-problem statistics and findings,
COCO-style aggregation across problems (hand-computed), fixed-budget values (hand-computed),
the computed summary paragraph, figures stored once, no warnings."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evosgd.analysis.runtime import (
    budget_ladder,
    ecdf_area,
    ert_ratios,
    quality_at_budgets,
    runtime_ecdf,
    runtimes,
)
from evosgd.analysis.statistics import aggregate_ranks
from evosgd.report import build_report
from evosgd.report import figures as F
from evosgd.report.problems import add_problems_and_variants
from evosgd.report.theory import heavy_ball_floor, sgd_floor

# every report path here must run without a warning (matplotlib overflow, seaborn/matplotlib deprecations)
pytestmark = pytest.mark.filterwarnings("error")

SVG = "{http://www.w3.org/2000/svg}"


# ----------------------------------------------------------------------------- a synthetic study
def geometric_runs(label, kind, dim, rate, scale, *, replicates=4, steps=12, cost_per_step=10.0, family="sgd",
                   extra=None):
    """error_k = scale * rate^k * (1 + 0.1 r): a run per replicate r, every step recorded."""
    config = json.dumps({"label": label, "kind": family, "params": {},
                         "landscape": {"kind": kind, "params": {"dim": dim}, "drift": None}})
    rows = []
    for r in range(replicates):
        for k in range(steps + 1):
            err = scale * rate**k * (1 + 0.1 * r)
            rows.append(dict(scenario="suite", run_id=f"{label}-{kind}-{dim}", label=label, kind=family, config=config,
                             sweep="{}", replicate=r, seed=r, step=k, cost=k * cost_per_step, evaluations=0.0,
                             gradient_evaluations=0.0, sim_time=float(k), wall_time=0.0, env_time=k * cost_per_step,
                             true_loss=err, error=err, best_so_far=err, distance=math.sqrt(err), optimal_loss=0.0,
                             diverged=False, diverged_step=-1, **(extra or {})))
    return rows


def suite_store(sgd_rate_on_sphere=0.5):
    """Two problems of very different scales; on the sphere SGD is fast (unless the rate says
    otherwise), on rastrigin CMA-ES is."""
    rows = []
    rows += geometric_runs("sgd", "sphere", 5, sgd_rate_on_sphere, 1.0, extra={"m_lr": 0.1})
    rows += geometric_runs("cmaes", "sphere", 5, 0.7, 1.0, family="cmaes", extra={"m_sigma": 0.3})
    rows += geometric_runs("sgd", "rastrigin", 5, 0.9, 100.0, extra={"m_lr": 0.1})
    rows += geometric_runs("cmaes", "rastrigin", 5, 0.6, 100.0, family="cmaes", extra={"m_sigma": 0.3})
    runs = pd.DataFrame(rows)
    # a metric only one optimizer has (NaN for the other), shrinking as a step size does
    runs["m_sigma"] = np.where(runs["label"] == "cmaes", 0.3 * 0.9 ** runs["step"], np.nan)
    manifest = {"scenario": "suite", "description": "two problems", "seed": 1, "replicates": 4,
                "targets": [1e-1, 1e-3], "grad_cost": 3.0, "source_file": "scenarios/suite.toml", "quick": True,
                "landscape": {"kind": "sphere", "params": {"dim": 5}, "drift": None},
                "provenance": {"evosgd": "0.1.0", "command": "evosgd run scenarios/suite.toml --out /home/someone/r"},
                "runs": {rid: {"label": g["label"].iloc[0], "status": "done"} for rid, g in runs.groupby("run_id")}}
    return {"runs": runs, "manifest": manifest, "analyses": []}


@pytest.fixture(scope="module")
def suite_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    store = suite_store()
    return build_report(store, out), store


def test_problems_and_variants_are_separate():
    runs, variants, _ = add_problems_and_variants(suite_store()["runs"])
    assert list(dict.fromkeys(runs["problem"])) == ["sphere", "rastrigin"]
    assert sorted(variants["variant"]) == ["cmaes", "sgd"]  # one variant per optimizer, not one per landscape


def test_one_facet_per_problem_and_one_shared_legend_off_the_data(monkeypatch, tmp_path):
    runs, _, _ = add_problems_and_variants(suite_store()["runs"])
    figs = {}
    monkeypatch.setattr(F, "_save", lambda fig, folder, name: figs.setdefault(name, fig))
    order = ["sgd", "cmaes"]
    colors = F.palette(order)
    assert F.convergence(runs, "cost", "error", colors, tmp_path, "conv", xlabel="cost", ylabel="error",
                         facet="problem", order=order, facet_order=["sphere", "rastrigin"])
    fig = figs["conv"]
    axes = [a for a in fig.axes if a.has_data()]
    assert [a.get_title() for a in axes] == ["sphere", "rastrigin"]
    assert all(a.get_yscale() == "log" for a in axes)  # both span decades
    assert all(a.get_legend() is None for a in axes) and len(fig.legends) == 1
    leg = fig.legends[0]
    assert [t.get_text() for t in leg.get_texts()] == order  # one entry per optimizer, scenario order
    fig.canvas.draw()
    lb = leg.get_window_extent()
    assert not any(lb.overlaps(a.get_window_extent()) for a in axes)  # outside every panel
    # a metric is drawn only for the optimizers that report it
    assert F.convergence(runs, "cost", "m_sigma", colors, tmp_path, "sig", xlabel="cost", ylabel="sigma",
                         facet="problem", order=order)
    assert [t.get_text() for t in figs["sig"].legends[0].get_texts()] == ["cmaes"]


def _findings(md: str) -> list[str]:
    return [ln[2:] for ln in md.split("## Findings")[1].split("\n## ")[0].splitlines() if ln.startswith("- ")]


def test_suite_report_compares_within_problems(suite_report):
    index, _ = suite_report
    out = index.parent
    md = (out / "report.md").read_text()
    # facets: one axes per problem in the final-quality figure
    root = ET.parse(out / "figures" / "final_quality.svg").getroot()
    axes = [g for g in root.iter(f"{SVG}g") if re.fullmatch(r"axes_\d+", g.get("id", ""))]
    assert len(axes) == 2
    # every finding that compares two optimizers names its problem; tests never pair two problems
    pairwise = [f for f in _findings(md) if " vs the runner-up " in f or "times lower ERT than" in f]
    assert pairwise and all(f.startswith(("On sphere:", "On rastrigin:")) for f in pairwise)
    tests = pd.read_csv(out / "tables" / "tests_final.csv")
    assert set(tests["problem"]) == {"sphere", "rastrigin"} and len(tests) == 2
    assert "On sphere: Lowest final loss error: sgd" in md and "On rastrigin: Lowest final loss error: cmaes" in md
    # COCO-style aggregation: the ERT ratios are per problem, the best is 1 on each
    er = pd.read_csv(out / "tables" / "ert_ratios.csv")
    best = er[np.isfinite(er["ratio"])].groupby(["problem", "target"])["ratio"].min()
    assert np.allclose(best.to_numpy(), 1.0)
    agg = pd.read_csv(out / "tables" / "rank_aggregation.csv")
    assert sorted(agg["wins"]) == [1.0, 1.0] and (agg["mean_rank"] == 1.5).all()
    # no machine path in the provenance (the command named /home/someone/r)
    html = index.read_text()
    assert "/home/someone" not in html and "/home/someone" not in md and ".../r" in md


def test_figures_stored_once(suite_report):
    index, _ = suite_report
    figs = sorted((index.parent / "figures").iterdir())
    assert figs and {f.suffix for f in figs} == {".svg"}
    html = index.read_text()
    assert "base64" not in html and html.count("<svg") == len(figs)
    md = (index.parent / "report.md").read_text()
    assert all(f"(figures/{f.name})" in md for f in figs)


# ----------------------------------------------------------------------------- hand-computed aggregation
@pytest.fixture
def rt_table():
    """Problem A: one optimizer x, 2 runs, 1 target; problem B: x with 1 run, 2 targets; y on both.

    runtimes (cost of the first hit):
      A: x r0 -> 10, x r1 -> never (spent 100);  y r0 -> 100, y r1 -> 1
      B: x r0 -> t1: 10, t2: never (spent 50);  y r0 -> t1: 50, t2: 50
    """
    rows = []

    def run(p, g, rep, costs, errs):
        for c, e in zip(costs, errs):
            rows.append(dict(problem=p, variant=g, run_id=f"{p}{g}", replicate=rep, cost=float(c), error=float(e)))

    run("A", "x", 0, [1, 10, 100], [5, 0.5, 0.5])
    run("A", "x", 1, [1, 10, 100], [5, 5, 5])
    run("A", "y", 0, [1, 10, 100], [5, 5, 0.5])
    run("A", "y", 1, [1, 10, 100], [0.5, 0.5, 0.5])
    run("B", "x", 0, [1, 10, 50], [5, 0.5, 0.5])
    run("B", "y", 0, [1, 10, 50], [5, 5, 1e-3])
    df = pd.DataFrame(rows)
    targets = {"A": [1.0], "B": [1.0, 1e-2]}
    rt = pd.concat([runtimes(df[df.problem == p], t, by=("problem", "variant"), measure="error")
                    for p, t in targets.items()], ignore_index=True)
    return df, rt


def test_ecdf_weights_problems_equally(rt_table):
    _, rt = rt_table
    e = runtime_ecdf(rt, [10.0, 100.0], by=("variant",), weight_by="problem").set_index(["variant", "budget"])
    # x at 10: A 1/2 pairs, B 1/2 pairs -> (0.5 + 0.5) / 2; pooled it would be 2/4 as well, so check y:
    assert e.loc[("x", 10.0), "fraction"] == pytest.approx(0.5)
    # y at 10: A 1/2 (r1), B 0/2 -> 0.25 (pooled over the 4 pairs it is also 1/4); at 100: A 2/2, B 2/2 -> 1
    assert e.loc[("y", 10.0), "fraction"] == pytest.approx(0.25)
    assert e.loc[("y", 100.0), "fraction"] == pytest.approx(1.0)
    # x at 100: A 1/2, B 1/2 -> 0.5.  Unweighted pooling differs once the problems differ in size:
    pooled = runtime_ecdf(rt[~((rt.problem == "A") & (rt.replicate == 1))], [10.0], by=("variant",), weight_by=None)
    weighted = runtime_ecdf(rt[~((rt.problem == "A") & (rt.replicate == 1))], [10.0], by=("variant",),
                            weight_by="problem")
    # without A's run 1, x: A 1/1, B 1/2 -> weighted (1 + 0.5) / 2 = 0.75, pooled 2/3
    assert weighted.set_index("variant").loc["x", "fraction"] == pytest.approx(0.75)
    assert pooled.set_index("variant").loc["x", "fraction"] == pytest.approx(2 / 3)


def test_ecdf_area_by_hand(rt_table):
    _, rt = rt_table
    auc = ecdf_area(rt, 1.0, 100.0, by=("variant",), weight_by="problem").set_index("variant")["auc"]
    # log budget from 1 to 100 (span ln 100); a pair hit at T contributes (ln 100 - ln T) / ln 100:
    # T = 1 -> 1, T = 10 -> 0.5, T = 50 -> 1 - log10(50)/2, T = 100 -> 0, never -> 0
    c50 = 1 - math.log10(50) / 2
    x = ((0.5 + 0) / 2 + (0.5 + 0) / 2) / 2
    y = ((0 + 1) / 2 + (c50 + c50) / 2) / 2
    assert auc["x"] == pytest.approx(x) and auc["y"] == pytest.approx(y)


def test_ert_ratios_by_hand(rt_table):
    from evosgd.analysis.runtime import expected_running_time

    _, rt = rt_table
    ert = expected_running_time(rt, by=("problem", "variant"))
    er = ert_ratios(ert, group="variant", problem="problem").set_index(["problem", "variant", "target"])
    # A, target 1: x = (10 + 100) / 1 = 110, y = (100 + 1) / 2 = 50.5 -> ratios 110 / 50.5 and 1
    assert er.loc[("A", "x", 1.0), "ert"] == pytest.approx(110.0)
    assert er.loc[("A", "x", 1.0), "ratio"] == pytest.approx(110 / 50.5)
    assert er.loc[("A", "y", 1.0), "ratio"] == pytest.approx(1.0)
    # B, target 1e-2: only y (50) -> x never reached it: inf
    assert er.loc[("B", "y", 1e-2), "ratio"] == 1.0 and math.isinf(er.loc[("B", "x", 1e-2), "ratio"])


def test_rank_aggregation_by_hand():
    per = pd.DataFrame({"problem": ["A"] * 3 + ["B"] * 3 + ["C"] * 3,
                        "variant": ["a", "b", "c"] * 3,
                        "median": [1, 2, 3, 2, 1, 3, 1, 3, 2]})
    t, info = aggregate_ranks(per, group="variant", problem="problem", score="median")
    t = t.set_index("variant")
    # ranks: A (1, 2, 3), B (2, 1, 3), C (1, 3, 2) -> a 4/3, b 2, c 8/3; wins a 2, b 1
    assert t.loc["a", "mean_rank"] == pytest.approx(4 / 3) and t.loc["c", "mean_rank"] == pytest.approx(8 / 3)
    assert t.loc["a", "wins"] == 2 and t.loc["b", "wins"] == 1 and t.loc["c", "wins"] == 0
    assert t.loc["a", "rank"] == 1 and info["test"] == "friedman"
    # Friedman on these ranks (k = 3, n = 3): chi2 = 12 n / (k (k+1)) sum (R_j - (k+1)/2)^2 = 3 * (1/9 + 0 + 4/9) ... = 2
    assert info["statistic"] == pytest.approx(12 * 3 / (3 * 4) * ((4 / 3 - 2) ** 2 + 0 + (8 / 3 - 2) ** 2))


def test_fixed_budget_values_by_hand(rt_table):
    df, _ = rt_table
    v = quality_at_budgets(df, [5.0, 10.0, 100.0], by=("problem", "variant"), measure="error")
    v = v.set_index(["problem", "variant", "replicate", "budget"])["value"]
    # the value at the last record with cost <= budget
    assert v[("A", "x", 0, 5.0)] == 5 and v[("A", "x", 0, 10.0)] == 0.5 and v[("A", "y", 0, 100.0)] == 0.5
    assert v[("B", "y", 0, 10.0)] == 5 and v[("B", "y", 0, 100.0)] == pytest.approx(1e-3)
    # a run diverged by the budget counts as +inf
    d = df.assign(diverged=(df["cost"] >= 10) & (df["variant"] == "y"))
    dv = quality_at_budgets(d, [5.0, 10.0], by=("problem", "variant"), measure="error")
    dv = dv.set_index(["problem", "variant", "replicate", "budget"])["value"]
    assert dv[("A", "y", 1, 5.0)] == 0.5 and math.isinf(dv[("A", "y", 1, 10.0)])
    assert budget_ladder(1.0, 1e4) == [100.0, 1e3, 1e4] and budget_ladder(500.0, 1e4) == [1e3, 1e4]


# ----------------------------------------------------------------------------- summary and theory
def _summary(index: Path) -> str:
    md = index.with_name("report.md").read_text()
    return md.split("## Summary")[1].split("\n## ")[0].strip()


def test_summary_is_computed_from_the_data(suite_report, tmp_path):
    index, _ = suite_report
    s = _summary(index)
    # one problem each: gradient leads on the sphere, evolution on rastrigin
    assert "gradient methods lead on 1" in s and "evolutionary methods lead on 1" in s
    assert "sphere: sgd" in s and "rastrigin: cmaes" in s
    # make SGD slow on the sphere: the summary changes with the data
    slow = build_report(suite_store(sgd_rate_on_sphere=0.95), tmp_path / "slow")
    s2 = _summary(slow)
    assert s2 != s and "evolutionary methods lead on 2" in s2 and "sphere: cmaes" in s2
    # a single problem: which family wins, by how much, with the test
    store = suite_store()
    store["runs"] = store["runs"][store["runs"]["config"].str.contains('"sphere"')]
    one = build_report(store, tmp_path / "one")
    s3 = _summary(one)
    assert s3.startswith("At a budget of 120 sample-evaluations per run (4 replicates), on sphere, the gradient "
                         "methods end lowest, not significantly: sgd ends at a median final loss error of")
    assert "Wilcoxon signed-rank p (Holm) = 0.12, effect A = 1 over 4 replicate pairs: not significant" in s3


def test_noise_floor_matches_the_lyapunov_reference():
    """The report's floor equals tr(H Sigma) / 2 with Sigma from the sgd_stationary analysis'
    own Lyapunov solver (an independent implementation), and the closed form for beta = 0."""
    from evosgd.analysis.sgd_stationary import lyapunov_stationary_cov

    lam = 100.0 ** (np.arange(10) / 9)
    sigma, lr, b = 0.1, 0.004, 8
    pred, rho = heavy_ball_floor(lam, sigma, lr, b)
    H = np.diag(2 * lam)
    cov = lyapunov_stationary_cov(H, sigma**2 * H @ H, lr, b)
    assert pred == pytest.approx(0.5 * np.trace(H @ cov), rel=1e-9)
    assert pred == pytest.approx(sgd_floor(lam, sigma, lr, b), rel=1e-9)
    assert rho == pytest.approx(1 - 2 * lr * lam.min())
    # momentum: at small lr the floor is eta_eff tr(C) / (4 b) with eta_eff = lr / (1 - beta), C = sigma^2 H^2
    # (first order in eta_eff lambda_max = 0.1: the correction is below 5%)
    hb, _ = heavy_ball_floor(lam, sigma, 0.0002, b, beta=0.8)
    assert hb == pytest.approx(0.001 * np.trace(sigma**2 * H @ H) / (4 * b), rel=0.05)
    assert math.isinf(heavy_ball_floor(lam, sigma, 0.03, b)[0])  # lr > 2 / h_max = 0.01: unstable


@pytest.mark.slow
def test_multimodal_scenario_report_is_faceted(tmp_path):
    """scenarios/evo_multimodal.toml --quick sweeps three landscapes: one facet per landscape, one
    legend entry per optimizer, no finding or test across landscapes."""
    from evosgd.run import execute_scenario, load_store
    from evosgd.scenario import load_scenario

    path = Path(__file__).resolve().parent.parent / "scenarios" / "evo_multimodal.toml"
    sc = load_scenario(path, quick=True)
    execute_scenario(sc, tmp_path / "results", workers=1, progress=False, device="cpu")
    index = build_report(load_store(tmp_path / "results" / sc.name), tmp_path / "report")
    out = index.parent
    landscapes = ["rastrigin", "ackley", "schwefel"]
    optimizers = ["ga", "csa-es", "cmaes", "cmaes-ipop", "wright-fisher", "openai-es", "sgd", "sgd-restarts"]
    for name in ("final_quality", "convergence_cost", "ert", "runtime_ecdf_problems"):
        root = ET.parse(out / "figures" / f"{name}.svg").getroot()
        axes = [g for g in root.iter(f"{SVG}g") if re.fullmatch(r"axes_\d+", g.get("id", ""))]
        assert len(axes) == 3, name
        titles = ["".join(t.itertext()) for g in axes for t in g.iter(f"{SVG}text")]
        assert all(any(la == t.strip() for t in titles) for la in landscapes), name
    root = ET.parse(out / "figures" / "convergence_cost.svg").getroot()
    legends = [g for g in root.iter(f"{SVG}g") if re.fullmatch(r"legend_\d+", g.get("id", ""))]
    assert len(legends) == 1
    assert ["".join(t.itertext()).strip() for t in legends[0].iter(f"{SVG}text")] == optimizers
    final = pd.read_csv(out / "tables" / "final_quality.csv")
    assert sorted(set(final["variant"])) == sorted(optimizers)  # no "[kind=...]" variants
    tests = pd.read_csv(out / "tables" / "tests_final.csv")
    assert set(tests["problem"]) == set(landscapes)
    md = (out / "report.md").read_text()
    for f in _findings(md):
        named = [o for o in optimizers if re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", f)]
        if len(named) >= 2 and not f.startswith("Across the"):
            assert f.startswith(tuple(f"On {la}:" for la in landscapes)), f
        assert "kind=" not in f, f


def test_overflowed_values_draw_without_warnings(monkeypatch, tmp_path):
    """A run whose error reached float max (a diverging run recorded just before inf) is listed,
    not drawn: matplotlib's limit arithmetic would overflow (the warning this test forbids)."""
    rows = geometric_runs("sgd", "sphere", 5, 0.5, 1.0) + geometric_runs("wild", "sphere", 5, 1e10, 1.0, steps=6)
    runs = pd.DataFrame(rows)
    runs.loc[runs["error"] > 1e45, ["error", "true_loss"]] = 1.7e308
    runs, _, _ = add_problems_and_variants(runs)
    colors = F.palette(["sgd", "wild"])
    assert F.convergence(runs, "cost", "error", colors, tmp_path, "conv", xlabel="cost", ylabel="error",
                         order=["sgd", "wild"])
    finals = runs.sort_values("step").groupby(["variant", "run_id", "replicate"]).tail(1)
    finals = finals.assign(value=finals["error"], diverged=False)
    assert F.final_quality(finals, colors, tmp_path, "final", ylabel="error", order=["sgd", "wild"])


def test_analyses_only_summary_counts_predictions_inside_the_interval(tmp_path):
    comp = pd.DataFrame({"quantity": "v", "series": "", "x_name": "b", "x": [1.0, 8.0, 64.0],
                         "measured": [1.0, 0.13, 0.02], "measured_low": [0.9, 0.11, 0.015],
                         "measured_high": [1.1, 0.15, 0.025], "predicted": [1.0, 0.2, 1 / 64],
                         "predicted_low": np.nan, "predicted_high": np.nan, "unit": "", "log_x": True, "log_y": True})
    analysis = {"id": "c", "title": "Mini-batch variance", "notes": ["a note"], "confidence": 0.95, "comparison": comp}
    index = build_report({"runs": pd.DataFrame(), "manifest": {"scenario": "a"}, "analyses": [analysis]}, tmp_path)
    # 1.0 in [0.9, 1.1], 0.2 not in [0.11, 0.15], 0.0156 in [0.015, 0.025]
    assert "Mini-batch variance: 2 of 3 predictions lie inside the measured 95% interval (a note)." in _summary(index)


def test_metric_figures_follow_the_declarations(suite_report, monkeypatch):
    from evosgd.core.registry import OPTIMIZERS
    from evosgd.report.metrics import metric_label

    index, _ = suite_report
    root = ET.parse(index.parent / "figures" / "metric_sigma.svg").getroot()
    texts = ["".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")]
    assert "step size σ" in texts and "sigma" not in texts  # the declared label, not the column name
    legend = [g for g in root.iter(f"{SVG}g") if re.fullmatch(r"legend_\d+", g.get("id", ""))][0]
    assert ["".join(t.itertext()).strip() for t in legend.iter(f"{SVG}text")] == ["cmaes"]  # only who reports it
    # a component's own declaration (a METRICS class attribute, read through the registry) wins
    assert metric_label("grad_norm") == "mini-batch gradient norm ‖g‖"
    monkeypatch.setattr(OPTIMIZERS.get("sgd").factory, "METRICS", {"grad_norm": ("raw gradient norm", "a.u.")},
                        raising=False)
    assert metric_label("grad_norm", ["sgd"]) == "raw gradient norm [a.u.]"
