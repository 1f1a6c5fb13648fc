"""Drift is not a gradient estimator: the step of SGD and of a Wright-Fisher population,
decomposed into the component along the true gradient and the orthogonal rest.

One step from the same point ``zbar`` of the quadratic of
:class:`~evosgd.analysis.evo_common.Quadratic` (per-example noise ``"shift"``: gradient-noise
covariance ``Sigma = s^2 A``, shaped like the landscape), measured over many independent
replicates.  With ``u = -grad L / |grad L|`` and ``v`` a unit vector orthogonal to ``u``:

* **SGD** with batch size b (``Delta = -lr g_b``): ``E[Delta] = -lr grad L`` exactly (the
  mini-batch gradient is unbiased), so ``E[Delta . u] = lr |grad L|`` and ``E[Delta . v] = 0``;
  ``Cov(Delta) = lr^2 Sigma / b`` (variance along u: ``lr^2 u^T Sigma u / b``, orthogonal:
  ``lr^2 (tr Sigma - u^T Sigma u) / b``).  The noise is an *estimation error of the gradient*:
  zero mean, shrinking with b, shaped by the data (Sigma).
* **Wright-Fisher** with N individuals ``~ N(zbar, G)``, fitness ``exp(-beta L)``, optional
  offspring mutation ``N(0, m^2 I)``: ``E[Delta] ->`` Lande's exact-Gaussian response
  (``selection_gradient``).  Its covariance (delta method, leading order in 1/N; *exact* at
  beta = 0) is

      Cov(Delta) = G_1 (N-1)/N^2  +  Cov(Y)/N  +  m^2 I / N,
      Cov(Y) = (Z_2 / Z_1^2) (G_2 + (mu_2 - mu_1)(mu_2 - mu_1)^T) - 2 G_1 + G,

  where ``N(mu_k, G_k)`` and ``Z_k = E[w^k]`` are the Gaussian genotype distribution tilted by
  ``w^k``: ``G_k = (G^{-1} + k beta A)^{-1}``, ``mu_k = mu - G_k k beta A (mu - z*)``.  The first
  term is genetic drift proper (sampling N parents), the second the sampling fluctuation of the
  selection differential.  Drift is a random walk of covariance ~ G/N: shaped by the
  population's variation, not by the data, and present unchanged when selection is off.
  Its mean carries an O(1/N) finite-sample bias, to leading order the factor ``(N-1)/N`` (see
  ``selection_gradient``), drawn as the predicted band.
* **Neutral evolution** (beta = 0) is the limiting case: ``E[Delta] = 0`` whatever the
  gradient, ``Cov(Delta) = G (N-1)/N^2 + m^2 I/N`` exactly: pure drift, no progress.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.evo_common import (
    Quadratic,
    bootstrap_ci,
    comparison_table,
    fmt,
    generator_for,
    mean_ci,
)
from evosgd.analysis.selection_gradient import (
    equivalent_learning_rate,
    gaussian_selection_response,
    one_generation_steps,
)
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult
from evosgd.core.registry import ANALYSES

# ---------------------------------------------------------------------------------------------
# theory


def sgd_step_moments(zbar: np.ndarray, optimum: np.ndarray, A: np.ndarray, lr: float, Sigma: np.ndarray, batch_size: int):
    """(mean, covariance) of one SGD step ``-lr g_b``: ``-lr A (zbar - z*)`` and ``lr^2 Sigma / b``
    (b examples drawn independently; Sigma the covariance of one per-example gradient)."""
    d = np.asarray(zbar, float) - np.asarray(optimum, float)
    return -lr * np.asarray(A, float) @ d, lr ** 2 * np.asarray(Sigma, float) / batch_size


def gaussian_tilt(mu: np.ndarray, optimum: np.ndarray, A: np.ndarray, G: np.ndarray, beta: float, k: float):
    """``N(mu, G)`` tilted by ``w^k = exp(-k beta/2 (z-z*)^T A (z-z*))``: returns
    ``(log E[w^k], mu_k, G_k)`` with ``G_k = (G^{-1} + k beta A)^{-1}`` (computed as
    ``(I + k beta G A)^{-1} G``, valid for singular beta A), ``mu_k = mu - G_k k beta A d`` and
    ``log E[w^k] = -1/2 log det(I + k beta A G) - 1/2 d^T (I + k beta A G)^{-1} k beta A d``."""
    A, G = np.asarray(A, float), np.asarray(G, float)
    d = np.asarray(mu, float) - np.asarray(optimum, float)
    D = d.shape[-1]
    kbA = k * beta * A
    Gk = np.linalg.solve(np.eye(D) + G @ kbA, G)
    mu_k = np.asarray(mu, float) - Gk @ kbA @ d
    M = np.eye(D) + kbA @ G
    logz = -0.5 * np.linalg.slogdet(M)[1] - 0.5 * d @ np.linalg.solve(M, kbA @ d)
    return logz, mu_k, Gk


def wf_step_moments(mu: np.ndarray, optimum: np.ndarray, A: np.ndarray, G: np.ndarray, beta: float,
                    population_size: int, mutation_var: float = 0.0):
    """(mean, covariance) of the change of the mean in one Wright-Fisher generation of N
    Gaussian genotypes (module docstring): mean = Lande's exact-Gaussian response (N -> inf),
    covariance = drift ``G_1 (N-1)/N^2`` + selection-differential fluctuation ``Cov(Y)/N`` +
    mutation ``m^2 I / N``."""
    N = int(population_size)
    D = len(mu)
    mean = gaussian_selection_response(mu, optimum, A, G, beta)
    logz1, mu1, G1 = gaussian_tilt(mu, optimum, A, G, beta, 1.0)
    logz2, mu2, G2 = gaussian_tilt(mu, optimum, A, G, beta, 2.0)
    dm = mu2 - mu1
    cov_y = np.exp(logz2 - 2 * logz1) * (G2 + np.outer(dm, dm)) - 2 * G1 + np.asarray(G, float)
    cov = G1 * (N - 1) / N ** 2 + cov_y / N + mutation_var * np.eye(D) / N
    return mean, cov


# ---------------------------------------------------------------------------------------------
# measurement


@torch.no_grad()
def sgd_steps(quad: Quadratic, zbar: torch.Tensor, lr: float, batch_size: int, replicates: int,
              generator: torch.Generator) -> torch.Tensor:
    """``replicates`` independent SGD steps ``-lr g_b`` from ``zbar`` ``[D]``: ``[R, D]``."""
    z = zbar.expand(replicates, -1)
    return -lr * quad.minibatch_grad(z, batch_size, generator)


def variance_along_stat(u: torch.Tensor):
    def stat(x: torch.Tensor) -> torch.Tensor:
        return (x @ u).var(dim=-1)
    return stat


def variance_orthogonal_stat(u: torch.Tensor):
    """``tr Cov(x) - u^T Cov(x) u``: the summed variance of the part orthogonal to u."""
    def stat(x: torch.Tensor) -> torch.Tensor:
        r = x - (x @ u).unsqueeze(-1) * u
        return r.var(dim=-2).sum(-1)
    return stat


# ---------------------------------------------------------------------------------------------
# the registered analysis


class DriftDecompositionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(4, ge=2, le=256, description="dimension D of the quadratic landscape (>= 2: an orthogonal direction must exist)")
    condition: float = Field(10.0, ge=1, description="condition number of the Hessian A (curvatures log-spaced in [1, condition])")
    start_distance: float = Field(1.0, gt=0, description="distance of the start point from the optimum, along (1,...,1)/sqrt(D)")
    noise: float = Field(1.0, ge=0, description="per-example noise scale s of the SGD side (gradient-noise covariance s^2 A or s^2 I)")
    noise_model: Literal["shift", "isotropic"] = Field("shift", description="'shift': Sigma = s^2 A (landscape-shaped), 'isotropic': Sigma = s^2 I")
    batch_sizes: list[int] = Field([1, 4, 16, 64, 256], min_length=1, description="SGD batch sizes b")
    lr: float | None = Field(None, gt=0, description="SGD learning rate; None: the equivalent rate beta sigma_G^2, so both expected steps match under weak selection")
    beta: float = Field(1.0, gt=0, description="selection strength of the Wright-Fisher population: w = exp(-beta L)")
    genetic_variance: float = Field(0.1, gt=0, description="standing genetic variance sigma_G^2 (G = sigma_G^2 I)")
    mutation_sd: float = Field(0.0, ge=0, description="sd m of the Gaussian mutation of offspring")
    population_sizes: list[int] = Field([8, 32, 128, 512], min_length=1, description="Wright-Fisher population sizes N (the covariance formula is leading order in 1/N)")
    replicates: int = Field(4000, ge=20, description="independent steps measured per setting")
    bootstrap: int = Field(300, ge=50, description="bootstrap resamples for the variance CIs")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")


QUANTITIES = {
    "along": "mean step along -grad L (progress)",
    "orth": "mean step along v, orthogonal to grad L",
    "var_along": "variance of the step along grad L",
    "var_orth": "variance of the step orthogonal to grad L (summed)",
}


@ANALYSES.register(
    "drift_decomposition", DriftDecompositionParams,
    "SGD steps at several batch sizes and Wright-Fisher generations at several N (and neutral): the step split along and orthogonal to the gradient",
    family="evolution",
)
def drift_decomposition(params: DriftDecompositionParams, *, context: AnalysisContext) -> AnalysisResult:
    conf = params.confidence
    dev, dt = context.device, context.dtype
    quad = Quadratic(params.dim, params.condition, noise=params.noise, noise_model=params.noise_model, device=dev, dtype=dt)
    A = np.diag(quad.curvatures_np)
    Sigma = np.diag(quad.gradient_noise_cov())
    opt = np.zeros(params.dim)
    zbar_np = np.full(params.dim, params.start_distance / np.sqrt(params.dim))
    zbar = torch.as_tensor(zbar_np, device=dev, dtype=dt)
    G = params.genetic_variance * np.eye(params.dim)
    lr = params.lr if params.lr is not None else equivalent_learning_rate(params.genetic_variance, params.beta)

    grad = A @ zbar_np
    u = -grad / np.linalg.norm(grad)
    lande = gaussian_selection_response(zbar_np, opt, A, G, params.beta)
    v = lande - (lande @ u) * u
    if np.linalg.norm(v) < 1e-12 * np.linalg.norm(lande):  # isotropic case: any orthogonal direction
        e = np.zeros(params.dim)
        e[int(np.argmin(np.abs(u)))] = 1.0
        v = e - (e @ u) * u
    v = v / np.linalg.norm(v)
    u_t, v_t = (torch.as_tensor(x, device=dev, dtype=dt) for x in (u, v))

    rows = []

    def measure(steps: torch.Tensor, mean: np.ndarray, cov: np.ndarray, series: str, x: float, gen: torch.Generator,
                finite_n: int | None = None) -> None:
        common = dict(series=series, x_name="1/b (SGD) or 1/N (Wright-Fisher)", x=x, log_x=True)
        for key, proj, pred in (("along", u_t, mean @ u), ("orth", v_t, mean @ v)):
            m, lo, hi = mean_ci((steps @ proj).cpu().numpy(), conf)
            band = {}
            if finite_n is not None:  # the leading-order finite-sample factor (N-1)/N of the selection response
                ends = sorted((float(pred), float(pred) * (1 - 1 / finite_n)))
                band = dict(predicted_low=ends[0], predicted_high=ends[1])
            rows.append(dict(quantity=QUANTITIES[key], measured=m, measured_low=lo, measured_high=hi, predicted=float(pred),
                             **band, **common))
        pva = float(u @ cov @ u)
        pvo = float(np.trace(cov) - pva)
        for key, stat, pred in (("var_along", variance_along_stat(u_t), pva), ("var_orth", variance_orthogonal_stat(u_t), pvo)):
            m, lo, hi = bootstrap_ci(steps, stat, n_boot=params.bootstrap, confidence=conf, generator=gen)
            rows.append(dict(quantity=QUANTITIES[key], measured=m, measured_low=lo, measured_high=hi, predicted=pred, log_y=True, **common))

    for b in params.batch_sizes:
        gen = generator_for(context, "sgd", b)
        mean, cov = sgd_step_moments(zbar_np, opt, A, lr, Sigma, b)
        measure(sgd_steps(quad, zbar, lr, b, params.replicates, gen), mean, cov, f"SGD (lr={fmt(lr)})", 1.0 / b, gen)
    for beta, series in ((params.beta, f"Wright-Fisher (beta={fmt(params.beta)})"), (0.0, "neutral Wright-Fisher (beta=0)")):
        for n in params.population_sizes:
            gen = generator_for(context, "wf", beta, n)
            mean, cov = wf_step_moments(zbar_np, opt, A, G, beta, n, params.mutation_sd ** 2)
            steps = one_generation_steps(quad, zbar, params.genetic_variance, n, beta, params.replicates, gen, mutation_sd=params.mutation_sd)
            measure(steps, mean, cov, series, 1.0 / n, gen, finite_n=n if beta > 0 else None)

    df = comparison_table(rows)
    return AnalysisResult(comparison=df, notes=_notes(df, conf, lr ** 2 * float(np.trace(Sigma)), params), confidence=conf,
                          title="Drift is not a gradient estimator: steps split along and orthogonal to the gradient")


def _inside(d: pd.DataFrame) -> pd.Series:
    return (d["measured_low"] <= d["predicted"]) & (d["predicted"] <= d["measured_high"])


def _notes(df: pd.DataFrame, conf: float, sgd_noise_trace: float, params: DriftDecompositionParams) -> list[str]:
    notes = []
    ok = _inside(df)
    for q in QUANTITIES.values():
        sel = df["quantity"] == q
        notes.append(f"{q}: prediction inside the {conf:.0%} CI at {int((ok & sel).sum())} of {int(sel.sum())} settings.")
    sgd = df["series"].str.startswith("SGD")
    neutral = df["series"].str.startswith("neutral")
    wf = ~sgd & ~neutral
    along = df["quantity"] == QUANTITIES["along"]
    orth = df["quantity"] == QUANTITIES["orth"]
    var_all = df["quantity"].isin([QUANTITIES["var_along"], QUANTITIES["var_orth"]])
    d = df[along & sgd]
    notes.append(f"SGD: expected progress {fmt(d['measured'].min())}..{fmt(d['measured'].max())} per step at every batch size "
                 f"(lr |grad L| = {fmt(d['predicted'].iloc[0])}); orthogonal mean's CI contains 0 at {int(_inside(df[orth & sgd]).sum())} of {int((orth & sgd).sum())} batch sizes (unbiased noise).")
    tot = df[var_all & sgd].groupby("x")["measured"].sum()
    notes.append("SGD: total step variance x b = " + ", ".join(f"{fmt(val / x)} (b={int(round(1 / x))})" for x, val in tot.items())
                 + f"; predicted lr^2 tr(Sigma) = {fmt(sgd_noise_trace)}.")
    d = df[along & neutral]
    notes.append(f"Neutral Wright-Fisher: progress CI contains 0 at {int(_inside(d).sum())} of {len(d)} population sizes: drift moves the mean "
                 "but not along the gradient.")
    tw = df[var_all & wf].groupby("x")["measured"].sum()
    tn = df[var_all & neutral].groupby("x")["measured"].sum()
    common = tw.index.intersection(tn.index)
    if len(common):
        notes.append("Step variance with selection / neutral (same N): " + ", ".join(
            f"{fmt(tw[x] / tn[x])} (N={int(round(1 / x))})" for x in common)
            + "; neutral total variance x N = " + ", ".join(f"{fmt(tn[x] / x)} (N={int(round(1 / x))})" for x in common)
            + f" (predicted G-trace (N-1)/N -> {fmt(params.dim * params.genetic_variance)}).")
    d = df[orth & wf]
    if len(d):
        notes.append(f"Wright-Fisher's expected step leaves the gradient direction (orthogonal mean {fmt(d['measured'].iloc[-1])}, "
                     f"predicted {fmt(d['predicted'].iloc[-1])} at the largest N): selection on a Gaussian population follows "
                     "G (I + beta A G)^-1 grad, not grad.")
    return notes
