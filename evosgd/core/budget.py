"""The Budget ledger: one way of counting cost for gradient and evolutionary methods (contract 2).

Cost is counted in *sample-evaluations*:

* one forward evaluation of one example at one parameter vector costs 1 (``evaluations``);
* one per-example gradient (forward + backward) costs ``grad_cost`` (default 3, the usual
  "backward is about twice the forward" rule of thumb; Griewank & Walther, *Evaluating
  Derivatives*, 2008, bound the reverse mode by a small constant times the forward);
* a population member evaluated on a batch of b examples costs b.

So ``cost = evaluations + grad_cost * gradient_evaluations``.  Evaluations that only *measure*
(the recorder's true loss) are never charged.

The ledger is kept per replicate (arrays of shape ``[R]``) because replicates may spend at
different rates (adaptive batch sizes, diverged replicates that stop, simulated distributed
clocks).  Charges given as a scalar apply to every replicate that the optional boolean ``mask``
selects (all by default).

The environment clock ``t`` of a drifting landscape is read from the ledger in the unit the
scenario names: ``"cost"`` (default), ``"evaluations"``, ``"steps"`` or ``"sim_time"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from evosgd.core.device import to_device, to_host
from evosgd.core.errors import ParameterError

CLOCK_UNITS = ("cost", "evaluations", "steps", "sim_time")
_SCALARS = (int, float)


def _as_host(x: Any, n: int) -> np.ndarray | float:
    if isinstance(x, torch.Tensor):
        x = to_host(x, np.float64)
    if np.ndim(x) == 0:
        return float(x)
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"per-replicate charge must have shape ({n},), got {arr.shape}")
    return arr


@dataclass
class BudgetLimits:
    """Stopping limits; a replicate is exhausted when it reaches any limit that is set."""

    max_cost: float | None = None
    max_steps: int | None = None
    max_sim_time: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_cost", "max_steps", "max_sim_time"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ParameterError(name, v, "a number > 0 (or unset)")


class Budget:
    """Per-replicate ledger of cost, evaluations, gradient evaluations, steps and simulated time."""

    def __init__(
        self,
        replicates: int,
        grad_cost: float = 3.0,
        limits: BudgetLimits | None = None,
        clock: str = "cost",
    ) -> None:
        if int(replicates) < 1:
            raise ParameterError("replicates", replicates, "an integer >= 1")
        if not grad_cost >= 0:
            raise ParameterError("grad_cost", grad_cost, "a number >= 0")
        if clock not in CLOCK_UNITS:
            raise ParameterError("clock", clock, ", ".join(repr(u) for u in CLOCK_UNITS))
        self.replicates = int(replicates)
        self.grad_cost = float(grad_cost)
        self.limits = limits or BudgetLimits()
        self.clock_unit = clock
        R = self.replicates
        self.evaluations = np.zeros(R, dtype=np.float64)
        self.gradient_evaluations = np.zeros(R, dtype=np.float64)
        self.steps = np.zeros(R, dtype=np.int64)
        self.sim_time = np.zeros(R, dtype=np.float64)

    # ------------------------------------------------------------------ charging
    def _mask(self, mask: Any) -> np.ndarray | slice:
        if mask is None:
            return slice(None)
        if isinstance(mask, torch.Tensor):
            mask = to_host(mask)
        return np.asarray(mask, dtype=bool)

    def charge(self, evaluations: Any = 0, gradient_evaluations: Any = 0, mask: Any = None) -> None:
        """Charge forward evaluations and per-example gradients (scalars or ``[R]`` arrays)."""
        if mask is None and type(evaluations) in _SCALARS and type(gradient_evaluations) in _SCALARS:
            # the common case (every replicate pays the same): two in-place scalar additions,
            # the same float64 sums as below without the conversions and the slicing
            if evaluations:
                self.evaluations += evaluations
            if gradient_evaluations:
                self.gradient_evaluations += gradient_evaluations
            return
        m = self._mask(mask)
        ev = _as_host(evaluations, self.replicates)
        gv = _as_host(gradient_evaluations, self.replicates)
        self.evaluations[m] += ev if np.ndim(ev) == 0 else ev[m]
        self.gradient_evaluations[m] += gv if np.ndim(gv) == 0 else gv[m]

    def step(self, mask: Any = None) -> None:
        """Count one optimizer step / generation."""
        if mask is None:
            self.steps += 1
        else:
            self.steps[self._mask(mask)] += 1

    def advance_time(self, dt: Any, mask: Any = None) -> None:
        """Advance the simulated wall-clock (distributed and straggler models)."""
        m = self._mask(mask)
        d = _as_host(dt, self.replicates)
        self.sim_time[m] += d if np.ndim(d) == 0 else d[m]

    # ------------------------------------------------------------------ reading
    @property
    def cost(self) -> np.ndarray:
        return self.evaluations + self.grad_cost * self.gradient_evaluations

    def clock(self) -> np.ndarray:
        """The environment time t of each replicate, in the scenario's clock unit."""
        if self.clock_unit == "cost":
            return self.cost
        if self.clock_unit == "evaluations":
            return self.evaluations + self.gradient_evaluations
        if self.clock_unit == "steps":
            return self.steps.astype(np.float64)
        return self.sim_time.copy()

    def time(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``clock()`` as a tensor ``[R]`` on the landscape's device, ready to pass as ``t``."""
        return to_device(self.clock(), torch.device(device), dtype)

    def exhausted(self) -> np.ndarray:
        """Boolean ``[R]``: replicates that reached a limit."""
        out = np.zeros(self.replicates, dtype=bool)
        lim = self.limits
        if lim.max_cost is not None:
            out |= self.cost >= lim.max_cost
        if lim.max_steps is not None:
            out |= self.steps >= lim.max_steps
        if lim.max_sim_time is not None:
            out |= self.sim_time >= lim.max_sim_time
        return out

    @property
    def has_limit(self) -> bool:
        lim = self.limits
        return any(v is not None for v in (lim.max_cost, lim.max_steps, lim.max_sim_time))

    def done(self) -> bool:
        """True when every replicate is exhausted."""
        return bool(self.exhausted().all())

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the per-replicate counters, for a record row."""
        return {
            "cost": self.cost.copy(),
            "evaluations": self.evaluations.copy(),
            "gradient_evaluations": self.gradient_evaluations.copy(),
            "steps": self.steps.copy(),
            "sim_time": self.sim_time.copy(),
        }
