"""Shared pieces of the optimizer-dynamics analyses (confidence lr, stragglers, staleness, momentum,
clipping, pairwise): drive a registered gradient optimizer for a fixed number of steps outside the
runner, on a landscape the analysis builds, and read what it did.

These analyses measure the *engines* (``evosgd.gradient``): every measured number comes from the
registered optimizer stepping on a registered landscape, so a wrong engine shows up as a gap
between measurement and theory.  The theory functions of each module stay pure (numbers in,
numbers out) and separate from the measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.registry import OPTIMIZERS
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.landscapes import build_landscape


def make_optimizer(kind: str, params: dict[str, Any], landscape: Any, *, seed: int, grad_cost: float = 3.0,
                   max_sim_time: float | None = None) -> tuple[Any, Budget]:
    """A registered optimizer on ``landscape`` with its own budget (no limit but ``max_sim_time``)
    and generator (seeded from ``seed`` and its params, so two configurations get different streams)."""
    import evosgd.gradient  # noqa: F401  (registers the gradient optimizers)

    budget = Budget(landscape.replicates, grad_cost, BudgetLimits(max_sim_time=max_sim_time))
    gen = make_generator(derive_seed(seed, "optimizer", kind, repr(sorted(params.items()))), landscape.device)
    return OPTIMIZERS.build(kind, params, landscape=landscape, budget=budget, generator=gen), budget


def drive(optimizer: Any, steps: int, watch: Callable[[Any, int], None] | None = None) -> None:
    """Step ``optimizer`` ``steps`` times, calling ``watch(optimizer, k)`` after step k (1-based)."""
    for k in range(1, steps + 1):
        optimizer.step()
        if watch is not None:
            watch(optimizer, k)


def small_landscape(kind: str, params: dict[str, Any], *, replicates: int, seed: int,
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Any:
    """A landscape built for a measurement (float64 on the host by default: rates and boundaries
    are read off long geometric sequences, where float32 rounding would set a floor)."""
    import evosgd.landscapes  # noqa: F401

    return build_landscape(kind, params, replicates=replicates, seed=seed, device=device, dtype=dtype)


def log_slope(y: np.ndarray, axis: int = 0) -> np.ndarray:
    """Least-squares slope of ``log y`` against the index along ``axis`` (a geometric rate's log)."""
    ly = np.log(np.asarray(y, dtype=np.float64))
    n = ly.shape[axis]
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    shape = [1] * ly.ndim
    shape[axis] = n
    x = x.reshape(shape)
    return (x * (ly - ly.mean(axis=axis, keepdims=True))).sum(axis=axis) / (x * x).sum()


__all__ = ["drive", "log_slope", "make_optimizer", "small_landscape"]
