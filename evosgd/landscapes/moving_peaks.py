"""The Moving Peaks benchmark (Branke 1999, "Memory enhanced evolutionary algorithms for changing
optimization problems", CEC; scenario 2 defaults from Branke's reference implementation).

The fitness at time t is the upper envelope of m cones,

    F_t(x) = max_i  H_i(e) - W_i(e) ||x - X_i(e)||,        e = floor(t / change_every),

and evosgd minimises the loss ``f_t(theta) = -F_t(theta)`` (a loss, like every landscape), so
``optimal_loss(t) = -max_i H_i(e)`` and ``optimum(t) = X_{argmax H}(e)``: the highest cone is
never covered by another (at its tip every other cone is at most its own height), so the global
optimum is known at every t.

Every ``change_every`` time units (an epoch) all peaks change at once:

* ``H_i <- H_i + height_severity N(0, 1)``, ``W_i <- W_i + width_severity N(0, 1)``, reflected
  back into ``[min, max]`` (then clamped, so bounds always hold);
* ``X_i <- X_i + v_i`` with ``v_i = shift_severity ((1 - lambda) r + lambda v_i^prev) / ||...||``,
  r a random vector of length ``shift_severity`` and lambda the correlation; a coordinate leaving
  the box ``[lower, upper]`` is reflected and its v component flipped.

Replicate r's sequence comes from ``derive_seed(seed, "landscape", r)``; epochs are generated
lazily and in order, so the landscape at t does not depend on the order of queries.
``noise_std`` adds observation noise to each example's loss (``f_t(theta) + noise_std N(0, 1)``):
mini-batch means are unbiased for f_t and the gradient is exact.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.core.errors import ParameterError
from evosgd.core.registry import LANDSCAPES
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.landscapes.base import Batch, Landscape, Time, per_replicate, time_tensor
from evosgd.landscapes.drift import switch_index


class MovingPeaksParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(5, ge=1, description="dimension D (Branke's scenario 2: 5)")
    peaks: int = Field(10, ge=1, description="number of cones m (scenario 2: 10)")
    lower: float = Field(0.0, description="lower bound of the search box, every coordinate")
    upper: float = Field(100.0, description="upper bound of the search box (scenario 2: [0, 100])")
    min_height: float = Field(30.0, description="smallest peak height (scenario 2: 30)")
    max_height: float = Field(70.0, description="largest peak height (scenario 2: 70)")
    min_width: float = Field(1.0, gt=0.0, description="smallest cone slope W (scenario 2: 1)")
    max_width: float = Field(12.0, gt=0.0, description="largest cone slope W (scenario 2: 12)")
    shift_severity: float = Field(1.0, ge=0.0, description="distance every peak moves at a change (scenario 2: 1)")
    height_severity: float = Field(7.0, ge=0.0, description="std of the height change (scenario 2: 7)")
    width_severity: float = Field(1.0, ge=0.0, description="std of the width change (scenario 2: 1)")
    correlation: float = Field(0.0, ge=0.0, le=1.0, description="lambda: 0 = random shift directions, 1 = straight lines")
    change_every: float = Field(5000.0, gt=0.0, description="time between changes (scenario 2: 5000 evaluations)")
    noise_std: float = Field(0.0, ge=0.0, description="observation noise added to each example's loss")


def _reflect(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    x = torch.where(x > hi, 2 * hi - x, x)
    x = torch.where(x < lo, 2 * lo - x, x)
    return x.clamp(lo, hi)


@LANDSCAPES.register("moving_peaks", MovingPeaksParams,
                     "Branke's Moving Peaks: m cones whose heights, widths and positions change every k time units",
                     family="dynamic")
class MovingPeaks(Landscape):
    """See the module docstring."""

    kind = "moving_peaks"
    drifting = True

    def __init__(self, params: MovingPeaksParams, *, replicates: int, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        where = "landscape 'moving_peaks'"
        for lo, hi in (("lower", "upper"), ("min_height", "max_height"), ("min_width", "max_width")):
            if not getattr(params, lo) < getattr(params, hi):
                raise ParameterError(hi, getattr(params, hi), f"a number > {lo} = {getattr(params, lo)}", where=where)
        super().__init__(dim=params.dim, replicates=replicates, device=device, dtype=dtype)
        self.params = params
        R, m, D = replicates, params.peaks, params.dim
        self._gens = [make_generator(derive_seed(seed, "landscape", r)) for r in range(R)]
        u = lambda *shape: torch.stack([torch.rand(*shape, generator=g, dtype=torch.float64) for g in self._gens])  # noqa: E731
        p = params
        x0 = p.lower + (p.upper - p.lower) * u(D)
        self.initial_point = x0.to(self.device, dtype)
        H = p.min_height + (p.max_height - p.min_height) * u(m)
        W = p.min_width + (p.max_width - p.min_width) * u(m)
        X = p.lower + (p.upper - p.lower) * u(m, D)
        self._epochs = [(H, W, X, torch.zeros(R, m, D, dtype=torch.float64))]
        self._stacked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.drift_center = torch.full((R, D), 0.5 * (p.lower + p.upper), device=self.device, dtype=dtype)

    # -- the epochs ------------------------------------------------------------------------
    def _change(self, H: torch.Tensor, W: torch.Tensor, X: torch.Tensor, V: torch.Tensor):
        p = self.params
        R, m, D = X.shape
        # one-time per epoch: each replicate draws from its own stream
        noise = torch.stack([torch.randn(2 * m + m * D, generator=g, dtype=torch.float64) for g in self._gens])
        dh, dw, r = noise[:, :m], noise[:, m:2 * m], noise[:, 2 * m:].reshape(R, m, D)
        H = _reflect(H + p.height_severity * dh, p.min_height, p.max_height)
        W = _reflect(W + p.width_severity * dw, p.min_width, p.max_width)
        r = p.shift_severity * r / r.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        v = (1 - p.correlation) * r + p.correlation * V
        v = p.shift_severity * v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        Xn = X + v
        out = (Xn > p.upper) | (Xn < p.lower)
        Xn = _reflect(Xn, p.lower, p.upper)
        v = torch.where(out, -v, v)
        return H, W, Xn, v

    def epoch(self, t: Time) -> torch.Tensor:
        """Epoch index ``[R]`` (number of changes so far) at t."""
        tt = time_tensor(t, self.replicates, self.device, torch.float64).clamp_min(0.0)
        return switch_index(tt, self.params.change_every).long()

    def peaks_at(self, t: Time) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Heights ``[R, m]``, widths ``[R, m]`` and positions ``[R, m, D]`` at t."""
        e = self.epoch(t)
        last = int(e.max())
        while len(self._epochs) <= last:
            self._epochs.append(self._change(*self._epochs[-1]))
            self._stacked = None
        if self._stacked is None:
            self._stacked = tuple(torch.stack([ep[k] for ep in self._epochs]).to(self.device, self.dtype) for k in range(3))
        rows = torch.arange(self.replicates, device=self.device)
        H, W, X = self._stacked
        return H[e, rows], W[e, rows], X[e, rows]

    # -- contract --------------------------------------------------------------------------
    def f(self, theta: torch.Tensor, t: Time) -> torch.Tensor:
        H, W, X = self.peaks_at(t)
        nd = theta.dim()
        diff = theta.unsqueeze(-2) - X.reshape(X.shape[:1] + (1,) * (nd - 2) + X.shape[1:])
        dist = torch.sqrt((diff * diff).sum(-1).clamp_min(torch.finfo(theta.dtype).tiny))
        cones = per_replicate(H, nd) - per_replicate(W, nd) * dist
        return -cones.max(dim=-1).values

    def sample(self, n: int, generator: torch.Generator, t: Time = None) -> Batch:
        eps = torch.randn(self.replicates, n, generator=generator, device=self.device, dtype=self.dtype)
        return {"noise": eps * self.params.noise_std}

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        noise = batch["noise"]
        return self.f(theta, t).unsqueeze(-1) + noise.reshape(noise.shape[:1] + (1,) * (theta.dim() - 2) + noise.shape[1:])

    def loss(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        noise = batch["noise"].mean(-1)
        return self.f(theta, t) + noise.reshape(noise.shape[:1] + (1,) * (theta.dim() - 2))

    def true_loss(self, theta: torch.Tensor, t: Time = None) -> torch.Tensor:
        return self.f(theta, t)

    def optimum(self, t: Time = None) -> torch.Tensor:
        H, _, X = self.peaks_at(t)
        best = H.argmax(dim=-1)
        return X[torch.arange(self.replicates, device=self.device), best]

    def optimal_loss(self, t: Time = None) -> torch.Tensor:
        return -self.peaks_at(t)[0].max(dim=-1).values

    def change_times(self, horizon: float) -> list[float]:
        """The times at which the peaks change, up to ``horizon`` (for tracking measures)."""
        k = self.params.change_every
        return [j * k for j in range(1, int(horizon // k) + 1)]

    def describe(self) -> dict:
        d = super().describe()
        d.update(self.params.model_dump())
        return d
