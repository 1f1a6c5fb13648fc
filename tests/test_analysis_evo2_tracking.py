"""Tracking lag (issue #8, question 7): the closed forms of evosgd.analysis.tracking_lag against
exact recursions, numerical integration and known constants, and the registered analysis on small
exact cases."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from scipy import integrate

from evosgd.analysis import tracking_lag as tl
from evosgd.analysis.evo_common import Quadratic
from evosgd.core.analysis_api import AnalysisContext
from evosgd.core.registry import ANALYSES


def _context(seed=3):
    return AnalysisContext(scenario="t", label="lag", seed=seed, replicates=1, device=torch.device("cpu"), dtype=torch.float64)


def test_gd_lag_is_the_fixed_point_of_the_recursion():
    a = np.array([1.0, 3.0, 10.0])
    u = np.array([0.6, 0.0, 0.8])
    lr, v = 0.15, 0.02
    d = np.zeros(3)
    for _ in range(2000):  # (1 - 0.15)^2000 ~ 1e-141: converged to machine precision
        d = (1 - lr * a) * d + v * u
    np.testing.assert_allclose(tl.gd_lag_vector(v, lr, a, u), d, rtol=1e-12)
    # one curvature: v / (eta h), and the transient d_k = d* (1 - (1 - eta h)^k) step by step
    e = 0.0
    for k in range(1, 30):
        e = (1 - lr * 2.0) * e + v
        assert tl.gd_lag_transient(v, lr, 2.0, k) == pytest.approx(e, rel=1e-12)
    assert tl.gd_lag_vector(v, lr, [2.0], [1.0])[0] == pytest.approx(v / (lr * 2.0), rel=1e-15)
    with pytest.raises(ValueError):
        tl.gd_lag_vector(v, 0.3, a, u)  # lr * 10 = 3 > 2: unstable


def test_simulated_gradient_descent_reaches_the_predicted_lag():
    quad = Quadratic(3, 5.0, dtype=torch.float64)
    u = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) / math.sqrt(3)
    lags = tl.simulate_gd(quad, u, 0.05, 0.2, 400, 2, torch.Generator().manual_seed(0))
    pred = tl.gd_lag_vector(0.05, 0.2, quad.curvatures_np, u.numpy())
    # (1 - 0.2)^400 ~ 1e-39: the last lag is the fixed point up to float64 rounding
    np.testing.assert_allclose(lags[-1, 0].numpy(), pred, rtol=1e-10)


def test_lande_contraction_against_the_exact_gaussian_integral():
    # mean after selection of N(m, G) under w = exp(-beta a (z - theta)^2 / 2), by quadrature
    for G, beta, a, m in ((0.1, 1.0, 3.0, 0.7), (2.0, 0.5, 1.0, -1.3), (0.01, 4.0, 10.0, 0.2)):
        dens = lambda z, m=m, G=G, beta=beta, a=a: math.exp(-(z - m) ** 2 / (2 * G) - beta * a * z * z / 2)
        lim = (m - 12 * math.sqrt(G), m + 12 * math.sqrt(G))
        z0 = integrate.quad(dens, *lim, epsabs=0, epsrel=1e-13)[0]
        z1 = integrate.quad(lambda z, dens=dens: z * dens(z), *lim, epsabs=0, epsrel=1e-13)[0]
        kappa = float(tl.lande_contraction(G, beta, a))
        assert z1 / z0 - m == pytest.approx(-kappa * m, rel=1e-9)
    # weak selection: kappa -> G beta a (Lande's equation as a gradient step with lr G beta)
    assert float(tl.lande_contraction(1e-6, 1.0, 2.0)) == pytest.approx(2e-6, rel=1e-5)
    np.testing.assert_allclose(tl.wf_lag_vector(0.1, 0.2, 1.0, np.array([1.0, 4.0]), np.array([1.0, 0.0])),
                               [0.1 * 1.2 / 0.2, 0.0])


def test_stationary_variance_solves_the_selection_drift_mutation_recursion():
    a = np.array([1.0, 10.0])
    for N in (20, 500, math.inf):
        G = np.full(2, 1.0)
        c = 1.0 if math.isinf(N) else 1 - 1 / N
        for _ in range(20000):
            G = c * G / (1 + G * 2.0 * a) + 0.003
        np.testing.assert_allclose(tl.wf_stationary_variance(0.003, 2.0, a, N), G, rtol=1e-10)


def test_expected_maximum_of_normals_known_values():
    assert tl.expected_max_normal(1) == pytest.approx(0.0, abs=1e-12)
    assert tl.expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-10)
    assert tl.expected_max_normal(3) == pytest.approx(1.5 / math.sqrt(math.pi), rel=1e-10)
    assert tl.expected_max_normal(10) == pytest.approx(1.538752, abs=1e-6)  # Beyer 2001, Table 3.1 (c_{1,10})
    c = tl.expected_max_normal(10)
    assert tl.es_steady_distance(0.0, 0.1, 10, 20) == pytest.approx(20 * 0.1 / (2 * c))
    assert tl.es_steady_lag(0.0, 0.1, 10, 20) == 0.0
    assert math.isinf(tl.es_steady_distance(0.1 * c, 0.1, 10, 20))
    assert tl.es_steady_distance(0.05 * c, 0.1, 10, 20) == pytest.approx(20 * 0.1 / (2 * c * 0.75))


def test_es_progress_on_a_linear_slope_is_c_sigma():
    # n = 400 x 64 iid maxima of 5 normals; Var(max of 5) = 0.447 (< 1), so the mean's sd is
    # sigma sqrt(0.447 / 25600) = 0.5 * 0.0042; 4 sd = 0.0084 absolute
    prog = tl.es_linear_progress(3, 0.5, 5, 400, 64, torch.Generator().manual_seed(1), torch.device("cpu"), torch.float64)
    assert float(prog.mean()) == pytest.approx(0.5 * tl.expected_max_normal(5), abs=4 * 0.5 * math.sqrt(0.447 / 25600))


def test_registered_analysis_small_case():
    entry = ANALYSES.get("tracking_lag")
    p = entry.params.model_validate(dict(dim=2, condition=4.0, speeds=[0.01, 0.05], lr=0.2, population_size=1000,
                                         mutation_effect=0.1, init_std=0.2, es_dim=10, es_lambda=6,
                                         es_speed_fractions=[0.5, 2.0], steps=240, replicates=16,
                                         engine_check=False))  # the engine check has its own test
    res = entry.factory(p, context=_context())
    df = res.comparison
    lag = df[df["quantity"] == tl.QUANTITY_LAG]
    gd = lag[lag["series"].str.startswith("gradient descent")]
    # deterministic: the second-half average carries the transient (1 - 0.2)^120 ~ 2e-12
    np.testing.assert_allclose(gd["measured"], gd["predicted"], rtol=1e-9)
    sgd = lag[lag["series"].str.startswith("SGD")]
    # unbiased noise: the mean lag is GD's; the prediction is inside a 95% CI (2 settings; seeded)
    assert ((sgd["measured_low"] <= sgd["predicted"]) & (sgd["predicted"] <= sgd["measured_high"])).all()
    wf = lag[lag["series"].str.startswith("Wright-Fisher")]
    # Lande with the measured G: exact for an infinite Gaussian population; at N = 1000 the
    # non-Gaussian and O(1/N) parts of the response stay well under 10% (measured ~2%), and the
    # sampling error is the CI half-width
    half = (wf["measured_high"] - wf["measured_low"]) / 2
    assert ((wf["measured"] - wf["predicted"]).abs() <= 2 * half + 0.1 * wf["predicted"]).all()
    gv = df[df["quantity"] == tl.QUANTITY_G]
    assert ((gv["measured"] / gv["predicted"] - 1).abs() < 0.1).all()
    es = df[df["quantity"] == tl.QUANTITY_ES_V].iloc[0]
    assert es["measured_low"] <= es["predicted"] <= es["measured_high"]
    dist = df[df["quantity"] == tl.QUANTITY_ES]
    assert np.isnan(dist["predicted"].iloc[1]) and dist["measured"].iloc[1] > 5 * dist["measured"].iloc[0]
    assert any("lost the optimum" in n for n in res.notes)
    with pytest.raises(ValidationError):
        entry.params.model_validate({"speeds": [0.0]})


def test_engine_check_matches_prediction():
    entry = ANALYSES.get("tracking_lag")
    p = entry.params.model_validate(dict(engine_dim=3, engine_condition=4.0, engine_speeds=[0.02], engine_lr=0.1,
                                         population_size=300, speeds=[0.01], es_speed_fractions=[0.5], steps=200,
                                         replicates=8))
    rows = pd.DataFrame(tl._engine_rows(p, _context(), 0.95))
    sgd = rows[rows["series"].str.startswith("engine sgd")].iloc[0]
    # the engine's SGD on the noise-free drifting ellipsoid is gradient descent: its second-half lag
    # differs from d* = v (eta H)^-1 u by the transient (1 - 0.1 * 2)^100 ~ 2e-10 (relative)
    assert sgd["measured"] == pytest.approx(sgd["predicted"], rel=1e-6)
    wf = rows[rows["series"].str.startswith("engine wright_fisher")].iloc[0]
    # Lande with the population's own G; allowance: CI + 10% model error (non-Gaussian, finite N)
    assert abs(wf["measured"] - wf["predicted"]) <= (wf["measured_high"] - wf["measured_low"]) + 0.1 * wf["predicted"]


def test_tracking_scenario_report_shows_prediction_and_measurement(tmp_path):
    import tomllib

    from evosgd.report import build_report
    from evosgd.run import execute_scenario, load_store
    from evosgd.scenario import load_scenario

    path = Path(__file__).resolve().parent.parent / "scenarios" / "evo_tracking_linear.toml"
    doc = tomllib.loads(path.read_text())
    # the shipped file, trimmed to one optimizer and no sweep (the full quick run is in test_scenarios_quick)
    doc["optimizer"] = [o for o in doc["optimizer"] if o["label"] == "sgd"]
    del doc["sweep"]
    sc = load_scenario(doc, quick=True)
    execute_scenario(sc, tmp_path / "res", workers=1, progress=False, device="cpu")
    data = load_store(tmp_path / "res" / sc.name)
    assert len(data.analyses) == 1
    build_report(data, tmp_path / "rep")
    md = next((tmp_path / "rep").rglob("report.md")).read_text()
    assert "Drifting landscape" in md and "tracking_distance" in md  # the runs' measurement
    assert "measured against predicted lag" in md and "engine sgd" in md  # the analysis ...
    assert "| measured | measured_low | measured_high | predicted |" in md  # ... with both columns
