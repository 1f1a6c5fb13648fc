"""Does a confidence-adaptive learning rate help?  One SGD step on a noisy quadratic, with the step
scaled by the engine's CLT-confidence rule, against a constant step and the oracle factor.

Setting (exact).  Loss ``F(theta) = (h/2) ||theta - theta*||^2``; a mini-batch of b examples gives
``g = grad F + zeta`` with ``E zeta = 0``, ``E||zeta||^2 = V / b`` (V = tr of the per-example gradient
covariance).  A step ``theta - lr c g`` with ``lr = 1/h`` (the noise-free optimum) leaves

    E[F - F*] = (h/2) [ (1 - c)^2 ||e||^2 + c^2 V / (h^2 b) ],         e = theta - theta*,

minimised by the oracle factor ``c* = ||grad F||^2 / (||grad F||^2 + V/b) = snr / (1 + snr)``,
``snr = ||grad F||^2 / (V/b)`` (Balles & Hennig 2018, "Dissecting Adam", sec. 3: M-SVAG's factor,
here for the whole vector).  The engine's ``confidence = "snr"`` rule estimates it from the batch
itself, ``c = max(0, 1 - (V_hat/b) / ||g||^2)`` (``evosgd.gradient.transforms.scale_by_confidence``);
``norm_test`` is Byrd et al.'s (2012) test turned into a factor.  So:

* constant step (c = 1): ``E[F - F*] = V / (2 h b)`` — the noise floor does not shrink with ||e||:
  far from the optimum (high snr) the constant step is near optimal, close to it (low snr) it
  *adds* error (``V / (2hb) > (h/2)||e||^2`` once snr < 1);
* oracle: ``(h/2) ||e||^2 / (1 + snr)``, never worse than not moving;
* the rule: measured, compared with the oracle it estimates (its own c is noisy, so it sits between).

The measurement places R replicates of the engine's ``sgd`` at distance d from the optimum of the
noisy ``sphere`` (``h = 2``, per-example gradient ``2(theta - s - xi)``, ``V = 4 sigma^2 D``), with
``d = sigma sqrt(snr D / b)`` for each requested snr, takes one step and reads the true loss error
(and the ``confidence`` metric); the Student-t interval over replicates is the CI.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad2_common import make_optimizer, small_landscape
from evosgd.analysis.grad_common import fmt, mean_ci, single_thread
from evosgd.analysis.verdict import judge_coverage, judge_direction, paired_log_ratio, verdict_table
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.registry import ANALYSES

KIND = "confidence_step"
Rule = Literal["constant", "snr", "norm_test"]


# ----------------------------------------------------------------------------- theory
def one_step_error(factor: float, dist2: float, noise: float, h: float) -> float:
    """``E[F - F*]`` after ``theta - (c/h) g``: ``(h/2)[(1-c)^2 ||e||^2 + c^2 (V/b) / h^2]`` with
    ``dist2 = ||e||^2`` and ``noise = V / b``."""
    return 0.5 * h * ((1.0 - factor) ** 2 * dist2 + factor**2 * noise / h**2)


def oracle_factor(grad_norm2: float, noise: float) -> float:
    """``c* = ||grad F||^2 / (||grad F||^2 + V/b) = snr / (1 + snr)`` (Balles & Hennig 2018)."""
    total = grad_norm2 + noise
    return 1.0 if total == 0 else grad_norm2 / total


# ----------------------------------------------------------------------------- measurement
class ConfidenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snrs: list[float] = Field([0.1, 0.3, 1.0, 3.0, 10.0, 30.0], min_length=1,
                              description="signal-to-noise ratios ||grad F||^2 / (V/b) at which the step is taken")
    rules: list[Rule] = Field(["constant", "snr", "norm_test"], min_length=1, description="step rules compared")
    batch_size: int = Field(8, ge=2, description="mini-batch size b (>= 2: the rule needs a variance estimate)")
    dim: int = Field(10, ge=1, description="dimension of the noisy sphere")
    noise_std: float = Field(1.0, gt=0.0, description="per-example noise sigma of the sphere (V = 4 sigma^2 D)")
    norm_test_theta: float = Field(1.0, gt=0.0, description="theta of the norm_test rule")
    replicates: int = Field(2000, ge=2, description="independent one-step trials per (snr, rule)")
    run_steps: int = Field(400, ge=0, description="multi-step part: steps of the engine's sgd from the sphere's start "
                                                  "with each rule and with 1/t and cosine schedules (0: skip the part)")
    run_lr: float = Field(0.1, gt=0.0, lt=1.0, description="multi-step part: base learning rate (curvature h = 2)")
    run_replicates: int = Field(16, ge=3, description="multi-step part: paired replicates (same start)")


def one_step(params: ConfidenceParams, rule: str, snr: float, seed: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(error after one step [R], confidence factor [R], ||e||^2, V/b) of the engine's sgd with lr = 1/h."""
    h, D, b, sigma = 2.0, params.dim, params.batch_size, params.noise_std
    land = small_landscape("sphere", {"dim": D, "noise_std": sigma}, replicates=params.replicates, seed=seed)
    p = {"lr": 1.0 / h, "batch_size": b}
    if rule != "constant":
        p.update(confidence=rule, confidence_theta=params.norm_test_theta)
    opt, _ = make_optimizer("sgd", p, land, seed=seed + int(1000 * snr))
    s = land.optimum()
    d = sigma * math.sqrt(snr * D / b)
    u = land.initial_point - s
    opt.theta = s + d * u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)  # start on the sphere of radius d
    opt.step()
    err = (land.true_loss(opt.recommend()) - land.optimal_loss()).numpy()
    factor = opt.metrics().get("confidence", torch.ones(params.replicates, dtype=torch.float64))
    return err, np.asarray(factor, dtype=np.float64), d * d, 4.0 * sigma**2 * D / b


def measure_confidence(params: ConfidenceParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    h = 2.0
    rows, table = [], []
    with single_thread():
        for snr in sorted(set(params.snrs)):
            for rule in params.rules:
                err, factor, dist2, noise = one_step(params, rule, snr, seed)
                c_star = oracle_factor(h * h * dist2, noise)
                m, lo, hi = mean_ci(err, confidence)
                # lines: the closed form of the constant step; for the snr rule, the oracle it estimates
                # (norm_test does not estimate the oracle: no line)
                pred = (one_step_error(1.0, dist2, noise, h) if rule == "constant"
                        else one_step_error(c_star, dist2, noise, h) if rule == "snr" else math.nan)
                rows.append(dict(quantity="E[F - F*] after one step (lines: constant closed form; snr: oracle)", series=rule,
                                 x_name="snr = ||grad F||^2 / (V/b)", x=snr,
                                 measured=m, measured_low=lo, measured_high=hi, predicted=pred, log_x=True, log_y=True))
                if rule != "constant":
                    fm, flo, fhi = mean_ci(factor, confidence)
                    rows.append(dict(quantity="mean step factor c (line: oracle snr / (1 + snr))", series=rule,
                                     x_name="snr = ||grad F||^2 / (V/b)", x=snr, measured=fm, measured_low=flo, measured_high=fhi,
                                     predicted=c_star if rule == "snr" else math.nan, log_x=True, log_y=False))
                table.append(dict(snr=snr, rule=rule, error_before=dist2, error_after=m, error_after_low=lo, error_after_high=hi,
                                  predicted=pred, oracle_error=one_step_error(c_star, dist2, noise, h),
                                  mean_factor=float(factor.mean()), oracle_factor=c_star))
    t = pd.DataFrame(table)
    notes = [f"noisy sphere D = {params.dim}, sigma = {fmt(params.noise_std)}, b = {params.batch_size}, lr = 1/h; "
             f"{params.replicates} one-step trials per (snr, rule)."]
    const = t[t.rule == "constant"]
    if len(const):
        inside = int(((const.error_after_low <= const.predicted) & (const.predicted <= const.error_after_high)).sum())
        notes.append(f"constant step: the closed form V/(2hb) lies inside the measured CI at {inside} of {len(const)} snr values; it "
                     f"exceeds the error before the step (the step hurts) at snr < 1: "
                     f"{', '.join(fmt(s) for s in const[const.predicted > const.error_before].snr)}.")
    for rule in [r for r in params.rules if r != "constant"]:
        g = t[t.rule == rule].set_index("snr")
        if len(const):
            c = const.set_index("snr")
            better = [s for s in g.index if g.error_after[s] < c.error_after[s]]
            notes.append(f"rule '{rule}': lower one-step error than the constant step at {len(better)} of {len(g)} snr values"
                         + (f" (snr {', '.join(fmt(s) for s in better)})" if better else "")
                         + f"; its error is {fmt(float((g.error_after / g.oracle_error).min()))}..{fmt(float((g.error_after / g.oracle_error).max()))}"
                           " x the oracle's.")
    verdicts = _one_step_verdicts(t, params, confidence)
    tables = {"one_step": t}
    if params.run_steps > 0:
        run_rows, run_table, run_verdicts, run_note = _multi_step(params, seed, confidence)
        rows += run_rows
        tables["multi_step"] = run_table
        verdicts += run_verdicts
        notes.append(run_note)
    tables["verdicts"] = verdict_table(verdicts)
    return AnalysisResult(comparison_rows(rows), tables=tables, notes=notes, confidence=confidence,
                          title="Confidence-adaptive step vs constant step vs oracle, one step on a noisy quadratic")


def _one_step_verdicts(t: pd.DataFrame, params: ConfidenceParams, confidence: float) -> list:
    out = []
    const = t[t.rule == "constant"]
    if len(const):
        out.append(judge_coverage("one constant step leaves E[F - F*] = V / (2 h b)", const.error_after_low,
                                  const.error_after_high, const.predicted, measured=const.error_after, confidence=confidence,
                                  what="snr values"))
    snr = t[t.rule == "snr"]
    if len(snr):
        out.append(judge_coverage("the 'snr' rule reaches the oracle factor's one-step error (h/2)||e||^2 / (1 + snr)",
                                  snr.error_after_low, snr.error_after_high, snr.oracle_error, measured=snr.error_after,
                                  confidence=confidence, what="snr values"))
    return out


def _multi_step(params: ConfidenceParams, seed: int, confidence: float) -> tuple[list, pd.DataFrame, list, str]:
    """The engine's sgd for ``run_steps`` steps on the noisy sphere with each rule and with 1/t and cosine
    schedules (same start per replicate): final ``E[F - F*]``, paired geometric-mean ratios."""
    D, b, sigma, T = params.dim, params.batch_size, params.noise_std, params.run_steps
    land = small_landscape("sphere", {"dim": D, "noise_std": sigma}, replicates=params.run_replicates, seed=seed)
    configs = {r: ({} if r == "constant" else {"confidence": r, "confidence_theta": params.norm_test_theta}) for r in params.rules}
    configs["inverse-time"] = {"schedule": {"kind": "inverse_time", "decay": 2.0 * params.run_lr}}  # eta_0/(1 + h eta_0 t): the 1/(h t) law
    configs["cosine"] = {"schedule": {"kind": "cosine", "total_steps": T}}
    finals = {}
    for name, extra in configs.items():
        opt, _ = make_optimizer("sgd", {"lr": params.run_lr, "batch_size": b, **extra}, land, seed=seed + 17)
        for _ in range(T):
            opt.step()
        finals[name] = (land.true_loss(opt.recommend()) - land.optimal_loss()).numpy()
    rows, table = [], []
    for name, f in finals.items():
        m, lo, hi = mean_ci(f, confidence)
        rows.append(dict(quantity=f"E[F - F*] after {T} steps of the engine's sgd (lr {fmt(params.run_lr)}, b = {b})",
                         series=name, x_name="steps", x=float(T), measured=m,
                         measured_low=lo, measured_high=hi, log_y=True))
        table.append(dict(method=name, final_error=m, low=lo, high=hi))
    verdicts = []
    schedules = [k for k in ("inverse-time", "cosine") if k in finals]
    best_schedule = min(schedules, key=lambda k: float(np.mean(finals[k])))
    for rule in [r for r in params.rules if r != "constant"]:
        r, lo, hi = paired_log_ratio(finals["constant"], finals[rule], confidence) if "constant" in finals else (math.nan,) * 3
        verdicts.append(judge_direction(f"over {T} steps the confidence rule '{rule}' ends lower than a constant rate",
                                        math.log(r), math.log(lo), math.log(hi), expected="positive", confidence=confidence,
                                        what=f"log(constant / {rule} final error) (ratio {fmt(r)})"))
        r2, lo2, hi2 = paired_log_ratio(finals[best_schedule], finals[rule], confidence)
        verdicts.append(judge_direction(f"over {T} steps the confidence rule '{rule}' ends lower than the best schedule "
                                        f"({best_schedule})", math.log(r2), math.log(lo2), math.log(hi2), expected="positive",
                                        confidence=confidence, what=f"log({best_schedule} / {rule} final error) (ratio {fmt(r2)})"))
    tt = pd.DataFrame(table)
    note = (f"over {T} steps of the engine's sgd (lr {fmt(params.run_lr)}, b = {b}, {params.run_replicates} paired replicates), "
            "mean final E[F - F*]: " + ", ".join(f"{r.method} {fmt(r.final_error)}" for r in tt.itertuples()) + ".")
    return rows, tt, verdicts, note


@ANALYSES.register(KIND, ConfidenceParams,
                   "one SGD step on the noisy sphere with the engine's confidence rules (snr, norm_test) vs a constant step "
                   "and the oracle factor snr/(1+snr): expected loss after the step and the factor, vs snr", family="gradient")
def confidence_step(params: ConfidenceParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_confidence(params, seed=context.seed, confidence=0.95)
