"""What does the hardware do with the batch?  Cost per step, and the critical batch size.

1. Cost curve.  The wall-clock time of one SGD step (draw a batch, forward, backward, update) on
   the scenario's device, against the batch size b, with the line ``t(b) = a + c b`` (a, c >= 0, least relative squares): a fixed
   per-step overhead a (kernel launches, Python, synchronisation) amortised over the batch, and a
   per-example cost c.  Throughput ``b / t(b)`` then rises towards ``1 / c``; it is half of that
   at ``b = a / c``.  (On a GPU, ``c`` is ~0 until the device is full: the curve is sub-linear.)

2. Gradient noise scale (McCandlish, Kaplan, Amodei et al. 2018, 'An empirical model of
   large-batch training', arXiv:1812.06162, eq. 2.7): ``B_simple = tr(Sigma) / |G|^2`` with G the
   full gradient and Sigma the per-example gradient covariance.  Their model of training predicts
   that with the best learning rate at each batch size, steps and examples to reach a target obey

       S = S_min (1 + B_noise / B),        E = E_min (1 + B / B_noise),     E_min = S_min B_noise

   (eq. 2.11; ``B_crit = E_min / S_min``).  The measurement runs the registered ``sgd``
   optimizer (``OPTIMIZERS.build``) at each batch size with the learning rate
   ``lr_max / (1 + B_simple / B)`` (their eq. 2.6 for SGD), ``lr_max = lr_fraction / lambda_max(H)``
   (lambda_max from power iteration with Hessian-vector products), and counts the steps until the
   true loss error first falls below the target.  The prediction uses the measured ``B_simple``
   and fits the single remaining constant ``S_min`` (least squares in log S); the two-parameter
   fit ``S = S_min (1 + B_crit / B)`` is reported beside it.

   With a fixed learning rate (``lr`` set: the setting of a scenario that sweeps an ``sgd``
   optimizer's batch size at one learning rate), the per-step progress of their eq. 2.3,
   ``dL = eps |G|^2 - eps^2/2 (G'HG + tr(H Sigma)/B)``, still gives steps of the form
   ``S ~ S_min (1 + B_crit / B)`` (to first order in eps / eps_max) but with a ``B_crit`` that is
   no longer the noise scale, so the prediction is then the two-parameter fit.

   Sweep curves: with ``sweep_key`` (the scenario's dotted sweep key of that batch size, e.g.
   "optimizer.sgd.batch_size") and an absolute loss-error ``target``, the steps-to-target rows and
   "cost to target" rows (cost = grad_cost x B x steps, as the budget charges SGD) carry
   ``sweep_key``/``sweep_measure``/``sweep_target`` (``evosgd.core.analysis_api``), and the report
   draws their fitted curves over the swept runs' ERT in steps and in cost.  The curves are
   fitted to the analysis' *own* training runs, not to the swept runs.

3. Both together: the wall-clock time to target ``S(B) t(B) = S_min (1 + B_noise/B)(a + c B)``,
   smallest at ``B = sqrt(a B_noise / c)``: the device's overhead and the gradient noise decide the
   batch size jointly.

Confidence intervals: bootstrap over repeated timings (median), (delta method) over examples (noise scale) and
over replicates (steps to target, each replicate an independent landscape instance).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad_common import (
    POINT_DESCRIPTION,
    Point,
    analysis_generator,
    analysis_landscape,
    bootstrap_ci,
    evaluation_point,
    example_population,
    fmt,
    mean_ci,
    require_separable,
    single_thread,
)
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.errors import ConfigError, ParameterError
from evosgd.core.registry import ANALYSES, OPTIMIZERS
from evosgd.landscapes.base import per_example_grads

KIND = "hardware_batch_scaling"


# ----------------------------------------------------------------------------- theory
def fit_step_cost(batch_sizes: Any, times: Any) -> tuple[float, float]:
    """The line ``t = a + c b`` with a, c >= 0 that minimises the squared *relative* residuals
    ``sum ((a + c b - t) / t)^2`` (times span decades; an absolute fit would ignore the small b).
    Returns (a, c)."""
    from scipy.optimize import nnls

    b = np.asarray(batch_sizes, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    X = np.vstack([np.ones_like(b), b]).T / t[:, None]
    (a, c), _ = nnls(X, np.ones_like(t))
    return float(a), float(c)


def simple_noise_scale(trace_cov: float, grad_sq_norm: float) -> float:
    """``B_simple = tr(Sigma) / |G|^2`` (McCandlish et al. 2018, eq. 2.7)."""
    return float(trace_cov) / float(grad_sq_norm)


def steps_to_target(s_min: float, b_noise: float, batch_size: Any) -> Any:
    """``S = S_min (1 + B_noise / B)`` (McCandlish et al. 2018, eq. 2.11)."""
    return s_min * (1.0 + b_noise / np.asarray(batch_size, dtype=np.float64))


def examples_to_target(e_min: float, b_noise: float, batch_size: Any) -> Any:
    """``E = E_min (1 + B / B_noise)`` (McCandlish et al. 2018, eq. 2.11)."""
    return e_min * (1.0 + np.asarray(batch_size, dtype=np.float64) / b_noise)


def fit_s_min(batch_sizes: Any, steps: Any, b_noise: float) -> float:
    """Least squares in log S of ``S_min`` given B_noise: ``exp(mean(log S - log(1 + B_noise/B)))``."""
    b, s = np.asarray(batch_sizes, dtype=np.float64), np.asarray(steps, dtype=np.float64)
    return float(np.exp(np.mean(np.log(s) - np.log1p(b_noise / b))))


def fit_critical_batch(batch_sizes: Any, steps: Any) -> tuple[float, float]:
    """Two-parameter fit of ``S = S_min + S_min B_crit / B`` (linear in 1/B); returns (S_min, B_crit)."""
    b, s = np.asarray(batch_sizes, dtype=np.float64), np.asarray(steps, dtype=np.float64)
    X = np.vstack([np.ones_like(b), 1.0 / b]).T
    s_min, slope = np.linalg.lstsq(X, s, rcond=None)[0]
    return float(s_min), float(slope / s_min) if s_min > 0 else float("nan")


# ----------------------------------------------------------------------------- measurement
class HardwareParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[int] = Field([1, 2, 4, 8, 16, 32, 64, 128, 256, 512], min_length=2, description="batch sizes B to time and train with")
    timing_repeats: int = Field(30, ge=3, description="timed steps per batch size (after warm-up); the median is reported")
    warmup: int = Field(5, ge=0, description="untimed steps first (allocator, caches, lazy initialisation)")
    noise_population: int = Field(4096, ge=16, description="examples for the gradient noise scale (a finite-sum landscape's dataset when it is smaller)")
    noise_point: Point = Field("initial", description="where B_simple is measured; " + POINT_DESCRIPTION)
    train: bool = Field(True, description="measure steps-to-target with the 'sgd' optimizer at each batch size")
    target_fraction: float = Field(0.05, gt=0, lt=1, description="target: true-loss error below this fraction of the initial error")
    lr_fraction: float = Field(0.5, gt=0, lt=2, description="lr_max = lr_fraction / lambda_max(H) at the initial point")
    max_steps: int = Field(5000, ge=1, description="steps allowed to reach the target (replicates that do not are reported)")
    lr: float | None = Field(None, gt=0, description="a fixed learning rate at every batch size (as a swept sgd optimizer "
                                                     "uses); None: McCandlish's lr_max / (1 + B_noise/B)")
    target: float | None = Field(None, gt=0, description="absolute true-loss error target (as the scenario's targets); "
                                                         "None: target_fraction of each instance's initial error")
    sweep_key: str = Field("", description="the scenario's dotted sweep key of the sgd batch size (e.g. "
                                           "'optimizer.sgd.batch_size'): the fitted steps/cost curves are drawn on "
                                           "that sweep's panels; '' = none (needs an absolute target)")
    bootstrap: int = Field(500, ge=50, description="bootstrap resamples (timing medians)")
    threads: int = Field(1, ge=0, description="torch intra-op threads while timing (1: what each run of the runner gets by default; "
                                              "0: leave the process's setting)")


def time_steps(landscape: Any, theta: torch.Tensor, batch_sizes: list[int], repeats: int, warmup: int,
               generator: torch.Generator) -> dict[int, np.ndarray]:
    """Seconds per SGD step (sample, forward, backward, update) at each batch size."""
    sync = torch.cuda.synchronize if landscape.device.type == "cuda" else (lambda: None)
    out = {}
    for b in batch_sizes:
        th = theta.detach().clone()
        ts = []
        for k in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            batch = landscape.sample(b, generator)
            p = th.requires_grad_(True)
            g, = torch.autograd.grad(landscape.loss(p, batch).sum(), p)
            th = (p - 1e-6 * g).detach()  # a tiny step: the point barely moves, the work is a real step's
            sync()
            if k >= warmup:
                ts.append(time.perf_counter() - t0)
        out[b] = np.asarray(ts)
    return out


def hessian_top_eigenvalue(landscape: Any, theta: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """lambda_max of the Hessian of the true loss at theta ``[R, D]`` per replicate, by power
    iteration on Hessian-vector products (double backward)."""
    v = torch.ones_like(theta) / math.sqrt(theta.shape[-1])
    lam = torch.zeros(theta.shape[0], dtype=theta.dtype, device=theta.device)
    for _ in range(iterations):
        p = theta.detach().clone().requires_grad_(True)
        g, = torch.autograd.grad(landscape.true_loss(p).sum(), p, create_graph=True)
        hv, = torch.autograd.grad((g * v).sum(), p)
        lam = (hv * v).sum(-1)
        v = hv / hv.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return lam.abs().detach()


def noise_scale_ci(per_example: torch.Tensor, confidence: float = 0.95) -> tuple[float, float, float]:
    """B_simple of per-example gradients ``[N, D]`` with a delta-method (infinitesimal jackknife)
    interval: ``B = T / S`` with ``T = mean ||g_i - g||^2``, ``S = ||g||^2``; the influence of example i
    is ``(||g_i - g||^2 - T - 2 B g.(g_i - g)) / S`` and ``Var B ~ mean(influence^2) / N``
    (Efron & Tibshirani 1993, sec. 21.3).  O(N D), unlike a bootstrap that would resample [N, D]."""
    from scipy import stats

    G = per_example.to(torch.float64)
    g = G.mean(0)
    c = G - g
    sq = (c * c).sum(1)
    T, S = float(sq.mean()), float(g @ g)
    B = T / S
    infl = (sq - T - 2.0 * B * (c @ g)) / S
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * float(infl.pow(2).mean().sqrt()) / (G.shape[0] ** 0.5)
    return B, B - half, B + half


def measure_noise_scale(landscape: Any, theta: torch.Tensor, population: int, generator: torch.Generator,
                        confidence: float) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """Per-replicate B_simple ``[R]`` (the population's covariance, divisor N) and replicate 0's
    value with its delta-method CI."""
    require_separable(landscape, f"analysis {KIND!r}")
    pop, N = example_population(landscape, population, generator)
    G = per_example_grads(landscape, theta, pop).to(torch.float64)  # [R, N, D]
    mean = G.mean(1)
    trace = ((G - mean.unsqueeze(1)) ** 2).sum(-1).mean(1)
    b_simple = (trace / (mean**2).sum(-1)).cpu().numpy()
    ci = noise_scale_ci(G[0], confidence)
    return b_simple, ci, {"trace_cov": float(trace[0]), "grad_sq_norm": float((mean[0] ** 2).sum()), "population": N}


def train_to_target(landscape: Any, batch_size: int, lr: float, target: np.ndarray, max_steps: int,
                    generator: torch.Generator) -> np.ndarray:
    """Steps (per replicate) until the true-loss error first falls to ``target`` [R]; NaN if never."""
    from evosgd.core.budget import Budget, BudgetLimits

    R = landscape.replicates
    budget = Budget(R, limits=BudgetLimits(max_steps=max_steps))
    opt = OPTIMIZERS.build("sgd", {"lr": lr, "batch_size": batch_size}, landscape=landscape, budget=budget, generator=generator)
    opt_loss = landscape.optimal_loss()
    tgt = torch.as_tensor(target, device=landscape.device, dtype=torch.float64)
    hit = np.full(R, np.nan)
    with torch.no_grad():
        for step in range(1, max_steps + 1):
            opt.step()
            err = (landscape.true_loss(opt.recommend()) - opt_loss).to(torch.float64)
            new = (err <= tgt).cpu().numpy() & np.isnan(hit)
            hit[new] = step
            if not np.isnan(hit).any() or bool(opt.diverged.all()):
                break
    return hit


def measure_hardware(landscape: Any, params: HardwareParams, generator: torch.Generator, confidence: float = 0.95,
                     train_landscape: Any = None, grad_cost: float = 3.0) -> AnalysisResult:
    where = f"analysis {KIND!r}"
    bs = sorted(set(params.batch_sizes))
    if bs[0] < 1:
        raise ParameterError("batch_sizes", params.batch_sizes, "integers >= 1", where=where)
    if params.sweep_key and (params.target is None or not params.train):
        raise ParameterError("sweep_key", params.sweep_key, "'' unless train = true and an absolute target is set "
                             "(a sweep panel shows runtime to the scenario's absolute targets)", where=where)
    rows, notes, tables = [], [], {}
    # 1. the cost curve on the device
    previous = torch.get_num_threads()
    if params.threads:
        torch.set_num_threads(params.threads)
    try:
        times = time_steps(landscape, landscape.initial_point, bs, params.timing_repeats, params.warmup, generator)
    finally:
        torch.set_num_threads(previous)
    med = {b: float(np.median(t)) for b, t in times.items()}
    a, c = fit_step_cost(bs, [med[b] for b in bs])
    for b in bs:
        m, lo, hi = bootstrap_ci(times[b], lambda x: np.median(x, axis=-1), confidence=confidence, resamples=params.bootstrap, seed=b)
        rows.append(dict(quantity="time per step", series=str(landscape.device), x_name="batch size", x=b, measured=m,
                         measured_low=lo, measured_high=hi, predicted=a + c * b, unit="s", log_x=True, log_y=True))
        rows.append(dict(quantity="examples per second", series=str(landscape.device), x_name="batch size", x=b, measured=b / m,
                         measured_low=b / hi, measured_high=b / lo, predicted=b / (a + c * b) if a + c * b > 0 else float("nan"),
                         unit="examples/s", log_x=True, log_y=True))
    tables["step_times"] = pd.DataFrame([{"batch_size": b, "median_s": med[b], "min_s": float(times[b].min()),
                                          "max_s": float(times[b].max())} for b in bs])
    threads = params.threads or previous
    notes.append(f"{landscape.device}{f' ({threads} thread(s))' if landscape.device.type == 'cpu' else ''}: "
                 f"t(b) = {fmt(a)} s + {fmt(c)} s x b per step; "
                 f"throughput {fmt(bs[0] / med[bs[0]])} examples/s at b = {bs[0]} and {fmt(bs[-1] / med[bs[-1]])} at b = {bs[-1]} "
                 f"({fmt(med[bs[-1]] / med[bs[0]])}x the time for {bs[-1] // bs[0]}x the examples).")
    if c > 0:
        notes.append(f"half of the saturated throughput 1/c = {fmt(1 / c)} examples/s is reached at b = a/c = {fmt(a / c)}.")
    # 2. gradient noise scale, and 3. steps to target
    land = train_landscape if train_landscape is not None else landscape
    theta = evaluation_point(land, params.noise_point, where)
    b_simple_r, (bs0, bs_lo, bs_hi), info = measure_noise_scale(land, theta, params.noise_population, generator, confidence)
    b_noise = float(np.mean(b_simple_r))
    m, lo, hi = mean_ci(b_simple_r, confidence) if len(b_simple_r) > 1 else (bs0, bs_lo, bs_hi)
    notes.append(f"gradient noise scale B_simple = tr(Sigma)/|G|^2 at the {params.noise_point} point: {fmt(bs0)} "
                 f"(replicate 0, {confidence:.0%} delta-method CI {fmt(bs_lo)}..{fmt(bs_hi)}; mean over {len(b_simple_r)} instances {fmt(m)}).")
    tables["noise_scale"] = pd.DataFrame([{"replicate": r, "b_simple": float(v)} for r, v in enumerate(b_simple_r)])
    tables["noise_scale_replicate0"] = pd.DataFrame([{**info, "b_simple": bs0, "ci_low": bs_lo, "ci_high": bs_hi}])
    if params.train:
        if land.optimal_loss() is None:
            raise ConfigError(f"{where}: steps-to-target needs a landscape with a known optimal loss (or set train = false)")
        if "sgd" not in OPTIMIZERS:
            raise ConfigError(f"{where}: the 'sgd' optimizer is not registered (set train = false)")
        x0 = land.initial_point
        lam = hessian_top_eigenvalue(land, x0)
        lr_max = float(params.lr_fraction / lam.max())
        err0 = (land.true_loss(x0) - land.optimal_loss()).detach().to(torch.float64).cpu().numpy()
        target = params.target_fraction * err0 if params.target is None else np.full(err0.shape, params.target)
        steps, lrs = {}, {}
        for b in bs:
            lrs[b] = lr_max / (1.0 + b_noise / b) if params.lr is None else params.lr
            steps[b] = train_to_target(land, b, lrs[b], target, params.max_steps, generator)
        reached = [b for b in bs if not np.isnan(steps[b]).any()]
        train_rows = []
        for b in bs:
            s = steps[b]
            ok = s[~np.isnan(s)]
            train_rows.append({"batch_size": b, "lr": lrs[b], "replicates_reaching_target": int(ok.size),
                               "replicates": int(s.size), "mean_steps": float(ok.mean()) if ok.size else float("nan")})
        tables["steps_to_target"] = pd.DataFrame(train_rows)
        if len(reached) >= 2:
            mean_steps = np.array([steps[b].mean() for b in reached])
            s_min = fit_s_min(reached, mean_steps, b_noise)
            s_min2, b_crit = fit_critical_batch(reached, mean_steps)
            # the curve: McCandlish's with the measured B_noise (only S_min fitted) under their lr rule;
            # at a fixed lr the two-parameter fit (B_crit is then not the noise scale: see the docstring)
            rule = params.lr is None
            s_fit, b_fit = (s_min, b_noise) if rule else (s_min2, b_crit)
            fitted = rule or (s_min2 > 0 and np.isfinite(b_crit))
            series = "sgd, lr = lr_max / (1 + B_noise/B)" if rule else f"sgd, lr = {params.lr:g}"
            tag = {}
            if params.sweep_key:
                tag = dict(sweep_key=params.sweep_key, sweep_target=float(params.target))
            for b in reached:
                sm, slo, shi = mean_ci(steps[b], confidence) if steps[b].size > 1 else (float(steps[b][0]),) * 3
                s_pred = float(steps_to_target(s_fit, b_fit, b)) if fitted else float("nan")
                rows.append(dict(quantity="steps to target", series=series, x_name="batch size", x=b,
                                 measured=sm, measured_low=slo, measured_high=shi,
                                 predicted=s_pred, unit="steps", log_x=True, log_y=True,
                                 **(dict(tag, sweep_measure="steps_to_target") if tag else {})))
                # E = S B; E_min (1 + B/B_noise) with E_min = S_min B_noise is the same curve
                rows.append(dict(quantity="examples to target", series=series, x_name="batch size", x=b,
                                 measured=sm * b, measured_low=slo * b, measured_high=shi * b,
                                 predicted=float(examples_to_target(s_fit * b_fit, b_fit, b)) if fitted else float("nan"),
                                 unit="examples", log_x=True, log_y=True))
                if tag:  # the budget charges SGD grad_cost per example gradient: cost = grad_cost B S
                    rows.append(dict(quantity="cost to target", series=series, x_name="batch size", x=b,
                                     measured=grad_cost * b * sm, measured_low=grad_cost * b * slo,
                                     measured_high=grad_cost * b * shi, predicted=grad_cost * b * s_pred, unit="cost",
                                     log_x=True, log_y=True, **tag, sweep_measure="cost_to_target"))
                # both halves together: wall-clock time to target on this device = steps x time per step
                rows.append(dict(quantity="time to target (steps x time per step)", series=str(landscape.device), x_name="batch size",
                                 x=b, measured=sm * med[b], measured_low=slo * med[b], measured_high=shi * med[b],
                                 predicted=s_pred * (a + c * b), unit="s", log_x=True, log_y=True))
            fastest = min(reached, key=lambda b: steps[b].mean() * med[b])
            bname = "B_noise" if rule else "B_crit"
            notes.append(f"fastest batch size in wall-clock time on {landscape.device}: {fastest} (measured steps x median step time); "
                         f"the model S_min (1 + {bname}/B)(a + c B) is smallest at B = sqrt(a {bname} / c) = "
                         f"{fmt(math.sqrt(a * b_fit / c)) if c > 0 and fitted else 'infinity (no per-example cost measured)' if fitted else 'n/a'}.")
            goal = (f"{params.target_fraction:g} of the initial error" if params.target is None
                    else f"a loss error of {params.target:g}")
            notes.append(f"steps to reach {goal} ({series}): fitted S_min = {fmt(s_min)} given B_noise = "
                         f"{fmt(b_noise)}; a free fit S = S_min (1 + B_crit/B) gives S_min = {fmt(s_min2)}, B_crit = {fmt(b_crit)} "
                         f"({fmt(b_crit / b_noise)}x the measured noise scale)"
                         + ("; the predictions use the free fit (a fixed learning rate)." if not rule else "."))
            if tag and fitted:
                notes.append(f"the curves drawn on the sweep of {params.sweep_key} (steps and cost to {params.target:g}) are "
                             f"S = {fmt(s_fit)} (1 + {fmt(b_fit)}/B) and cost = {fmt(grad_cost)} B S, fitted to this analysis' "
                             f"own training runs ({len(reached)} batch sizes x {land.replicates} instances), not to the swept runs.")
        missed = [b for b in bs if b not in reached]
        if missed:
            notes.append(f"batch sizes where some replicate did not reach the target within {params.max_steps} steps: {missed}.")
    return AnalysisResult(comparison_rows(rows), tables=tables, notes=notes, confidence=confidence,
                          title="What does the hardware do with the batch? Cost per step and the critical batch size")


@ANALYSES.register(KIND, HardwareParams,
                   "time per step and examples/s vs batch size on the device (fit a + c b); gradient noise scale "
                   "B_simple = tr(Sigma)/|G|^2 and steps/examples to target vs B against McCandlish et al. (2018)",
                   family="gradient")
def hardware_batch_scaling(params: HardwareParams, *, context: AnalysisContext) -> AnalysisResult:
    # timing: one instance (a single model, as a user would train); training: every replicate
    timing = analysis_landscape(context, f"analysis {KIND!r}", replicates=1)
    train = analysis_landscape(context, f"analysis {KIND!r}", replicates=context.replicates)
    with single_thread():  # timing sets its own thread count; the rest is small tensors
        return measure_hardware(timing, params, analysis_generator(context), confidence=0.95, train_landscape=train,
                                grad_cost=context.grad_cost)
