"""What do stragglers cost?  The step time of synchronous data-parallel SGD against order statistics.

A synchronous step waits for its K workers; with ``backup`` extra workers (N = K + backup) it waits
for the fastest K of N and drops the rest (Chen et al. 2016, "Revisiting distributed synchronous
SGD").  With iid worker times ``T_i ~ F``, the step time is the K-th order statistic of N::

    step time = T_(K:N) + comm,      E T_(K:N) = int_0^inf P(T_(K:N) > x) dx,
    P(T_(K:N) <= x) = P(Bin(N, F(x)) >= K) = I_{F(x)}(K, N - K + 1)

(I the regularized incomplete beta function; David & Nagaraja, *Order Statistics*, 3rd ed. 2003,
eq. 2.1.5), for non-negative T.  Closed forms:

* exponential, rate lambda (mean mu = 1/lambda): ``E max_K = H_K / lambda`` and
  ``E T_(K:N) = (H_N - H_{N-K}) / lambda`` (Renyi 1953: the spacings of exponential order
  statistics are independent exponentials of rates N, N-1, ...);  H_n the n-th harmonic number;
* shifted exponential ``s + Exp(lambda)``: ``s + (H_N - H_{N-K}) / lambda``;
* two-point straggler (base time, ``slowdown`` times slower with probability p):
  ``base (1 + (slowdown - 1) P(Bin(N, 1 - p) <= K - 1))``;
* lognormal: the integral above by numerical quadrature (scipy.integrate.quad).

So without backups the step of K exponential workers takes ``H_K ~ ln K + 0.577`` mean worker
times: K workers process K shards per step, a throughput speedup of only ``K / H_K`` (7.9 for K =
32), and a few backup workers buy most of it back.  Time to target at a fixed global batch is
(steps to target, which the worker count does not change) x E[step time].

Time to target (exact in expectation).  On the noisy sphere (per-example gradient ``2(theta - s - xi)``,
``xi ~ N(0, sigma^2 I)``) SGD with rate lr and global batch ``B = K * shard`` has, with ``rho = 1 - 2 lr``,

    E||e_t||^2 = rho^(2t) E||e_0||^2 + F_inf (1 - rho^(2t)),     F_inf = D lr sigma^2 / (B (1 - lr))

(the Lyapunov floor of ``evosgd.analysis.sgd_stationary`` with h = 2, c = 4 sigma^2), so the expected
error reaches a target eps > F_inf after ``t* = ceil(ln((eps - F_inf)/(E||e_0||^2 - F_inf)) / ln rho^2)``
steps, in expected time ``t* E[T_(K:N)]``: more workers lower the floor (a bigger batch) but every step
waits for the slowest — the time to target has an optimum in K, and targets below a floor are
never reached.

The measurement steps the engine's ``sgd_sync`` optimizer (on a tiny noise-free sphere: the
gradient is irrelevant to the clock) and reads its ``step_time`` metric; per-replicate means
are iid, so the Student-t interval over replicates is the CI.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import integrate, special, stats

from evosgd.analysis.grad2_common import make_optimizer, small_landscape
from evosgd.analysis.grad_common import fmt, mean_ci, single_thread
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES
from evosgd.gradient.distributed import (
    ConstantTime,
    ExponentialTime,
    LognormalTime,
    ShiftedExponentialTime,
    StragglerTime,
    WorkerTimeSpec,
)

KIND = "straggler_step_time"


# ----------------------------------------------------------------------------- theory
def harmonic_number(n: int) -> float:
    """``H_n = sum_{i=1}^n 1/i`` (H_0 = 0)."""
    return float(sum(1.0 / i for i in range(1, int(n) + 1)))


def expected_max_exponential(workers: int, rate: float) -> float:
    """``E max(T_1..T_K) = H_K / lambda`` for iid Exp(lambda) times (Renyi 1953)."""
    return harmonic_number(workers) / rate


def expected_order_statistic_exponential(k: int, n: int, mean: float) -> float:
    """``E T_(k:n) = mu (H_n - H_{n-k})`` for iid exponential times of mean mu (Renyi 1953)."""
    if not 1 <= k <= n:
        raise ParameterError("k", k, f"1 <= k <= n = {n}")
    return mean * (harmonic_number(n) - harmonic_number(n - k))


def expected_order_statistic(cdf: Any, k: int, n: int) -> float:
    """``E T_(k:n) = int_0^inf (1 - I_{F(x)}(k, n - k + 1)) dx`` for iid non-negative times with
    distribution function ``cdf`` (David & Nagaraja 2003, eq. 2.1.5), by scipy.integrate.quad."""
    if not 1 <= k <= n:
        raise ParameterError("k", k, f"1 <= k <= n = {n}")

    def survival(x: float) -> float:
        return 1.0 - float(special.betainc(k, n - k + 1, min(1.0, max(0.0, float(cdf(x))))))

    value, _ = integrate.quad(survival, 0.0, np.inf, limit=200, epsabs=1e-11, epsrel=1e-10)
    return float(value)


def expected_order_statistic_lognormal(k: int, n: int, mu: float, sigma: float) -> float:
    """``E T_(k:n)`` for ``T = exp(N(mu, sigma^2))`` by numerical integration."""
    dist = stats.lognorm(s=sigma, scale=math.exp(mu))
    return expected_order_statistic(dist.cdf, k, n)


def expected_order_statistic_two_point(k: int, n: int, base: float, p: float, slowdown: float) -> float:
    """Two-point times (``base``, or ``slowdown * base`` with probability p): the K-th fastest is slow
    exactly when fewer than K of the N workers are fast, ``P(Bin(N, 1 - p) <= K - 1)``."""
    return base * (1.0 + (slowdown - 1.0) * float(stats.binom.cdf(k - 1, n, 1.0 - p)))


def expected_step_time(spec: Any, workers: int, backup_workers: int = 0, comm_time: float = 0.0) -> float:
    """``E[T_(K:K+backup)] + comm`` for one of the engine's worker-time specs."""
    k, n = workers, workers + backup_workers
    if isinstance(spec, ConstantTime):
        t = spec.value
    elif isinstance(spec, ExponentialTime):
        t = expected_order_statistic_exponential(k, n, spec.mean_time)
    elif isinstance(spec, ShiftedExponentialTime):
        t = spec.shift + expected_order_statistic_exponential(k, n, spec.mean_time)
    elif isinstance(spec, LognormalTime):
        t = expected_order_statistic_lognormal(k, n, spec.mu, spec.sigma)
    elif isinstance(spec, StragglerTime):
        t = expected_order_statistic_two_point(k, n, spec.base, spec.p, spec.slowdown)
    else:  # pragma: no cover - the spec union is closed
        raise ParameterError("compute_time", spec, "a worker-time spec of evosgd.gradient.distributed")
    return t + comm_time


def noisy_sphere_floor(dim: int, lr: float, noise_std: float, batch_size: int) -> float:
    """Stationary ``E||theta - s||^2`` of SGD on the noisy sphere: ``D lr sigma^2 / (B (1 - lr))``."""
    return dim * lr * noise_std**2 / (batch_size * (1.0 - lr))


def steps_to_target(initial: float, floor: float, lr: float, target: float) -> float:
    """First t with ``rho^(2t) initial + floor (1 - rho^(2t)) <= target`` (rho = 1 - 2 lr); inf if
    the target is not above the floor."""
    if target <= floor:
        return math.inf
    if initial <= target:
        return 0.0
    rho2 = (1.0 - 2.0 * lr) ** 2
    return float(math.ceil(math.log((target - floor) / (initial - floor)) / math.log(rho2)))


def describe_time(spec: Any) -> str:
    d = spec.model_dump()
    kind = d.pop("kind")
    return kind + "(" + ", ".join(f"{k}={fmt(v)}" for k, v in d.items()) + ")"


# ----------------------------------------------------------------------------- measurement
class StragglerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workers: list[int] = Field([1, 2, 4, 8, 16, 32], min_length=1, description="numbers of workers K whose gradients make a step")
    backup_workers: list[int] = Field([0, 2], min_length=1, description="extra workers (step waits for the fastest K of K + backup)")
    compute_times: list[WorkerTimeSpec] = Field(
        default_factory=lambda: [ExponentialTime(kind="exponential", mean_time=1.0),
                                 ShiftedExponentialTime(kind="shifted_exponential", shift=1.0, mean_time=0.5),
                                 LognormalTime(kind="lognormal", mu=0.0, sigma=0.5)],
        min_length=1, description="worker-time distributions (the engine's compute_time specs)")
    comm_time: float = Field(0.0, ge=0.0, description="communication time added to every step")
    replicates: int = Field(32, ge=2, description="independent replicates (the CI is over their mean step times)")
    steps: int = Field(50, ge=1, description="steps per replicate and configuration")
    target: float | None = Field(0.05, gt=0.0, description="time-to-target part: target for E||theta - theta*||^2 on the noisy "
                                                            "sphere (None: skip the part)")
    shard: int = Field(4, ge=1, description="time-to-target part: examples per worker (global batch = K * shard)")
    lr: float = Field(0.1, gt=0.0, lt=0.5, description="time-to-target part: learning rate (the sphere's curvature is 2)")
    noise_std: float = Field(1.0, gt=0.0, description="time-to-target part: per-example noise sigma of the sphere")
    dim: int = Field(10, ge=1, description="time-to-target part: dimension of the sphere")
    target_replicates: int = Field(64, ge=2, description="time-to-target part: replicates (the expected error is their mean)")
    max_steps: int = Field(150, ge=1, description="time-to-target part: steps before giving up (the default target is reached in ~20)")


def measure_step_times(spec: Any, workers: int, backup: int, comm: float, *, replicates: int, steps: int,
                       seed: int) -> np.ndarray:
    """Per-replicate mean step time ``[replicates]`` of the engine's ``sgd_sync`` over ``steps`` steps."""
    land = small_landscape("sphere", {"dim": 1}, replicates=replicates, seed=seed)
    opt, budget = make_optimizer("sgd_sync", {"lr": 0.1, "batch_size": workers, "workers": workers, "backup_workers": backup,
                                              "compute_time": spec.model_dump(), "comm_time": comm}, land, seed=seed)
    for _ in range(steps):
        opt.step()
    return budget.sim_time / steps  # the engine's simulated clock, advanced by each step's drawn duration


def measure_time_to_target(spec: Any, workers: int, backup: int, params: StragglerParams, *, seed: int,
                           confidence: float = 0.95) -> tuple[float, float, float, float, float]:
    """Engine ``sgd_sync`` on the noisy sphere: (measured time at which the replicate-mean error first
    reaches the target, its bootstrap CI, predicted time, predicted steps); NaN if never reached."""
    B = workers * params.shard
    land = small_landscape("sphere", {"dim": params.dim, "noise_std": params.noise_std}, replicates=params.target_replicates, seed=seed)
    opt, budget = make_optimizer("sgd_sync", {"lr": params.lr, "batch_size": B, "workers": workers, "backup_workers": backup,
                                              "compute_time": spec.model_dump(), "comm_time": params.comm_time}, land, seed=seed)
    s = land.optimum()
    e0 = ((land.initial_point - s) ** 2).sum(-1).numpy()
    floor = noisy_sphere_floor(params.dim, params.lr, params.noise_std, B)
    n_pred = steps_to_target(float(e0.mean()), floor, params.lr, float(params.target))
    t_pred = n_pred * expected_step_time(spec, workers, backup, params.comm_time) if math.isfinite(n_pred) else math.nan
    errs, times = [e0], [np.zeros_like(e0)]
    for _ in range(params.max_steps):
        opt.step()
        errs.append(((opt.recommend() - s) ** 2).sum(-1).numpy())
        times.append(budget.sim_time.copy())
        if errs[-1].mean() <= params.target and len(errs) > 2 * max(n_pred if math.isfinite(n_pred) else 0, 1):
            break
    E, Tm = np.stack(errs, axis=1), np.stack(times, axis=1)  # [R, steps + 1]

    def first_time(idx: np.ndarray) -> np.ndarray:  # idx [m, R] resamples of replicates
        curve = E[idx].mean(axis=1)  # [m, steps + 1]
        hit = curve <= params.target
        k = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
        t = Tm[idx].mean(axis=1)[np.arange(len(k)), k]
        return np.where(k >= 0, t, np.nan)

    est = float(first_time(np.arange(E.shape[0])[None])[0])
    rng = np.random.default_rng(seed)
    boot = first_time(rng.integers(0, E.shape[0], size=(400, E.shape[0])))
    lo, hi = (np.nanquantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2]) if np.isfinite(boot).mean() > 0.5
              else (math.nan, math.nan))
    return est, float(lo), float(hi), t_pred, n_pred


def measure_stragglers(params: StragglerParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    rows, table = [], []
    inside = total = 0
    with single_thread():
        for spec in params.compute_times:
            name = describe_time(spec)
            base = expected_step_time(spec, 1, 0, params.comm_time)
            for backup in sorted(set(params.backup_workers)):
                for K in sorted(set(params.workers)):
                    per_rep = measure_step_times(spec, K, backup, params.comm_time, replicates=params.replicates,
                                                 steps=params.steps, seed=seed + 7919 * K + backup)
                    m, lo, hi = mean_ci(per_rep, confidence)
                    pred = expected_step_time(spec, K, backup, params.comm_time)
                    inside += lo <= pred <= hi
                    total += 1
                    series = name + ("" if backup == 0 else f", {backup} backup")
                    rows.append(dict(quantity="expected step time E[T_(K:K+backup)] + comm", series=series, x_name="workers K",
                                     x=float(K), measured=m, measured_low=lo, measured_high=hi, predicted=pred,
                                     unit="time units", log_x=True, log_y=False))
                    rows.append(dict(quantity="throughput speedup over one worker (K E[T] / E[step])", series=series,
                                     x_name="workers K", x=float(K), measured=K * base / m,
                                     measured_low=K * base / hi if hi > 0 else math.nan, measured_high=K * base / lo if lo > 0 else math.nan,
                                     predicted=K * base / pred, log_x=True, log_y=True))
                    row = dict(compute_time=name, workers=K, backup_workers=backup, measured_step_time=m,
                               predicted_step_time=pred, slowdown_vs_one_worker=pred / base, predicted_speedup=K * base / pred)
                    if params.target is not None:
                        tm, tlo, thi, tp, n_pred = measure_time_to_target(spec, K, backup, params, seed=seed + 7919 * K + backup,
                                                                          confidence=confidence)
                        row.update(global_batch=K * params.shard, predicted_steps_to_target=n_pred, measured_time_to_target=tm,
                                   predicted_time_to_target=tp)
                        if math.isfinite(tp) or math.isfinite(tm):
                            rows.append(dict(quantity=f"time to target E||theta - theta*||^2 <= {fmt(params.target)} (noisy sphere, "
                                                      f"batch = {params.shard} K)", series=series, x_name="workers K", x=float(K),
                                             measured=tm, measured_low=tlo, measured_high=thi, predicted=tp, unit="time units",
                                             log_x=True, log_y=True))
                    table.append(row)
    t = pd.DataFrame(table)
    notes = [f"the order-statistic prediction lies inside the measured {confidence:.0%} CI of the mean step time at "
             f"{inside} of {total} (distribution, K, backup) settings ({params.replicates} replicates x {params.steps} steps each); "
             f"largest relative gap {fmt(100 * float((t.measured_step_time / t.predicted_step_time - 1).abs().max()))}% "
             f"(a rare slow event never drawn gives a zero-width interval)."]
    no_backup = t[t.backup_workers == t.backup_workers.min()]
    for name, g in no_backup.groupby("compute_time", sort=False):
        big = g.loc[g.workers.idxmax()]
        notes.append(f"{name}: {int(big.workers)} workers wait {fmt(big.slowdown_vs_one_worker)} x a single worker's mean time per "
                     f"step, a throughput speedup of {fmt(big.predicted_speedup)} instead of {int(big.workers)}.")
    if t.backup_workers.nunique() > 1:
        kmax = int(t.workers.max())
        at = t[t.workers == kmax]
        for name, g in at.groupby("compute_time", sort=False):
            g = g.sort_values("backup_workers")
            first, last = g.iloc[0], g.iloc[-1]
            notes.append(f"{name}, K = {kmax}: {int(last.backup_workers)} backup workers cut the predicted step time from "
                         f"{fmt(first.predicted_step_time)} to {fmt(last.predicted_step_time)} "
                         f"(measured {fmt(first.measured_step_time)} -> {fmt(last.measured_step_time)}).")
    if params.target is not None and "predicted_time_to_target" in t:
        for name, g in t[t.backup_workers == t.backup_workers.min()].groupby("compute_time", sort=False):
            reach = g[np.isfinite(g.predicted_time_to_target)]
            never = g[~np.isfinite(g.predicted_time_to_target)]
            if len(reach):
                best = reach.loc[reach.predicted_time_to_target.idxmin()]
                mbest = reach.loc[reach.measured_time_to_target.idxmin()] if reach.measured_time_to_target.notna().any() else None
                notes.append(f"{name}: time to E||e||^2 <= {fmt(params.target)} is predicted shortest with K = {int(best.workers)} "
                             f"({fmt(float(best.predicted_time_to_target))} time units)"
                             + (f", measured shortest with K = {int(mbest.workers)}" if mbest is not None else "")
                             + (f"; K <= {int(never.workers.max())} never reach it (their batch's noise floor is above the target)"
                                if len(never) else "") + ".")
    return AnalysisResult(comparison_rows(rows), tables={"step_time": t}, notes=notes, confidence=confidence,
                          title="Synchronous step time against order statistics (stragglers, backup workers)")


@ANALYSES.register(KIND, StragglerParams,
                   "step time of synchronous SGD (engine sgd_sync) vs the expected K-th order statistic of the worker times "
                   "(H_K/lambda for exponential; numerical integration for lognormal), with backup workers", family="gradient")
def straggler_step_time(params: StragglerParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_stragglers(params, seed=context.seed, confidence=0.95)
