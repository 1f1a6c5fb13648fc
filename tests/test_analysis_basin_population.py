"""Population vs single trajectory: the basin-volume law on exact cases and a tiny run."""

from __future__ import annotations

import numpy as np
import pytest

from evosgd.analysis.basin_population import (
    BasinPopulationParams,
    measure_basin_population,
    population_success,
    restart_success,
)


def test_restart_law_exact_values():
    assert restart_success(0.1, 1) == pytest.approx(0.1)
    assert restart_success(0.1, 3) == pytest.approx(1 - 0.9**3)
    assert restart_success(0.0, 50) == 0.0
    # member 0 at a start already in the basin: certain success; otherwise k - 1 uniform draws
    assert population_success(np.array([0.2, 0.2]), np.array([True, False]), 3) == pytest.approx((1 + (1 - 0.8**2)) / 2)


@pytest.mark.slow
def test_analysis_tiny_restarts_follow_the_basin_volume():
    p = BasinPopulationParams(population_sizes=[1, 16], replicates=24, basin_samples=300, gd_steps=200, generations=10)
    r = measure_basin_population(p, seed=5)
    t = r.tables["success"]
    assert len(r.tables["verdicts"]) == 4
    # restarts are k independent local searches: their success is a Binomial(24, P) draw; 0.35 > 3.5 sd (sd <= 0.1)
    assert ((t.restarts_success - t.predicted).abs() < 0.35).all()
    share = r.tables["basin_share"].p
    assert ((share >= 0) & (share <= 1)).all() and share.mean() > 0
