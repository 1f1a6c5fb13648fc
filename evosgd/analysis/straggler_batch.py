"""Do small batches cut the straggler penalty?  Time lost waiting for the slowest worker against the
shard size, measured on the engine's ``sgd_sync`` with per-example worker times.

Model (``evosgd.gradient.distributed.shard_times``).  K workers (no backups) each compute a shard of
m examples; worker i takes ``T_i = c0 + m X_i`` (``per_example_correlated``: a slow machine is slow on
all its examples) or ``T_i = c0 + X_i1 + ... + X_im`` (``per_example_independent``), X iid from the
compute-time distribution.  A step lasts ``T_(K:K) + comm``; a worker waits ``T_(K:K) - T_i``.  The
time lost per worker and step is (David & Nagaraja 2003 for the order statistics)::

    W(m) = E T_(K:K) - E T = E max_i T_i - E T_1
         = m (E X_(K:K) - E X)                              correlated: exactly linear in m
         = E S_(K:K) - m E X,   S ~ X_1 + ... + X_m          independent: for exponential X of mean
                                                             mu, S ~ Gamma(m, mu): ~ sqrt(m) growth

(``E S_(K:K)`` by quadrature of the Gamma law's order statistic, ``stragglers.expected_order_statistic``).
So the source's "small batches minimise the time wasted waiting for stragglers at each update" holds
per step.  Per example processed (a step handles K m examples) the waste is ``W(m) / (K m)``: constant
in m for correlated times, *falling* like 1/sqrt(m) for independent ones; and with a fixed overhead
c0 the throughput ``K m / (E T_(K:K) + comm) = K m / (c0 + m E X + W(m) + comm)`` rises with m.  The analysis measures all four
(wait per step, wait per example, idle fraction ``W / E step``, throughput) and judges each claim.

Measurement: the engine's ``idle`` accumulator (sum over used workers of ``T_(K:N) - T_i``) and simulated
clock over ``steps`` steps per replicate; per-replicate means are iid, so the Student-t interval over
replicates is the CI; the slopes are least-squares slopes of log(per-replicate value) on log m.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from evosgd.analysis.grad2_common import make_optimizer, small_landscape
from evosgd.analysis.grad_common import fmt, mean_ci, single_thread
from evosgd.analysis.stragglers import expected_order_statistic, expected_step_time
from evosgd.analysis.verdict import (
    judge_coverage,
    judge_direction,
    slope_ci,
    verdict_table,
)
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

KIND = "straggler_batch"
TimeModel = Literal["per_example_correlated", "per_example_independent"]


# ----------------------------------------------------------------------------- theory
def expected_wait_correlated(spec: Any, workers: int, shard: int) -> float:
    """``m (E X_(K:K) - E X)``: time a worker loses per step waiting for the slowest of K when its
    time is ``c0 + m X``."""
    return shard * (expected_step_time(spec, workers) - spec.mean())


def _sum_law(spec: Any, shard: int) -> Any:
    """The law of ``X_1 + ... + X_m`` minus its deterministic part, where it has a closed form."""
    if isinstance(spec, ExponentialTime):
        return stats.gamma(a=shard, scale=spec.mean_time)
    if isinstance(spec, ShiftedExponentialTime):
        return stats.gamma(a=shard, scale=spec.mean_time)  # the shift m s cancels in the wait
    return None


def expected_wait_independent(spec: Any, workers: int, shard: int) -> float:
    """``E S_(K:K) - E S`` with ``S`` a sum of m iid worker times (Gamma law for exponential times)."""
    if isinstance(spec, ConstantTime):
        return 0.0
    law = _sum_law(spec, shard)
    if law is None:
        raise ParameterError("compute_time", spec.kind, "exponential, shifted_exponential or constant for the "
                             "per_example_independent prediction (the sum of m draws has a closed form)")
    return expected_order_statistic(law.cdf, workers, workers) - float(law.mean())


def expected_wait(spec: Any, model: str, workers: int, shard: int) -> float:
    if model == "per_example_correlated":
        return expected_wait_correlated(spec, workers, shard)
    return expected_wait_independent(spec, workers, shard)


def expected_sync_step(spec: Any, model: str, workers: int, shard: int, overhead: float, comm: float) -> float:
    """``E T_(K:K) + comm = c0 + E[mean worker time] + W(m) + comm``."""
    return overhead + shard * spec.mean() + expected_wait(spec, model, workers, shard) + comm


# ----------------------------------------------------------------------------- measurement
class StragglerBatchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shard_sizes: list[int] = Field([1, 2, 4, 8, 16, 32, 64], min_length=3, description="examples per worker m (global batch K m)")
    workers: int = Field(8, ge=2, description="workers K (the step waits for all of them)")
    time_models: list[TimeModel] = Field(["per_example_correlated", "per_example_independent"], min_length=1,
                                         description="how a worker's time grows with its shard (engine sgd_sync time_model)")
    compute_time: WorkerTimeSpec = Field(default_factory=lambda: ExponentialTime(kind="exponential", mean_time=0.1),
                                         description="per-example compute time X of a worker")
    overhead_time: float = Field(1.0, ge=0.0, description="fixed per-step overhead c0 of a worker")
    comm_time: float = Field(0.5, ge=0.0, description="communication time per step")
    replicates: int = Field(32, ge=3, description="replicates (the CI is over their per-replicate means)")
    steps: int = Field(100, ge=1, description="steps per replicate and shard size")


def measure_shard(model: str, shard: int, p: StragglerBatchParams, seed: int) -> dict[str, np.ndarray]:
    """Per replicate: mean wait per worker per step, mean step time (engine sgd_sync on a 1-D sphere:
    the gradient does not touch the clock)."""
    land = small_landscape("sphere", {"dim": 1}, replicates=p.replicates, seed=seed)
    opt, budget = make_optimizer("sgd_sync", {"lr": 0.1, "batch_size": p.workers * shard, "workers": p.workers,
                                              "compute_time": p.compute_time.model_dump(), "comm_time": p.comm_time,
                                              "time_model": model, "overhead_time": p.overhead_time}, land, seed=seed)
    for _ in range(p.steps):
        opt.step()
    wait = opt.idle.cpu().numpy() / (p.workers * p.steps)
    step = budget.sim_time / p.steps
    return {"wait": wait, "step": step}


def _check_spec(p: StragglerBatchParams) -> None:
    if "per_example_independent" in p.time_models and isinstance(p.compute_time, (LognormalTime, StragglerTime)):
        raise ParameterError("compute_time", p.compute_time.kind, "exponential, shifted_exponential or constant with "
                             "per_example_independent (its prediction needs the law of a sum of draws)",
                             where=f"analysis {KIND!r}")


def measure_straggler_batch(p: StragglerBatchParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    _check_spec(p)
    K, spec = p.workers, p.compute_time
    rows, table, verdicts = [], [], []
    xn = "examples per worker m"
    with single_thread():
        for model in p.time_models:
            per = {}
            for m in sorted(set(p.shard_sizes)):
                r = measure_shard(model, m, p, seed + 7919 * m + (0 if model == "per_example_correlated" else 1))
                w_pred = expected_wait(spec, model, K, m)
                s_pred = expected_sync_step(spec, model, K, m, p.overhead_time, p.comm_time)
                values = {
                    "time lost waiting for the slowest worker, per worker and step": (r["wait"], w_pred, True),
                    "time lost waiting per example processed (per worker)": (r["wait"] / m, w_pred / m, True),
                    "idle fraction of worker time (wait / step time)": (r["wait"] / r["step"], w_pred / s_pred, False),
                    "throughput (examples per unit time)": (K * m / r["step"], K * m / s_pred, True),
                }
                for q, (v, pred, logy) in values.items():
                    mm, lo, hi = mean_ci(v, confidence)
                    rows.append(dict(quantity=q, series=model, x_name=xn, x=float(m), measured=mm, measured_low=lo,
                                     measured_high=hi, predicted=pred, log_x=True, log_y=logy))
                    per.setdefault(q, []).append((m, v))
                table.append(dict(time_model=model, shard=m, global_batch=K * m, wait_measured=float(r["wait"].mean()),
                                  wait_predicted=w_pred, step_measured=float(r["step"].mean()), step_predicted=s_pred))
            comp = pd.DataFrame([x for x in rows if x["series"] == model])
            wq = comp[comp.quantity.str.startswith("time lost waiting for")]
            verdicts.append(judge_coverage(f"{model}: the time lost per step waiting for the slowest of {K} workers is "
                                           "the order-statistics prediction W(m)", wq.measured_low, wq.measured_high,
                                           wq.predicted, measured=wq.measured, confidence=confidence, what="shard sizes"))
            claims = [("time lost waiting for the slowest worker, per worker and step", "smaller batches cut the time "
                       "lost waiting for stragglers per step", "positive"),
                      ("time lost waiting per example processed (per worker)", "smaller batches cut the straggler "
                       "time per example processed (per epoch)", "positive"),
                      ("idle fraction of worker time (wait / step time)", "smaller batches cut the fraction of worker "
                       "time lost to stragglers", "positive"),
                      ("throughput (examples per unit time)", "smaller batches give a higher throughput", "negative")]
            for q, claim, sign in claims:
                xs = np.concatenate([np.full(len(v), math.log(m)) for m, v in per[q]])
                ys = np.concatenate([np.log(np.maximum(v, 1e-300)) for _, v in per[q]])
                s, lo, hi = slope_ci(xs, ys, confidence)
                verdicts.append(judge_direction(f"{model}: {claim}", s, lo, hi, expected=sign, confidence=confidence,
                                                what=f"slope of log({q.split(' (')[0]}) on log m"))
    t = pd.DataFrame(table)
    notes = [f"{K} workers, per-example time {fmt(spec.mean())} on average ({spec.kind}), overhead {fmt(p.overhead_time)}, "
             f"communication {fmt(p.comm_time)} per step; {p.replicates} replicates x {p.steps} steps per shard size."]
    for model, g in t.groupby("time_model", sort=False):
        lo_m, hi_m = g.iloc[0], g.iloc[-1]
        notes.append(f"{model}: wait per step {fmt(lo_m.wait_measured)} at m = {int(lo_m.shard)} -> "
                     f"{fmt(hi_m.wait_measured)} at m = {int(hi_m.shard)} (predicted {fmt(lo_m.wait_predicted)} -> "
                     f"{fmt(hi_m.wait_predicted)}); per example {fmt(lo_m.wait_measured / lo_m.shard)} -> "
                     f"{fmt(hi_m.wait_measured / hi_m.shard)}.")
    return AnalysisResult(comparison_rows(rows), tables={"wait": t, "verdicts": verdict_table(verdicts)}, notes=notes,
                          confidence=confidence, title="Stragglers against the batch size (order statistics, per-example times)")


@ANALYSES.register(KIND, StragglerBatchParams,
                   "time lost waiting for the slowest worker of synchronous SGD (engine sgd_sync, per-example worker times) "
                   "against the shard size, per step, per example, idle fraction and throughput, with verdicts",
                   family="gradient")
def straggler_batch(params: StragglerBatchParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_straggler_batch(params, seed=context.seed, confidence=0.95)
