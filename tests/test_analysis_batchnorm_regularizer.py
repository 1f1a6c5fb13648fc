"""Batch norm as a regularizer: inference-mode evaluation equals the landscape's own true loss on the
training set, the batch-mean noise is 1/b, and a tiny run of the analysis."""

from __future__ import annotations

import torch

from evosgd.analysis.batchnorm_regularizer import (
    BatchNormRegularizerParams,
    batch_statistic_noise,
    forward_with_train_statistics,
    measure_batchnorm_regularizer,
)
from evosgd.core.seeding import make_generator
from evosgd.landscapes import build_landscape


def _land(bn):
    return build_landscape("teacher_student", {"n_examples": 64, "inputs": 3, "widths": [5], "teacher_widths": [2],
                                               "noise_std": 0.1, "batch_norm": bn}, replicates=3, seed=4, dtype=torch.float64)


def test_train_statistics_forward_reproduces_true_loss_on_the_training_set():
    for bn in (False, True):
        land = _land(bn)
        theta = land.initial_point
        full = land.full_batch()
        out = forward_with_train_statistics(theta, land.data["x"], land.data["x"], land.sizes, "tanh", bn)
        mine = 0.5 * ((out - full["y"]) ** 2).sum(-1).mean(-1)
        assert torch.allclose(mine, land.true_loss(theta), rtol=1e-10, atol=1e-12)


def test_batch_mean_noise_is_one_over_b():
    land = _land(True)
    r = batch_statistic_noise(land, land.initial_point, 8, 20000, make_generator(1))
    # 20000 batch means: the variance estimate has relative sd sqrt(2/20000) = 1%; 5% is 5 sd
    assert abs(r.mean() * 8 - 1) < 0.05


def test_analysis_tiny_runs_and_judges():
    p = BatchNormRegularizerParams(batch_sizes=[8, 32], n_examples=32, heldout=64, widths=[8], epochs=2, replicates=3)
    r = measure_batchnorm_regularizer(p, seed=1)
    v = r.tables["verdicts"]
    assert len(v) == 4 and set(v.verdict) <= {"supported", "not supported"}
    assert {"held-out loss after training", "noise of BN's batch mean: Var(mean_b h) / Var(h)"} <= set(r.comparison.quantity)
