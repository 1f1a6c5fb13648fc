"""What the execution of a scenario tells whoever watches it.

The runner never draws or prints: it calls a listener (``events=`` of
:func:`evosgd.run.runner.execute_scenario`) with these records, and the command line renders them
(a tqdm bar, messages).  A notebook may pass its own listener, or none for silence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class SweepStarted:
    """A scenario's runs are about to execute: ``pending`` of ``total`` runs remain."""

    scenario: str
    total: int
    pending: int
    workers: int
    replicates: int
    budget: str  #: the per-replicate budget in words, e.g. "max_cost = 1e+05"


@dataclass(frozen=True)
class RunProgress:
    """A run in flight is ``fraction`` (0..1) of the way through its budget."""

    run_id: str
    label: str
    fraction: float


@dataclass(frozen=True)
class RunFinished:
    """A run ended: ``status`` is done, diverged or failed (then ``error`` says why)."""

    run_id: str
    label: str
    sweep: str
    status: str
    error: str | None
    wall_time: float


@dataclass(frozen=True)
class SweepFinished:
    """Every run of the scenario has ended (its analyses follow)."""

    scenario: str


Event = Union[SweepStarted, RunProgress, RunFinished, SweepFinished]
Listener = Callable[[Event], None]


class ProgressSink:
    """Stands in for a worker's progress queue when runs execute in this process: the runs'
    ``(run_id, label, fraction)`` messages become :class:`RunProgress` events."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def put(self, message: tuple[str, str, float]) -> None:
        self.listener(RunProgress(*message))
