"""Concept drift: a wrapper that moves a landscape with the environment clock t (contract 2).

A drift is a time-dependent isometry of a K-dimensional space,

    M_t(v) = G(t) (v - c) + c + delta(t),

with ``G(t)`` a rotation (identity for the translating kinds), ``c`` a centre and ``delta(t)`` an
offset; replicate r's directions, planes and paths are drawn from
``derive_seed(seed, "landscape", r, "drift")`` (paired across optimizers, like the instance).

* Analytic landscapes (and Moving Peaks): the space is theta-space and the centre is the
  optimum ``s``.  The landscape is carried along by M_t:
  ``f_t(theta) = f(M_t^{-1}(theta))``, so ``optimum(t) = M_t(optimum)`` and the optimal value is
  unchanged (a rotation about the optimum turns the ravine but leaves the optimum in place).
* Data landscapes: the space is the *concept* (true weights, teacher network, class centres) and
  the centre is 0: new examples are labelled by the concept ``M_t(w)`` at t, and the true loss,
  optimum and optimal loss are those of the dataset labelled by it.  A rotation is then the
  rotating-hyperplane drift (Hulten, Spencer & Domingos 2001).

Kinds (``DRIFTS``, params validated by the scenario layer from ``[landscape.drift]``):

* ``linear``:      delta(t) = speed t u,                    u a random unit vector;
* ``rotation``:    G(t) = rotation by angle ``angular_speed t`` in a random plane (u, v);
* ``periodic``:    delta(t) = amplitude sin(2 pi t / period) u;
* ``random_walk``: delta(t) = Brownian motion with ``step_std^2`` variance per unit time, sampled on a
  grid of spacing ``dt`` and linearly interpolated; the path is a function of (seed, r) alone,
  whatever the order of queries (grid chunks are drawn from their own seeds);
* ``switch``:      delta(t) = offset of regime ``floor(t / every) mod regimes``; regime 0 is the
  original problem, the others lie at distance ``magnitude`` in random directions; the switch to
  regime j happens at exactly t = j * every.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.core.errors import ConfigError
from evosgd.core.registry import DRIFTS
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.landscapes.base import Batch, Landscape, Time, per_replicate, time_tensor


def _unit_vectors(replicates: int, dim: int, seed: int, count: int = 1) -> torch.Tensor:
    """``[R, count, K]`` random orthonormal directions per replicate (Gram-Schmidt of Gaussians)."""
    out = []
    for r in range(replicates):
        g = make_generator(derive_seed(seed, "landscape", r, "drift"))
        a = torch.randn(dim, count, generator=g, dtype=torch.float64)
        q, rr = torch.linalg.qr(a)
        out.append((q * torch.sign(torch.diagonal(rr))).T)
    return torch.stack(out)


def switch_index(t: torch.Tensor, every: float) -> torch.Tensor:
    """``floor(t / every)`` made exact at the switch times: epoch j starts at the float ``j * every``
    (the division alone can round either way)."""
    j = torch.floor(t / every)
    j = torch.where((j + 1) * every <= t, j + 1, j)
    j = torch.where(j * every > t, j - 1, j)
    return j


class Drift:
    """Base: a translation ``delta(t)``; subclasses override ``offset`` (or ``forward``/``inverse``)."""

    def __init__(self, params: BaseModel, *, replicates: int, seed: int, dim: int, center: torch.Tensor,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.params, self.replicates, self.seed, self.dim = params, replicates, seed, dim
        self.device, self.dtype = torch.device(device), dtype
        self.center = center.to(self.device, dtype)

    def times(self, t: Time) -> torch.Tensor:
        """t as float64 ``[R]`` (time arithmetic in double: t may be 1e6 cost units)."""
        return time_tensor(t, self.replicates, self.device, torch.float64)

    def offset(self, t: Time) -> torch.Tensor:
        """delta(t) ``[R, K]``."""
        return torch.zeros(self.replicates, self.dim, device=self.device, dtype=self.dtype)

    def forward(self, v: torch.Tensor, t: Time) -> torch.Tensor:
        """M_t(v) for v ``[R, *S, K]``."""
        return v + per_replicate(self.offset(t), v.dim())

    def inverse(self, v: torch.Tensor, t: Time) -> torch.Tensor:
        """M_t^{-1}(v) for v ``[R, *S, K]``."""
        return v - per_replicate(self.offset(t), v.dim())


class DriftParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LinearParams(DriftParams):
    speed: float = Field(1e-3, ge=0.0, description="distance the optimum/concept moves per unit of time")


@DRIFTS.register("linear", LinearParams, "the optimum (concept) moves at constant speed along a random direction")
class LinearDrift(Drift):
    def __init__(self, params: LinearParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.direction = _unit_vectors(self.replicates, self.dim, self.seed)[:, 0].to(self.device, self.dtype)

    def offset(self, t: Time) -> torch.Tensor:
        return (self.params.speed * self.times(t)).to(self.dtype).unsqueeze(-1) * self.direction


class PeriodicParams(DriftParams):
    amplitude: float = Field(1.0, ge=0.0, description="largest distance from the original optimum/concept")
    period: float = Field(1e4, gt=0.0, description="time of one full oscillation")


@DRIFTS.register("periodic", PeriodicParams, "sinusoidal back-and-forth motion: amplitude sin(2 pi t / period) along a random direction")
class PeriodicDrift(LinearDrift):
    def offset(self, t: Time) -> torch.Tensor:
        phase = torch.sin(2.0 * math.pi * self.times(t) / self.params.period)
        return (self.params.amplitude * phase).to(self.dtype).unsqueeze(-1) * self.direction


class RotationParams(DriftParams):
    angular_speed: float = Field(1e-3, ge=0.0, description="radians per unit of time, in a random plane through the centre")


@DRIFTS.register("rotation", RotationParams,
                 "rotation about the optimum in a random plane (data landscapes: the rotating hyperplane)")
class RotationDrift(Drift):
    """``G(t) = I + (cos a - 1)(u u^T + v v^T) + sin a (v u^T - u v^T)``, ``a = angular_speed t``."""

    def __init__(self, params: RotationParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        if self.dim < 2:
            raise ConfigError("drift 'rotation' needs a space of dimension >= 2")
        uv = _unit_vectors(self.replicates, self.dim, self.seed, count=2).to(self.device, self.dtype)
        self.u, self.v = uv[:, 0], uv[:, 1]

    def _rotate(self, x: torch.Tensor, t: Time, sign: float) -> torch.Tensor:
        a = self.params.angular_speed * self.times(t) * sign
        cos_m1 = per_replicate((torch.cos(a) - 1.0).to(self.dtype), x.dim(), feature_ndim=0)
        sin = per_replicate(torch.sin(a).to(self.dtype), x.dim(), feature_ndim=0)
        u, v = per_replicate(self.u, x.dim()), per_replicate(self.v, x.dim())
        xu, xv = (x * u).sum(-1, keepdim=True), (x * v).sum(-1, keepdim=True)
        return x + cos_m1 * (xu * u + xv * v) + sin * (xu * v - xv * u)

    def forward(self, v: torch.Tensor, t: Time) -> torch.Tensor:
        c = per_replicate(self.center, v.dim())
        return self._rotate(v - c, t, 1.0) + c

    def inverse(self, v: torch.Tensor, t: Time) -> torch.Tensor:
        c = per_replicate(self.center, v.dim())
        return self._rotate(v - c, t, -1.0) + c


class RandomWalkParams(DriftParams):
    step_std: float = Field(1e-2, ge=0.0, description="std of the displacement after one unit of time, per coordinate (variance grows linearly in t)")
    dt: float = Field(
        10.0, gt=0.0,
        description="grid spacing of the path in time units (linear interpolation between grid points); every increment "
        "up to t is drawn once (time ~ R K t / dt), only chunk end points are kept (memory ~ R K t / (dt CHUNK)))")


@DRIFTS.register("random_walk", RandomWalkParams, "Gaussian random walk (Brownian motion) of the optimum/concept, deterministic per replicate")
class RandomWalkDrift(Drift):
    """Grid point k of replicate r is ``sum_{i<k} step_std sqrt(dt) N(0, I)``.  Increments come in
    chunks of ``CHUNK`` grid steps, chunk c from ``derive_seed(seed, "landscape", r, "drift", c)``;
    only chunk end points are kept, plus the one chunk per replicate in use (memory
    ``R K (CHUNK + t / (dt CHUNK))``), and a chunk is redrawn from its own seed when a query leaves it.
    ``CHUNK`` depends on K only (about 2^18 / K, within [16, 1024]), so replicate r's path does not
    depend on the number of replicates."""

    def __init__(self, params: RandomWalkParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        R, K = self.replicates, self.dim
        self.CHUNK = int(min(1024, max(16, 2 ** int(math.log2(max(1, 2**18 // K))))))
        self._ends = [torch.zeros(R, K, dtype=torch.float64)]  # position at the start of chunk c
        self._cached = torch.full((R,), -1, dtype=torch.long)
        self._paths = torch.zeros(R, self.CHUNK + 1, K, dtype=torch.float64)

    def _increments(self, r: int, c: int) -> torch.Tensor:
        g = make_generator(derive_seed(self.seed, "landscape", r, "drift", c))
        scale = self.params.step_std * math.sqrt(self.params.dt)
        return torch.randn(self.CHUNK, self.dim, generator=g, dtype=torch.float64) * scale

    def _extend(self, last_chunk: int) -> None:
        while len(self._ends) <= last_chunk:  # one-time, amortised over CHUNK grid steps
            c = len(self._ends) - 1
            step = torch.stack([self._increments(r, c).sum(0) for r in range(self.replicates)])
            self._ends.append(self._ends[-1] + step)

    def offset(self, t: Time) -> torch.Tensor:
        tt = self.times(t).cpu().clamp_min(0.0)
        k = tt / self.params.dt
        chunk = torch.div(k, self.CHUNK, rounding_mode="floor").long()
        self._extend(int(chunk.max()))
        for r in torch.nonzero(chunk != self._cached).flatten().tolist():  # only when a replicate enters a new chunk
            c = int(chunk[r])
            inc = self._increments(r, c)
            self._paths[r, 0] = self._ends[c][r]
            self._paths[r, 1:] = self._ends[c][r] + inc.cumsum(0)
            self._cached[r] = c
        pos = k - chunk * self.CHUNK
        i = pos.floor().long().clamp_max(self.CHUNK - 1)
        frac = (pos - i).unsqueeze(-1)
        rows = torch.arange(self.replicates)
        out = self._paths[rows, i] * (1 - frac) + self._paths[rows, i + 1] * frac
        return out.to(self.device, self.dtype)


class SwitchParams(DriftParams):
    every: float = Field(1e4, gt=0.0, description="time between abrupt switches (k): regime j holds on [j k, (j+1) k)")
    regimes: int = Field(2, ge=2, description="number of regimes visited in turn (regime 0 = the original problem)")
    magnitude: float = Field(1.0, gt=0.0, description="distance of every other regime's optimum/concept from the original")


@DRIFTS.register("switch", SwitchParams, "abrupt switches between regimes (offset optimum/concept) every k time units, cyclically")
class SwitchDrift(Drift):
    def __init__(self, params: SwitchParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        R, K, m = self.replicates, self.dim, params.regimes
        offs = torch.zeros(R, m, K, dtype=torch.float64)
        for r in range(R):
            g = make_generator(derive_seed(self.seed, "landscape", r, "drift"))
            d = torch.randn(m - 1, K, generator=g, dtype=torch.float64)
            offs[r, 1:] = params.magnitude * d / d.norm(dim=-1, keepdim=True)
        self.offsets = offs.to(self.device, self.dtype)

    def regime(self, t: Time) -> torch.Tensor:
        """Regime index ``[R]`` at t."""
        return (switch_index(self.times(t), self.params.every).long() % self.params.regimes)

    def offset(self, t: Time) -> torch.Tensor:
        return self.offsets[torch.arange(self.replicates, device=self.device), self.regime(t)]


# -- the wrapper -------------------------------------------------------------------------------


class DriftingLandscape(Landscape):
    """A landscape moved by a drift (see the module docstring); ``drifting = True``."""

    drifting = True

    def __init__(self, inner: Landscape, drift: Drift, drift_kind: str) -> None:
        super().__init__(dim=inner.dim, replicates=inner.replicates, device=inner.device, dtype=inner.dtype)
        self.inner, self.drift, self.drift_kind = inner, drift, drift_kind
        self.kind = inner.kind
        self.finite_sum, self.n_examples = inner.finite_sum, inner.n_examples
        self.per_example_separable = inner.per_example_separable
        self.initial_point = inner.initial_point
        self.concept_mode = hasattr(inner, "take_with")

    def __getattr__(self, name: str) -> Any:
        # everything else (domain, shift, unflatten, params, concept, ...) is the inner landscape's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def concept_at(self, t: Time) -> torch.Tensor:
        return self.drift.forward(self.inner.concept, t)  # type: ignore[attr-defined]

    def sample(self, n: int, generator: torch.Generator, t: Time = None) -> Batch:
        if self.concept_mode:
            return self.inner.sample_with(n, generator, self.concept_at(t))  # type: ignore[attr-defined]
        return self.inner.sample(n, generator, t)

    def take(self, indices: torch.Tensor, t: Time = None) -> Batch:
        if self.concept_mode:
            return self.inner.take_with(indices, self.concept_at(t))  # type: ignore[attr-defined]
        return self.inner.take(indices, t)

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        if self.concept_mode:  # the labels in the batch already carry the concept at t
            return self.inner.example_losses(theta, batch, t)
        return self.inner.example_losses(self.drift.inverse(theta, t), batch, t)

    def loss(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        if self.concept_mode:
            return self.inner.loss(theta, batch, t)
        return self.inner.loss(self.drift.inverse(theta, t), batch, t)

    def loss_and_grad(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.concept_mode:  # labels at t are in the batch: the inner landscape's (closed-form) gradient
            return self.inner.loss_and_grad(theta, batch, t)
        return super().loss_and_grad(theta, batch, t)  # autograd through the inverse drift map

    def true_loss(self, theta: torch.Tensor, t: Time = None) -> torch.Tensor:
        if self.concept_mode:
            return self.inner.true_loss_with(theta, self.concept_at(t))  # type: ignore[attr-defined]
        return self.inner.true_loss(self.drift.inverse(theta, t), t)

    def optimum(self, t: Time = None) -> torch.Tensor | None:
        if self.concept_mode:
            return self.inner.optimum_for(self.concept_at(t))  # type: ignore[attr-defined]
        opt = self.inner.optimum(t)
        return None if opt is None else self.drift.forward(opt, t)

    def optimal_loss(self, t: Time = None) -> torch.Tensor | None:
        if self.concept_mode:
            return self.inner.optimal_loss_for(self.concept_at(t))  # type: ignore[attr-defined]
        return self.inner.optimal_loss(t)

    def heldout_metrics(self, theta: torch.Tensor, t: Time = None) -> dict[str, torch.Tensor]:
        """Held-out measures of a data landscape with its held-out examples labelled (or shifted)
        by the concept at t: the deployed distribution moves with the training one."""
        if self.concept_mode and hasattr(self.inner, "heldout_metrics_with"):
            return self.inner.heldout_metrics_with(theta, self.concept_at(t))  # type: ignore[attr-defined]
        return {}

    @property
    def full_cost(self) -> float:
        return self.inner.full_cost

    def change_times(self, horizon: float) -> list[float] | None:
        """Abrupt change points up to ``horizon`` (``switch`` drifts; None for continuous drifts)."""
        if self.drift_kind != "switch":
            return None
        k = self.drift.params.every
        return [j * k for j in range(1, int(horizon // k) + 1)]

    def describe(self) -> dict:
        d = self.inner.describe()
        d["drift"] = {"kind": self.drift_kind, **self.drift.params.model_dump()}
        return d


def drift_space(landscape: Landscape) -> tuple[int, torch.Tensor]:
    """(K, centre [R, K]) of the space a drift acts on: the concept of a data landscape (centre 0),
    else theta-space centred on the optimum (or the landscape's ``drift_center``)."""
    if hasattr(landscape, "take_with"):
        concept = landscape.concept  # type: ignore[attr-defined]
        return concept.shape[-1], torch.zeros_like(concept)
    center = getattr(landscape, "drift_center", None)
    if center is None:
        center = getattr(landscape, "shift", None)
    if center is None:
        center = landscape.optimum(None)
    if center is None:
        center = torch.zeros(landscape.replicates, landscape.dim)
    return landscape.dim, center


def wrap_with_drift(landscape: Landscape, drift: dict[str, Any] | None, *, seed: int) -> Landscape:
    """Wrap ``landscape`` with the drift described by ``drift`` (``{"kind": ..., **params}``)."""
    if not drift:
        return landscape
    spec = dict(drift)
    kind = spec.pop("kind", None)
    if kind is None:
        raise ConfigError(f"landscape.drift: 'kind' is missing; allowed: {', '.join(DRIFTS.names())}")
    params = DRIFTS.validate(kind, spec, where=f"landscape.drift ({kind!r})")
    refusal = getattr(landscape, "drift_refusal", None)
    why = refusal(kind) if refusal is not None else None
    if why:  # a drift that would leave this landscape unchanged is refused, not silently a no-op
        raise ConfigError(f"landscape.drift.kind = {kind!r}: {why}")
    dim, center = drift_space(landscape)
    d = DRIFTS.get(kind).factory(params, replicates=landscape.replicates, seed=seed, dim=dim, center=center,
                                 device=landscape.device, dtype=landscape.dtype)
    return DriftingLandscape(landscape, d, kind)
