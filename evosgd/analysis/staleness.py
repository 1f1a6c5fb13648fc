"""What does staleness do?  Delayed-gradient SGD on a quadratic against its exact linear theory.

Model.  Asynchronous SGD with a fixed staleness tau applies at step t a gradient computed at the
parameters of tau updates ago (the engine's ``sgd_async`` with ``delay_model = "fixed"``; history
padded with the starting point).  On the noisy quadratic ``1/2 h x^2`` per coordinate, with a
per-example gradient ``h x + xi`` (``Var xi = c``) averaged over b examples::

    x_{t+1} = x_t - lr (h x_{t-tau} + xi_bar_t),     Var xi_bar_t = c / b.

It is linear in the companion state ``s_t = (x_t, x_{t-1}, ..., x_{t-tau})``:
``s_{t+1} = A s_t - lr xi_bar_t e_0``, with characteristic polynomial ``z^(tau+1) - z^tau + a`` where
``a = lr h`` (the step in units of the curvature).  Everything below follows exactly:

* stability: all roots inside the unit circle iff ``0 < a < 2 sin(pi / (2 (2 tau + 1)))``
  (Levin & May 1976, "A note on difference-delay equations", Theor. Popul. Biol. 9:178-187;
  Kuruklis 1994, J. Math. Anal. Appl. 188): 2, 1, 0.618, 0.347, 0.185 for tau = 0, 1, 2, 4, 8 —
  the stable learning rate shrinks like ``pi / (2 tau)`` for large tau;
* bias: the mean follows the noise-free recursion (zero-mean noise, linear system), and once the
  dominant root z (real for ``a <= tau^tau / (tau+1)^(tau+1)``) dominates, the stale gradient over
  the fresh one is ``x_{t-tau} / x_t = z^-tau = (1 - z) / a``: relative bias ``(1 - z)/a - 1``,
  ``~ tau a`` to first order (the gradient is ``tau lr h`` too large: it points where the iterate was);
* variance: the stationary covariance solves the discrete Lyapunov equation
  ``S = A S A^T + lr^2 (c / b) e_0 e_0^T`` (``Var x = S_00``; tau = 0 gives ``lr c / (b h (2 - a))``);
  it grows with tau at a fixed lr and falls as 1/b;
* best learning rate after T steps from x_0: ``E x_T^2 = (A^T s_0)_0^2 + (sum_{k<T} A^k Q A^kT)_00``,
  minimised over the lr grid.

Measurement: the engine's ``sgd_async`` (fixed delay) on the ``sphere`` landscape (``||theta - s -
xi||^2`` per example: h = 2, c = 4 noise_std^2 per coordinate) and, for the stability boundary and the
bias, on the noise-free axis-aligned ``ellipsoid`` (coordinate i has its own ``a_i``, so one run
scans a range of ``a``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.linalg
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad2_common import make_optimizer, small_landscape
from evosgd.analysis.grad_common import bootstrap_ci, fmt, mean_ci, single_thread
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES

KIND = "staleness"
#: the boundary scan covers a in [bound / SCAN_SPAN, bound * SCAN_SPAN]
SCAN_SPAN = 1.5


# ----------------------------------------------------------------------------- theory
def delayed_stability_bound(tau: int) -> float:
    """Largest stable ``a = lr h`` of ``x_{t+1} = x_t - a x_{t-tau}``: ``2 sin(pi / (2 (2 tau + 1)))``
    (Levin & May 1976)."""
    return 2.0 * math.sin(math.pi / (2.0 * (2 * int(tau) + 1)))


def delayed_roots(a: float, tau: int) -> np.ndarray:
    """Roots of ``z^(tau+1) - z^tau + a`` (the delayed-GD characteristic polynomial)."""
    coeffs = np.zeros(int(tau) + 2)
    coeffs[0], coeffs[1] = 1.0, -1.0
    coeffs[-1] += a
    return np.roots(coeffs)


def delayed_spectral_radius(a: float, tau: int) -> float:
    return float(np.abs(delayed_roots(a, tau)).max())


def real_root_limit(tau: int) -> float:
    """``a`` up to which the dominant root is real and positive: ``tau^tau / (tau+1)^(tau+1)`` (1/4 for tau = 1)."""
    tau = int(tau)
    return math.inf if tau == 0 else tau**tau / (tau + 1) ** (tau + 1)


def stale_gradient_bias(a: float, tau: int) -> float:
    """Relative bias of the stale gradient in the dominant mode, ``x_{t-tau}/x_t - 1 = (1 - z)/a - 1``."""
    if tau == 0:
        return 0.0
    if not 0 < a <= real_root_limit(tau):
        raise ParameterError("a", a, f"0 < lr h <= tau^tau/(tau+1)^(tau+1) = {real_root_limit(tau):.4g} (real dominant root)")
    r = delayed_roots(a, tau)
    z = float(max(x.real for x in r if abs(x.imag) < 1e-9 * max(1.0, abs(x)) and x.real > 0))
    return (1.0 - z) / a - 1.0


def companion_matrix(lr: float, h: float, tau: int) -> np.ndarray:
    """``A`` of the companion state ``(x_t, ..., x_{t-tau})``."""
    n = int(tau) + 1
    A = np.zeros((n, n))
    A[0, 0] += 1.0
    A[0, n - 1] += -lr * h
    A[np.arange(1, n), np.arange(0, n - 1)] = 1.0
    return A


def delayed_stationary_variance(lr: float, h: float, c: float, batch_size: int, tau: int) -> float:
    """``Var x`` in the stationary law: ``S_00`` of ``S = A S A^T + lr^2 (c/b) e_0 e_0^T``."""
    if lr * h >= delayed_stability_bound(tau):
        raise ParameterError("lr", lr, f"lr h < {delayed_stability_bound(tau):.4g} (delayed SGD diverges otherwise)")
    A = companion_matrix(lr, h, tau)
    Q = np.zeros_like(A)
    Q[0, 0] = lr * lr * c / batch_size
    return float(scipy.linalg.solve_discrete_lyapunov(A, Q)[0, 0])


def delayed_expected_square(lr: float, h: float, c: float, batch_size: int, tau: int, steps: int) -> tuple[float, float]:
    """``(phi_T, v_T)`` with ``E x_T^2 = phi_T^2 x_0^2 + v_T`` (start ``x_0``, history padded with it):
    ``phi_T = (A^T 1)_0``, ``v_T = (sum_{k<T} A^k Q A^kT)_00``."""
    A = companion_matrix(lr, h, tau)
    m = np.ones(A.shape[0])
    S = np.zeros_like(A)
    q = lr * lr * c / batch_size
    for _ in range(int(steps)):
        m = A @ m
        S = A @ S @ A.T
        S[0, 0] += q
    return float(m[0]), float(S[0, 0])


# ----------------------------------------------------------------------------- measurement
class StalenessParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delays: list[int] = Field([0, 1, 2, 4, 8], min_length=1, description="staleness values tau for the boundary and bias scans")
    scan_dim: int = Field(64, ge=4, description="coordinates of the axis-aligned ellipsoid scanning a = lr h (resolution of the boundary)")
    scan_steps: int = Field(400, ge=20, description="steps of a boundary scan (growth is judged between its 2nd and 4th quarter)")
    variance_delays: list[int] = Field([0, 2, 4], min_length=1, description="tau for the stationary-variance and best-lr parts")
    batch_sizes: list[int] = Field([1, 4, 16], min_length=1, description="mini-batch sizes b")
    lr: float = Field(0.05, gt=0.0, description="learning rate of the stationary-variance runs (sphere: h = 2)")
    noise_std: float = Field(1.0, gt=0.0, description="per-example noise of the sphere (c = 4 noise_std^2)")
    dim: int = Field(8, ge=1, description="dimension of the sphere (independent coordinates pooled per replicate)")
    replicates: int = Field(16, ge=2, description="replicates of the sphere runs (the CI is over them)")
    burn_in: int = Field(200, ge=0, description="steps discarded before the stationary average")
    records: int = Field(400, ge=1, description="steps averaged for the stationary variance")
    lr_grid: list[float] = Field([0.03, 0.04, 0.05, 0.06, 0.075, 0.09, 0.11, 0.135, 0.16], min_length=2,
                                 description="learning rates for the best-lr part (unstable ones for a tau are skipped)")
    horizon: int = Field(15, ge=1, description="steps T after which the loss is compared in the best-lr part (short: the "
                                               "best lr then trades the decay of the start against the noise floor)")


def _scan(tau: int, lo_a: float, hi_a: float, params: StalenessParams, seed: int,
          steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Engine run (noise-free, axis-aligned ellipsoid): coordinate i has ``a_i`` log-spaced in
    ``[lo_a, hi_a]``; returns ``(a [D], trajectory |z_t| [T+1, D])`` of replicate 0."""
    D = params.scan_dim
    kappa = hi_a / lo_a
    land = small_landscape("ellipsoid", {"dim": D, "condition": kappa, "rotate": False}, replicates=1, seed=seed)
    a = lo_a * kappa ** (np.arange(D) / (D - 1))
    lr = lo_a / 2.0  # smallest Hessian eigenvalue is 2
    opt, _ = make_optimizer("sgd_async", {"lr": lr, "batch_size": 1, "workers": 1, "delay_model": "fixed", "delay": tau},
                            land, seed=seed)
    s = land.optimum()
    traj = [(opt.recommend() - s)[0].abs()]
    for _ in range(params.scan_steps if steps is None else steps):
        opt.step()
        traj.append((opt.recommend() - s)[0].abs())
    if bool(opt.diverged.any()):
        raise ParameterError("scan_steps", params.scan_steps, "fewer steps (the scan overflowed float64)")
    return a, torch.stack(traj).cpu().numpy()


def measure_boundary(tau: int, params: StalenessParams, seed: int) -> tuple[float, float]:
    """(largest a judged stable, smallest a judged unstable): growth = the max |z| over the last
    quarter of the run exceeds the max over the second quarter."""
    bound = delayed_stability_bound(tau)
    lo_a, hi_a = bound / SCAN_SPAN, bound * SCAN_SPAN
    # the fastest-growing coordinate must not overflow (its square enters the loss): |z| < 1e120
    steps = min(params.scan_steps, int(120 * math.log(10) / math.log(delayed_spectral_radius(hi_a, tau))))
    a, traj = _scan(tau, lo_a, hi_a, params, seed, steps)
    T = traj.shape[0] - 1
    early = traj[T // 4: T // 2 + 1].max(axis=0)
    late = traj[3 * T // 4:].max(axis=0)
    grows = late > early
    stable_a, unstable_a = a[~grows], a[grows]
    lo = float(stable_a.max()) if stable_a.size else math.nan
    hi = float(unstable_a.min()) if unstable_a.size else math.nan
    return lo, hi


def measure_bias(tau: int, params: StalenessParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, measured relative bias of the stale gradient ``x_{T-tau}/x_T - 1``) over a scan up to 0.8 of
    the real-root limit."""
    hi = 0.8 * real_root_limit(tau)
    a, traj = _scan(tau, hi / 100.0, hi, params, seed)
    # read each coordinate at the last step where it is still far above float64 rounding (fast
    # coordinates reach ~1e-16 of the shift long before the end of the run)
    above = traj > 1e-9 * traj[0]
    last = np.where(above.all(axis=0), traj.shape[0] - 1, np.argmin(above, axis=0) - 1)
    cols = np.arange(traj.shape[1])
    return a, traj[last - tau, cols] / traj[last, cols] - 1.0


def measure_stationary(tau: int, b: int, params: StalenessParams, seed: int) -> np.ndarray:
    """Per-replicate time average of ``||theta - s||^2 / D`` of the engine's delayed SGD on the noisy sphere."""
    land = small_landscape("sphere", {"dim": params.dim, "noise_std": params.noise_std}, replicates=params.replicates, seed=seed)
    opt, _ = make_optimizer("sgd_async", {"lr": params.lr, "batch_size": b, "workers": 1, "delay_model": "fixed", "delay": tau},
                            land, seed=seed + 31 * tau + b)
    s = land.optimum()
    acc = torch.zeros(params.replicates, dtype=torch.float64)
    for k in range(params.burn_in + params.records):
        opt.step()
        if k >= params.burn_in:
            acc += ((opt.recommend() - s) ** 2).mean(dim=-1)
    return (acc / params.records).numpy()


def measure_final(tau: int, b: int, lr: float, params: StalenessParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(final ``||theta_T - s||^2`` per replicate, initial ``||theta_0 - s||^2``) after ``horizon`` steps."""
    land = small_landscape("sphere", {"dim": params.dim, "noise_std": params.noise_std}, replicates=params.replicates, seed=seed)
    opt, _ = make_optimizer("sgd_async", {"lr": lr, "batch_size": b, "workers": 1, "delay_model": "fixed", "delay": tau},
                            land, seed=seed + 31 * tau + b)
    s = land.optimum()
    e0 = ((land.initial_point - s) ** 2).sum(-1).numpy()
    for _ in range(params.horizon):
        opt.step()
    fin = ((opt.recommend() - s) ** 2).sum(-1).numpy()
    return np.where(opt.diverged.numpy(), np.inf, fin), e0


def measure_staleness(params: StalenessParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    rows, bound_rows, best_rows = [], [], []
    h, c = 2.0, 4.0 * params.noise_std**2
    with single_thread():
        for tau in sorted(set(params.delays)):
            lo, hi = measure_boundary(tau, params, seed)
            pred = delayed_stability_bound(tau)
            mid = math.sqrt(lo * hi) if not (math.isnan(lo) or math.isnan(hi)) else (hi if math.isnan(lo) else lo)
            rows.append(dict(quantity="stability boundary of delayed GD, lr h", series="", x_name="staleness tau", x=float(tau),
                             measured=mid, measured_low=lo, measured_high=hi, predicted=pred, log_x=False, log_y=True))
            bound_rows.append(dict(tau=tau, largest_stable=lo, smallest_unstable=hi, predicted=pred,
                                   predicted_inside_bracket=bool(lo <= pred <= hi)))
            if tau > 0:
                a, bias = measure_bias(tau, params, seed)
                for ai, bi in zip(a[:: max(1, len(a) // 12)], bias[:: max(1, len(a) // 12)]):
                    rows.append(dict(quantity="stale-gradient bias g(theta_{t-tau}) / g(theta_t) - 1",
                                     series=f"tau = {tau}", x_name="lr h", x=float(ai), measured=float(bi),
                                     predicted=stale_gradient_bias(float(ai), tau), log_x=True, log_y=True))
        for tau in sorted(set(params.variance_delays)):
            if params.lr * h >= delayed_stability_bound(tau):
                raise ParameterError("lr", params.lr, f"lr * 2 < {delayed_stability_bound(tau):.4g} for tau = {tau} (stable runs)",
                                     where=f"analysis {KIND!r}")
            for b in sorted(set(params.batch_sizes)):
                m, lo, hi = mean_ci(measure_stationary(tau, b, params, seed), confidence)
                rows.append(dict(quantity="stationary Var(theta_i - theta*_i) of delayed SGD", series=f"tau = {tau}",
                                 x_name="batch size b", x=float(b), measured=m, measured_low=lo, measured_high=hi,
                                 predicted=delayed_stationary_variance(params.lr, h, c, b, tau), log_x=True, log_y=True))
        for tau in sorted(set(params.variance_delays)):
            for b in sorted(set(params.batch_sizes)):
                curve_m, curve_p = [], []
                finals = {}
                grid = [lr for lr in sorted(set(params.lr_grid)) if lr * h < delayed_stability_bound(tau)]
                if len(grid) < 2:
                    continue
                for lr in grid:
                    fin, e0 = measure_final(tau, b, lr, params, seed)
                    phi, v = delayed_expected_square(lr, h, c, b, tau, params.horizon)
                    pred = float(phi**2 * e0.mean() + params.dim * v)
                    finals[lr] = fin
                    if np.isfinite(fin).all():
                        m, lo, hi = mean_ci(fin, confidence)
                    else:
                        m, lo, hi = math.inf, math.nan, math.nan
                    curve_m.append(m)
                    curve_p.append(pred)
                    if np.isfinite(m) and np.isfinite(pred):
                        rows.append(dict(quantity=f"E||theta_T - theta*||^2 after T = {params.horizon} steps", series=f"tau = {tau}, b = {b}",
                                         x_name="learning rate", x=lr, measured=m, measured_low=lo, measured_high=hi, predicted=pred,
                                         log_x=True, log_y=True))
                best_m, best_p = grid[int(np.argmin(curve_m))], grid[int(np.argmin(curve_p))]
                stack = np.stack([finals[lr] for lr in grid], axis=1)  # [R, lrs]
                lrs = np.asarray(grid)
                _, blo, bhi = bootstrap_ci(stack, lambda x, lrs=lrs: lrs[np.argmin(x.mean(axis=-2), axis=-1)],
                                           confidence=confidence, seed=seed)
                rows.append(dict(quantity=f"best learning rate on the grid after T = {params.horizon} steps", series=f"b = {b}",
                                 x_name="staleness tau", x=float(tau), measured=best_m, measured_low=blo, measured_high=bhi,
                                 predicted=best_p, log_x=False, log_y=True))
                best_rows.append(dict(tau=tau, batch_size=b, best_lr_measured=best_m, best_lr_predicted=best_p,
                                      best_lr_ci_low=blo, best_lr_ci_high=bhi,
                                      stability_limit_lr=delayed_stability_bound(tau) / h))
    bt = pd.DataFrame(bound_rows)
    notes = [f"stability boundary: the prediction 2 sin(pi/(2(2 tau+1))) lies inside the measured bracket [largest stable, smallest "
             f"unstable a] (resolution {fmt(100 * (SCAN_SPAN ** (2 / (params.scan_dim - 1)) - 1))}%) for {int(bt.predicted_inside_bracket.sum())} "
             f"of {len(bt)} staleness values."]
    if len(best_rows):
        br = pd.DataFrame(best_rows)
        agree = int((br.best_lr_measured == br.best_lr_predicted).sum())
        per_b = "; ".join(
            f"b = {b}: " + " -> ".join(f"{fmt(float(r.best_lr_predicted))} (tau = {int(r.tau)})" for r in g.sort_values("tau").itertuples())
            for b, g in br.groupby("batch_size"))
        notes.append(f"best learning rate after {params.horizon} steps: the measured grid optimum equals the predicted one in {agree} of "
                     f"{len(br)} (tau, b) settings; predicted best lr by staleness, {per_b}.")
    tables = {"stability": bt}
    if best_rows:
        tables["best_lr"] = pd.DataFrame(best_rows)
    return AnalysisResult(comparison_rows(rows), tables=tables, notes=notes, confidence=confidence,
                          title="Staleness: delayed-gradient SGD against its linear theory")


@ANALYSES.register(KIND, StalenessParams,
                   "delayed (stale-gradient) SGD via the engine's sgd_async: stability boundary lr h < 2 sin(pi/(2(2tau+1))), "
                   "bias of stale gradients, stationary variance vs batch size, best lr vs staleness", family="gradient")
def staleness(params: StalenessParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_staleness(params, seed=context.seed, confidence=0.95)
