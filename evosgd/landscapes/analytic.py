"""Analytic test functions with known optimum, shifted (and optionally rotated), with an
optional per-example noise model so that a mini-batch means something.

Transformation (as in the BBOB/COCO suite, Hansen et al. 2009): for replicate r with shift
``s_r`` (drawn uniformly in ``shift_box``) and orthogonal ``Q_r`` (Haar-random when
``rotate = true``, else the identity),

    z = Q_r (theta - s_r) + z*        and        f_r(theta) = g(z),

where ``g`` is the base function and ``z*`` its minimizer.  The optimum in theta-space is then
exactly ``s_r`` with value ``g(z*)``, wherever the base function's optimum lies, so no method is
helped by an optimum at the origin or on a symmetry axis.

Noise model (``noise_std = sigma > 0``): an example is a random shift ``xi ~ N(0, sigma^2 I_D)``
of the optimum, ``loss(theta; xi) = f(theta - xi)``.  A mini-batch mean is then an unbiased
estimate of the *smoothed* objective ``F(theta) = E_xi f(theta - xi)``, which is what
``true_loss`` returns.  Per-example gradient covariance: ``Cov[grad f(theta - xi)]``; for the
sphere it is ``4 sigma^2 I`` (the gradient ``2(theta - s - xi)`` is affine in xi).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.core.errors import ParameterError
from evosgd.core.registry import LANDSCAPES
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.landscapes.base import Batch, Landscape, Time, per_replicate


class AnalyticParams(BaseModel):
    """Parameters shared by every analytic function."""

    model_config = ConfigDict(extra="forbid")

    dim: int = Field(10, ge=1, description="dimension D of the search space")
    shift: bool = Field(True, description="move the optimum to a random point of the shift box (per replicate)")
    rotate: bool = Field(False, description="apply a random rotation (per replicate): makes separable functions non-separable")
    noise_std: float = Field(0.0, ge=0.0, description="per-example noise: each example shifts the optimum by N(0, noise_std^2 I)")
    smoothing_samples: int = Field(
        1024, ge=1, description="noise draws of the fixed Monte Carlo set that estimates the smoothed true loss where no closed form exists"
    )


def haar_orthogonal(dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A Haar-distributed random orthogonal matrix (QR of a Gaussian matrix with the sign
    correction of Mezzadri 2007, 'How to generate random matrices from the classical compact groups')."""
    a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.to(dtype)


class AnalyticLandscape(Landscape):
    """Base for analytic functions. Subclasses define ``base(z)`` (``[..., D] -> [...]``) and may
    override ``base_optimum``, ``base_optimal_value``, ``domain``, ``shift_box`` and
    ``smoothed_base`` (closed-form smoothed objective)."""

    #: search domain used to draw the starting point, (low, high) per coordinate
    domain: ClassVar[tuple[float, float]] = (-5.0, 5.0)
    #: box the optimum is shifted into (strictly inside the domain)
    shift_box: ClassVar[tuple[float, float]] = (-4.0, 4.0)
    base_optimal_value: ClassVar[float] = 0.0

    def __init__(self, params: AnalyticParams, *, replicates: int, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(dim=params.dim, replicates=replicates, device=device, dtype=dtype)
        self.params = params
        self.validate_params(params)
        R, D = self.replicates, self.dim
        shifts, rots, x0 = [], [], []
        lo, hi = self.shift_box
        dlo, dhi = self.domain
        for r in range(R):
            g = make_generator(derive_seed(seed, "landscape", r))
            s = lo + (hi - lo) * torch.rand(D, generator=g, dtype=torch.float64) if params.shift else torch.zeros(D, dtype=torch.float64)
            shifts.append(s)
            rots.append(haar_orthogonal(D, g) if params.rotate else None)
            x0.append(dlo + (dhi - dlo) * torch.rand(D, generator=g, dtype=torch.float64))
        self.shift = torch.stack(shifts).to(self.device, dtype)
        self.rotation = torch.stack(rots).to(self.device, dtype) if params.rotate else None
        self.initial_point = torch.stack(x0).to(self.device, dtype)
        self.z_star = self.base_optimum(D).to(self.device, dtype)
        self.noise_std = float(params.noise_std)
        # Fixed common noise set for Monte Carlo smoothing (used only when no closed form exists).
        g = make_generator(derive_seed(seed, "landscape", "smoothing"))
        self._smoothing_xi = (
            torch.randn(params.smoothing_samples, D, generator=g, dtype=torch.float64).to(self.device, dtype) * self.noise_std
            if self.noise_std > 0 else None
        )

    # -- subclass hooks ------------------------------------------------------------------
    def validate_params(self, params: AnalyticParams) -> None:
        """Extra checks beyond the schema (raise ParameterError)."""

    def base_optimum(self, dim: int) -> torch.Tensor:
        return torch.zeros(dim, dtype=torch.float64)

    def base(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def smoothed_base(self, z: torch.Tensor, sigma: float) -> torch.Tensor | None:
        """Closed form of ``E g(z - Q xi)`` for isotropic xi (rotation-invariant), or None."""
        return None

    # -- transformation ------------------------------------------------------------------
    def to_z(self, theta: torch.Tensor) -> torch.Tensor:
        """theta ``[R, *S, D]`` -> z = Q (theta - s) + z*."""
        x = theta - per_replicate(self.shift, theta.dim())
        if self.rotation is not None:
            shape = x.shape
            x = torch.bmm(x.reshape(shape[0], -1, shape[-1]), self.rotation.transpose(1, 2)).reshape(shape)
        return x + self.z_star

    def f(self, theta: torch.Tensor) -> torch.Tensor:
        """The noise-free objective ``[R, *S]``."""
        return self.base(self.to_z(theta))

    # -- contract ------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator, t: Time = None) -> Batch:
        if self.noise_std > 0:
            xi = torch.randn(self.replicates, n, self.dim, generator=generator, device=self.device, dtype=self.dtype)
            return {"xi": xi * self.noise_std}
        return {"xi": torch.zeros(self.replicates, n, self.dim, device=self.device, dtype=self.dtype)}

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        xi = batch["xi"]  # [R, n, D]
        shifted = theta.unsqueeze(-2) - per_replicate(xi, theta.dim() + 1, feature_ndim=2)
        return self.f(shifted)

    def loss(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        if self.noise_std == 0:  # every example is the same: skip the [*, n, D] expansion
            return self.f(theta)
        return self.example_losses(theta, batch, t).mean(dim=-1)

    def true_loss(self, theta: torch.Tensor, t: Time = None) -> torch.Tensor:
        if self.noise_std == 0:
            return self.f(theta)
        closed = self.smoothed_base(self.to_z(theta), self.noise_std)
        if closed is not None:
            return closed
        xi = self._smoothing_xi  # [M, D], the same for every replicate
        return self.f(theta.unsqueeze(-2) - xi).mean(dim=-1)

    def optimum(self, t: Time = None) -> torch.Tensor | None:
        if self.noise_std > 0 and not self.optimum_survives_smoothing:
            return None
        return self.shift

    def optimal_loss(self, t: Time = None) -> torch.Tensor | None:
        if self.noise_std > 0:
            opt = self.optimum(t)
            return None if opt is None else self.true_loss(opt.unsqueeze(1), t).squeeze(1)
        return torch.full((self.replicates,), self.base_optimal_value, device=self.device, dtype=self.dtype)

    #: whether the minimizer of the smoothed objective is still s (true for convex even functions)
    optimum_survives_smoothing: ClassVar[bool] = False

    def describe(self) -> dict:
        d = super().describe()
        d.update(self.params.model_dump())
        return d


@LANDSCAPES.register("sphere", AnalyticParams, "f(x) = ||x - x*||^2; the simplest convex quadratic", family="analytic")
class Sphere(AnalyticLandscape):
    """Sphere ``g(z) = sum_i z_i^2``; optimum 0 at z* = 0.  Smoothed: ``g(z) + D sigma^2``."""

    kind = "sphere"
    optimum_survives_smoothing = True

    def base(self, z: torch.Tensor) -> torch.Tensor:
        return (z * z).sum(dim=-1)

    def smoothed_base(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        return self.base(z) + z.shape[-1] * sigma**2


def check_positive(name: str, value: float, where: str) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ParameterError(name, value, "a finite number > 0", where=where)
