"""Tracking a moving optimum with momentum: the steady-state lag of heavy-ball and Nesterov SGD on
a quadratic whose optimum drifts linearly (beside gradient descent in ``tracking_lag.py``).

Setting of ``tracking_lag``: ``L_k(x) = 1/2 (x - theta_k)^T A (x - theta_k)``, ``theta_k = theta_0 +
v k u``; every method steps on the landscape of step k, then the optimum moves; the lag is
``d_k = theta_k - x_k`` (x the parameters the optimizer holds).  With the momentum of
``torch.optim.SGD`` (the product's ``momentum`` transform: ``b_t = beta b_{t-1} + (1 - tau) g_t``,
update ``-eta b_t``, Nesterov ``-eta (g_t + beta b_t)``), a steady state moves x at the optimum's
speed with a constant gradient ``g = -A d``, so ``b = (1 - tau) g / (1 - beta)`` and both updates are
``-eta (1 - tau) g / (1 - beta)`` (Nesterov: ``g + beta b`` with tau = 0 is ``g / (1 - beta)`` too).
Hence, per eigen-direction of curvature a,

    d* = v (1 - beta) / ((1 - tau) eta a) u       (heavy ball and torch's Nesterov alike),

the gradient-descent lag ``v / (eta a)`` shrunk by ``(1 - beta)/(1 - tau)``: momentum tracks as
gradient descent with the effective rate ``eta (1 - tau) / (1 - beta)``.  The classical form of
Nesterov (Sutskever et al. 2013) keeps the iterate x and evaluates the gradient at the look-ahead
``y = x + beta (x_k - x_{k-1})``; its iterate lags a further ``beta v``: ``d*_x = d* + beta v u``.
The steady state is reached when the linear recursion is stable: ``0 < eta a < 2 (1 + beta)`` for
heavy ball, ``0 < eta a < 2 (1 + beta) / (1 + 2 beta)`` for Nesterov (tau = 0; Polyak 1964,
Lessard, Recht & Packard 2016).  With an unbiased mini-batch gradient the mean lag is the same
(the recursion is linear); noise only spreads it.

:func:`simulate_momentum_tracking` measures the lag with the product's own transforms
(``momentum`` then ``scale_by_learning_rate``, applied by ``apply_updates``), vectorised over replicates.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from evosgd.analysis.evo_common import Quadratic, comparison_table, generator_for, mean_ci
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES
from evosgd.gradient.transforms import apply_updates, chain, momentum, scale_by_learning_rate


def momentum_stable(lr: float, beta: float, curvatures: np.ndarray, nesterov: bool = False) -> bool:
    """Whether heavy-ball (or Nesterov) momentum with damping 0 is stable on every curvature."""
    x = lr * np.asarray(curvatures, dtype=float)
    upper = 2.0 * (1.0 + beta) / (1.0 + 2.0 * beta) if nesterov else 2.0 * (1.0 + beta)
    return bool(0 <= beta < 1 and np.all(x > 0) and np.all(x < upper))


def momentum_lag_vector(speed: float, lr: float, beta: float, curvatures: np.ndarray, direction: np.ndarray, *,
                        nesterov: bool = False, dampening: float = 0.0, iterate: str = "parameters") -> np.ndarray:
    """Steady-state lag ``d* = v (1 - beta) / ((1 - tau) eta A) u`` of the parameters of torch-style
    heavy-ball or Nesterov SGD; ``iterate = "classical_nesterov"`` gives the classical Nesterov
    iterate's lag, ``d* + beta v u``.  Raises ValueError where the recursion is unstable."""
    a = np.asarray(curvatures, dtype=float)
    if dampening == 0.0 and not momentum_stable(lr, beta, a, nesterov):
        raise ValueError(f"momentum with lr = {lr}, beta = {beta} is unstable on curvatures up to {a.max():g}")
    u = np.asarray(direction, dtype=float)
    d = speed * (1.0 - beta) / ((1.0 - dampening) * lr * a) * u
    if iterate == "classical_nesterov":
        return d + beta * speed * u
    if iterate != "parameters":
        raise ValueError("iterate: 'parameters' or 'classical_nesterov'")
    return d


@torch.no_grad()
def simulate_momentum_tracking(quad: Quadratic, direction: torch.Tensor, speed: float, lr: float, beta: float, steps: int,
                               replicates: int, generator: torch.Generator, *, nesterov: bool = False,
                               batch_size: int | None = None) -> torch.Tensor:
    """Lags ``[steps + 1, R, D]`` of SGD with momentum (the product's transforms) behind the optimum of
    ``quad`` moving by ``speed * direction`` per step, from ``x_0 = theta_0`` (the optimum's frame:
    ``z = x - theta``); ``batch_size`` None is the exact gradient."""
    tx = chain(momentum(beta, nesterov=nesterov), scale_by_learning_rate(lr))
    z = torch.zeros(replicates, quad.dim, device=quad.device, dtype=quad.dtype)
    state = tx.init(z)
    out = [-z]
    for _ in range(steps):
        g = quad.grad(z) if batch_size is None else quad.minibatch_grad(z, batch_size, generator)
        z, state = apply_updates(tx, g, state, z)
        z = z - speed * direction  # the optimum moves: x - theta_{k+1}
        out.append(-z)
    return torch.stack(out)


# ----------------------------------------------------------------------------- the registered analysis


class MomentumTrackingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(4, ge=1, le=256, description="dimension D of the quadratic (curvatures log-spaced in [1, condition])")
    condition: float = Field(10.0, ge=1, description="condition number of the Hessian A")
    speed: float = Field(0.01, gt=0, description="v: distance the optimum moves per step, along (1,...,1)/sqrt(D)")
    lr: float = Field(0.05, gt=0, description="learning rate eta (must be stable for every beta: eta a < 2(1+beta)/(1+2beta) for Nesterov)")
    betas: list[float] = Field([0.0, 0.5, 0.9], min_length=1, description="momentum coefficients beta in [0, 1)")
    batch_size: int | None = Field(8, ge=1, description="mini-batch size of the noisy gradient (None: the exact gradient)")
    noise: float = Field(1.0, ge=0, description="sd s of the per-example gradient noise (isotropic: Sigma = s^2 I)")
    steps: int = Field(2000, ge=10, description="steps per run; the lag is averaged over the second half")
    replicates: int = Field(200, ge=4, description="independent runs: the CI is over them")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")


@ANALYSES.register("momentum_tracking_lag", MomentumTrackingParams,
                   "SGD with heavy-ball or Nesterov momentum behind a linearly moving optimum: measured steady-state lag "
                   "against v (1 - beta)/(eta a)", family="gradient")
def momentum_tracking_lag(params: MomentumTrackingParams, *, context: AnalysisContext) -> AnalysisResult:
    p, conf = params, params.confidence
    quad = Quadratic(p.dim, p.condition, noise=p.noise, device=context.device, dtype=torch.float64)
    u = torch.full((p.dim,), 1.0 / math.sqrt(p.dim), device=context.device, dtype=torch.float64)
    rows = []
    for nesterov in (False, True):
        for beta in p.betas:
            if not momentum_stable(p.lr, beta, quad.curvatures_np, nesterov):
                raise ParameterError("lr", p.lr, f"a learning rate at which momentum beta = {beta} is stable on curvatures up to "
                                     f"{p.condition:g}", where="analysis 'momentum_tracking_lag'")
            lags = simulate_momentum_tracking(quad, u, p.speed, p.lr, beta, p.steps, p.replicates,
                                              generator_for(context, "momentum", nesterov, beta), nesterov=nesterov,
                                              batch_size=p.batch_size)
            along = (lags[p.steps // 2:] @ u).mean(0).cpu().numpy()
            m, lo, hi = mean_ci(along, conf)
            pred = float(momentum_lag_vector(p.speed, p.lr, beta, quad.curvatures_np, u.cpu().numpy(), nesterov=nesterov) @ u.cpu().numpy())
            rows.append({"quantity": "steady-state lag along the motion", "series": "Nesterov" if nesterov else "heavy ball",
                         "x_name": "momentum beta", "x": beta, "measured": m, "measured_low": lo, "measured_high": hi,
                         "predicted": pred, "verdict": "supported" if lo <= pred <= hi else "not supported"})
    df = comparison_table(rows)
    inside = int((df["verdict"] == "supported").sum())
    notes = [f"Steady-state lag v (1 - beta)/(eta a) (along u): inside the {conf:.0%} CI at {inside} of {len(df)} (method, beta) points "
             f"(chance allows {int(stats.binom.ppf(0.99, len(df), 1 - conf))} misses): "
             f"{'supported' if len(df) - inside <= stats.binom.ppf(0.99, len(df), 1 - conf) else 'not supported'}."]
    return AnalysisResult(comparison=df, notes=notes, confidence=conf,
                          title="Tracking a moving optimum with momentum: measured lag against the steady-state prediction")
