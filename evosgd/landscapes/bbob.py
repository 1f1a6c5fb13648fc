"""The 24 noiseless BBOB functions (COCO's ``bbob`` suite), in torch: differentiable and
vectorized over ``[R, *S, D]`` like every landscape, with the instances of the literature.

Definitions: Hansen, Finck, Ros & Auger 2009, "Real-parameter black-box optimization
benchmarking 2009: noiseless functions definitions" (INRIA RR-6829), as implemented by
IOHexperimenter (``ioh.get_problem(fid, instance, dim, ioh.ProblemClass.BBOB)``): the values
equal ioh's to 1e-6 relative (``tests/test_bbob.py``); where ioh and the 2009 report differ
(f7's ``|z_1| / 1e4`` term uses the rounded z_1), ioh is followed.  The instance data (x_opt,
f_opt, the rotations R and Q, Gallagher's peaks) come from the BBOB-2009 generator in
:mod:`evosgd.landscapes.bbob_instances`.

Notation (i = 0..D-1, ``e_i = i / (D-1)``): ``Lambda^a = diag(a^(e_i / 2))``;
``T_osz(x) = sign(x) exp(h + 0.049 (sin(c1 h) + sin(c2 h)))`` with ``h = log|x|``, (c1, c2) =
(10, 7.9) for x > 0 else (5.5, 3.1); ``T_asy^b(x)_i = x_i^(1 + b e_i sqrt(x_i))`` for x_i > 0;
``f_pen(x) = sum max(0, |x_i| - 5)^2``.  Every function is ``f(x) = g(z(x)) + f_opt``.

Replicates and instances: replicate r runs on instance ``instance + r`` (COCO's practice, one run
per instance, so R replicates are R instances and a result is an average over instances); with
``replicate_instances = false`` every replicate repeats ``instance``, from its own starting point.
The starting point is uniform in [-4, 4]^D (COCO's region of interest), drawn from the landscape
seed of the replicate; the search domain is [-5, 5]^D.

Precision: the values carry f_opt (|f_opt| up to 1000), so in float32 an error ``f - f_opt`` is
resolved only to about 1e-7 |f_opt|; BBOB's final target 1e-8 needs ``dtype = "float64"``.

Noise (the per-example noise models of the bbob-noisy suite, Hansen et al. 2009, "noisy
functions definitions", on ``g = f - f_opt``): an example draws its own noise and a mini-batch
mean estimates the expected value, which is ``true_loss``:

* ``gaussian``: ``g exp(beta N(0, 1))``; expectation ``g exp(beta^2 / 2)``
  (moderate beta = 0.01, severe beta = 1);
* ``uniform``: ``g U^beta max(1, (1e9 / g)^(alpha U'))`` with U, U' uniform on (0, 1); expectation
  ``g / (1 + beta) (c^alpha - 1) / (alpha ln c)`` with ``c = 1e9 / g`` where c > 1
  (moderate alpha = 0.01 (0.49 + 1/D), beta = 0.01; severe alpha = 0.49 + 1/D, beta = 1).

The noisy suite's own function selection (f101-f130), its seeds and its ``+1.01e-8`` offset are
not reproduced; the Cauchy model is refused (its expectation is not finite).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.core.registry import LANDSCAPES
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.landscapes.base import Batch, Landscape, Time, per_replicate
from evosgd.landscapes.bbob_instances import constants

FUNCTION_NAMES = {
    1: "sphere", 2: "ellipsoid (separable)", 3: "Rastrigin (separable)", 4: "Bueche-Rastrigin", 5: "linear slope",
    6: "attractive sector", 7: "step ellipsoid", 8: "Rosenbrock", 9: "Rosenbrock (rotated)", 10: "ellipsoid",
    11: "discus", 12: "bent cigar", 13: "sharp ridge", 14: "different powers", 15: "Rastrigin",
    16: "Weierstrass", 17: "Schaffer F7 (condition 10)", 18: "Schaffer F7 (condition 1000)",
    19: "Griewank-Rosenbrock", 20: "Schwefel x sin(x)", 21: "Gallagher 101 peaks", 22: "Gallagher 21 peaks",
    23: "Katsuura", 24: "Lunacek bi-Rastrigin",
}


class BBOBParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    function: int = Field(1, ge=1, le=24, description="BBOB function number f1..f24 (Hansen et al. 2009)")
    dim: int = Field(10, ge=2, le=1000, description="dimension D of the search space (BBOB is defined for D >= 2)")
    instance: int = Field(1, ge=1, le=100000, description="BBOB instance number (the x_opt, f_opt and rotations of ioh/COCO)")
    replicate_instances: bool = Field(
        True, description="replicate r runs on instance `instance + r` (COCO: one run per instance); false: every replicate repeats `instance`")
    noise: Literal["none", "gaussian", "uniform"] = Field(
        "none", description="per-example noise model of bbob-noisy: multiplicative gaussian or uniform noise on f - f_opt")
    noise_severity: Literal["moderate", "severe"] = Field("moderate", description="bbob-noisy noise level (see the module docstring)")


def _vec(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return per_replicate(v, x.dim())


def _mat(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``m x`` for per-replicate matrices ``m [R, D, D]`` and points ``x [R, *S, D]``."""
    shape = x.shape
    return torch.bmm(x.reshape(shape[0], -1, shape[-1]), m.transpose(1, 2)).reshape(shape)


def _exps(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    return torch.arange(d, device=x.device, dtype=x.dtype) / max(d - 1, 1)


def t_osz(x: torch.Tensor) -> torch.Tensor:
    """BBOB's oscillation T_osz (elementwise, 0 at 0, differentiable elsewhere)."""
    ax = x.abs()
    h = torch.log(torch.where(ax > 0, ax, torch.ones_like(ax)))
    pos = (x > 0).to(x.dtype)
    c1, c2 = 5.5 + 4.5 * pos, 3.1 + 4.8 * pos
    return torch.sign(x) * torch.exp(h + 0.049 * (torch.sin(c1 * h) + torch.sin(c2 * h)))


def t_asy(x: torch.Tensor, beta: float) -> torch.Tensor:
    """BBOB's asymmetry T_asy^beta: ``x_i^(1 + beta e_i sqrt(x_i))`` where x_i > 0."""
    pos = x > 0
    xs = torch.where(pos, x, torch.ones_like(x))
    return torch.where(pos, xs ** (1.0 + beta * _exps(x) * torch.sqrt(xs)), x)


def lam(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """``Lambda^alpha x``: coordinate i scaled by ``alpha^(e_i / 2)``."""
    return x * alpha ** (0.5 * _exps(x))


def f_pen(x: torch.Tensor) -> torch.Tensor:
    return (torch.relu(x.abs() - 5.0) ** 2).sum(dim=-1)


def _safe_pow(v: torch.Tensor, p: float) -> torch.Tensor:
    """``v^p`` for v >= 0 with a finite gradient at 0 (where the true one may be infinite)."""
    return torch.where(v > 0, torch.where(v > 0, v, torch.ones_like(v)) ** p, torch.zeros_like(v))


def _rastrigin(z: torch.Tensor) -> torch.Tensor:
    return 10.0 * (z.shape[-1] - torch.cos(2.0 * math.pi * z).sum(dim=-1)) + (z * z).sum(dim=-1)


def _rosenbrock(z: torch.Tensor) -> torch.Tensor:
    a, b = z[..., :-1], z[..., 1:]
    return (100.0 * (a * a - b) ** 2 + (a - 1.0) ** 2).sum(dim=-1)


def _ellipsoid(z: torch.Tensor) -> torch.Tensor:
    return (1e6 ** _exps(z) * z * z).sum(dim=-1)


def _round(v: torch.Tensor) -> torch.Tensor:
    return torch.floor(v + 0.5)


# -- the 24 functions: g(x, c) without f_opt, c the per-replicate constants -----------------------
Consts = dict[str, torch.Tensor]


def f1(x, c):
    z = x - _vec(x, c["xopt"])
    return (z * z).sum(dim=-1)


def f2(x, c):
    return _ellipsoid(t_osz(x - _vec(x, c["xopt"])))


def f3(x, c):
    return _rastrigin(lam(t_asy(t_osz(x - _vec(x, c["xopt"])), 0.2), 10.0))


def f4(x, c):
    z = t_osz(x - _vec(x, c["xopt"]))
    odd = (torch.arange(x.shape[-1], device=x.device) % 2 == 0) & (z > 0)  # 1-based odd coordinates
    z = lam(z, 10.0) * torch.where(odd, 10.0, 1.0).to(x.dtype)
    return _rastrigin(z) + 100.0 * f_pen(x)


def f5(x, c):
    xopt, s = _vec(x, c["xopt"]), _vec(x, c["sign"]) * 10.0 ** _exps(x)
    z = torch.where(x * xopt < 25.0, x, xopt)
    return (5.0 * s.abs() - s * z).sum(dim=-1)


def f6(x, c):
    z = _mat(c["M"], x - _vec(x, c["xopt"]))
    s = (z * z * (1.0 + 9999.0 * (_vec(x, c["xopt"]) * z > 0).to(x.dtype))).sum(dim=-1)
    return _safe_pow(t_osz(s), 0.9)


def f7(x, c):
    zh = lam(_mat(c["Q"], x - _vec(x, c["xopt"])), 10.0)
    zt = torch.where(zh.abs() > 0.5, _round(zh), _round(10.0 * zh) / 10.0)
    z = _mat(c["R"], zt)
    body = (100.0 ** _exps(x) * z * z).sum(dim=-1)
    return 0.1 * torch.maximum(zt[..., 0].abs() * 1e-4, body) + f_pen(x)


def f8(x, c):
    factor = max(1.0, math.sqrt(x.shape[-1]) / 8.0)
    return _rosenbrock(factor * (x - _vec(x, c["xopt"])) + 1.0)


def f9(x, c):
    return _rosenbrock(_mat(c["M"], x) + 0.5)


def f10(x, c):
    return _ellipsoid(t_osz(_mat(c["R"], x - _vec(x, c["xopt"]))))


def f11(x, c):
    z = t_osz(_mat(c["R"], x - _vec(x, c["xopt"])))
    return 1e6 * z[..., 0] ** 2 + (z[..., 1:] ** 2).sum(dim=-1)


def f12(x, c):
    z = _mat(c["R"], t_asy(_mat(c["R"], x - _vec(x, c["xopt"])), 0.5))
    return z[..., 0] ** 2 + 1e6 * (z[..., 1:] ** 2).sum(dim=-1)


def f13(x, c):
    z = _mat(c["M"], x - _vec(x, c["xopt"]))
    n = 1 if x.shape[-1] <= 40 else math.ceil(x.shape[-1] / 40.0)
    return 100.0 * _safe_pow((z[..., n:] ** 2).sum(dim=-1) / n, 0.5) + (z[..., :n] ** 2).sum(dim=-1) / n


def f14(x, c):
    z = _mat(c["R"], x - _vec(x, c["xopt"]))
    return _safe_pow((z.abs() ** (2.0 + 4.0 * _exps(x))).sum(dim=-1), 0.5)


def f15(x, c):
    return _rastrigin(_mat(c["M"], t_asy(t_osz(_mat(c["R"], x - _vec(x, c["xopt"]))), 0.2)))


_WK = torch.arange(12, dtype=torch.float64)
_W_F0 = float((0.5**_WK * torch.cos(math.pi * 3.0**_WK)).sum())


def f16(x, c):
    z = _mat(c["M"], t_osz(_mat(c["R"], x - _vec(x, c["xopt"]))))
    k = _WK.to(x.device, x.dtype)
    terms = (0.5**k * torch.cos(2.0 * math.pi * 3.0**k * (z.unsqueeze(-1) + 0.5))).sum(dim=-1)
    return 10.0 * (terms.mean(dim=-1) - _W_F0) ** 3 + 10.0 / x.shape[-1] * f_pen(x)


def _schaffers(x, c):
    z = _mat(c["M"], t_asy(_mat(c["R"], x - _vec(x, c["xopt"])), 0.5))
    s = z[..., :-1] ** 2 + z[..., 1:] ** 2
    body = _safe_pow(s, 0.25) * (1.0 + torch.sin(50.0 * _safe_pow(s, 0.1)) ** 2)
    return body.mean(dim=-1) ** 2 + 10.0 * f_pen(x)


def f19(x, c):
    z = _mat(c["M"], x) + 0.5
    a, b = z[..., :-1], z[..., 1:]
    s = 100.0 * (a * a - b) ** 2 + (1.0 - a) ** 2
    return 10.0 + 10.0 * (s / 4000.0 - torch.cos(s)).mean(dim=-1)


def f20(x, c):
    xopt = _vec(x, c["xopt"])
    two_abs = 2.0 * xopt.abs()
    xh = 2.0 * torch.sign(xopt) * x
    zh = torch.cat([xh[..., :1], xh[..., 1:] + 0.25 * (xh[..., :-1] - two_abs[..., :-1])], dim=-1)
    z = 100.0 * (lam(zh - two_abs, 10.0) + two_abs)
    ripple = (z * torch.sin(_safe_pow(z.abs(), 0.5))).mean(dim=-1)
    return 0.01 * ((torch.relu(z.abs() - 500.0) ** 2).sum(dim=-1) + 418.9828872724339 - ripple)


def _gallagher(x, c):
    y = _mat(c["Q"], x)  # [R, *S, D]
    centres = c["centres"].reshape(c["centres"].shape[:1] + (1,) * (x.dim() - 2) + c["centres"].shape[1:])
    scales = c["scales"].reshape(centres.shape)
    d2 = (scales * (y.unsqueeze(-2) - centres) ** 2).sum(dim=-1)  # [R, *S, peaks]
    heights = per_replicate(c["heights"], x.dim())
    best = (heights * torch.exp(-0.5 / x.shape[-1] * d2)).amax(dim=-1)
    return t_osz(10.0 - best) ** 2 + f_pen(x)


_K_POW = 2.0 ** torch.arange(1, 33, dtype=torch.float64)


def f23(x, c):
    z = _mat(c["M"], x - _vec(x, c["xopt"]))
    p = _K_POW.to(x.device, x.dtype)
    v = p * z.unsqueeze(-1)
    inner = ((v - _round(v)).abs() / p).sum(dim=-1)
    d = x.shape[-1]
    i = torch.arange(1, d + 1, device=x.device, dtype=x.dtype)
    prod = ((1.0 + i * inner) ** (10.0 / d**1.2)).prod(dim=-1)
    return 10.0 / d**2 * (prod - 1.0) + f_pen(x)


def f24(x, c):
    d = x.shape[-1]
    mu0, s = 2.5, 1.0 - 0.5 / (math.sqrt(d + 20.0) - 4.1)
    mu1 = -math.sqrt((mu0**2 - 1.0) / s)
    xh = 2.0 * torch.sign(_vec(x, c["xopt"])) * x
    z = _mat(c["R"], lam(_mat(c["Q"], xh - mu0), 100.0))
    sphere = torch.minimum(((xh - mu0) ** 2).sum(dim=-1), d + s * ((xh - mu1) ** 2).sum(dim=-1))
    return sphere + 10.0 * (d - torch.cos(2.0 * math.pi * z).sum(dim=-1)) + 1e4 * f_pen(x)


FUNCTIONS: dict[int, Callable[[torch.Tensor, Consts], torch.Tensor]] = {
    1: f1, 2: f2, 3: f3, 4: f4, 5: f5, 6: f6, 7: f7, 8: f8, 9: f9, 10: f10, 11: f11, 12: f12, 13: f13, 14: f14,
    15: f15, 16: f16, 17: _schaffers, 18: _schaffers, 19: f19, 20: f20, 21: _gallagher, 22: _gallagher, 23: f23, 24: f24,
}


def noise_levels(noise: str, severity: str, dim: int) -> tuple[float, float]:
    """(alpha, beta) of bbob-noisy's gaussian (alpha unused) and uniform models."""
    severe = severity == "severe"
    if noise == "gaussian":
        return 0.0, 1.0 if severe else 0.01
    a = 0.49 + 1.0 / dim
    return (a, 1.0) if severe else (0.01 * a, 0.01)


@LANDSCAPES.register("bbob", BBOBParams,
                     "BBOB f1..f24 (COCO/ioh instances: rotations, x_opt, f_opt), replicate r on instance + r",
                     family="bbob")
class BBOB(Landscape):
    """One BBOB function on R instances (see the module docstring)."""

    kind = "bbob"
    domain: ClassVar[tuple[float, float]] = (-5.0, 5.0)
    init_box: ClassVar[tuple[float, float]] = (-4.0, 4.0)

    def __init__(self, params: BBOBParams, *, replicates: int, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(dim=params.dim, replicates=replicates, device=device, dtype=dtype)
        self.params = params
        self.function = params.function
        self.instances = [params.instance + (r if params.replicate_instances else 0) for r in range(self.replicates)]
        per = [constants(self.function, inst, self.dim) for inst in self.instances]
        self.consts: Consts = {k: torch.as_tensor(np.stack([np.asarray(p[k], dtype=np.float64) for p in per]))
                               .to(self.device, dtype) for k in per[0]}
        self.xopt = self.consts["xopt"]
        self.fopt = self.consts["fopt"]
        lo, hi = self.init_box
        x0 = [lo + (hi - lo) * torch.rand(self.dim, generator=make_generator(derive_seed(seed, "landscape", r)),
                                          dtype=torch.float64) for r in range(self.replicates)]
        self.initial_point = torch.stack(x0).to(self.device, dtype)
        self.noise = params.noise
        self.alpha, self.beta = noise_levels(params.noise, params.noise_severity, self.dim) if params.noise != "none" else (0.0, 0.0)
        self._g = FUNCTIONS[self.function]

    def f(self, theta: torch.Tensor) -> torch.Tensor:
        """The noise-free objective ``[R, *S]`` (with f_opt)."""
        return self._g(theta, self.consts) + per_replicate(self.fopt, theta.dim() - 1, feature_ndim=0)

    def _fopt_like(self, theta: torch.Tensor) -> torch.Tensor:
        return per_replicate(self.fopt, theta.dim() - 1, feature_ndim=0)

    # -- contract ------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator, t: Time = None) -> Batch:
        shape = (self.replicates, n)
        if self.noise == "gaussian":
            return {"noise": torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype)}
        if self.noise == "uniform":
            u = torch.rand((2,) + shape, generator=generator, device=self.device, dtype=self.dtype)
            return {"noise": u[0].clamp_min(torch.finfo(self.dtype).tiny), "noise2": u[1]}
        return {"noise": torch.zeros(shape, device=self.device, dtype=self.dtype)}

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        f = self.f(theta)
        if self.noise == "none":
            return f.unsqueeze(-1).expand(*f.shape, batch["noise"].shape[-1])
        fo = self._fopt_like(theta).unsqueeze(-1)
        g = (f.unsqueeze(-1) - fo).clamp_min(0.0)
        u = per_replicate(batch["noise"], theta.dim())
        if self.noise == "gaussian":
            return fo + g * torch.exp(self.beta * u)
        u2 = per_replicate(batch["noise2"], theta.dim())
        boost = torch.exp(self.alpha * u2 * torch.relu(math.log(1e9) - torch.log(g + 1e-99)))  # max(1, (1e9/g)^(a U'))
        return fo + g * u**self.beta * boost

    def loss(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        if self.noise == "none":
            return self.f(theta)
        return self.example_losses(theta, batch, t).mean(dim=-1)

    def true_loss(self, theta: torch.Tensor, t: Time = None) -> torch.Tensor:
        f = self.f(theta)
        if self.noise == "none":
            return f
        fo = self._fopt_like(theta)
        g = (f - fo).clamp_min(0.0)
        if self.noise == "gaussian":
            return fo + g * math.exp(self.beta**2 / 2.0)
        log_c = torch.relu(math.log(1e9) - torch.log(g + 1e-99))  # ln max(1, 1e9 / g)
        a = self.alpha
        safe = torch.where(log_c > 0, log_c, torch.ones_like(log_c))
        boost = torch.where(log_c > 0, torch.expm1(a * safe) / (a * safe), torch.ones_like(log_c))
        return fo + g / (1.0 + self.beta) * boost

    def optimum(self, t: Time = None) -> torch.Tensor:
        return self.xopt

    def optimal_loss(self, t: Time = None) -> torch.Tensor:
        return self.fopt

    def describe(self) -> dict:
        d = super().describe()
        d.update(self.params.model_dump())
        d.update({"function_name": FUNCTION_NAMES[self.function], "instances": list(self.instances)})
        return d

