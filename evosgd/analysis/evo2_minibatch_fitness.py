"""Mini-batch fitness: the batch size plays the same role for selection as for SGD (issue #8,
question 8).

On the quadratic of :class:`~evosgd.analysis.evo_common.Quadratic` with the isotropic per-example
noise model, ``l(z; zeta) = L(z) - zeta . z``, ``zeta ~ N(0, s^2 I)``, the loss of a mini-batch of b
examples is ``L_b(z) = L(z) - zeta_b . z`` with ``zeta_b ~ N(0, s^2 I / b)``: a randomly *tilted*
landscape whose gradient is the mini-batch gradient ``g_b = grad L - zeta_b`` (unbiased, covariance
``s^2 I / b``).  A population whose fitness is measured on one batch shared by all its members
(as the engine's ``fitness.evaluate_population`` does) is selected on exactly that tilted landscape:

* **SGD** (lr eta): step ``-eta g_b``: mean ``-eta grad L``, covariance ``eta^2 s^2 I / b``.
* **Wright-Fisher**, Gaussian genotypes ``N(zbar, G)``, fitness ``exp(-beta L_b)``: the tilted
  Gaussian's mean gives, exactly for N -> infinity,

      Delta zbar = -beta K g_b,         K = (G^{-1} + beta A)^{-1} = (I + beta G A)^{-1} G,

  i.e. a preconditioned step along the *same* mini-batch gradient: mean = Lande's response
  (unchanged by b: mini-batch fitness is an unbiased selection response), covariance
  ``beta^2 s^2 K K / b`` — for weak selection (``K ~ G = sigma_G^2 I``) exactly the SGD noise
  ``eta^2 s^2 I / b`` at the equivalent rate ``eta = beta sigma_G^2``.  A finite population adds
  its genetic drift, independent of b (``drift_decomposition.wf_step_moments``, leading order in
  1/N), so the population's step variance is ``beta^2 s^2 tr(K^2) / b + drift``: the batch size
  divides the selection noise as it divides the gradient noise, down to the drift floor that
  full-data fitness (b -> infinity) still has.
* **Ranking two individuals** ``z_1, z_2 = zbar -+ delta/2`` on a shared batch: the difference of
  their batch losses is ``Delta L - zeta_b . (z_1 - z_2) ~ N(Delta L, s^2 |delta|^2 / b)`` exactly,
  so selection orders them correctly with probability ``Phi(|Delta L| sqrt(b) / (s |delta|))``.

Measured over many independent replicates from the same start; CIs: Student-t for means,
percentile bootstrap for variances, Wilson for proportions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from evosgd.analysis.drift_decomposition import wf_step_moments
from evosgd.analysis.evo_common import (
    Quadratic,
    bootstrap_ci,
    comparison_table,
    fmt,
    generator_for,
    mean_ci,
    wilson_ci,
)
from evosgd.analysis.selection_gradient import (
    equivalent_learning_rate,
    finite_population_response,
    gaussian_selection_response,
)
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult
from evosgd.core.registry import ANALYSES
from evosgd.evolution.wright_fisher import wright_fisher_generation

# ---------------------------------------------------------------------------------------------
# theory


def selection_preconditioner(G: np.ndarray, A: np.ndarray, beta: float) -> np.ndarray:
    """``K = (I + beta G A)^{-1} G`` (= ``(G^{-1} + beta A)^{-1}``): the covariance of the Gaussian
    population after selection, which maps the (mini-batch) gradient to the response of the mean."""
    G, A = np.asarray(G, float), np.asarray(A, float)
    return np.linalg.solve(np.eye(len(G)) + beta * G @ A, G)


def minibatch_selection_noise(G: np.ndarray, A: np.ndarray, beta: float, noise: float, batch_size: int) -> np.ndarray:
    """Covariance of the mean's response caused by the batch: ``beta^2 s^2 K K^T / b``."""
    K = selection_preconditioner(G, A, beta)
    return beta ** 2 * noise ** 2 * K @ K.T / batch_size


def sgd_step_noise(lr: float, noise: float, dim: int, batch_size: int) -> np.ndarray:
    """Covariance of the SGD step under the isotropic model: ``eta^2 s^2 I / b``."""
    return lr ** 2 * noise ** 2 * np.eye(dim) / batch_size


def correct_order_probability(loss_gap: float, distance: float, noise: float, batch_size: int) -> float:
    """``Phi(|Delta L| sqrt(b) / (s |delta|))``: two individuals at distance |delta| ranked on a shared
    batch of b examples (isotropic model: exact); 1 without noise (ties aside)."""
    if noise == 0 or distance == 0:
        return 1.0 if loss_gap != 0 else 0.5
    return float(stats.norm.cdf(abs(loss_gap) * math.sqrt(batch_size) / (noise * distance)))


# ---------------------------------------------------------------------------------------------
# measurement


def batch_tilts(quad: Quadratic, batch_size: int, replicates: int, generator: torch.Generator) -> torch.Tensor:
    """``zeta_b`` ``[R, D]``: the mean of b per-example noise draws (one batch per replicate)."""
    eps = torch.randn(replicates, batch_size, quad.dim, generator=generator, device=quad.device, dtype=quad.dtype)
    return quad.noise * eps.mean(1)


@torch.no_grad()
def minibatch_wf_steps(quad: Quadratic, zbar: torch.Tensor, genetic_variance: float, population_size: int, beta: float,
                       batch_size: int, replicates: int, generator: torch.Generator) -> torch.Tensor:
    """``Delta zbar`` ``[R, D]``: N genotypes from ``N(zbar, sigma_G^2 I)`` through one Wright-Fisher
    generation whose fitness is ``exp(-beta L_b)`` on one batch shared by the population (offspring mean
    minus parent mean)."""
    pop = zbar + genetic_variance ** 0.5 * torch.randn(replicates, population_size, quad.dim, generator=generator,
                                                       device=quad.device, dtype=quad.dtype)
    tilt = batch_tilts(quad, batch_size, replicates, generator)
    batch_loss = quad.loss(pop) - (pop * tilt.unsqueeze(1)).sum(-1)
    offspring = wright_fisher_generation(pop, -beta * batch_loss, generator)
    return offspring.mean(1) - pop.mean(1)


@torch.no_grad()
def minibatch_sgd_steps(quad: Quadratic, zbar: torch.Tensor, lr: float, batch_size: int, replicates: int,
                        generator: torch.Generator) -> torch.Tensor:
    return -lr * quad.minibatch_grad(zbar.expand(replicates, -1), batch_size, generator)


@torch.no_grad()
def pair_ordering(quad: Quadratic, z1: torch.Tensor, z2: torch.Tensor, batch_size: int, replicates: int,
                  generator: torch.Generator) -> int:
    """How many of ``replicates`` shared batches rank the truly better of ``z1``, ``z2`` first."""
    tilt = batch_tilts(quad, batch_size, replicates, generator)
    l1 = quad.loss(z1) - tilt @ z1
    l2 = quad.loss(z2) - tilt @ z2
    better_first = quad.loss(z1) < quad.loss(z2)
    return int(((l1 < l2) == better_first).sum())


def _trace_cov(x: torch.Tensor) -> torch.Tensor:
    """``[B, n, D] -> [B]``: trace of the sample covariance over n."""
    return x.var(dim=-2).sum(-1)


# ---------------------------------------------------------------------------------------------
# the registered analysis


class MinibatchFitnessParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(4, ge=1, le=256, description="dimension D of the quadratic")
    condition: float = Field(10.0, ge=1, description="condition number of A (curvatures log-spaced in [1, condition])")
    noise: float = Field(1.0, gt=0, description="per-example noise s (isotropic model: gradient-noise covariance s^2 I)")
    start_distance: float = Field(1.0, ge=0, description="distance of zbar from the optimum along (1,...,1)/sqrt(D)")
    batch_sizes: list[int] = Field([1, 4, 16, 64, 256], min_length=1, description="batch sizes b (SGD and fitness alike)")
    beta: float = Field(1.0, gt=0, description="selection strength: fitness exp(-beta L_b)")
    genetic_variance: float = Field(0.1, gt=0, description="sigma_G^2 of the population N(zbar, sigma_G^2 I)")
    population_size: int = Field(256, ge=2, description="population size N")
    lr: float | None = Field(None, gt=0, description="SGD learning rate; None: the equivalent beta sigma_G^2")
    pair_distance: float = Field(0.2, gt=0, description="distance |delta| of the two ranked individuals")
    pair_cosine: float = Field(0.05, ge=-1, le=1, description="cosine between delta and -grad L: their true loss gap is ~ |grad L| |delta| cos")
    replicates: int = Field(4000, ge=20, description="independent steps / rankings per batch size")
    bootstrap: int = Field(300, ge=50, description="bootstrap resamples for the variance CIs")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")


Q_VAR = "variance of the step (trace)"
Q_MEAN = "mean step along -grad L"
Q_ORDER = "probability a shared batch ranks two individuals correctly"


@ANALYSES.register(
    "minibatch_fitness", MinibatchFitnessParams,
    "SGD steps and Wright-Fisher generations with mini-batch fitness at several batch sizes: the batch divides both noises",
    family="evolution",
)
def minibatch_fitness(params: MinibatchFitnessParams, *, context: AnalysisContext) -> AnalysisResult:
    p, conf = params, params.confidence
    dev, dt = context.device, context.dtype
    quad = Quadratic(p.dim, p.condition, noise=p.noise, noise_model="isotropic", device=dev, dtype=dt)
    A = np.diag(quad.curvatures_np)
    G = p.genetic_variance * np.eye(p.dim)
    opt = np.zeros(p.dim)
    zbar_np = np.full(p.dim, p.start_distance / math.sqrt(p.dim))
    zbar = torch.as_tensor(zbar_np, device=dev, dtype=dt)
    lr = p.lr if p.lr is not None else equivalent_learning_rate(p.genetic_variance, p.beta)
    grad = A @ zbar_np
    gnorm = float(np.linalg.norm(grad))
    u_np = -grad / gnorm if gnorm > 0 else np.eye(p.dim)[0]
    u = torch.as_tensor(u_np, device=dev, dtype=dt)
    _, wf_drift_cov = wf_step_moments(zbar_np, opt, A, G, p.beta, p.population_size)
    # Lande's exact-Gaussian response with the leading finite-N factor (1 - 1/N) (Robertson-Price)
    lande = finite_population_response(gaussian_selection_response(zbar_np, opt, A, G, p.beta), p.population_size)
    other = np.eye(p.dim)[int(np.argmin(np.abs(u_np)))] if p.dim > 1 else u_np
    v_np = other - (other @ u_np) * u_np
    v_np = v_np / np.linalg.norm(v_np) if np.linalg.norm(v_np) > 0 else u_np
    w = torch.as_tensor(p.pair_cosine * u_np + math.sqrt(max(0.0, 1 - p.pair_cosine ** 2)) * v_np, device=dev, dtype=dt)
    sgd_series, wf_series = f"SGD (lr={fmt(lr)})", f"Wright-Fisher, mini-batch fitness (N={p.population_size}, beta={fmt(p.beta)})"
    xb = "batch size b"
    rows = []
    for b in p.batch_sizes:
        gen = generator_for(context, "sgd", b)
        steps = minibatch_sgd_steps(quad, zbar, lr, b, p.replicates, gen)
        m, lo, hi = mean_ci((steps @ u).cpu().numpy(), conf)
        rows.append(dict(quantity=Q_MEAN, series=sgd_series, x_name=xb, x=b, measured=m, measured_low=lo, measured_high=hi,
                         predicted=lr * gnorm, log_x=True))
        v, vlo, vhi = bootstrap_ci(steps, _trace_cov, n_boot=p.bootstrap, confidence=conf, generator=gen)
        rows.append(dict(quantity=Q_VAR, series=sgd_series, x_name=xb, x=b, measured=v, measured_low=vlo, measured_high=vhi,
                         predicted=float(np.trace(sgd_step_noise(lr, p.noise, p.dim, b))), log_x=True, log_y=True))

        gen = generator_for(context, "wf", b)
        steps = minibatch_wf_steps(quad, zbar, p.genetic_variance, p.population_size, p.beta, b, p.replicates, gen)
        m, lo, hi = mean_ci((steps @ u).cpu().numpy(), conf)
        rows.append(dict(quantity=Q_MEAN, series=wf_series, x_name=xb, x=b, measured=m, measured_low=lo, measured_high=hi,
                         predicted=float(lande @ u_np), log_x=True))
        v, vlo, vhi = bootstrap_ci(steps, _trace_cov, n_boot=p.bootstrap, confidence=conf, generator=gen)
        pred = float(np.trace(minibatch_selection_noise(G, A, p.beta, p.noise, b)) + np.trace(wf_drift_cov))
        rows.append(dict(quantity=Q_VAR, series=wf_series, x_name=xb, x=b, measured=v, measured_low=vlo, measured_high=vhi,
                         predicted=pred, log_x=True, log_y=True))

        z1 = zbar + 0.5 * p.pair_distance * w
        z2 = zbar - 0.5 * p.pair_distance * w
        gap = float(quad.loss(z1) - quad.loss(z2))
        k = pair_ordering(quad, z1, z2, b, p.replicates, generator_for(context, "pair", b))
        f, flo, fhi = wilson_ci(k, p.replicates, conf)
        rows.append(dict(quantity=Q_ORDER, series="shared batch", x_name=xb, x=b, measured=f, measured_low=flo, measured_high=fhi,
                         predicted=correct_order_probability(gap, p.pair_distance, p.noise, b), log_x=True))

    df = comparison_table(rows)
    drift_floor = float(np.trace(wf_drift_cov))
    noise_at_1 = float(np.trace(minibatch_selection_noise(G, A, p.beta, p.noise, 1)))
    notes = _notes(df, conf, drift_floor, noise_at_1, lr, p)
    return AnalysisResult(comparison=df, notes=notes, confidence=conf,
                          title="Mini-batch fitness: the batch size divides the selection noise as it divides the gradient noise")


def _notes(df, conf: float, drift_floor: float, noise_at_1: float, lr: float, p: MinibatchFitnessParams) -> list[str]:
    notes = []
    inside = (df["measured_low"] <= df["predicted"]) & (df["predicted"] <= df["measured_high"])
    for (q, s), g in df.groupby(["quantity", "series"], sort=False):
        notes.append(f"{q}, {s}: prediction inside the {conf:.0%} CI at {int(inside[g.index].sum())} of {len(g)} batch sizes.")
    var = df[df["quantity"] == Q_VAR]
    for s, g in var.groupby("series", sort=False):
        floor = drift_floor if s.startswith("Wright") else 0.0
        excess = (g["measured"] - floor).clip(lower=1e-300)
        if len(g) > 1:
            slope = np.polyfit(np.log(g["x"]), np.log(excess), 1)[0]
            notes.append(f"{s}: log-log slope of the step variance{' above the drift floor' if floor else ''} against b: "
                         f"{fmt(slope)} (predicted -1).")
    sgd1 = lr ** 2 * p.noise ** 2 * p.dim
    notes.append(f"At b = 1 the batch adds {fmt(noise_at_1)} to the population's step variance (SGD: {fmt(sgd1)}, ratio "
                 f"{fmt(noise_at_1 / sgd1)}; 1 under weak selection at lr = beta sigma_G^2); the population's drift floor "
                 f"(full-data fitness, b -> infinity) is {fmt(drift_floor)}, reached by the batch noise at b ~ "
                 f"{fmt(noise_at_1 / drift_floor) if drift_floor > 0 else 'inf'}: beyond it a larger batch buys the population nothing.")
    return notes
