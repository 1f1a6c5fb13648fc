"""Steady-state lag of momentum SGD behind a linearly moving optimum
(evosgd/analysis/momentum_tracking.py): the product's transforms against the prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evosgd.analysis.evo_common import Quadratic
from evosgd.analysis.momentum_tracking import momentum_lag_vector, momentum_stable, simulate_momentum_tracking
from evosgd.analysis.tracking_lag import gd_lag_vector


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_exact_gradient_lag_converges_to_the_prediction(beta, nesterov):
    """Exact case (no noise): after the transient, the lag equals v (1 - beta)/(eta a) per direction."""
    quad = Quadratic(3, 10.0)
    u = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) / math.sqrt(3)
    lr, v = 0.05, 0.01
    lags = simulate_momentum_tracking(quad, u, v, lr, beta, 3000, 1, torch.Generator().manual_seed(0), nesterov=nesterov)
    pred = momentum_lag_vector(v, lr, beta, quad.curvatures_np, u.numpy(), nesterov=nesterov)
    np.testing.assert_allclose(lags[-1, 0].numpy(), pred, rtol=1e-9)
    if beta == 0.0:
        np.testing.assert_allclose(pred, gd_lag_vector(v, lr, quad.curvatures_np, u.numpy()), rtol=1e-12)


def test_classical_nesterov_iterate_lags_beta_v_more_and_stability():
    """The classical Nesterov iterate x_{k+1} = y_k - eta A (y_k - theta_k), y_k = x_k + beta (x_k - x_{k-1}),
    simulated directly: its steady lag is d* + beta v."""
    a, lr, beta, v = 2.0, 0.1, 0.7, 0.03
    x_prev = x = theta = 0.0
    for _ in range(5000):
        y = x + beta * (x - x_prev)
        x_prev, x = x, y - lr * a * (y - theta)
        theta += v
    assert theta - x == pytest.approx(float(momentum_lag_vector(v, lr, beta, [a], [1.0], nesterov=True, iterate="classical_nesterov")[0]), rel=1e-9)
    assert momentum_stable(0.1, 0.9, [37.0]) and not momentum_stable(0.1, 0.9, [39.0])
    assert momentum_stable(0.1, 0.5, [14.9], nesterov=True) and not momentum_stable(0.1, 0.5, [15.1], nesterov=True)  # eta a < 3/2
    with pytest.raises(ValueError, match="unstable"):
        momentum_lag_vector(0.01, 0.1, 0.9, [39.0], [1.0])


def test_minibatch_mean_lag_by_simulation():
    """SGD with heavy-ball momentum and mini-batch noise (b = 4, s = 1), 400 replicates: the time
    average of the lag over the second half of 600 steps, per replicate; its mean over replicates
    lies within 4 standard errors (sd over replicates) of the prediction along u."""
    quad = Quadratic(2, 4.0, noise=1.0)
    u = torch.tensor([0.6, 0.8], dtype=torch.float64)
    lr, beta, v = 0.05, 0.8, 0.02
    lags = simulate_momentum_tracking(quad, u, v, lr, beta, 600, 400, torch.Generator().manual_seed(1), batch_size=4)
    along = (lags[300:] @ u).mean(0).numpy()
    pred = float(momentum_lag_vector(v, lr, beta, quad.curvatures_np, u.numpy()) @ u.numpy())
    assert abs(along.mean() - pred) < 4 * along.std(ddof=1) / math.sqrt(len(along))


def test_registered_analysis_rows_and_verdict():
    from evosgd.core.analysis_api import AnalysisContext
    from evosgd.core.registry import ANALYSES

    ctx = AnalysisContext(scenario="t", label="lag", seed=1, replicates=1, device=torch.device("cpu"), dtype=torch.float64)
    assert "momentum_tracking_lag" in ANALYSES
    from evosgd.analysis.momentum_tracking import MomentumTrackingParams, momentum_tracking_lag

    res = momentum_tracking_lag(MomentumTrackingParams(betas=[0.0, 0.8], steps=400, replicates=40), context=ctx)
    df = res.comparison
    assert len(df) == 4 and set(df["series"]) == {"heavy ball", "Nesterov"}
    assert (df["predicted"] > 0).all() and df["verdict"].isin(["supported", "not supported"]).all()
    # the prediction shrinks by (1 - beta): 0.2 of the plain-SGD lag at beta = 0.8
    hb = df[df["series"] == "heavy ball"].set_index("x")["predicted"]
    assert hb[0.8] == pytest.approx(0.2 * hb[0.0], rel=1e-12)
