"""An optimal learning-rate schedule as a function of batch size and staleness, derived, then run
against constant, cosine and 1/t schedules under the engine's asynchronous (delayed-gradient) SGD.

Model: the noisy quadratic, per coordinate ``x = theta_i - theta*_i``, curvature h, per-example gradient
variance c, batch b, staleness tau (``x_{t+1} = x_t - eta_t (h x_{t-tau} + xi_t)``, ``Var xi = c/b``).

Derivation of ``eta*_t(b, tau)``.

1. *Noise phase (the 1/t tail, set by b).*  Without delay, ``E x_{t+1}^2 = (1 - eta h)^2 E x_t^2 + eta^2 c/b``
   is minimised by ``eta_t = h e_t^2 / (h^2 e_t^2 + c/b)`` (``e_t^2 = E x_t^2``); inserting it gives
   ``1/e_{t+1}^2 = 1/e_t^2 + h^2 b / c``, so ``e_t^2 = 1/(1/e_0^2 + t h^2 b/c)`` and

       eta_t = 1 / (h (t + 1 + t0)),        t0 = c / (b h^2 e_0^2)

   -- the greedy-optimal rate is exactly a 1/t law whose offset t0 (the step at which the noise floor
   of the batch reaches the remaining error) grows as the batch shrinks.  For small eta the stale iterate
   equals the current one to first order (``x_{t-tau} = x_t + O(eta tau)``), so the tail is the same
   for every tau.
2. *Transient phase (the ceiling, set by tau).*  Delayed gradient descent contracts as the dominant root
   of ``z^{tau+1} - z^tau + a = 0`` (``a = eta h``, ``evosgd.analysis.staleness``); its modulus is smallest at the
   double root ``a*(tau) = tau^tau / (tau+1)^(tau+1)`` (1/4 for tau = 1, 1/(e (tau+1)) for large tau), where
   ``z = tau/(tau+1)``; above it the roots turn complex and the iteration rings, and it diverges at
   ``2 sin(pi / (2(2 tau + 1)))``.  So no step should exceed ``a*(tau)/h`` (``a*(0) = 1``: Newton's step).

Together::

    eta*_t(b, tau) = min( a*(tau) / h ,  1 / (h (t + 1 + t0(b))) )

(engine: ``schedule = {kind = "capped_inverse_time", decay = 1/(1 + t0), cap = a*/h}`` with
``lr = 1/(h (1 + t0))``).  This is a greedy, not a dynamic-programming, optimum; the exact expected loss of
*any* schedule follows from the second moments of the companion state ``(x_t, ..., x_{t-tau})``,
``S_{t+1} = A(eta_t) S_t A(eta_t)^T + eta_t^2 (c/b) e_0 e_0^T`` from the padded start ``S_0 = e_0^2 1 1^T``
(exact for the linear model), which gives the predicted final error of every schedule and so the
predicted optimum among those run.

Measurement: the engine's ``sgd_async`` with ``delay_model = "fixed"`` (the delayed-gradient model) on the
noisy sphere (h = 2, c = 4 sigma^2), R replicates, T steps; the mean final ``||theta_T - theta*||^2`` with its
Student-t interval; schedules compared by paired geometric-mean ratios (replicates share their start).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from evosgd.analysis.grad2_common import make_optimizer, small_landscape
from evosgd.analysis.grad_common import fmt, mean_ci, single_thread
from evosgd.analysis.staleness import companion_matrix, real_root_limit
from evosgd.analysis.verdict import (
    judge_coverage,
    judge_direction,
    judge_value,
    paired_log_ratio,
    verdict_table,
)
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.registry import ANALYSES

KIND = "lr_schedule_staleness"
SCHEDULES = ("derived", "constant-cap", "constant-cap/4", "cosine", "inverse-time")


# ----------------------------------------------------------------------------- theory
def fastest_contraction(tau: int) -> float:
    """``a*(tau) = tau^tau / (tau+1)^(tau+1)`` (1 for tau = 0): the ``eta h`` of fastest delayed contraction."""
    return 1.0 if tau == 0 else real_root_limit(tau)


def noise_offset(h: float, c: float, batch_size: int, e0_sq: float) -> float:
    """``t0 = c / (b h^2 e_0^2)``: steps after which the batch's noise floor meets the remaining error."""
    return c / (batch_size * h * h * e0_sq)


def derived_lr(t: np.ndarray | int, h: float, c: float, batch_size: int, tau: int, e0_sq: float) -> np.ndarray:
    """``eta*_t(b, tau) = min(a*(tau)/h, 1/(h (t + 1 + t0)))``."""
    t0 = noise_offset(h, c, batch_size, e0_sq)
    return np.minimum(fastest_contraction(tau) / h, 1.0 / (h * (np.asarray(t, dtype=float) + 1.0 + t0)))


def derived_schedule_spec(h: float, c: float, batch_size: int, tau: int, e0_sq: float) -> tuple[float, dict]:
    """``(lr, schedule)`` of the engine giving :func:`derived_lr`."""
    t0 = noise_offset(h, c, batch_size, e0_sq)
    return 1.0 / (h * (1.0 + t0)), {"kind": "capped_inverse_time", "decay": 1.0 / (1.0 + t0), "cap": fastest_contraction(tau) / h}


def expected_error(lrs: np.ndarray, h: float, c: float, batch_size: int, tau: int, e0_sq: float) -> float:
    """Exact ``E x_T^2`` of delayed SGD with the rates ``lrs`` (length T) from the padded start ``e_0^2``."""
    n = tau + 1
    S = np.full((n, n), e0_sq)
    for lr in np.asarray(lrs, dtype=float):
        A = companion_matrix(lr, h, tau)
        S = A @ S @ A.T
        S[0, 0] += lr * lr * c / batch_size
    return float(S[0, 0])


def schedule_rates(name: str, steps: int, h: float, c: float, batch_size: int, tau: int, e0_sq: float) -> tuple[np.ndarray, float, dict]:
    """Per-step rates, and the engine's ``(lr, schedule)``, of one of the compared schedules."""
    t = np.arange(steps, dtype=float)
    cap = fastest_contraction(tau) / h
    if name == "derived":
        lr, spec = derived_schedule_spec(h, c, batch_size, tau, e0_sq)
        return derived_lr(t, h, c, batch_size, tau, e0_sq), lr, spec
    if name == "constant-cap":
        return np.full(steps, cap), cap, {"kind": "constant"}
    if name == "constant-cap/4":
        return np.full(steps, cap / 4), cap / 4, {"kind": "constant"}
    if name == "cosine":
        return cap * 0.5 * (1 + np.cos(math.pi * np.minimum(t, steps) / steps)), cap, {"kind": "cosine", "total_steps": steps}
    if name == "inverse-time":
        decay = 10.0 / steps
        return cap / (1 + decay * t), cap, {"kind": "inverse_time", "decay": decay}
    raise ValueError(f"unknown schedule {name!r}; allowed: {SCHEDULES}")


# ----------------------------------------------------------------------------- measurement
class LRScheduleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[int] = Field([1, 8], min_length=1, description="batch sizes b")
    delays: list[int] = Field([0, 2, 8], min_length=1, description="staleness values tau (engine sgd_async, delay_model fixed)")
    steps: int = Field(300, ge=10, description="horizon T (steps) at which the error is compared")
    dim: int = Field(8, ge=1, description="dimension of the noisy sphere")
    noise_std: float = Field(1.0, gt=0.0, description="per-example noise sigma of the sphere (c = 4 sigma^2)")
    replicates: int = Field(32, ge=3, description="replicates (paired across schedules: same start)")


def run_schedule(name: str, b: int, tau: int, p: LRScheduleParams, seed: int) -> tuple[np.ndarray, float, float]:
    """(final ||theta_T - theta*||^2 per replicate, predicted mean, e0^2 per coordinate) of one schedule."""
    h, c = 2.0, 4.0 * p.noise_std**2
    land = small_landscape("sphere", {"dim": p.dim, "noise_std": p.noise_std}, replicates=p.replicates, seed=seed)
    s = land.optimum()
    e0 = ((land.initial_point - s) ** 2).sum(-1).numpy()
    e0_sq = float(e0.mean() / p.dim)
    rates, lr, spec = schedule_rates(name, p.steps, h, c, b, tau, e0_sq)
    opt, _ = make_optimizer("sgd_async", {"lr": lr, "batch_size": b, "workers": 1, "delay_model": "fixed", "delay": tau,
                                          "schedule": spec}, land, seed=seed + 31 * tau + b)
    for _ in range(p.steps):
        opt.step()
    fin = ((opt.recommend() - s) ** 2).sum(-1).numpy()
    fin = np.where(opt.diverged.numpy(), np.inf, fin)
    return fin, p.dim * expected_error(rates, h, c, b, tau, e0_sq), e0_sq


def measure_lr_schedule(p: LRScheduleParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    rows, table, verdicts, optimum = [], [], [], []
    lows, highs, preds, meas = [], [], [], []
    with single_thread():
        for b in sorted(set(p.batch_sizes)):
            for tau in sorted(set(p.delays)):
                finals, pred = {}, {}
                for name in SCHEDULES:
                    finals[name], pred[name], e0_sq = run_schedule(name, b, tau, p, seed)
                    m, lo, hi = mean_ci(finals[name], confidence) if np.isfinite(finals[name]).all() else (math.inf, math.nan, math.nan)
                    rows.append(dict(quantity=f"E||theta_T - theta*||^2 after T = {p.steps} steps, b = {b}", series=name,
                                     x_name="staleness tau", x=float(tau), measured=m, measured_low=lo,
                                     measured_high=hi, predicted=pred[name], log_y=True))
                    lows.append(lo), highs.append(hi), preds.append(pred[name]), meas.append(m)
                    table.append(dict(batch_size=b, tau=tau, schedule=name, measured=m, low=lo, high=hi, predicted=pred[name]))
                best_pred = min(pred, key=pred.get)
                means = {k: float(np.mean(v)) for k, v in finals.items()}
                best_meas = min(means, key=means.get)
                others = [k for k in SCHEDULES if k != "derived"]
                rival = min(others, key=means.get)  # the best of the standard schedules, measured
                r, rlo, rhi = paired_log_ratio(finals[rival], finals["derived"], confidence)
                verdicts.append(judge_direction(f"b = {b}, tau = {tau}: the derived eta*(b, tau) ends lower than every standard "
                                                f"schedule (best of them: {rival})", math.log(r) if r > 0 else math.nan,
                                                math.log(rlo) if rlo > 0 else math.nan, math.log(rhi) if rhi > 0 else math.nan,
                                                expected="positive", confidence=confidence,
                                                what=f"log of the error ratio {rival} / derived (ratio {fmt(r)})"))
                t_lr = derived_lr(np.arange(p.steps), 2.0, 4.0 * p.noise_std**2, b, tau, e0_sq)
                optimum.append(dict(batch_size=b, tau=tau, predicted_best=best_pred, measured_best=best_meas,
                                    best_standard=rival, ratio_best_standard_to_derived=r, ratio_low=rlo, ratio_high=rhi,
                                    derived_lr_first=float(t_lr[0]), derived_lr_last=float(t_lr[-1]),
                                    derived_cap=fastest_contraction(tau) / 2.0,
                                    noise_offset_t0=noise_offset(2.0, 4.0 * p.noise_std**2, b, e0_sq)))
    v_cov = judge_coverage("the exact second-moment recursion predicts the final error of every schedule", lows, highs, preds,
                           measured=meas, confidence=confidence, what="(b, tau, schedule) runs")
    t, opt_t = pd.DataFrame(table), pd.DataFrame(optimum)
    agree = int((opt_t.predicted_best == opt_t.measured_best).sum())
    verdicts.insert(0, v_cov)
    n_set = len(opt_t)
    ci = stats.binomtest(agree, n_set).proportion_ci(confidence, method="exact")  # exact interval of the agreement
    verdicts.append(judge_value("the predicted best schedule is the measured best (fraction of settings)", agree / n_set,
                                ci.low, ci.high, 1.0, confidence=confidence))
    notes = [f"noisy sphere D = {p.dim}, sigma = {fmt(p.noise_std)}, engine sgd_async (fixed delay), T = {p.steps} steps, "
             f"{p.replicates} paired replicates per (b, tau, schedule); cap a*(tau)/h and standard schedules start at the cap.",
             "predicted / measured best schedule per (b, tau): " + "; ".join(
                 f"b = {int(r.batch_size)}, tau = {int(r.tau)}: {r.predicted_best} / {r.measured_best}"
                 for r in opt_t.itertuples()) + "."]
    return AnalysisResult(comparison_rows(rows), tables={"schedules": t, "optimum": opt_t, "verdicts": verdict_table(verdicts)},
                          notes=notes,
                          confidence=confidence, title="Learning-rate schedule eta*(b, tau) for delayed SGD: derived vs standard")


@ANALYSES.register(KIND, LRScheduleParams,
                   "derived learning-rate schedule eta*(b, tau) = min(a*(tau)/h, 1/(h(t+1+t0(b)))) against constant, cosine and "
                   "1/t schedules under the engine's delayed-gradient sgd_async; exact predicted errors; verdicts", family="gradient")
def lr_schedule_staleness(params: LRScheduleParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_lr_schedule(params, seed=context.seed, confidence=0.95)
