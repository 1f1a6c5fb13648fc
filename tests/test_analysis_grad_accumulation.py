"""Gradient accumulation vs one big batch (analysis 'gradient_accumulation')."""

import pytest
import torch

from evosgd.analysis.accumulation import (
    AccumulationParams,
    accumulated_gradient,
    accumulation_rounding_bound,
    batch_bytes,
    full_batch_gradient,
    gamma,
    measure_accumulation,
    saved_for_backward_bytes,
    unit_roundoff,
)
from evosgd.core.analysis_api import AnalysisContext
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES
from evosgd.core.seeding import make_generator
from evosgd.landscapes import build_landscape


def test_roundoff_constants():
    assert unit_roundoff(torch.float32) == 2.0**-24 and unit_roundoff(torch.float64) == 2.0**-53
    assert gamma(10, 2.0**-24) == pytest.approx(10 * 2.0**-24, rel=1e-6)
    assert accumulation_rounding_bound(100, 2.0, torch.float64) == pytest.approx(2 * 108 * 2.0**-53 * 2.0, rel=1e-12)


def lin(dtype):
    return build_landscape("linear_regression", {"n_examples": 128, "features": 6}, replicates=1, seed=3, dtype=dtype)


def test_accumulation_is_rounding_only_for_a_separable_loss():
    """Exact case: the linear-regression loss is a mean of per-example losses, so accumulated and
    big-batch gradients are equal in exact arithmetic; in float64 and float32 they must differ by
    no more than Higham's summation bound 2 gamma_{B+8} kappa (kappa measured per batch)."""
    from evosgd.analysis.accumulation import summation_condition
    from evosgd.landscapes.base import per_example_grads

    for dtype in (torch.float64, torch.float32):
        land = lin(dtype)
        batch = land.sample(64, make_generator(1))
        theta = land.initial_point
        big = full_batch_gradient(land, theta, batch)
        kappa = summation_condition(per_example_grads(land, theta, batch)[0])
        assert torch.equal(accumulated_gradient(land, theta, batch, 1), big)  # k = 1 is the same computation
        for k in (2, 8, 64):
            rel = float((accumulated_gradient(land, theta, batch, k) - big).norm() / big.norm())
            assert rel <= accumulation_rounding_bound(64, kappa, dtype)


def test_batch_norm_breaks_accumulation_and_analysis_rows():
    params = AccumulationParams(batch_size=32, micro_batches=[1, 4], repeats=3)
    bn = lambda dt: build_landscape("teacher_student", {"n_examples": 256, "widths": [8], "batch_norm": True},
                                    replicates=1, seed=2, dtype=dt)
    res = measure_accumulation([(lin(torch.float32), lin(torch.float64)), (bn(torch.float32), bn(torch.float64))],
                               params, make_generator(5))
    c = res.comparison
    diff = c[c.quantity.str.startswith("relative update difference")]
    sep = diff[~diff.series.str.contains("batch norm")]
    assert (sep.measured_high <= sep.predicted_high).all()  # inside the rounding band
    bnrows = diff[diff.series.str.contains("batch norm") & (diff.x == 4)]
    # a real difference: many orders of magnitude above the float32 rounding bound, and float32
    # reproduces the float64 value (the prediction) up to float32 rounding of an O(1) quantity
    assert (bnrows.measured > 1e-3).all()
    assert ((bnrows.measured - bnrows.predicted).abs() <= 1e-4 * bnrows.predicted).all()
    mem = c[(c.quantity == "memory per micro-batch") & (c.series == "batch tensors")]
    assert (mem.measured == mem.predicted).all()  # exactly b examples of (6 features + 1 label) float32
    assert set(mem.measured) == {32 * 7 * 4, 8 * 7 * 4}


def test_saved_for_backward_memory_is_linear_in_micro_batch_size():
    """Linear regression saves per-example tensors only (inputs, residuals): bytes are exactly
    proportional to the micro-batch size."""
    land = lin(torch.float32)
    batch = land.sample(64, make_generator(0))
    sizes = (8, 16, 32)
    saved = [saved_for_backward_bytes(land, land.initial_point, {k: v[:, :b].clone() for k, v in batch.items()}) for b in sizes]
    assert saved[2] - saved[1] == 2 * (saved[1] - saved[0]) and saved[0] > 0
    assert batch_bytes({k: v[:, :8] for k, v in batch.items()}) == 8 * 7 * 4


def test_registered_analysis_and_bad_micro_batches():
    ctx = AnalysisContext("t", "acc", 1, 1, torch.device("cpu"), torch.float32,
                          make_landscape=lambda replicates=None, **kw: lin(torch.float32))
    res = ANALYSES.build("gradient_accumulation", {"batch_size": 16, "micro_batches": [1, 2], "repeats": 2}, context=ctx)
    assert any("batch norm" in n for n in res.notes)
    with pytest.raises(ParameterError, match="divisors"):
        ANALYSES.build("gradient_accumulation", {"batch_size": 16, "micro_batches": [3], "repeats": 2}, context=ctx)


@pytest.mark.parametrize("B,k", [(4, 3), (10, 4), (7, 7), (9, 2)])
def test_uneven_micro_batches_give_the_full_batch_gradient(B, k):
    """Exact case (issue #23): 4 examples in 3 micro-batches used to return 2/3 of the gradient
    (torch.chunk made 2 chunks while the loss was divided by 3).  Now exactly k micro-batches of
    sizes differing by at most one, each weighted b_j / B: equal to the big batch up to rounding."""
    from evosgd.analysis.accumulation import micro_batches_of

    land = lin(torch.float64)
    batch = land.sample(B, make_generator(5))
    sizes = [next(iter(m.values())).shape[1] for m in micro_batches_of(batch, k)]
    assert len(sizes) == k and sum(sizes) == B and max(sizes) - min(sizes) <= 1
    big = full_batch_gradient(land, land.initial_point, batch)
    torch.testing.assert_close(accumulated_gradient(land, land.initial_point, batch, k), big, rtol=1e-12, atol=1e-14)
