"""Scenario-file specs of the update transforms: a pydantic discriminated union on ``kind``.

A scenario writes ``transforms = [{kind="clip_norm", max_norm=1.0}, {kind="momentum", beta=0.9},
{kind="lr", lr=0.1, schedule={kind="cosine", total_steps=1000}}]`` and :func:`build_transform`
chains the transforms of :mod:`evosgd.gradient.transforms` in the order given.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from evosgd.core.errors import ConfigError
from evosgd.core.registry import format_validation_error
from evosgd.gradient.schedules import ConstantSchedule, ScheduleSpec
from evosgd.gradient.transforms import (
    GradientTransform,
    add_decayed_weights,
    chain,
    clip_by_global_norm,
    clip_by_value,
    momentum,
    scale,
    scale_by_adam,
    scale_by_confidence,
    scale_by_learning_rate,
    scale_by_staleness,
)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LearningRateSpec(_Spec):
    kind: Literal["lr"] = Field(description="u = -lr_t g; lr_t from the schedule")
    lr: float = Field(gt=0.0, description="initial learning rate eta_0")
    schedule: ScheduleSpec = Field(default_factory=ConstantSchedule, description="schedule of the learning rate (constant by default)")

    def build(self) -> GradientTransform:
        return scale_by_learning_rate(self.schedule.build(self.lr))


class MomentumSpec(_Spec):
    kind: Literal["momentum"] = Field(description="heavy-ball / Nesterov momentum, torch.optim.SGD semantics")
    beta: float = Field(0.9, ge=0.0, lt=1.0, description="momentum coefficient (0.9: the common default)")
    dampening: float = Field(0.0, ge=0.0, le=1.0, description="dampening of new gradients (torch; 0: none)")
    nesterov: bool = Field(False, description="Nesterov momentum instead of heavy ball")

    def build(self) -> GradientTransform:
        return momentum(self.beta, self.dampening, self.nesterov)


class WeightDecaySpec(_Spec):
    kind: Literal["weight_decay"] = Field(
        description="u = g + wd * params: coupled L2 before momentum/adam, decoupled (AdamW) after adam and before lr"
    )
    weight_decay: float = Field(ge=0.0, description="decay coefficient lambda")

    def build(self) -> GradientTransform:
        return add_decayed_weights(self.weight_decay)


class ClipNormSpec(_Spec):
    kind: Literal["clip_norm"] = Field(description="rescale each replicate's vector to norm <= max_norm")
    max_norm: float = Field(gt=0.0, description="largest allowed Euclidean norm")

    def build(self) -> GradientTransform:
        return clip_by_global_norm(self.max_norm)


class ClipValueSpec(_Spec):
    kind: Literal["clip_value"] = Field(description="clamp every coordinate to [-max_value, max_value]")
    max_value: float = Field(gt=0.0, description="largest allowed absolute coordinate")

    def build(self) -> GradientTransform:
        return clip_by_value(self.max_value)


class AdamSpec(_Spec):
    kind: Literal["adam"] = Field(description="Adam preconditioning (Kingma & Ba 2015), torch.optim.Adam semantics")
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="first-moment decay (0.9: Kingma & Ba's default)")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="second-moment decay (0.999: Kingma & Ba's default)")
    eps: float = Field(1e-8, gt=0.0, description="added to the root of the second moment (1e-8: torch default)")

    def build(self) -> GradientTransform:
        return scale_by_adam(self.beta1, self.beta2, self.eps)


class ConfidenceSpec(_Spec):
    kind: Literal["confidence"] = Field(description="scale the step by the batch's confidence in the gradient (per-example variance)")
    rule: Literal["snr", "norm_test"] = Field(
        "snr", description="snr: factor 1 - (V/b)/||g||^2 (Balles & Hennig 2018); norm_test: min(1, theta^2 ||g||^2 b/V) (Byrd et al. 2012)"
    )
    theta: float = Field(1.0, gt=0.0, description="norm-test tolerance theta (rule norm_test; 1: noise no larger than the signal)")
    min_factor: float = Field(0.0, ge=0.0, le=1.0, description="smallest factor applied (0: the step may vanish)")

    def build(self) -> GradientTransform:
        return scale_by_confidence(self.rule, self.theta, self.min_factor)


class StalenessSpec(_Spec):
    kind: Literal["staleness"] = Field(description="divide by the staleness of the gradient (Zhang et al. 2016)")

    def build(self) -> GradientTransform:
        return scale_by_staleness()


class ScaleSpec(_Spec):
    kind: Literal["scale"] = Field(description="multiply by a constant factor")
    factor: float = Field(description="the factor")

    def build(self) -> GradientTransform:
        return scale(self.factor)


TransformSpec = Annotated[
    LearningRateSpec | MomentumSpec | WeightDecaySpec | ClipNormSpec | ClipValueSpec | AdamSpec | ConfidenceSpec | StalenessSpec | ScaleSpec,
    Field(discriminator="kind"),
]


_SPEC_LIST = TypeAdapter(list[TransformSpec])


def validate_transforms(specs: list, where: str = "transforms") -> list:
    """Validate a list of transform specs (dicts or models); every problem in one ConfigError."""
    try:
        return _SPEC_LIST.validate_python([s.model_dump() if isinstance(s, BaseModel) else s for s in specs])
    except ValidationError as err:
        problems = format_validation_error(err, where)
        raise ConfigError("; ".join(problems), problems) from None


def build_transform(specs: list) -> GradientTransform:
    """Chain the transforms described by ``specs`` (dicts or validated spec models), in order."""
    return chain(*(m.build() for m in validate_transforms(specs)))


