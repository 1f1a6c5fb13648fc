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
    return AnalysisResult(comparison_rows(rows), tables={"one_step": t}, notes=notes, confidence=confidence,
                          title="Confidence-adaptive step vs constant step vs oracle, one step on a noisy quadratic")


@ANALYSES.register(KIND, ConfidenceParams,
                   "one SGD step on the noisy sphere with the engine's confidence rules (snr, norm_test) vs a constant step "
                   "and the oracle factor snr/(1+snr): expected loss after the step and the factor, vs snr", family="gradient")
def confidence_step(params: ConfidenceParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_confidence(params, seed=context.seed, confidence=0.95)
