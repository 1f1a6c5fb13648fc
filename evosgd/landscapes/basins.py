"""A landscape with a sharp, shallow basin and a wide, deep one: where noise helps escape.

Along the first coordinate the potential is two Gaussian wells on a weak quadratic confinement,

    V(x) = -A_s exp(-(x - c_s)^2 / (2 w_s^2)) - A_w exp(-(x - c_w)^2 / (2 w_w^2)) + kappa x^2 / 2,

(defaults: a sharp shallow well at -1 of depth 1 and width 0.25, a wide deep one at 1.5 of depth 2 and
width 1); the other coordinates are a unit quadratic ``1/2 ||z_{2..D}||^2``.  Its minima, the saddle
between them, the barrier ``Delta V = V(saddle) - V(sharp minimum)`` and the curvatures there are
found numerically (:func:`critical_points`, scipy.optimize on the closed-form derivatives).

Noise model (``noise_std = sigma``): an example tilts the landscape, ``loss(theta; xi) = f(theta) -
xi . theta`` with ``xi ~ N(0, sigma^2 I)``, so the mini-batch gradient is the true gradient plus
exact Gaussian noise of covariance ``sigma^2 I / b`` and ``true_loss = f`` -- SGD with rate eta is
then an Euler discretisation of the Langevin diffusion at temperature ``T = eta sigma^2 / (2 b)``
(Mandt, Hoffman & Blei 2017), the setting of the Arrhenius/Kramers escape law
(``evosgd.analysis.escape``).  ``start = "sharp"`` starts every replicate at the sharp minimum.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evosgd.core.errors import ParameterError
from evosgd.core.registry import LANDSCAPES
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.landscapes.base import Batch, Landscape, Time


class TwoBasinsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(1, ge=1, description="dimension D (coordinates 2..D are a unit quadratic)")
    sharp_depth: float = Field(1.0, gt=0.0, description="depth A_s of the sharp, shallow well")
    sharp_width: float = Field(0.25, gt=0.0, description="width w_s of the sharp well (curvature ~ A_s / w_s^2)")
    sharp_center: float = Field(-1.0, description="centre c_s of the sharp well")
    wide_depth: float = Field(2.0, gt=0.0, description="depth A_w of the wide, deep well")
    wide_width: float = Field(1.0, gt=0.0, description="width w_w of the wide well")
    wide_center: float = Field(1.5, description="centre c_w of the wide well")
    confinement: float = Field(0.05, ge=0.0, description="curvature kappa of the quadratic that keeps x bounded")
    noise_std: float = Field(0.0, ge=0.0, description="per-example tilt noise sigma (gradient noise covariance sigma^2 I / b)")
    start: Literal["sharp", "uniform"] = Field("sharp", description="sharp: start at the sharp minimum; uniform: in [-3, 4] x [-1, 1]^(D-1)")

    @model_validator(mode="after")
    def _order(self) -> TwoBasinsParams:
        if not self.sharp_center < self.wide_center:
            raise ValueError("sharp_center must lie left of wide_center")
        return self


def potential(x: np.ndarray | float, p: TwoBasinsParams) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return (-p.sharp_depth * np.exp(-(x - p.sharp_center) ** 2 / (2 * p.sharp_width**2))
            - p.wide_depth * np.exp(-(x - p.wide_center) ** 2 / (2 * p.wide_width**2)) + 0.5 * p.confinement * x * x)


def potential_grad(x: np.ndarray | float, p: TwoBasinsParams) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    gs = p.sharp_depth * (x - p.sharp_center) / p.sharp_width**2 * np.exp(-(x - p.sharp_center) ** 2 / (2 * p.sharp_width**2))
    gw = p.wide_depth * (x - p.wide_center) / p.wide_width**2 * np.exp(-(x - p.wide_center) ** 2 / (2 * p.wide_width**2))
    return gs + gw + p.confinement * x


def potential_curvature(x: float, p: TwoBasinsParams, h: float = 1e-5) -> float:
    """``V''(x)`` by a central difference of the closed-form gradient (error O(h^2))."""
    return float((potential_grad(x + h, p) - potential_grad(x - h, p)) / (2 * h))


def critical_points(p: TwoBasinsParams) -> dict[str, float]:
    """Sharp minimum, saddle and deep minimum of V (roots of V' bracketed around the centres)."""
    lo, hi = p.sharp_center - 4 * p.sharp_width, p.wide_center + 4 * p.wide_width
    xs = np.linspace(lo, hi, 20001)
    g = potential_grad(xs, p)
    from scipy import optimize  # only when a landscape is built: scipy costs 0.7 s of every start-up

    roots = [optimize.brentq(potential_grad, xs[i], xs[i + 1], args=(p,))
             for i in np.flatnonzero(np.sign(g[:-1]) * np.sign(g[1:]) < 0)]
    mins = [r for r in roots if potential_curvature(r, p) > 0]
    maxs = [r for r in roots if potential_curvature(r, p) < 0]
    if len(mins) != 2 or len(maxs) != 1:
        raise ValueError(f"the parameters do not make two basins (minima {mins}, maxima {maxs}): deepen or separate the wells")
    a, w = mins
    s = maxs[0]
    return {"sharp_min": a, "saddle": s, "deep_min": w, "barrier": float(potential(s, p) - potential(a, p)),
            "sharp_curvature": potential_curvature(a, p), "saddle_curvature": potential_curvature(s, p),
            "deep_curvature": potential_curvature(w, p), "sharp_value": float(potential(a, p)),
            "deep_value": float(potential(w, p))}


@LANDSCAPES.register("two_basins", TwoBasinsParams,
                     "a sharp shallow well and a wide deep well (Gaussian wells on a weak quadratic) with tilt noise: "
                     "the escape (Arrhenius/Kramers) landscape", family="analytic")
class TwoBasins(Landscape):
    kind = "two_basins"

    def __init__(self, params: TwoBasinsParams, *, replicates: int, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(dim=params.dim, replicates=replicates, device=device, dtype=dtype)
        self.params = params
        try:
            self.points = critical_points(params)
        except ValueError as err:
            raise ParameterError("landscape", params.model_dump(exclude={"dim", "noise_std", "start"}),
                                 f"wells that make two basins ({err})", where="landscape 'two_basins'") from err
        self.noise_std = float(params.noise_std)
        R, D = self.replicates, self.dim
        if params.start == "sharp":
            x0 = torch.zeros(R, D, dtype=torch.float64)
            x0[:, 0] = self.points["sharp_min"]
        else:
            rows = []
            for r in range(R):
                g = make_generator(derive_seed(seed, "landscape", r))
                u = torch.rand(D, generator=g, dtype=torch.float64)
                rows.append(torch.cat([-3.0 + 7.0 * u[:1], -1.0 + 2.0 * u[1:]]))
            x0 = torch.stack(rows)
        self.initial_point = x0.to(self.device, dtype)

    def f(self, theta: torch.Tensor) -> torch.Tensor:
        p, x = self.params, theta[..., 0]
        v = (-p.sharp_depth * torch.exp(-(x - p.sharp_center) ** 2 / (2 * p.sharp_width**2))
             - p.wide_depth * torch.exp(-(x - p.wide_center) ** 2 / (2 * p.wide_width**2)) + 0.5 * p.confinement * x * x)
        return v + 0.5 * (theta[..., 1:] ** 2).sum(dim=-1)

    def sample(self, n: int, generator: torch.Generator, t: Time = None) -> Batch:
        xi = torch.randn(self.replicates, n, self.dim, generator=generator, device=self.device, dtype=self.dtype)
        return {"xi": xi * self.noise_std}

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        xi = batch["xi"]  # [R, n, D]
        lead = theta.dim() - 2
        xi = xi.reshape(xi.shape[:1] + (1,) * lead + xi.shape[1:])  # [R, *1, n, D]
        return self.f(theta).unsqueeze(-1) - (xi * theta.unsqueeze(-2)).sum(dim=-1)

    def loss(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        # mean over the batch of f - xi . theta = f - mean(xi) . theta (no [*, n, D] expansion)
        lead = theta.dim() - 2
        xbar = batch["xi"].mean(dim=1)
        return self.f(theta) - (xbar.reshape(xbar.shape[:1] + (1,) * lead + xbar.shape[1:]) * theta).sum(dim=-1)

    def loss_and_grad(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed form: ``grad = (V'(x), z_2, ..., z_D) - mean(xi)`` (tests check it against autograd)."""
        p, x = self.params, theta[..., 0]
        es = torch.exp(-(x - p.sharp_center) ** 2 / (2 * p.sharp_width**2))
        ew = torch.exp(-(x - p.wide_center) ** 2 / (2 * p.wide_width**2))
        lead = theta.dim() - 2
        xbar = batch["xi"].mean(dim=1)
        xbar = xbar.reshape(xbar.shape[:1] + (1,) * lead + xbar.shape[1:])
        v = -p.sharp_depth * es - p.wide_depth * ew + 0.5 * p.confinement * x * x + 0.5 * (theta[..., 1:] ** 2).sum(dim=-1)
        g = theta.clone()
        g[..., 0] = (p.sharp_depth * (x - p.sharp_center) / p.sharp_width**2 * es
                     + p.wide_depth * (x - p.wide_center) / p.wide_width**2 * ew + p.confinement * x)
        return (v - (xbar * theta).sum(dim=-1)).detach(), (g - xbar).detach()

    def true_loss(self, theta: torch.Tensor, t: Time = None) -> torch.Tensor:
        return self.f(theta)

    def optimum(self, t: Time = None) -> torch.Tensor:
        o = torch.zeros(self.replicates, self.dim, device=self.device, dtype=self.dtype)
        o[:, 0] = self.points["deep_min"]
        return o

    def optimal_loss(self, t: Time = None) -> torch.Tensor:
        return torch.full((self.replicates,), self.points["deep_value"], device=self.device, dtype=self.dtype)

    def describe(self) -> dict:
        d = super().describe()
        d.update(self.params.model_dump())
        d.update({k: float(v) for k, v in self.points.items()})
        return d


__all__ = ["TwoBasins", "TwoBasinsParams", "critical_points", "potential", "potential_curvature", "potential_grad"]
