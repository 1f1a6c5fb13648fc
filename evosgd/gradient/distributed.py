"""Simulated distributed SGD on a virtual clock (no threads: deterministic and seedable).

**Synchronous data parallel** (``sgd_sync``).  K workers each compute the gradient of their shard
(``batch_size / K`` examples) of the global batch; the server averages them and updates.  With
``backup_workers = N - K`` extra workers, the step waits for the fastest K only and drops the rest
(Chen et al. 2016, "Revisiting distributed synchronous SGD").  Per step, with worker times
``T_1..T_N`` drawn iid from ``compute_time``::

    step time = T_(K:N) + comm_time          (K-th smallest; the maximum when N = K)

By default (``time_model = "per_shard"``) a worker's time is one ``compute_time`` draw whatever its
shard size.  The per-example models make it grow with the shard m: ``overhead_time + m X``
(correlated: one slow machine is slow on all its examples) or ``overhead_time + X_1 + ... + X_m``
(independent per-example times), so the time lost waiting for the slowest worker depends on the
batch size (:func:`shard_times`; ``evosgd.analysis.straggler_batch`` measures it).

For exponential times of mean mu, ``E T_(K:N) = mu (H_N - H_{N-K})`` (Renyi's representation of
exponential order statistics), i.e. ``mu H_K`` without backups.  Because every shard is an iid
draw, the average of the K fastest shard gradients is exactly a mini-batch gradient of K*shard
examples, which is how it is computed.  Cost: all N workers are charged their shard (the dropped
gradients were computed too).  Idle time: a used worker waits ``T_(K:N) - T_i`` for the others.

**Asynchronous parameter server** (``sgd_async``), ``delay_model = "timing"``.  Each of K workers
reads the parameters when it starts, computes a gradient on its own batch of ``batch_size``
examples for a drawn compute time (plus ``comm_time``), and the server applies it the moment it
arrives; the worker then reads the new parameters and starts again.  Staleness (the number of
updates the server made between the read and the arrival) arises from the timing alone; K equal
constant-speed workers give staleness K-1 after the first round.  The event queue is the tensor of
next arrival times ``[R, K]``: one step = the earliest arrival of every replicate (``argmin``), so
it is vectorized across replicates with no Python loop over events.  ``delay_model = "fixed"``
is the classic delayed-gradient model ``theta_{t+1} = theta_t - lr g(theta_{t - tau})`` (history
padded with the starting point); each update then takes ``(compute draw + comm_time) / workers``
of simulated time.  ``staleness_aware`` divides the step by the staleness (Zhang et al. 2016).
Workers of the asynchronous model never wait; the time they spend communicating is reported as
``idle_fraction``.

Host synchronisation: one per step, to advance the host-side simulated clock of the budget by the
step's drawn duration (documented exception to "no host sync in the step loop").
"""

from __future__ import annotations

import collections
import math
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evosgd.core.device import to_host
from evosgd.core.registry import OPTIMIZERS
from evosgd.gradient import transforms as T
from evosgd.gradient.estimators import GradientInfo
from evosgd.gradient.sgd import GradientOptimizer, SGDParams


# ---------------------------------------------------------------------------- worker times
class _TimeBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def draw(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def mean(self) -> float:
        raise NotImplementedError

    @staticmethod
    def _exp(shape, generator, device) -> torch.Tensor:
        # Exp(1) by inversion; 1 - U lies in (0, 1], so the log is finite.
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        return -torch.log1p(-u)


class ConstantTime(_TimeBase):
    kind: Literal["constant"] = Field("constant", description="every gradient takes exactly `value`")
    value: float = Field(1.0, gt=0.0, description="compute time of one worker gradient (time units)")

    def draw(self, shape, generator, device):
        return torch.full(shape, self.value, device=device, dtype=torch.float64)

    def mean(self) -> float:
        return self.value


class ExponentialTime(_TimeBase):
    kind: Literal["exponential"] = Field(description="exponential times of mean `mean_time` (memoryless workers)")
    mean_time: float = Field(1.0, gt=0.0, description="mean compute time mu")

    def draw(self, shape, generator, device):
        return self.mean_time * self._exp(shape, generator, device)

    def mean(self) -> float:
        return self.mean_time


class ShiftedExponentialTime(_TimeBase):
    kind: Literal["shifted_exponential"] = Field(description="shift + exponential(mean_time): a fixed minimum plus a random delay")
    shift: float = Field(1.0, ge=0.0, description="deterministic part of the compute time")
    mean_time: float = Field(1.0, gt=0.0, description="mean of the exponential part")

    def draw(self, shape, generator, device):
        return self.shift + self.mean_time * self._exp(shape, generator, device)

    def mean(self) -> float:
        return self.shift + self.mean_time


class LognormalTime(_TimeBase):
    kind: Literal["lognormal"] = Field(description="exp(N(mu, sigma^2)) compute times (heavy right tail)")
    mu: float = Field(0.0, description="mean of the log time")
    sigma: float = Field(0.5, gt=0.0, description="standard deviation of the log time")

    def draw(self, shape, generator, device):
        z = torch.randn(shape, generator=generator, device=device, dtype=torch.float64)
        return torch.exp(self.mu + self.sigma * z)

    def mean(self) -> float:
        return math.exp(self.mu + self.sigma**2 / 2)


class StragglerTime(_TimeBase):
    kind: Literal["straggler"] = Field(description="base time, but with probability p a worker is `slowdown` times slower")
    base: float = Field(1.0, gt=0.0, description="compute time of a normal worker")
    p: float = Field(0.1, ge=0.0, le=1.0, description="probability that a worker straggles on a given gradient")
    slowdown: float = Field(10.0, ge=1.0, description="factor m by which a straggler is slower")

    def draw(self, shape, generator, device):
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        return self.base * torch.where(u < self.p, self.slowdown, 1.0)

    def mean(self) -> float:
        return self.base * (1 + self.p * (self.slowdown - 1))


WorkerTimeSpec = Annotated[
    ConstantTime | ExponentialTime | ShiftedExponentialTime | LognormalTime | StragglerTime,
    Field(discriminator="kind"),
]


def harmonic(n: int) -> float:
    """``H_n = sum_{i=1}^n 1/i``."""
    return sum(1.0 / i for i in range(1, n + 1))


def expected_sync_step_time(mean_time: float, workers: int, backup_workers: int = 0, comm_time: float = 0.0) -> float:
    """``E[T_(K:N)] + comm = mu (H_N - H_{N-K}) + comm`` for exponential worker times of mean mu."""
    n = workers + backup_workers
    return mean_time * (harmonic(n) - harmonic(n - workers)) + comm_time


def shard_times(params: Any, shard: int, shape: tuple[int, ...], generator: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """Compute times ``shape`` of workers with a shard of ``shard`` examples under ``params.time_model``:

    * ``per_shard``                ``T = X``                          (time independent of the shard)
    * ``per_example_correlated``   ``T = c0 + m X``                   (order statistics scale with m)
    * ``per_example_independent``  ``T = c0 + X_1 + ... + X_m``       (spread grows like sqrt(m))

    with ``X ~ compute_time``, ``c0 = overhead_time`` and ``m = shard``."""
    spec = params.compute_time
    if params.time_model == "per_shard":
        return spec.draw(shape, generator, device)
    if params.time_model == "per_example_correlated":
        return params.overhead_time + shard * spec.draw(shape, generator, device)
    return params.overhead_time + spec.draw(tuple(shape) + (shard,), generator, device).sum(dim=-1)


# ---------------------------------------------------------------------------- synchronous
class SyncParams(SGDParams):
    """Synchronous data-parallel SGD on K simulated workers."""

    workers: int = Field(4, ge=1, description="workers K whose gradients make one step")
    backup_workers: int = Field(0, ge=0, description="extra workers; the step waits for the fastest K of K + backup (Chen et al. 2016)")
    compute_time: WorkerTimeSpec = Field(default_factory=ConstantTime, description="distribution of a worker's time for its shard")
    comm_time: float = Field(0.0, ge=0.0, description="communication time added to every step (all-reduce / push-pull)")
    time_model: Literal["per_shard", "per_example_correlated", "per_example_independent"] = Field(
        "per_shard", description="per_shard: a worker's shard takes one compute_time draw whatever its size; "
        "per_example_correlated: overhead_time + shard x one draw (a slow worker is slow on all its examples); "
        "per_example_independent: overhead_time + the sum of one draw per example of the shard")
    overhead_time: float = Field(0.0, ge=0.0, description="fixed per-step compute overhead of a worker (kernel launch, "
                                 "data loading) added by the per_example time models")

    @model_validator(mode="after")
    def _shards(self) -> SyncParams:
        if self.time_model == "per_shard" and self.overhead_time > 0:
            raise ValueError("overhead_time needs a per_example time model (per_shard draws the whole shard's time)")
        if self.batch_size % self.workers:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of workers ({self.workers}): each worker gets a shard")
        if self.adaptive_batch:
            raise ValueError("adaptive_batch is not supported by the distributed simulations")
        return self


@OPTIMIZERS.register("sgd_sync", SyncParams, "synchronous data-parallel SGD on K simulated workers (stragglers, backup workers, "
                     "virtual clock)", family="gradient")
class SyncSGD(GradientOptimizer):
    kind = "sgd_sync"

    def __init__(self, params: SyncParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        R = self.replicates
        self.n_workers = params.workers + params.backup_workers
        self.shard = params.batch_size // params.workers
        self.step_time = torch.full((R,), math.nan, dtype=torch.float64, device=self.device)
        self.idle = torch.zeros(R, dtype=torch.float64, device=self.device)  # worker-time spent waiting
        self.busy_time = torch.zeros(R, dtype=torch.float64, device=self.device)  # simulated time so far

    def charge(self, active_host: np.ndarray) -> None:
        k = self.params.accumulation_steps
        self.budget.charge(gradient_evaluations=float(self.n_workers * self.shard * k), mask=active_host)

    def gradient(self, active: torch.Tensor, t: Any) -> GradientInfo:
        p = self.params
        times = shard_times(p, self.shard, (self.replicates, self.n_workers), self.generator, self.device)
        fastest = torch.topk(times, p.workers, dim=1, largest=False).values  # the K used workers
        kth = fastest[:, -1]
        dt = kth + p.comm_time
        self.step_time = torch.where(active, dt, self.step_time)
        self.idle = torch.where(active, self.idle + (kth.unsqueeze(1) - fastest).sum(dim=1), self.idle)
        self.busy_time = torch.where(active, self.busy_time + dt, self.busy_time)
        self.budget.advance_time(to_host(dt), mask=to_host(active))  # documented host sync
        return self.estimate(self.theta, t)

    def metrics(self) -> dict[str, Any]:
        out = super().metrics()
        out["step_time"] = self.step_time
        # every gradient of a synchronous step is taken at the current parameters: staleness 0
        out["staleness"] = torch.zeros_like(self.step_time)
        out["staleness_max"] = torch.zeros_like(self.step_time)
        out["idle_fraction"] = self.idle / (self.n_workers * self.busy_time).clamp(min=1e-300)
        return out


# ---------------------------------------------------------------------------- asynchronous
class AsyncParams(SGDParams):
    """Asynchronous parameter-server SGD on K simulated workers."""

    workers: int = Field(4, ge=1, description="workers K, each pushing its own mini-batch gradient of batch_size examples")
    compute_time: WorkerTimeSpec = Field(default_factory=ConstantTime, description="distribution of a worker's time per gradient")
    comm_time: float = Field(0.0, ge=0.0, description="communication time of a worker per gradient (pull + push)")
    delay_model: Literal["timing", "fixed"] = Field(
        "timing", description="timing: staleness from the simulated event times; fixed: every gradient exactly `delay` updates old"
    )
    delay: int = Field(0, ge=0, description="the fixed staleness tau (delay_model = fixed)")
    staleness_aware: bool = Field(False, description="divide the learning rate by the staleness (Zhang et al. 2016)")
    histogram_bins: int = Field(64, ge=2, description="bins of the staleness histogram (last bin: >= bins - 1)")

    @model_validator(mode="after")
    def _check(self) -> AsyncParams:
        if self.adaptive_batch:
            raise ValueError("adaptive_batch is not supported by the distributed simulations")
        if self.accumulation_steps > 1:
            raise ValueError("accumulation_steps > 1 is not supported by sgd_async (each worker pushes one batch)")
        return self

    def chain(self) -> T.GradientTransform:
        base = super().chain()
        return T.chain(T.scale_by_staleness(), base) if self.staleness_aware else base


@OPTIMIZERS.register("sgd_async", AsyncParams, "asynchronous parameter-server SGD on K simulated workers (staleness from "
                     "timing or a fixed delay)", family="gradient")
class AsyncSGD(GradientOptimizer):
    kind = "sgd_async"

    def __init__(self, params: AsyncParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        R, K, dev = self.replicates, params.workers, self.device
        self.batch_sizes = np.full(R, params.batch_size, dtype=np.int64)
        self.rows = torch.arange(R, device=dev)
        self.now = torch.zeros(R, dtype=torch.float64, device=dev)
        self.version = torch.zeros(R, dtype=torch.long, device=dev)
        self.stale_sum = torch.zeros(R, dtype=torch.float64, device=dev)
        self.stale_max = torch.zeros(R, dtype=torch.long, device=dev)
        self.stale_last = torch.zeros(R, dtype=torch.long, device=dev)
        self.histogram = torch.zeros(R, params.histogram_bins, dtype=torch.long, device=dev)
        self.comm_total = torch.zeros(R, dtype=torch.float64, device=dev)
        if params.delay_model == "timing":
            self.arrival = params.compute_time.draw((R, K), self.generator, dev) + params.comm_time
            self.read_theta = self.theta.unsqueeze(1).repeat(1, K, 1)  # [R, K, D] params each worker read
            self.read_version = torch.zeros(R, K, dtype=torch.long, device=dev)
        else:
            # history theta_{t - tau} .. theta_t, padded with the starting point
            self.history = collections.deque([self.theta.clone() for _ in range(params.delay + 1)])

    def gradient(self, active: torch.Tensor, t: Any) -> GradientInfo:
        p = self.params
        if p.delay_model == "fixed":
            dt = (p.compute_time.draw((self.replicates,), self.generator, self.device) + p.comm_time) / p.workers
            staleness = torch.full_like(self.version, p.delay)
            theta_read = self.history[0]
            self.comm_total = torch.where(active, self.comm_total + p.comm_time / p.workers, self.comm_total)
        else:
            w = self.arrival.argmin(dim=1)  # earliest arrival; ties go to the lowest worker index
            t_arr = self.arrival[self.rows, w]
            dt = t_arr - self.now
            staleness = self.version - self.read_version[self.rows, w]
            theta_read = self.read_theta[self.rows, w]
            self._arriving = w
        self.budget.advance_time(to_host(dt), mask=to_host(active))  # documented host sync
        self.now = torch.where(active, self.now + dt, self.now)
        self._staleness = staleness
        info = self.estimate(theta_read, t)
        info.extra["staleness"] = staleness
        return info

    def after_update(self, info: GradientInfo, moved: torch.Tensor) -> None:
        p, s = self.params, self._staleness
        self.version = self.version + moved.long()
        self.stale_sum = self.stale_sum + torch.where(moved, s.double(), 0.0)
        self.stale_max = torch.where(moved, torch.maximum(self.stale_max, s), self.stale_max)
        self.stale_last = torch.where(moved, s, self.stale_last)
        bins = s.clamp(max=p.histogram_bins - 1)
        self.histogram[self.rows, bins] += moved.long()
        if p.delay_model == "fixed":
            self.history.append(self.theta.clone())
            self.history.popleft()
            return
        # the worker that delivered reads the new parameters and starts its next gradient
        w = self._arriving
        nxt = self.now + p.compute_time.draw((self.replicates,), self.generator, self.device) + p.comm_time
        self.arrival[self.rows, w] = torch.where(moved, nxt, self.arrival[self.rows, w])
        self.read_theta[self.rows, w] = torch.where(moved.unsqueeze(1), self.theta, self.read_theta[self.rows, w])
        self.read_version[self.rows, w] = torch.where(moved, self.version, self.read_version[self.rows, w])
        self.comm_total = self.comm_total + torch.where(moved, p.comm_time, 0.0)

    def staleness_histogram(self) -> torch.Tensor:
        """``[R, bins]`` counts of updates by staleness (last bin: >= bins - 1)."""
        return self.histogram

    def metrics(self) -> dict[str, Any]:
        out = super().metrics()
        n = self.version.double().clamp(min=1)
        out["staleness"] = self.stale_sum / n
        out["staleness_max"] = self.stale_max.double()
        # worker-time spent communicating / worker-time elapsed (K workers in the timing model; the
        # fixed model's comm_total is already per update of the pooled workers)
        scale = self.params.workers if self.params.delay_model == "timing" else 1
        out["idle_fraction"] = self.comm_total / (scale * self.now).clamp(min=1e-300)
        return out
