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


# -- the classic test functions ------------------------------------------------------------------
# Sources: Hansen et al. 2009, "Real-parameter black-box optimization benchmarking: noiseless
# functions definitions" (BBOB/COCO) and Jamil & Yang 2013, "A literature survey of benchmark
# functions for global optimization problems".  Each is written in z-space (its own coordinates,
# minimizer z*); the shift/rotation above turns it into f_r(theta).


def _tiny(z: torch.Tensor) -> float:
    """Smallest positive normal of z's dtype: keeps sqrt() differentiable at 0 without moving values."""
    return torch.finfo(z.dtype).tiny


class EllipsoidParams(AnalyticParams):
    condition: float = Field(
        1e3, ge=1.0, description="condition number kappa = largest/smallest curvature (1 = sphere); 1e3 is a clear ravine that SGD still crosses"
    )


@LANDSCAPES.register("ellipsoid", EllipsoidParams,
                     "sum_i kappa^((i-1)/(D-1)) z_i^2: a quadratic ravine of condition number kappa (rotate=true: not axis-aligned)",
                     family="analytic")
class Ellipsoid(AnalyticLandscape):
    """Ellipsoid ``g(z) = sum_i lambda_i z_i^2`` with ``lambda_i = kappa^((i-1)/(D-1))`` log-spaced
    from 1 to ``kappa = condition`` (BBOB f2/f10).  With ``rotate = true`` the ravine is not aligned
    with the axes (the seed's "long, narrow ravine").  Smoothed (isotropic xi):
    ``g(z) + sigma^2 sum_i lambda_i``; the optimum survives smoothing."""

    kind = "ellipsoid"
    optimum_survives_smoothing = True

    def validate_params(self, params: EllipsoidParams) -> None:
        if not (params.condition >= 1.0 and math.isfinite(params.condition)):
            raise ParameterError("condition", params.condition, "a finite number >= 1", where="landscape 'ellipsoid'")

    def eigenvalues(self, dim: int) -> torch.Tensor:
        if dim == 1:
            return torch.ones(1, dtype=torch.float64)
        return torch.tensor(float(self.params.condition), dtype=torch.float64) ** (torch.arange(dim, dtype=torch.float64) / (dim - 1))

    def base(self, z: torch.Tensor) -> torch.Tensor:
        key = (z.shape[-1], z.device, z.dtype)
        cached = self.__dict__.get("_lam")
        if cached is None or cached[0] != key:  # computed once, not at every step
            cached = (key, self.eigenvalues(z.shape[-1]).to(z.device, z.dtype))
            self._lam = cached
        return (cached[1] * z * z).sum(dim=-1)

    def smoothed_base(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        return self.base(z) + sigma**2 * float(self.eigenvalues(z.shape[-1]).sum())


class RosenbrockParams(AnalyticParams):
    dim: int = Field(10, ge=2, description="dimension D of the search space (Rosenbrock couples neighbours: D >= 2)")


@LANDSCAPES.register("rosenbrock", RosenbrockParams,
                     "sum 100 (z_{i+1} - z_i^2)^2 + (1 - z_i)^2: a curved banana valley, optimum z* = 1", family="analytic")
class Rosenbrock(AnalyticLandscape):
    """Rosenbrock ``g(z) = sum_{i<D} 100 (z_{i+1} - z_i^2)^2 + (1 - z_i)^2``, minimum 0 at z* = 1.

    Smoothed in closed form (xi_i ~ N(0, sigma^2) independent, moments E e^2 = s2, E e^4 = 3 s2^2):
    ``E 100 (a - b)^2 = 100 [z_{i+1}^2 + s2 - 2 z_{i+1} (z_i^2 + s2) + z_i^4 + 6 z_i^2 s2 + 3 s2^2]`` and
    ``E (1 - z_i + e)^2 = (1 - z_i)^2 + s2``.  The smoothed minimizer moves away from z*, so
    ``optimum`` is unknown (None) when ``noise_std > 0``."""

    kind = "rosenbrock"
    domain = (-3.0, 3.0)
    shift_box = (-2.0, 2.0)

    def validate_params(self, params: AnalyticParams) -> None:
        if params.dim < 2:
            raise ParameterError("dim", params.dim, "an integer >= 2", where="landscape 'rosenbrock'")

    def base_optimum(self, dim: int) -> torch.Tensor:
        return torch.ones(dim, dtype=torch.float64)

    def base(self, z: torch.Tensor) -> torch.Tensor:
        a, b = z[..., :-1], z[..., 1:]
        return (100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2).sum(dim=-1)

    def smoothed_base(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        s2 = sigma**2
        a, b = z[..., :-1], z[..., 1:]
        quartic = b * b + s2 - 2.0 * b * (a * a + s2) + a**4 + 6.0 * a * a * s2 + 3.0 * s2 * s2
        return (100.0 * quartic + (1.0 - a) ** 2 + s2).sum(dim=-1)


@LANDSCAPES.register("rastrigin", AnalyticParams,
                     "10 D + sum z_i^2 - 10 cos(2 pi z_i): a bowl covered with a grid of local minima", family="analytic")
class Rastrigin(AnalyticLandscape):
    """Rastrigin ``g(z) = 10 D + sum_i z_i^2 - 10 cos(2 pi z_i)``, minimum 0 at z* = 0.

    Gaussian smoothing in closed form: ``E cos(2 pi (z - e)) = cos(2 pi z) exp(-2 pi^2 sigma^2)`` for
    e ~ N(0, sigma^2), so ``F(z) = 10 D + sum z_i^2 + D sigma^2 - 10 exp(-2 pi^2 sigma^2) sum cos(2 pi z_i)``:
    noise of sigma ~ 0.5 flattens the ripples (the smoothing argument for ES on Rastrigin).
    Both terms are minimal at 0, so the optimum survives smoothing."""

    kind = "rastrigin"
    domain = (-5.12, 5.12)
    shift_box = (-4.0, 4.0)
    optimum_survives_smoothing = True

    def base(self, z: torch.Tensor) -> torch.Tensor:
        return 10.0 * z.shape[-1] + (z * z - 10.0 * torch.cos(2.0 * math.pi * z)).sum(dim=-1)

    def smoothed_base(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        damp = math.exp(-2.0 * math.pi**2 * sigma**2)
        D = z.shape[-1]
        return 10.0 * D + D * sigma**2 + (z * z - 10.0 * damp * torch.cos(2.0 * math.pi * z)).sum(dim=-1)


@LANDSCAPES.register("ackley", AnalyticParams,
                     "-20 exp(-0.2 rms(z)) - exp(mean cos(2 pi z)) + 20 + e: a nearly flat plateau with a deep central funnel",
                     family="analytic")
class Ackley(AnalyticLandscape):
    """Ackley ``g(z) = -20 exp(-0.2 sqrt(mean z_i^2)) - exp(mean cos(2 pi z_i)) + 20 + e``, minimum 0 at 0
    (Ackley 1987; Jamil & Yang 2013 f1).  No closed-form smoothing: Monte Carlo on the fixed noise set."""

    kind = "ackley"
    domain = (-32.768, 32.768)
    shift_box = (-25.0, 25.0)

    def base(self, z: torch.Tensor) -> torch.Tensor:
        rms = torch.sqrt((z * z).mean(dim=-1).clamp_min(_tiny(z)))
        return -20.0 * torch.exp(-0.2 * rms) - torch.exp(torch.cos(2.0 * math.pi * z).mean(dim=-1)) + 20.0 + math.e


@LANDSCAPES.register("griewank", AnalyticParams,
                     "1 + sum z_i^2/4000 - prod cos(z_i/sqrt(i)): a wide bowl with product-coupled ripples", family="analytic")
class Griewank(AnalyticLandscape):
    """Griewank ``g(z) = 1 + sum z_i^2 / 4000 - prod_i cos(z_i / sqrt(i))``, minimum 0 at 0.

    Smoothed in closed form (independent coordinates): ``E cos((z_i - e)/sqrt(i)) = cos(z_i/sqrt(i))
    exp(-sigma^2 / (2 i))``, so ``F = 1 + (sum z_i^2 + D sigma^2)/4000 - exp(-sigma^2 H_D / 2) prod cos(z_i/sqrt(i))``
    with ``H_D = sum 1/i``; the optimum survives smoothing."""

    kind = "griewank"
    domain = (-600.0, 600.0)
    shift_box = (-500.0, 500.0)
    optimum_survives_smoothing = True

    @staticmethod
    def _scales(z: torch.Tensor) -> torch.Tensor:
        return torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype).sqrt()

    def base(self, z: torch.Tensor) -> torch.Tensor:
        return 1.0 + (z * z).sum(dim=-1) / 4000.0 - torch.cos(z / self._scales(z)).prod(dim=-1)

    def smoothed_base(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        D = z.shape[-1]
        harmonic = sum(1.0 / i for i in range(1, D + 1))
        damp = math.exp(-0.5 * sigma**2 * harmonic)
        return 1.0 + ((z * z).sum(dim=-1) + D * sigma**2) / 4000.0 - damp * torch.cos(z / self._scales(z)).prod(dim=-1)


def _schwefel_argmin() -> float:
    """Minimizer of h(z) = -z sin(sqrt|z|) on [-500, 500]: u = sqrt(z) solves tan(u) = -u/2 near 20.52
    (the literature's 420.9687...), refined by Newton in float64."""
    u = 20.5174
    for _ in range(50):
        f = math.tan(u) + u / 2.0
        u -= f / (1.0 / math.cos(u) ** 2 + 0.5)
    return u * u


SCHWEFEL_Z_STAR = _schwefel_argmin()
#: 418.9828872724338...: makes the minimum exactly 0
SCHWEFEL_CONSTANT = SCHWEFEL_Z_STAR * math.sin(math.sqrt(SCHWEFEL_Z_STAR))


@LANDSCAPES.register("schwefel", AnalyticParams,
                     "418.98 D - sum z_i sin(sqrt|z_i|): deceptive, the best local minima lie far apart (z* = 420.97)",
                     family="analytic")
class Schwefel(AnalyticLandscape):
    """Schwefel 2.26 ``g(z) = 418.9829 D - sum_i z_i sin(sqrt|z_i|) + sum_i max(0, |z_i| - 500)^2``,
    minimum 0 at ``z*_i = 420.9687...`` (Schwefel 1981; Jamil & Yang 2013 f128).

    The function is defined on the box ``|z_i| <= 500``; outside it ``-z sin(sqrt|z|)`` keeps falling,
    so (as BBOB f20 does) a quadratic penalty restores the stated minimum on all of R^D (checked on a
    grid in the tests).  The theta-space domain is chosen so that, unshifted and unrotated, it maps to
    the standard box ``z in [-500, 500]^D``; the shift box is +-50 around that.  Monte Carlo smoothing."""

    kind = "schwefel"
    domain = (-500.0 - SCHWEFEL_Z_STAR, 500.0 - SCHWEFEL_Z_STAR)
    shift_box = (-50.0, 50.0)

    def base_optimum(self, dim: int) -> torch.Tensor:
        return torch.full((dim,), SCHWEFEL_Z_STAR, dtype=torch.float64)

    def base(self, z: torch.Tensor) -> torch.Tensor:
        ripple = z * torch.sin(torch.sqrt(z.abs().clamp_min(_tiny(z))))
        penalty = torch.relu(z.abs() - 500.0) ** 2
        return (SCHWEFEL_CONSTANT - ripple + penalty).sum(dim=-1)


def _styblinski_tang_argmin() -> float:
    """Root of g'(z) = 2 z^3 - 16 z + 2.5 near -2.9035 (Newton in float64)."""
    z = -2.9
    for _ in range(50):
        z -= (2 * z**3 - 16 * z + 2.5) / (6 * z**2 - 16)
    return z


STYBLINSKI_TANG_Z_STAR = _styblinski_tang_argmin()  # -2.903534027771178
STYBLINSKI_TANG_VALUE = 0.5 * (STYBLINSKI_TANG_Z_STAR**4 - 16 * STYBLINSKI_TANG_Z_STAR**2 + 5 * STYBLINSKI_TANG_Z_STAR)  # -39.16616570377142


@LANDSCAPES.register("styblinski_tang", AnalyticParams,
                     "0.5 sum z_i^4 - 16 z_i^2 + 5 z_i: 2^D basins, optimum -39.166 D at z* = -2.9035", family="analytic")
class StyblinskiTang(AnalyticLandscape):
    """Styblinski–Tang ``g(z) = 0.5 sum_i (z_i^4 - 16 z_i^2 + 5 z_i)``, minimum ``-39.16616570 D`` at
    ``z*_i = -2.903534`` (Styblinski & Tang 1990).  Smoothed in closed form from the Gaussian moments
    ``E(z-e)^4 = z^4 + 6 z^2 s2 + 3 s2^2``, ``E(z-e)^2 = z^2 + s2``; the smoothed minimizer moves."""

    kind = "styblinski_tang"

    def __init__(self, params: AnalyticParams, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.base_optimal_value = STYBLINSKI_TANG_VALUE * self.dim  # type: ignore[misc]  (depends on D)

    def base_optimum(self, dim: int) -> torch.Tensor:
        return torch.full((dim,), STYBLINSKI_TANG_Z_STAR, dtype=torch.float64)

    def base(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * (z**4 - 16.0 * z * z + 5.0 * z).sum(dim=-1)

    def smoothed_base(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        s2 = sigma**2
        z2 = z * z
        return 0.5 * (z2 * z2 + 6.0 * z2 * s2 + 3.0 * s2 * s2 - 16.0 * (z2 + s2) + 5.0 * z).sum(dim=-1)


class CliffParams(AnalyticParams):
    cliff_height: float = Field(100.0, ge=0.0, description="height H of the plateau above the basin (0 = plain sphere)")
    cliff_radius: float = Field(1.0, gt=0.0, description="radius w of the basin around the optimum where the cliff face stands")
    cliff_width: float = Field(
        0.01, gt=0.0, description="half-width eps of the cliff face; the face's slope is about 0.75 H / eps (7500 by default)"
    )


@LANDSCAPES.register("cliff", CliffParams,
                     "||z||^2 + H smoothstep(||z||; w +- eps): a basin behind a cliff whose face has an exploding gradient",
                     family="analytic")
class Cliff(AnalyticLandscape):
    """A quadratic bowl whose basin (``||z|| < w``) lies at the foot of a cliff of height H:

        g(z) = ||z||^2 + H * S((||z|| - (w - eps)) / (2 eps)),   S(u) = 3u^2 - 2u^3 on [0, 1], clamped,

    so g = ||z||^2 inside radius ``w - eps`` (minimum 0 at z* = 0), g = ||z||^2 + H outside
    ``w + eps``, and on the face the gradient is radial with size up to ``1.5 H / (2 eps)`` (7500 for the
    defaults) against ``2 ||z||`` elsewhere.  From anywhere outside, gradient descent walks down
    the bowl to the face; an unclipped step of learning rate ``lr`` there is thrown about
    ``lr * 0.75 H / eps`` through the basin and out on the far side — the exploding-gradient "cliff"
    of Pascanu, Mikolov & Bengio 2013 ("On the difficulty of training recurrent neural networks",
    Fig. 6) that gradient clipping exists for.  S is C^1, so the gradient is continuous.
    The smoothed objective (noise) is radially non-decreasing (Anderson's inequality), so its
    minimizer stays at z*; its value is Monte Carlo."""

    kind = "cliff"
    optimum_survives_smoothing = True

    def validate_params(self, params: CliffParams) -> None:
        if not params.cliff_width < params.cliff_radius:
            raise ParameterError("cliff_width", params.cliff_width, f"a number < cliff_radius = {params.cliff_radius}",
                                 where="landscape 'cliff'")

    def base(self, z: torch.Tensor) -> torch.Tensor:
        w, eps, H = self.params.cliff_radius, self.params.cliff_width, self.params.cliff_height
        q = (z * z).sum(dim=-1)
        # clamp keeps sqrt differentiable at 0; inside radius (w - eps)/2 the step is 0 anyway
        r = torch.sqrt(q.clamp_min(((w - eps) / 2.0) ** 2))
        u = ((r - (w - eps)) / (2.0 * eps)).clamp(0.0, 1.0)
        return q + H * u * u * (3.0 - 2.0 * u)


ANALYTIC_KINDS = ("sphere", "ellipsoid", "rosenbrock", "rastrigin", "ackley", "griewank", "schwefel", "styblinski_tang", "cliff")
