"""The optimizer protocol (contract 3): step, recommend, metrics.

Every optimizer, gradient-based or evolutionary, is built as
``cls(params, landscape=..., budget=..., generator=...)`` where ``params`` is its validated
pydantic model, and then offers

* ``step()`` — advance one step / generation for every active replicate, charging the budget;
* ``recommend()`` — the current best guess, a tensor ``[R, D]`` (SGD: its iterate; ES: its mean;
  GA: its best member);
* ``metrics()`` — a few named per-replicate values (``[R]`` tensors or arrays): learning rate,
  gradient norm, staleness, step size sigma, diversity, ...

Divergence: a replicate whose loss or parameters become non-finite is marked in ``diverged``
(``[R]`` bool) with the step it happened at in ``diverged_step``; it stops moving and stops being
charged, the other replicates go on.  The runner only ever sees this interface.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch

from evosgd.core.device import host_bool, to_device, to_host


class Optimizer(abc.ABC):
    """Base class holding the shared state and the divergence bookkeeping."""

    #: registry name, set by subclasses
    kind: str = ""

    def __init__(self, params: Any, *, landscape: Any, budget: Any, generator: torch.Generator) -> None:
        self.params = params
        self.landscape = landscape
        self.budget = budget
        self.generator = generator
        self.device = landscape.device
        self.dtype = landscape.dtype
        R = landscape.replicates
        self.replicates = R
        self.diverged = torch.zeros(R, dtype=torch.bool, device=self.device)
        self.diverged_step = np.full(R, -1, dtype=np.int64)

    # -- the protocol ---------------------------------------------------------------
    @abc.abstractmethod
    def step(self) -> None:
        """One step / generation for every active replicate."""

    @abc.abstractmethod
    def recommend(self) -> torch.Tensor:
        """Current best guess ``[R, D]``."""

    def metrics(self) -> dict[str, Any]:
        """Named per-replicate metrics (``[R]``); empty by default."""
        return {}

    # -- helpers for subclasses -------------------------------------------------------
    @property
    def active(self) -> torch.Tensor:
        """``[R]`` bool: replicates that have not diverged and still have budget."""
        exhausted = to_device(self.budget.exhausted(), self.device)
        return ~self.diverged & ~exhausted

    def time(self) -> torch.Tensor:
        """The environment time t ``[R]`` for landscape calls."""
        return self.budget.time(self.device, self.dtype)

    def check_divergence(self, *values: torch.Tensor) -> torch.Tensor:
        """Mark replicates whose values (leading dim R) are non-finite; returns the new ``diverged``.

        Costs one host read (a bool) per call.

        One pass over each value: a row holding a NaN or an infinity has a non-finite sum, so
        ``isfinite(row sum)`` screens a whole population for the price of one reduction (an
        elementwise ``isfinite(...).all()`` reads it and writes a mask as large, and dominated the
        check on large populations).  While no replicate has diverged (the host ledger
        ``diverged_step`` says so without a device op) the screen is one total over all values:
        the fewest tensor calls for the common case.  A sum that merely overflows is confirmed
        elementwise before anything is flagged, so the result is exactly the elementwise test.
        """
        if not (self.diverged_step >= 0).any():
            total = None
            for v in values:
                s = v.sum()
                total = s if total is None else total + s
            if total is None or host_bool(torch.isfinite(total)):
                return self.diverged
            new = self._non_finite_rows(values, exact=True)
        else:
            new = self._non_finite_rows(values, exact=False) & ~self.diverged
            if host_bool(new.any()):
                new = self._non_finite_rows(values, exact=True) & ~self.diverged  # rare: confirm
        new_host = to_host(new)
        if new_host.any():
            idx = np.flatnonzero(new_host)
            self.diverged_step[idx] = self.budget.steps[idx]
            self.diverged |= new
        return self.diverged

    def _non_finite_rows(self, values: tuple[torch.Tensor, ...], exact: bool) -> torch.Tensor:
        if not exact:
            # The screen adds the row sums of all values first: a non-finite entry anywhere still
            # gives a non-finite total, and an overflow of the total is confirmed exactly.
            total = None
            for v in values:
                rows = v.reshape(v.shape[0], -1).sum(dim=1)
                total = rows if total is None else total + rows
            if total is None:
                return torch.zeros_like(self.diverged)
            return ~torch.isfinite(total)
        bad = torch.zeros_like(self.diverged)
        for v in values:
            flat = v.reshape(v.shape[0], -1)
            bad |= ~(torch.isfinite(flat).all(dim=1) if exact else torch.isfinite(flat.sum(dim=1)))
        return bad
