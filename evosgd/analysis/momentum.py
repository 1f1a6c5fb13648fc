"""Why momentum?  Linear convergence rates of gradient descent, heavy ball and Nesterov on ravines.

On a quadratic with Hessian eigenvalues in ``[mu, L]`` (condition number ``kappa = L / mu``), every
method here is linear: ``||theta_t - theta*|| ~ rho^t``.  Per eigenvalue ``lambda`` (with
``a = lr lambda``) the engine's updates (torch.optim.SGD semantics, ``buf = beta buf + g``,
``theta -= lr buf`` or ``theta -= lr (g + beta buf)`` for Nesterov) have the characteristic polynomials

    heavy ball:  z^2 - (1 + beta - a) z + beta = 0
    Nesterov:    z^2 - (1 + beta)(1 - a) z + beta (1 - a) = 0

(plain GD: beta = 0, root ``1 - a``); the rate rho is the largest root modulus over the spectrum
(:func:`momentum_rate`).  With the classical tunings (Polyak 1964, "Some methods of speeding up the
convergence of iteration methods"; Nesterov 1983/2004, *Introductory Lectures*, sec. 2.2;
Lessard, Recht & Packard 2016, table 1 for quadratics):

=============  ==============================  ===================================  =========================
method          lr                              beta                                 rate rho
=============  ==============================  ===================================  =========================
GD              2 / (L + mu)                    0                                    (kappa - 1) / (kappa + 1)
heavy ball      4 / (sqrt L + sqrt mu)^2        ((sqrt kappa - 1)/(sqrt kappa + 1))^2 (sqrt kappa - 1)/(sqrt kappa + 1)
Nesterov        1 / L                           (sqrt kappa - 1)/(sqrt kappa + 1)     1 - 1 / sqrt kappa
=============  ==============================  ===================================  =========================

Steps to shrink the error by e: ``~ kappa / 2`` for GD against ``~ sqrt(kappa) / 2`` with momentum —
the square-root speed-up on long, narrow ravines.

The measurement runs the engine's ``sgd`` on the ``ellipsoid`` landscape (``sum_i lambda_i z_i^2``:
Hessian eigenvalues ``2 lambda_i``, so ``mu = 2``, ``L = 2 kappa``), noise-free and in float64, and
fits ``log ||theta_t - theta*||`` over the second half of the run.  The extreme eigenvalues of
Polyak's and Nesterov's tunings have a double root (error ``~ t rho^t``), which biases the fitted
rate upward by about ``ln(t2 / t1) / (t2 - t1)`` in log; GD's is exact.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad2_common import log_slope, make_optimizer, small_landscape
from evosgd.analysis.grad_common import fmt, mean_ci, single_thread
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.registry import ANALYSES

KIND = "momentum_rate"
Method = Literal["gd", "heavy_ball", "nesterov"]


# ----------------------------------------------------------------------------- theory
def momentum_rate(eigenvalues: np.ndarray, lr: float, beta: float = 0.0, nesterov: bool = False) -> float:
    """Asymptotic linear rate: the largest root modulus of the per-eigenvalue characteristic
    polynomial (module docstring) over ``eigenvalues`` of the Hessian."""
    a = lr * np.asarray(eigenvalues, dtype=np.float64)
    if nesterov:
        b, c = -(1.0 + beta) * (1.0 - a), beta * (1.0 - a)
    else:
        b, c = -(1.0 + beta - a), np.full_like(a, beta)
    disc = (b * b - 4.0 * c).astype(np.complex128)
    r1, r2 = (-b + np.sqrt(disc)) / 2.0, (-b - np.sqrt(disc)) / 2.0
    return float(np.maximum(np.abs(r1), np.abs(r2)).max())


def gd_optimal(mu: float, L: float) -> tuple[float, float, float]:
    """(lr, beta, rate) of GD at its best constant rate: ``2/(L+mu)``, 0, ``(kappa-1)/(kappa+1)``."""
    k = L / mu
    return 2.0 / (L + mu), 0.0, (k - 1.0) / (k + 1.0)


def heavy_ball_optimal(mu: float, L: float) -> tuple[float, float, float]:
    """Polyak's tuning (Polyak 1964): lr ``4/(sqrt L + sqrt mu)^2``, beta ``((sqrt k - 1)/(sqrt k + 1))^2``,
    rate ``(sqrt k - 1)/(sqrt k + 1)``."""
    s = math.sqrt(L / mu)
    q = (s - 1.0) / (s + 1.0)
    return 4.0 / (math.sqrt(L) + math.sqrt(mu)) ** 2, q * q, q


def nesterov_strongly_convex(mu: float, L: float) -> tuple[float, float, float]:
    """Nesterov's constant-momentum tuning (Nesterov 2004, scheme 2.2.19): lr ``1/L``,
    beta ``(sqrt k - 1)/(sqrt k + 1)``; on quadratics the rate is ``1 - 1/sqrt k`` (a double root at mu)."""
    s = math.sqrt(L / mu)
    return 1.0 / L, (s - 1.0) / (s + 1.0), 1.0 - 1.0 / s


TUNINGS = {"gd": gd_optimal, "heavy_ball": heavy_ball_optimal, "nesterov": nesterov_strongly_convex}


def ellipsoid_hessian_eigenvalues(dim: int, condition: float) -> np.ndarray:
    """Hessian eigenvalues of the ``ellipsoid`` landscape: ``2 kappa^((i-1)/(D-1))``."""
    if dim == 1:
        return np.array([2.0])
    return 2.0 * condition ** (np.arange(dim) / (dim - 1))


# ----------------------------------------------------------------------------- measurement
class MomentumParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conditions: list[float] = Field([10.0, 100.0, 1000.0], min_length=1, description="condition numbers kappa of the ellipsoid")
    methods: list[Method] = Field(["gd", "heavy_ball", "nesterov"], min_length=1,
                                  description="methods, each at its classical tuning for the measured kappa")
    dim: int = Field(10, ge=2, description="dimension of the ellipsoid (eigenvalues log-spaced from mu to L)")
    rotate: bool = Field(True, description="rotate the ravine off the axes (rates are rotation invariant)")
    replicates: int = Field(8, ge=2, description="replicates (different shifts, rotations and starts; the CI is over them)")
    reduction: float = Field(1e-10, gt=0.0, lt=1.0, description="run until the predicted error has shrunk by this factor")
    max_steps: int = Field(3000, ge=10, description="cap on the steps of one run")


def measure_rate(landscape, lr: float, beta: float, nesterov: bool, steps: int, seed: int) -> tuple[np.ndarray, int, int]:
    """Per-replicate fitted rate ``exp(slope of log ||theta_t - theta*||)`` over steps ``[t2/2, t2]``, with
    ``t2`` the last step (at most ``steps``) whose error is above 1e-11 of the initial one; returns the
    window (t1, t2) too."""
    p = {"lr": lr, "batch_size": 1}
    if beta > 0:
        p.update(momentum=beta, nesterov=nesterov)
    opt, _ = make_optimizer("sgd", p, landscape, seed=seed)
    opt_theta = landscape.optimum()
    dist = [torch.linalg.vector_norm(opt.recommend() - opt_theta, dim=-1)]
    for _ in range(steps):
        opt.step()
        dist.append(torch.linalg.vector_norm(opt.recommend() - opt_theta, dim=-1))
    d = torch.stack(dist).cpu().numpy()  # [steps + 1, R]
    # stop the window before float64 rounding sets a floor (error ~ 1e-16 of the shift's size)
    above = (d > 1e-11 * d[0]).all(axis=1)
    t2 = int(np.argmin(above)) - 1 if not above.all() else steps
    t2 = max(t2, 2)
    t1 = t2 // 2
    return np.exp(log_slope(d[t1:t2 + 1], axis=0)), t1, t2


def measure_momentum(params: MomentumParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    rows, table = [], []
    with single_thread():
        for kappa in sorted(set(params.conditions)):
            land = small_landscape("ellipsoid", {"dim": params.dim, "condition": kappa, "rotate": params.rotate},
                                   replicates=params.replicates, seed=seed)
            eig = ellipsoid_hessian_eigenvalues(params.dim, kappa)
            mu, L = float(eig.min()), float(eig.max())
            for method in params.methods:
                lr, beta, closed = TUNINGS[method](mu, L)
                spectral = momentum_rate(eig, lr, beta, nesterov=method == "nesterov")
                steps = int(min(params.max_steps, max(10, math.ceil(math.log(params.reduction) / math.log(max(spectral, 1e-300))))))
                rates, t1, t2 = measure_rate(land, lr, beta, method == "nesterov", steps, seed)
                m, lo, hi = mean_ci(rates, confidence)
                # band: the fitted rate of a double root t rho^t exceeds rho by at most (t2/t1)^(1/(t2-t1))
                bias = math.exp(math.log(t2 / max(t1, 1)) / max(t2 - t1, 1)) if method != "gd" else 1.0
                rows.append(dict(quantity="linear convergence rate rho", series=method, x_name="condition number kappa", x=kappa,
                                 measured=m, measured_low=lo, measured_high=hi, predicted=closed, predicted_low=closed,
                                 predicted_high=min(1.0, closed * bias), log_x=True, log_y=False))
                rows.append(dict(quantity="steps per e-fold of the error, -1 / ln rho", series=method, x_name="condition number kappa",
                                 x=kappa, measured=-1.0 / math.log(m), measured_low=-1.0 / math.log(lo) if lo < 1 else math.nan,
                                 measured_high=-1.0 / math.log(hi) if hi < 1 else math.nan, predicted=-1.0 / math.log(closed),
                                 log_x=True, log_y=True))
                table.append(dict(condition=kappa, method=method, lr=lr, momentum=beta, measured_rate=m, closed_form_rate=closed,
                                  spectral_rate=spectral, steps=steps, window=f"{t1}..{t2}", double_root_bias_bound=bias))
    t = pd.DataFrame(table)
    notes = [f"ellipsoid D = {params.dim} ({'rotated' if params.rotate else 'axis-aligned'}), Hessian eigenvalues 2..2 kappa, "
             f"noise-free, float64; rate fitted on the second half of each run ({params.replicates} replicates)."]
    for kappa, g in t.groupby("condition", sort=True):
        gd = g[g.method == "gd"]
        hb = g[g.method == "heavy_ball"]
        if len(gd) and len(hb):
            sgd, shb = -1 / math.log(float(gd.measured_rate.iloc[0])), -1 / math.log(float(hb.measured_rate.iloc[0]))
            notes.append(f"kappa = {fmt(kappa)}: GD needs {fmt(sgd)} steps per e-fold, heavy ball {fmt(shb)} "
                         f"(measured speed-up {fmt(sgd / shb)}; predicted {fmt(math.log(float(hb.closed_form_rate.iloc[0])) / math.log(float(gd.closed_form_rate.iloc[0])))}).")
    worst = (np.log(t.measured_rate) / np.log(t.closed_form_rate) - 1).abs()
    # 1e-4 relative: the faster modes' residue at the start of the fit window steepens the slope slightly
    within = int(((t.measured_rate >= t.closed_form_rate * (1 - 1e-4)) & (t.measured_rate <= t.closed_form_rate * t.double_root_bias_bound * (1 + 1e-4))).sum())
    notes.append(f"the measured rate lies between the closed form and its double-root bound (to 1e-4) in {within} of {len(t)} (kappa, method) cases.")
    notes.append(f"largest relative gap between measured and closed-form log-rate: {fmt(100 * float(worst.max()))}% "
                 f"({t.method[worst.idxmax()]}, kappa = {fmt(float(t.condition[worst.idxmax()]))}).")
    return AnalysisResult(comparison_rows(rows), tables={"rates": t}, notes=notes, confidence=confidence,
                          title="Momentum on ravines: measured vs optimal linear rates")


@ANALYSES.register(KIND, MomentumParams,
                   "linear convergence rate of GD, heavy ball (Polyak's tuning) and Nesterov on ellipsoids of growing "
                   "condition number vs (kappa-1)/(kappa+1), (sqrt kappa-1)/(sqrt kappa+1), 1-1/sqrt kappa", family="gradient")
def momentum_rate_analysis(params: MomentumParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_momentum(params, seed=context.seed, confidence=0.95)
