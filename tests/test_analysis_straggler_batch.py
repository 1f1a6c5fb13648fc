"""Stragglers against the batch size: the per-example worker-time models of sgd_sync and the
order-statistics predictions of the time lost waiting."""

from __future__ import annotations

import pytest
import torch

import evosgd.gradient  # noqa: F401  (registers)
from evosgd.analysis.straggler_batch import (
    StragglerBatchParams,
    expected_wait_correlated,
    expected_wait_independent,
    measure_straggler_batch,
)
from evosgd.analysis.verdict import NOT_SUPPORTED, SUPPORTED
from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.errors import ConfigError
from evosgd.core.registry import OPTIMIZERS
from evosgd.gradient.distributed import ConstantTime, ExponentialTime
from evosgd.landscapes import build_landscape


def _sync(cfg, R=3, steps=5):
    land = build_landscape("sphere", {"dim": 2}, replicates=R, seed=1, dtype=torch.float64)
    budget = Budget(R, limits=BudgetLimits(max_steps=steps))
    opt = OPTIMIZERS.build("sgd_sync", cfg, landscape=land, budget=budget, generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        opt.step()
    return opt, budget


@pytest.mark.parametrize("model", ["per_example_correlated", "per_example_independent"])
def test_constant_per_example_time_gives_overhead_plus_shard_times_value(model):
    # constant times: every worker takes c0 + m v exactly, so the step is c0 + m v + comm and nobody waits
    opt, budget = _sync({"lr": 0.1, "batch_size": 12, "workers": 4, "compute_time": {"kind": "constant", "value": 0.25},
                         "time_model": model, "overhead_time": 1.5, "comm_time": 0.5})
    assert budget.sim_time == pytest.approx([5 * (1.5 + 3 * 0.25 + 0.5)] * 3, rel=1e-12)
    assert float(opt.idle.abs().max()) == 0.0


def test_overhead_needs_a_per_example_model():
    with pytest.raises((ConfigError, ValueError)):
        _sync({"lr": 0.1, "batch_size": 4, "workers": 4, "overhead_time": 1.0})


def test_expected_wait_exact_cases():
    spec = ExponentialTime(kind="exponential", mean_time=0.5)
    H8 = sum(1 / i for i in range(1, 9))
    # correlated: m mu (H_K - 1)
    assert expected_wait_correlated(spec, 8, 16) == pytest.approx(16 * 0.5 * (H8 - 1), rel=1e-9)
    # one example: the two models coincide
    assert expected_wait_independent(spec, 8, 1) == pytest.approx(0.5 * (H8 - 1), rel=1e-7)
    # two workers, sums of m exponentials: E max(S1, S2) - E S = E|S1 - S2| / 2, and S1 - S2 is a
    # difference of Gamma(2)'s: E|S1 - S2| = 2 mu * 3/4 ... checked against the closed form for m = 2:
    # E max of two Gamma(2, mu) = mu (2 + 3/4)  (David & Nagaraja), so the wait is 3 mu / 4
    assert expected_wait_independent(spec, 2, 2) == pytest.approx(0.75 * 0.5, rel=1e-7)
    assert expected_wait_independent(ConstantTime(), 8, 4) == 0.0


@pytest.mark.slow
def test_analysis_tiny_measures_the_prediction_and_judges_the_claims():
    p = StragglerBatchParams(shard_sizes=[1, 4, 16], workers=4, time_models=["per_example_correlated"],
                             replicates=24, steps=40)
    r = measure_straggler_batch(p, seed=3)
    v = r.tables["verdicts"].set_index("claim")["verdict"]
    assert len(v) == 5
    by = {k.split(": ", 1)[1]: x for k, x in v.items()}
    # the wait per step grows exactly linearly in m: the direction claim is supported ...
    assert by["smaller batches cut the time lost waiting for stragglers per step"] == SUPPORTED
    # ... while with a fixed overhead the throughput rises with m: the throughput claim fails
    assert by["smaller batches give a higher throughput"] == NOT_SUPPORTED
    w = r.comparison[r.comparison.quantity.str.startswith("time lost waiting for")]
    # 24 x 40 exponential waits per point: relative standard error ~ 1.3 / sqrt(960) ~ 4%; 15% is > 3.5 se
    assert ((w.measured / w.predicted - 1).abs() < 0.15).all()
