"""Learning-rate schedules: pure functions of the per-replicate step count.

A schedule maps the step count ``t`` (a tensor ``[R]``, 0 at the first update) to a value ``[R]``.
The value at ``t = 0`` is the one used by the first update, as with a ``torch.optim.lr_scheduler``
stepped after every optimizer step.  Counts are per replicate because replicates that diverged or
ran out of budget stop counting while the others go on.

Formulas (``eta_0`` = ``init_value``):

* constant      ``eta_t = eta_0``
* step          ``eta_t = eta_0 * gamma ** floor(t / step_size)``                (torch StepLR)
* exponential   ``eta_t = eta_0 * gamma ** t``                                   (torch ExponentialLR)
* inverse_time  ``eta_t = eta_0 / (1 + decay * t) ** power``  — power 1 is the Robbins & Monro (1951)
  ``1/t`` family that makes SGD converge on strongly convex problems; power 1/2 the usual choice
  for convex non-smooth problems (Nemirovski et al. 2009, "Robust stochastic approximation").
* capped_inverse_time  ``eta_t = min(cap, eta_0 / (1 + decay * t))`` -- the 1/t law with a ceiling: the
  form of the learning rate derived for delayed SGD on a noisy quadratic
  (``evosgd.analysis.lr_schedule_staleness``: the ceiling is set by the staleness, the 1/t tail by the
  batch's noise).
* cosine        ``eta_t = eta_min + (eta_0 - eta_min) (1 + cos(pi min(t, T) / T)) / 2``
  (Loshchilov & Hutter 2017, "SGDR", without restarts; torch CosineAnnealingLR closed form),
  with ``eta_min = min_factor * eta_0``.
* linear warm-up composed with any of them (Goyal et al. 2017, "Accurate, large minibatch SGD"):
  ``eta_t = eta_after(0) * (s + (1 - s) t / W)`` for ``t < W``, then ``eta_after(t - W)``, where
  ``s`` is the starting fraction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

Schedule = Callable[[torch.Tensor], torch.Tensor]


def _count(t: torch.Tensor) -> torch.Tensor:
    # Schedules are computed in float64 (as torch.optim does on the host) and cast by the caller.
    return t.to(torch.float64 if t.device.type != "mps" else torch.float32)


def constant_schedule(init_value: float) -> Schedule:
    """``eta_t = eta_0``.  The function carries ``constant = eta_0`` so a transform can use the
    Python float instead of building an ``[R]`` tensor every step."""
    value = float(init_value)

    def f(t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(_count(t), value)

    f.constant = value  # type: ignore[attr-defined]
    return f


def step_schedule(init_value: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``eta_t = eta_0 * gamma ** floor(t / step_size)`` (torch.optim.lr_scheduler.StepLR)."""
    return lambda t: float(init_value) * float(gamma) ** torch.floor(_count(t) / int(step_size))


def exponential_schedule(init_value: float, gamma: float) -> Schedule:
    """``eta_t = eta_0 * gamma ** t`` (torch.optim.lr_scheduler.ExponentialLR)."""
    return lambda t: float(init_value) * float(gamma) ** _count(t)


def inverse_time_schedule(init_value: float, decay: float, power: float = 1.0) -> Schedule:
    """``eta_t = eta_0 / (1 + decay t) ** power`` (Robbins & Monro 1951 for power 1)."""
    return lambda t: float(init_value) / (1.0 + float(decay) * _count(t)) ** float(power)


def capped_inverse_time_schedule(init_value: float, decay: float, cap: float) -> Schedule:
    """``eta_t = min(cap, eta_0 / (1 + decay t))``."""
    return lambda t: torch.clamp(float(init_value) / (1.0 + float(decay) * _count(t)), max=float(cap))


def cosine_schedule(init_value: float, total_steps: int, min_factor: float = 0.0) -> Schedule:
    """``eta_t = eta_min + (eta_0 - eta_min)(1 + cos(pi min(t,T)/T))/2`` (Loshchilov & Hutter 2017)."""
    lo = float(min_factor) * float(init_value)

    def f(t: torch.Tensor) -> torch.Tensor:
        frac = torch.clamp(_count(t), max=float(total_steps)) / float(total_steps)
        return lo + (float(init_value) - lo) * 0.5 * (1.0 + torch.cos(math.pi * frac))

    return f


def linear_warmup(after: Schedule, warmup_steps: int, start_factor: float = 0.0) -> Schedule:
    """Linear warm-up over ``W`` steps to ``after(0)``, then ``after(t - W)`` (Goyal et al. 2017)."""
    W = int(warmup_steps)
    if W <= 0:
        return after

    def f(t: torch.Tensor) -> torch.Tensor:
        tc = _count(t)
        ramp = float(start_factor) + (1.0 - float(start_factor)) * tc / W
        warm = after(torch.zeros_like(tc)) * ramp
        return torch.where(tc < W, warm, after(torch.clamp(tc - W, min=0.0)))

    return f


# ---------------------------------------------------------------------------- specs
class _ScheduleBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps before the schedule starts (0: none; Goyal et al. 2017)")
    warmup_start_factor: float = Field(
        0.0, ge=0.0, le=1.0, description="fraction of the initial value at the first warm-up step (0: start from zero)"
    )

    def _base(self, init_value: float) -> Schedule:  # pragma: no cover - overridden
        raise NotImplementedError

    def build(self, init_value: float) -> Schedule:
        """The schedule with initial value ``init_value``, warm-up included."""
        return linear_warmup(self._base(init_value), self.warmup_steps, self.warmup_start_factor)


class ConstantSchedule(_ScheduleBase):
    kind: Literal["constant"] = Field("constant", description="eta_t = eta_0")

    def _base(self, init_value: float) -> Schedule:
        return constant_schedule(init_value)


class StepSchedule(_ScheduleBase):
    kind: Literal["step"] = Field(description="eta_t = eta_0 gamma^floor(t / step_size) (torch StepLR)")
    step_size: int = Field(ge=1, description="steps between two decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor per period (0.1: the classic ten-fold drop)")

    def _base(self, init_value: float) -> Schedule:
        return step_schedule(init_value, self.step_size, self.gamma)


class ExponentialSchedule(_ScheduleBase):
    kind: Literal["exponential"] = Field(description="eta_t = eta_0 gamma^t (torch ExponentialLR)")
    gamma: float = Field(gt=0.0, le=1.0, description="decay factor per step")

    def _base(self, init_value: float) -> Schedule:
        return exponential_schedule(init_value, self.gamma)


class InverseTimeSchedule(_ScheduleBase):
    kind: Literal["inverse_time"] = Field(description="eta_t = eta_0 / (1 + decay t)^power (Robbins-Monro for power 1)")
    decay: float = Field(gt=0.0, description="decay rate per step")
    power: float = Field(1.0, gt=0.0, le=1.0, description="exponent (1: Robbins-Monro 1/t; 0.5: 1/sqrt(t) for convex problems)")

    def _base(self, init_value: float) -> Schedule:
        return inverse_time_schedule(init_value, self.decay, self.power)


class CappedInverseTimeSchedule(_ScheduleBase):
    kind: Literal["capped_inverse_time"] = Field(description="eta_t = min(cap, eta_0 / (1 + decay t)): 1/t under a ceiling "
                                                             "(the delayed-SGD schedule of analysis lr_schedule_staleness)")
    decay: float = Field(gt=0.0, description="decay rate per step")
    cap: float = Field(gt=0.0, description="ceiling of the learning rate (e.g. the fastest stable rate for the staleness)")

    def _base(self, init_value: float) -> Schedule:
        return capped_inverse_time_schedule(init_value, self.decay, self.cap)


class CosineSchedule(_ScheduleBase):
    kind: Literal["cosine"] = Field(description="cosine annealing to min_factor * eta_0 over total_steps (Loshchilov & Hutter 2017)")
    total_steps: int = Field(ge=1, description="steps T of the cosine half-period (after warm-up); constant afterwards")
    min_factor: float = Field(0.0, ge=0.0, le=1.0, description="final value as a fraction of eta_0")

    def _base(self, init_value: float) -> Schedule:
        return cosine_schedule(init_value, self.total_steps, self.min_factor)


ScheduleSpec = Annotated[
    ConstantSchedule | StepSchedule | ExponentialSchedule | InverseTimeSchedule | CappedInverseTimeSchedule | CosineSchedule,
    Field(discriminator="kind"),
]

__all__ = [
    "CappedInverseTimeSchedule",
    "ConstantSchedule",
    "CosineSchedule",
    "ExponentialSchedule",
    "InverseTimeSchedule",
    "Schedule",
    "ScheduleSpec",
    "StepSchedule",
    "capped_inverse_time_schedule",
    "constant_schedule",
    "cosine_schedule",
    "exponential_schedule",
    "inverse_time_schedule",
    "linear_warmup",
    "step_schedule",
]
