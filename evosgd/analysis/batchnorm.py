"""Batch normalization damps the back-propagated gradient.

Batch normalization (Ioffe & Szegedy 2015) of one unit over a mini-batch of b pre-activations
z_1..z_b: ``x_hat_i = (z_i - mu_B) / sigma_B`` with ``mu_B`` the batch mean and
``sigma_B = sqrt(var_B + eps)``.  Because mu_B and sigma_B depend on every z_j, the Jacobian is
not diagonal:

    d x_hat / d z = J = (I - 1 1^T / b - x_hat x_hat^T / b) / sigma_B

(symmetric; ibid., sec. 3, written in matrix form), so an upstream gradient g = dL/d x_hat comes
back as ``dL/dz = J g = (g - mean(g) - x_hat mean(g * x_hat)) / sigma_B``.  With *fixed
population statistics* (mu, sigma) the map is just ``g / sigma``.  With eps = 0, ``||x_hat||^2 = b``
and ``x_hat`` is orthogonal to 1, so ``P = I - 1 1^T/b - x_hat x_hat^T/b`` is the orthogonal
projection removing the gradient's components along 1 and x_hat: it can only shrink the
gradient.  For an isotropic random upstream gradient, ``E ||P g||^2 / ||g||^2 = (b - 2) / b``
exactly (the squared length of a uniformly random unit vector projected onto a (b-2)-dimensional
subspace has a Beta((b-2)/2, 1) law).

Beside the training-mode input gradient: the gradients of the scale and shift of
``y = gamma x_hat + beta`` (``dL/dgamma = sum_i g_i x_hat_i``, ``dL/dbeta = sum_i g_i``), evaluation
mode (running statistics: a diagonal Jacobian ``gamma / sqrt(var_run + eps)``, nothing couples the
examples) and the running-statistics update of training mode (torch's convention, unbiased
variance), each checked against ``torch.nn.functional.batch_norm``.

The measurement back-propagates with autograd through ``torch.nn.functional.batch_norm`` in
training mode (batch statistics) and through the population-statistics normalization, and
compares (1) the median ratio of the two gradient norms with the exact Jacobian formula evaluated on the
same batch and upstream gradient, and (2) the projection's damping ``sigma_B^2 ||dL/dz||^2 / ||g||^2``
with ``tr(P^T P) / b`` (exact with the eps of batch norm; (b - 2)/b when eps = 0).  The norm ratio
also carries ``sigma_pop / sigma_B``, which exceeds 1 on average for small batches
(``E var_B = (b - 1)/b sigma^2``) and so works against the projection's damping.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad_common import analysis_generator, bootstrap_ci, fmt, mean_ci, single_thread
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.registry import ANALYSES

KIND = "batchnorm_gradient"
BN_EPS = 1e-5


# ----------------------------------------------------------------------------- theory
def bn_jacobian(x_hat: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``J = (I - 1 1^T / b - x_hat x_hat^T / b) / sigma`` for ``x_hat [..., b]``, ``sigma [...]``."""
    b = x_hat.shape[-1]
    eye = torch.eye(b, dtype=x_hat.dtype, device=x_hat.device)
    J = eye - 1.0 / b - x_hat.unsqueeze(-1) * x_hat.unsqueeze(-2) / b
    return J / sigma[..., None, None]


def bn_backward(g: torch.Tensor, x_hat: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``J g = (g - mean(g) - x_hat mean(g x_hat)) / sigma`` (the Jacobian applied without forming it)."""
    return (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True)) / sigma.unsqueeze(-1)


def isotropic_damping(b: int, var_ratio: float | np.ndarray = 1.0) -> float | np.ndarray:
    """``E ||P g||^2 / ||g||^2`` for an isotropic g independent of the batch:
    ``tr(P^T P) / b = (b - 1 - (2 - r) r) / b`` with ``r = var_B / (var_B + eps) = ||x_hat||^2 / b``
    (since 1 is orthogonal to x_hat and ``(x_hat x_hat^T / b)^2 = r x_hat x_hat^T / b``);
    ``(b - 2) / b`` when eps = 0 (P is then the projection of rank b - 2)."""
    return (b - 1 - (2 - var_ratio) * var_ratio) / b


def bn_param_grads(g: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the scale and shift of ``y = gamma x_hat + beta`` from the upstream ``g = dL/dy``
    ``[..., b]``: ``dL/dgamma = sum_i g_i x_hat_i``, ``dL/dbeta = sum_i g_i`` (Ioffe & Szegedy 2015,
    sec. 3).  The same in training mode (x_hat from the batch statistics) and in evaluation mode
    (x_hat from the running statistics)."""
    return (g * x_hat).sum(-1), g.sum(-1)


def bn_train_input_grad(g: torch.Tensor, x_hat: torch.Tensor, sigma: torch.Tensor, gamma: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Training mode with scale gamma: ``dL/dz = J (gamma g)`` (:func:`bn_backward` of ``dL/dx_hat = gamma g``)."""
    return bn_backward(g * (gamma.unsqueeze(-1) if isinstance(gamma, torch.Tensor) else gamma), x_hat, sigma)


def bn_eval_forward(z: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, gamma: torch.Tensor | float = 1.0,
                    beta: torch.Tensor | float = 0.0, eps: float = BN_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation mode (running statistics, ``[...]`` per unit, ``z [..., b]``): returns
    ``(y, x_hat)``, ``x_hat = (z - mu_run) / sqrt(var_run + eps)``, ``y = gamma x_hat + beta``; each
    example is normalised on its own, so the batch plays no part."""
    x_hat = (z - running_mean.unsqueeze(-1)) / torch.sqrt(running_var + eps).unsqueeze(-1)
    g_ = gamma.unsqueeze(-1) if isinstance(gamma, torch.Tensor) else gamma
    b_ = beta.unsqueeze(-1) if isinstance(beta, torch.Tensor) else beta
    return g_ * x_hat + b_, x_hat


def bn_eval_input_grad(g: torch.Tensor, running_var: torch.Tensor, gamma: torch.Tensor | float = 1.0, eps: float = BN_EPS) -> torch.Tensor:
    """Evaluation mode: the Jacobian is diagonal, ``dL/dz_i = gamma g_i / sqrt(var_run + eps)`` (no
    projection: nothing couples the examples)."""
    scale = (gamma if isinstance(gamma, torch.Tensor) else torch.as_tensor(gamma, dtype=g.dtype)) / torch.sqrt(running_var + eps)
    return g * scale.unsqueeze(-1)


def bn_running_update(running_mean: torch.Tensor, running_var: torch.Tensor, z: torch.Tensor,
                      momentum: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Running statistics after one training batch ``z [..., b]`` (torch's convention):
    ``mu_run <- (1 - m) mu_run + m mean_B``, ``var_run <- (1 - m) var_run + m var_B b/(b-1)``
    (the unbiased batch variance; the normalisation itself uses the biased one)."""
    return ((1 - momentum) * running_mean + momentum * z.mean(-1),
            (1 - momentum) * running_var + momentum * z.var(-1, unbiased=True))


# ----------------------------------------------------------------------------- measurement
class BatchNormParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[int] = Field([2, 3, 4, 8, 16, 32, 64, 128], min_length=1,
                                   description="mini-batch sizes b (>= 2: one example has no variance)")
    samples: int = Field(2000, ge=10, description="mini-batches per batch size: the CI is over them")
    population: int = Field(100_000, ge=100, description="pre-activations in the population (its mean and sd are the fixed statistics)")
    distribution: Literal["gaussian", "exponential", "uniform"] = Field(
        "gaussian", description="law of the unit's pre-activation z (shifted and scaled to mean 1, sd 2)")
    target_correlation: float = Field(0.8, ge=-1, le=1, description="correlation of the read-out target with the normalized unit")
    bootstrap: int = Field(500, ge=50, description="bootstrap resamples for the CI of the median norm ratio")


def _normalize_population(u: torch.Tensor) -> torch.Tensor:
    return 1.0 + 2.0 * (u - u.mean()) / u.std(unbiased=False)


def measure_batchnorm(params: BatchNormParams, generator: torch.Generator, confidence: float = 0.95) -> AnalysisResult:
    dt = torch.float64
    N = params.population
    if params.distribution == "gaussian":
        u = torch.randn(N, generator=generator, dtype=dt)
    elif params.distribution == "exponential":
        u = -torch.log(torch.rand(N, generator=generator, dtype=dt))
    else:
        u = torch.rand(N, generator=generator, dtype=dt)
    z_pop = _normalize_population(u)
    mu, sd = z_pop.mean(), z_pop.std(unbiased=False)
    sigma_pop = torch.sqrt(sd**2 + BN_EPS)
    rho = params.target_correlation
    y_pop = rho * (z_pop - mu) / sd + math.sqrt(1 - rho**2) * torch.randn(N, generator=generator, dtype=dt)

    rows, agree = [], []
    for b in sorted(set(params.batch_sizes)):
        if b < 2:
            continue
        idx = torch.randint(N, (params.samples, b), generator=generator)
        z, y = z_pop[idx], y_pop[idx]  # [S, b]
        g_rand = torch.randn(params.samples, b, generator=generator, dtype=dt)
        for series in ("random upstream gradient", "squared-loss read-out"):
            zb = z.clone().requires_grad_(True)
            # torch's BN in training mode: [b, S] = b examples of S channels, statistics over the b examples
            xb = F.batch_norm(zb.T, None, None, training=True, eps=BN_EPS).T
            zp = z.clone().requires_grad_(True)
            xp = (zp - mu) / sigma_pop
            if series.startswith("random"):
                loss_b, loss_p = (g_rand * xb).sum(), (g_rand * xp).sum()
            else:  # read-out a x_hat + c with a = 1, c = 0 against y; mean over the batch
                loss_b, loss_p = 0.5 * ((xb - y) ** 2).mean(1).sum(), 0.5 * ((xp - y) ** 2).mean(1).sum()
            gz_b, = torch.autograd.grad(loss_b, zb)
            gz_p, = torch.autograd.grad(loss_p, zp)
            with torch.no_grad():
                up_b = g_rand if series.startswith("random") else (xb - y) / b  # dL/dx_hat, batch path
                up_p = g_rand if series.startswith("random") else (xp - y) / b
                x_hat = xb.detach()
                sigma_b = torch.sqrt(z.var(1, unbiased=False) + BN_EPS)
                formula = bn_backward(up_b, x_hat, sigma_b)
                # error relative to the size of the terms (at b = 2 the result itself is ~0: cancellation)
                agree.append(float(((gz_b - formula).norm(dim=1) / (up_b.norm(dim=1) / sigma_b)).max()))
                var_b = z.var(1, unbiased=False)
                var_ratio = (var_b / (var_b + BN_EPS)).numpy()
                ratio = (gz_b.norm(dim=1) / gz_p.norm(dim=1)).numpy()
                ratio_formula = (formula.norm(dim=1) / (up_p.norm(dim=1) / sigma_pop)).numpy()
                damping = ((sigma_b * gz_b.norm(dim=1)) ** 2 / up_b.norm(dim=1) ** 2).numpy()
            # the median: at b <= 3 the ratio (through 1 / sigma_B) has no finite variance (b = 3) or mean (b = 2)
            m, lo, hi = bootstrap_ci(ratio, lambda x: np.median(x, axis=-1), confidence=confidence, resamples=params.bootstrap, seed=b)
            rows.append(dict(quantity="median ||dL/dz||, batch / population statistics", series=series, x_name="batch size",
                             x=b, measured=m, measured_low=lo, measured_high=hi, predicted=float(np.median(ratio_formula)), log_x=True))
            if series.startswith("random"):
                m, lo, hi = mean_ci(damping, confidence)
                rows.append(dict(quantity="sigma_B^2 ||dL/dz||^2 / ||dL/dx_hat||^2 (projection damping)", series=series,
                                 x_name="batch size", x=b, measured=m, measured_low=lo, measured_high=hi,
                                 predicted=float(np.mean(isotropic_damping(b, var_ratio))), log_x=True))
    comp = comparison_rows(rows)
    ratio_rows = comp[comp.quantity.str.startswith("median ||dL/dz||")]
    notes = [
        f"torch's batch-norm backward agrees with the exact Jacobian formula to a relative error of at most {fmt(max(agree))} "
        f"over {len(agree) * params.samples} mini-batches.",
    ]
    for series, sub in ratio_rows.groupby("series"):
        first, last = sub.iloc[0], sub.iloc[-1]
        notes.append(f"{series}: the median gradient norm with batch statistics is {fmt(first.measured)} of the population-statistics norm "
                     f"at b = {int(first.x)} and {fmt(last.measured)} at b = {int(last.x)}.")
    damp = comp[comp.quantity.str.contains("projection damping")]
    inside = int(((damp.measured_low <= damp.predicted) & (damp.predicted <= damp.measured_high)).sum())
    notes.append(f"projection damping: tr(P^T P)/b inside the measured {confidence:.0%} CI at {inside} of {len(damp)} batch sizes.")
    return AnalysisResult(comp, tables={"population": pd.DataFrame([{"distribution": params.distribution, "mean": float(mu),
                                                                        "sd": float(sd), "size": N}])},
                          notes=notes, confidence=confidence, title="Batch normalization damps the gradient")


@ANALYSES.register(KIND, BatchNormParams,
                   "gradient norm back-propagated through batch norm with mini-batch vs population statistics, "
                   "against the exact Jacobian (I - 11^T/b - x x^T/b)/sigma and the (b-2)/b damping", family="gradient")
def batchnorm_gradient(params: BatchNormParams, *, context: AnalysisContext) -> AnalysisResult:
    with single_thread():
        return measure_batchnorm(params, analysis_generator(context, device="cpu"), confidence=0.95)
