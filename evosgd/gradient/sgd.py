"""Mini-batch SGD and Adam: a gradient estimator feeding a chain of update transforms.

One step, for every active replicate at once (``theta`` is ``[R, D]``)::

    batch(es)  <- sampler (with / without replacement, k micro-batches)
    info       <- estimator: mini-batch gradient, landscape.loss_and_grad (closed form or autograd;
                  + per-example variance when needed)
    updates    <- transform chain (clip, weight decay, momentum, confidence, lr ...)
    theta      <- theta + updates        (frozen where diverged or out of budget; a constant lr
                                         last is fused with the sum: transforms.apply_updates)

Cost (contract 2): each replicate is charged its ``b * k`` per-example gradients per step
(``gradient_evaluations += b k``), whatever is needed to compute them (the per-example statistics
reuse the same examples, so they are not charged twice).

Divergence: a replicate whose mini-batch loss or new parameters are non-finite is marked by
``Optimizer.check_divergence`` and frozen at its last finite iterate; it is no longer charged,
the others go on; no exception.

Host synchronisation: none in the step beyond the core divergence check (one bool read),
except with ``adaptive_batch`` (the new batch sizes size the next batch tensor: one sync per step).

Seeding: all replicates draw from the single generator of the run, in one call per step.  So a
run of R replicates gives replicate r a *different* (equally distributed) noise path from a run of
one replicate seeded the same way; bit-equality with separate runs would need one generator per
replicate and a Python loop over replicates per draw, which the engine avoids.  Noise-free
landscapes give equal results either way.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evosgd.core.device import host_bool, to_device, to_host
from evosgd.core.errors import ParameterError
from evosgd.core.optimizer import Optimizer
from evosgd.core.registry import OPTIMIZERS
from evosgd.gradient import transform_specs as TS
from evosgd.gradient import transforms as T
from evosgd.gradient.estimators import (
    BatchSampler,
    GradientInfo,
    accumulated_gradient,
    batch_gradient,
)
from evosgd.gradient.schedules import ConstantSchedule, ScheduleSpec


# ---------------------------------------------------------------------------- params
class MinibatchParams(BaseModel):
    """Options of the gradient estimator, shared by every gradient optimizer."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(16, ge=1, description="examples per mini-batch b (16: a common small-batch default)")
    sampling: Literal["with_replacement", "without_replacement"] = Field(
        "with_replacement", description="with_replacement: iid draws; without_replacement: shuffled epochs (finite-sum landscapes only)"
    )
    accumulation_steps: int = Field(
        1, ge=1, description="k micro-batches of batch_size accumulated per update (update batch k*b, memory batch b)"
    )
    gradient_noise: bool = Field(
        False, description="compute the per-example gradient variance every step for the grad_noise metric (costs a vmap)"
    )


class SGDParams(MinibatchParams):
    """Mini-batch SGD with torch.optim.SGD's options, or an explicit transform chain."""

    lr: float = Field(0.01, gt=0.0, description="learning rate eta_0 (0.01: torch's customary starting point)")
    schedule: ScheduleSpec = Field(default_factory=ConstantSchedule, description="learning-rate schedule (constant by default)")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="momentum coefficient (0: plain SGD)")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0, as in torch)")
    dampening: float = Field(0.0, ge=0.0, le=1.0, description="momentum dampening (torch semantics)")
    weight_decay: float = Field(0.0, ge=0.0, description="coupled L2 weight decay added to the gradient (torch semantics)")
    clip_norm: float | None = Field(None, gt=0.0, description="clip each replicate's gradient to this norm (None: off)")
    clip_value: float | None = Field(None, gt=0.0, description="clip gradient coordinates to [-c, c] (None: off)")
    confidence: Literal["off", "snr", "norm_test"] = Field(
        "off", description="confidence-adaptive step from the per-example variance (see transforms.scale_by_confidence)"
    )
    confidence_theta: float = Field(1.0, gt=0.0, description="tolerance theta of the norm_test confidence rule")
    confidence_min_factor: float = Field(0.0, ge=0.0, le=1.0, description="smallest confidence factor")
    adaptive_batch: bool = Field(
        False, description="grow the batch by the norm test of Byrd et al. 2012: b <- max(b, V / (theta^2 ||g||^2))"
    )
    norm_test_theta: float = Field(0.5, gt=0.0, description="theta of the adaptive-batch norm test (Byrd et al. 2012 use 0.5-0.9)")
    max_batch_size: int = Field(1024, ge=1, description="upper limit of the adaptive batch size")
    transforms: list[TS.TransformSpec] | None = Field(
        None, description="explicit transform chain (in order) instead of the convenience fields lr ... confidence"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SGDParams:
        if self.transforms is not None:
            chain_fields = ("lr", "schedule", "momentum", "nesterov", "dampening", "weight_decay", "clip_norm",
                            "clip_value", "confidence")
            set_ = [f for f in chain_fields if f in self.model_fields_set]
            if set_:
                raise ValueError(f"give either 'transforms' or the convenience fields, not both (also given: {', '.join(set_)})")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        if self.adaptive_batch and self.accumulation_steps > 1:
            raise ValueError("adaptive_batch works with accumulation_steps = 1 only")
        if self.adaptive_batch and self.max_batch_size < self.batch_size:
            raise ValueError("max_batch_size must be >= batch_size")
        return self

    def chain(self) -> T.GradientTransform:
        """The transform chain: torch.optim.SGD order, confidence on the raw gradient first."""
        if self.transforms is not None:
            return TS.build_transform(self.transforms)
        parts = []
        if self.confidence != "off":
            parts.append(T.scale_by_confidence(self.confidence, self.confidence_theta, self.confidence_min_factor))
        if self.clip_norm is not None:
            parts.append(T.clip_by_global_norm(self.clip_norm))
        if self.clip_value is not None:
            parts.append(T.clip_by_value(self.clip_value))
        if self.weight_decay > 0:
            parts.append(T.add_decayed_weights(self.weight_decay))
        if self.momentum > 0:
            parts.append(T.momentum(self.momentum, self.dampening, self.nesterov))
        parts.append(T.scale_by_learning_rate(self.schedule.build(self.lr)))
        return T.chain(*parts)


class AdamParams(MinibatchParams):
    """Adam / AdamW with torch.optim semantics."""

    lr: float = Field(1e-3, gt=0.0, description="learning rate (1e-3: Kingma & Ba's default)")
    schedule: ScheduleSpec = Field(default_factory=ConstantSchedule, description="learning-rate schedule (constant by default)")
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="first-moment decay (0.9: Kingma & Ba's default)")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="second-moment decay (0.999: Kingma & Ba's default)")
    eps: float = Field(1e-8, gt=0.0, description="added to the root of the second moment (1e-8: torch default)")
    weight_decay: float = Field(0.0, ge=0.0, description="weight decay lambda (coupled L2 unless decoupled_weight_decay)")
    decoupled_weight_decay: bool = Field(False, description="AdamW: decay applied after the preconditioning (Loshchilov & Hutter 2019)")
    clip_norm: float | None = Field(None, gt=0.0, description="clip each replicate's gradient to this norm (None: off)")

    def chain(self) -> T.GradientTransform:
        parts = []
        if self.clip_norm is not None:
            parts.append(T.clip_by_global_norm(self.clip_norm))
        if self.weight_decay > 0 and not self.decoupled_weight_decay:
            parts.append(T.add_decayed_weights(self.weight_decay))
        parts.append(T.scale_by_adam(self.beta1, self.beta2, self.eps))
        if self.weight_decay > 0 and self.decoupled_weight_decay:
            parts.append(T.add_decayed_weights(self.weight_decay))
        parts.append(T.scale_by_learning_rate(self.schedule.build(self.lr)))
        return T.chain(*parts)


class RestartParams(BaseModel):
    """Random restarts of a gradient method (``sgd``, ``adam``): random-restart local search, the
    gradient side's counterpart of IPOP-CMA-ES's restarts on multimodal landscapes."""

    model_config = ConfigDict(extra="forbid")

    restarts: Literal["none", "stagnation"] = Field(
        "none", description="stagnation: restart a replicate from a fresh point drawn uniformly in the landscape's search "
        "domain (its optimizer state reset) once its smoothed mini-batch loss has not improved for restart_patience steps")
    restart_patience: int = Field(200, ge=1, description="steps without a new best smoothed loss before a restart")
    restart_tol: float = Field(1e-6, ge=0.0, description="relative decrease of the smoothed loss that counts as a new best")
    restart_smoothing: float = Field(
        0.9, ge=0.0, lt=1.0, description="EMA factor of the mini-batch loss the restart test watches (0: the raw loss)")
    max_restarts: int = Field(1000, ge=0, description="most restarts per replicate")


class SGDRunParams(SGDParams, RestartParams):
    """``sgd``: :class:`SGDParams` with optional random restarts."""


class AdamRunParams(AdamParams, RestartParams):
    """``adam``: :class:`AdamParams` with optional random restarts."""


# ---------------------------------------------------------------------------- engine
class GradientOptimizer(Optimizer):
    """Shared step loop: estimator -> transform chain -> masked update; subclasses may override
    :meth:`gradient` (where the gradient is evaluated and with which extras) and :meth:`after_update`."""

    def __init__(self, params: Any, *, landscape: Any, budget: Any, generator: torch.Generator) -> None:
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        where = f"optimizer {self.kind!r}"
        self.theta = landscape.initial_point.detach().clone()
        self.tx = params.chain()
        self.state = self.tx.init(self.theta)
        try:
            self.sampler = BatchSampler(landscape, generator, params.sampling == "with_replacement")
        except ValueError as e:
            raise ParameterError("sampling", params.sampling, "with_replacement (" + str(e) + ")", where=where) from None
        self.adaptive = bool(getattr(params, "adaptive_batch", False))
        largest = params.max_batch_size if self.adaptive else params.batch_size
        if not self.sampler.replacement and largest > self.sampler.n:
            name = "max_batch_size" if self.adaptive else "batch_size"
            raise ParameterError(name, largest, f"at most the {self.sampler.n} examples of the landscape when sampling without "
                                 "replacement", where=where)
        self.stats = bool("grad_variance" in self.tx.needs or params.gradient_noise or self.adaptive)
        if self.stats and not landscape.per_example_separable:
            raise ParameterError("gradient_noise/confidence/adaptive_batch", True,
                                 "off for a landscape whose examples are not separable (per-example gradients undefined)", where=where)
        R, dev, dt = self.replicates, self.device, self.dtype
        self.batch_sizes = np.full(R, params.batch_size * params.accumulation_steps, dtype=np.int64)
        self.grad_norm = torch.full((R,), math.nan, device=dev, dtype=dt)
        self.grad_noise = torch.full((R,), math.nan, device=dev, dtype=dt)
        self._all_active: torch.Tensor | None = None
        self._last_grads: torch.Tensor | None = None  # gradient of the last all-replicate step, norm pending
        self.restart_mode = getattr(params, "restarts", "none")
        if self.restart_mode != "none":
            domain = getattr(landscape, "domain", None)
            if domain is None:
                raise ParameterError("restarts", self.restart_mode, "'none' on a landscape without a search domain (a restart "
                                     "draws a fresh point uniformly in it: the analytic landscapes have one)", where=where)
            self.restart_domain = (float(domain[0]), float(domain[1]))
            self.restart_count = torch.zeros(R, dtype=torch.long, device=dev)
            self.loss_ema = torch.full((R,), math.nan, device=dev, dtype=dt)  # smoothed mini-batch loss of the current run
            self.best_ema = torch.full((R,), math.inf, device=dev, dtype=dt)
            self.since_best = torch.zeros(R, dtype=torch.long, device=dev)
            self.previous_best_f = torch.full((R,), math.inf, device=dev, dtype=dt)  # best finished run: its smoothed loss
            self.previous_best_x = self.theta.clone()                                # ... and its last iterate

    # -- hooks -----------------------------------------------------------------------------
    def estimate(self, theta: torch.Tensor, t: Any) -> GradientInfo:
        """Mini-batch gradient at ``theta`` from fresh examples (k micro-batches, or the adaptive b_r)."""
        p = self.params
        if self.adaptive:
            b_max = int(self.batch_sizes.max())
            batch = self.sampler.draw(b_max, t)
            b = to_device(self.batch_sizes, self.device)
            weights = (torch.arange(b_max, device=self.device).unsqueeze(0) < b.unsqueeze(1)).to(self.dtype)
            return batch_gradient(self.landscape, theta, batch, t, stats=True, weights=weights)
        batches = [self.sampler.draw(p.batch_size, t) for _ in range(p.accumulation_steps)]
        return accumulated_gradient(self.landscape, theta, batches, t, stats=self.stats)

    def gradient(self, active: torch.Tensor, t: Any) -> GradientInfo:
        """The gradient handed to the transforms (synchronous: at the current iterate)."""
        return self.estimate(self.theta, t)

    def charge(self, active_host: np.ndarray) -> None:
        if self.adaptive:
            self.budget.charge(gradient_evaluations=self.batch_sizes.astype(np.float64), mask=active_host)
        else:
            # one batch size for all (the common case): a scalar charge, and no boolean indexing
            # of the ledger when every replicate steps; the same float64 additions either way
            self.budget.charge(gradient_evaluations=float(self.batch_sizes[0]),
                               mask=None if active_host.all() else active_host)

    def after_update(self, info: GradientInfo, moved: torch.Tensor) -> None:
        """Bookkeeping after the update (adaptive batch size)."""
        if self.adaptive:
            # Norm test (Byrd et al. 2012, eq. 3.9): the batch is large enough when
            # V / b <= theta^2 ||g||^2; otherwise grow it to b = V / (theta^2 ||g||^2).
            g2 = info.grads.pow(2).sum(dim=-1)
            want = torch.ceil(info.grad_variance / (self.params.norm_test_theta**2 * g2))
            want = torch.nan_to_num(want, nan=0.0, posinf=float(self.params.max_batch_size))
            new = np.minimum(np.maximum(self.batch_sizes, to_host(want).astype(np.int64)), self.params.max_batch_size)
            self.batch_sizes = np.where(to_host(moved), new, self.batch_sizes)

    # -- protocol --------------------------------------------------------------------------
    def step(self) -> None:
        active_host = ~self.budget.exhausted() & (self.diverged_step < 0)
        if not active_host.any():
            return
        if active_host.all():
            # every replicate steps (the common case): one cached all-true mask, no host->device copy
            if self._all_active is None:
                self._all_active = torch.ones(self.replicates, dtype=torch.bool, device=self.device)
            active = self._all_active
        else:
            active = to_device(active_host, self.device)
        t = self.time() if self.landscape.drifting else None
        info = self.gradient(active, t)
        new_theta, new_state = T.apply_updates(self.tx, info.grads, self.state, self.theta, **info.extras())
        self.charge(active_host)
        self.budget.step(None if active_host.all() else active_host)
        if active_host.all():
            # Fast path (the common case): every replicate steps, so nothing needs masking unless
            # one diverges now; the host-side ledger ``diverged_step`` says so without a sync.
            self.check_divergence(info.loss, new_theta)
            if (self.diverged_step < 0).all():
                self.theta, self.state = new_theta, new_state
                # the norm is a metric, read only at record points: computed on demand
                self._last_grads = info.grads
                if info.grad_variance is not None:
                    self.grad_noise = info.grad_variance.to(self.dtype)
                self.after_update(info, active)
                if self.restart_mode != "none":
                    self._restart_check(info.loss, active)
                return
        else:
            zero = torch.zeros((), device=self.device, dtype=self.dtype)
            self.check_divergence(torch.where(active, info.loss, zero), torch.where(active.unsqueeze(1), new_theta, zero))
        self._flush_grad_norm()
        moved = active & ~self.diverged
        self.theta = torch.where(moved.unsqueeze(1), new_theta, self.theta)
        self.state = T.tree_where(moved, new_state, self.state)
        self.grad_norm = torch.where(moved, info.grads.norm(dim=-1), self.grad_norm)
        self._last_grads = None
        if info.grad_variance is not None:
            self.grad_noise = torch.where(moved, info.grad_variance.to(self.dtype), self.grad_noise)
        self.after_update(info, moved)
        if self.restart_mode != "none":
            self._restart_check(info.loss, moved)

    # -- random restarts -------------------------------------------------------------------
    def _restart_check(self, loss: torch.Tensor, moved: torch.Tensor) -> None:
        """Stagnation test on the EMA of the mini-batch loss, ``m <- s m + (1 - s) loss``: a new
        best needs a relative decrease of ``restart_tol``; ``restart_patience`` steps without one
        restart the replicate (one host read per step, only with restarts on)."""
        p = self.params
        s = p.restart_smoothing
        ema = torch.where(torch.isnan(self.loss_ema), loss, s * self.loss_ema + (1.0 - s) * loss)
        self.loss_ema = torch.where(moved, ema, self.loss_ema)
        bar = torch.where(torch.isfinite(self.best_ema), self.best_ema - p.restart_tol * self.best_ema.abs(), math.inf)
        improved = moved & (ema < bar)
        self.best_ema = torch.where(improved, ema, self.best_ema)
        self.since_best = torch.where(improved, 0, self.since_best + moved.long())
        stop = moved & (self.since_best >= p.restart_patience) & (self.restart_count < p.max_restarts)
        if host_bool(stop.any()):  # documented: one host read per step, with restarts on
            self._restart(stop)

    def _restart(self, which: torch.Tensor) -> None:
        """Restart the replicates in ``which``: keep the finished run's last iterate if its smoothed
        loss beats the earlier runs', then a fresh uniform point of the search domain, a fresh
        optimizer state (momentum, Adam moments and the lr schedule start again) and fresh records."""
        keep = which & (self.loss_ema < self.previous_best_f)
        self.previous_best_f = torch.where(keep, self.loss_ema, self.previous_best_f)
        self.previous_best_x = torch.where(keep.unsqueeze(1), self.theta, self.previous_best_x)
        lo, hi = self.restart_domain
        fresh = lo + (hi - lo) * torch.rand(self.theta.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        self.theta = torch.where(which.unsqueeze(1), fresh, self.theta)
        self.state = T.tree_where(which, self.tx.init(self.theta), self.state)
        self.loss_ema = torch.where(which, math.nan, self.loss_ema)
        self.best_ema = torch.where(which, math.inf, self.best_ema)
        self.since_best = torch.where(which, 0, self.since_best)
        self.restart_count = self.restart_count + which.long()

    def _flush_grad_norm(self) -> None:
        """Turn the pending gradient of the last fast-path step into ``grad_norm``."""
        if self._last_grads is not None:
            self.grad_norm = self._last_grads.norm(dim=-1)
            self._last_grads = None

    def recommend(self) -> torch.Tensor:
        """The iterate; with restarts, the last iterate of the best finished run as long as the
        current run's smoothed loss has not caught up with it (a restart must not lose a result)."""
        if self.restart_mode == "none":
            return self.theta
        behind = torch.isfinite(self.previous_best_f) & ~(self.loss_ema <= self.previous_best_f)
        return torch.where(behind.unsqueeze(1), self.previous_best_x, self.theta)

    def metrics(self) -> dict[str, Any]:
        """``lr`` (and the other transform metrics: ``clip_fraction``, ``confidence``, ...),
        ``grad_norm`` (raw mini-batch gradient), ``grad_noise`` (per-example ``tr(Sigma_hat)``, when
        computed), ``batch_size`` (examples per update)."""
        out: dict[str, Any] = dict(T.transform_metrics(self.state))
        self._flush_grad_norm()
        out["grad_norm"] = self.grad_norm
        if self.stats:
            out["grad_noise"] = self.grad_noise
        out["batch_size"] = self.batch_sizes.copy()
        if self.restart_mode != "none":
            out["restarts"] = self.restart_count.to(self.dtype)
        return out


@OPTIMIZERS.register("sgd", SGDRunParams, "mini-batch SGD (momentum, Nesterov, weight decay, clipping, schedules, "
                     "confidence-adaptive lr, adaptive batch, random restarts) or any transform chain", family="gradient")
class SGD(GradientOptimizer):
    kind = "sgd"


@OPTIMIZERS.register("adam", AdamRunParams, "Adam / AdamW on mini-batch gradients (torch.optim semantics), "
                     "optional random restarts", family="gradient")
class Adam(GradientOptimizer):
    kind = "adam"
