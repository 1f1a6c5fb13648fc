"""Temperature: 1/N against eta/b.  The stationary spread of a Wright-Fisher population in the
weak-mutation regime and of SGD, measured on the same quadratic and put on one axis.

Both stationary distributions are Boltzmann-like on ``L(z) = 1/2 (z - z*)^T A (z - z*)``
(:class:`~evosgd.analysis.evo_common.Quadratic`), ``p(z) ~ exp(-L(z) / T)``, whose covariance
is ``T A^{-1}``.  We measure the *effective temperature* by equipartition,

    T_eff = 2 (E[L(z)] - L*) / D = (1/D) sum_k a_k Var(z_k),

(and per axis ``T_k = a_k Var(z_k)``: equal on every axis exactly when the distribution is
Boltzmann).

* **Wright-Fisher, weak mutation** (``N mu << 1``: the population is monomorphic between
  substitutions, origin-fixation dynamics).  With a symmetric mutation kernel and Kimura's
  haploid fixation probability ``u(s) = (1 - e^{-2s}) / (1 - e^{-2Ns})`` (s = log relative
  fitness), detailed balance gives ``pi(x) ~ w(x)^{2(N-1)}`` (Sella & Hirsh 2005, PNAS 102:9541,
  "the application of statistical physics to evolutionary biology": ``nu = 2N - 2`` for the
  Wright-Fisher process, ``N - 1`` for the Moran process; a diploid population of N_d is
  ``N = 2 N_d`` copies here).  With ``w = exp(-beta L)``:

      T_WF = 1 / (2 (N - 1) beta).

  The measured genotype is the population mean ``zbar`` at every generation after a burn-in.
* **SGD** with isotropic gradient noise ``Sigma = s^2 I`` (per-example loss ``L(z) - zeta . z``,
  ``zeta ~ N(0, s^2 I)``), learning rate eta, batch b: the iterate is a linear AR(1) process whose
  stationary covariance solves the discrete Lyapunov equation
  ``C = (I - eta A) C (I - eta A) + eta^2 Sigma / b``; per axis ``C_k = eta s^2 / (b a_k (2 - eta a_k))``,
  so ``T_k = eta s^2 / (b (2 - eta a_k))`` and, for small eta a_k,

      T_SGD ~ eta s^2 / (2 b)        (Mandt, Hoffman & Blei 2017, JMLR 18:134).

  The predicted value reported is the exact discrete-time one.

Matching the two: ``N - 1 = b / (eta s^2 beta)``; the population size plays the part of the batch
size divided by the learning rate.
"""

from __future__ import annotations

import math

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
    wright_fisher_generation,
)
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES

# ---------------------------------------------------------------------------------------------
# theory


def sella_hirsh_exponent(population_size: int, process: str = "wright_fisher") -> float:
    """Exponent nu of ``pi(x) ~ w(x)^nu`` in the weak-mutation limit (Sella & Hirsh 2005):
    ``2(N-1)`` for haploid Wright-Fisher (diffusion fixation probability), ``N-1`` for Moran."""
    if process == "wright_fisher":
        return 2.0 * (population_size - 1)
    if process == "moran":
        return float(population_size - 1)
    raise ValueError(f"unknown process {process!r}; allowed: 'wright_fisher', 'moran'")


def wf_temperature(population_size: int, beta: float) -> float:
    """``T = 1 / (nu beta)`` with ``w = exp(-beta L)``: ``1 / (2 (N-1) beta)``."""
    return 1.0 / (sella_hirsh_exponent(population_size) * beta)


def sgd_stationary_variance(curvatures: np.ndarray, lr: float, noise_var: float, batch_size: int) -> np.ndarray:
    """Per-axis stationary variance of SGD on a diagonal quadratic with isotropic gradient noise
    ``s^2 I``: ``eta s^2 / (b a_k (2 - eta a_k))`` (the discrete Lyapunov equation, stable for
    ``0 < eta a_k < 2``)."""
    a = np.asarray(curvatures, float)
    return lr * noise_var / (batch_size * a * (2.0 - lr * a))


def sgd_temperature(curvatures: np.ndarray, lr: float, noise_var: float, batch_size: int) -> np.ndarray:
    """Per-axis temperature ``a_k C_k = eta s^2 / (b (2 - eta a_k))`` (-> ``eta s^2 / (2b)``)."""
    a = np.asarray(curvatures, float)
    return a * sgd_stationary_variance(a, lr, noise_var, batch_size)


def equivalent_population_size(lr: float, noise_var: float, batch_size: int, beta: float) -> float:
    """N with ``T_WF(N) = eta s^2 / (2 b)``: ``1 + b / (eta s^2 beta)``."""
    return 1.0 + batch_size / (lr * noise_var * beta)


# ---------------------------------------------------------------------------------------------
# measurement


@torch.no_grad()
def wf_axis_temperatures(
    quad: Quadratic, population_size: int, beta: float, mutation_rate: float, mutation_sd: float,
    generations: int, burn_in: int, replicates: int, generator: torch.Generator,
) -> torch.Tensor:
    """Per-replicate, per-axis time average of ``a_k zbar_k^2`` over generations
    ``burn_in..generations-1`` of Wright-Fisher populations started monomorphic at the optimum:
    ``[R, D]`` (its mean over axes and replicates estimates T_eff)."""
    pop = torch.zeros(replicates, population_size, quad.dim, device=quad.device, dtype=quad.dtype)
    acc = torch.zeros(replicates, quad.dim, device=quad.device, dtype=torch.float64)
    for t in range(generations):
        pop = wright_fisher_generation(pop, -beta * quad.loss(pop), generator,
                                       mutation_rate=mutation_rate, mutation_effect=mutation_sd)
        if t >= burn_in:
            zbar = pop.mean(dim=1)
            acc += (quad.curvatures * zbar * zbar).double()
    return acc / max(generations - burn_in, 1)


@torch.no_grad()
def sgd_axis_temperatures(
    quad: Quadratic, lr: float, batch_size: int, steps: int, burn_in: int, replicates: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Per-replicate, per-axis time average of ``a_k z_k^2`` over SGD iterates ``burn_in..steps-1``
    started at the optimum: ``[R, D]``."""
    z = torch.zeros(replicates, quad.dim, device=quad.device, dtype=quad.dtype)
    acc = torch.zeros(replicates, quad.dim, device=quad.device, dtype=torch.float64)
    for t in range(steps):
        z = z - lr * quad.minibatch_grad(z, batch_size, generator)
        if t >= burn_in:
            acc += (quad.curvatures * z * z).double()
    return acc / max(steps - burn_in, 1)


# ---------------------------------------------------------------------------------------------
# the registered analysis


class TemperatureParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(2, ge=1, le=64, description="dimension D of the quadratic landscape")
    condition: float = Field(4.0, ge=1, description="condition number of the Hessian A (curvatures log-spaced in [1, condition])")
    beta: float = Field(1.0, gt=0, description="selection strength: fitness w = exp(-beta L)")
    population_sizes: list[int] = Field([4, 8, 16, 32], min_length=1, description="Wright-Fisher population sizes N (T_WF = 1/(2(N-1) beta))")
    scaled_mutation_rate: float = Field(
        0.1, gt=0, le=1, description="N mu, mutations per generation per population; weak mutation needs N mu << 1 (Sella-Hirsh regime)"
    )
    mutation_step: float = Field(
        0.7, gt=0, description="sd of a mutation's Gaussian step, in units of the predicted stationary sd sqrt(T_WF) on the flattest axis "
        "(sets the mixing speed only: the weak-mutation stationary law does not depend on it)"
    )
    substitutions: float = Field(
        30.0, gt=0, description="run length per population in expected neutral substitutions: generations = substitutions / mu (a neutral substitution every 1/mu generations)"
    )
    burn_in_fraction: float = Field(0.25, ge=0, lt=1, description="fraction of each run discarded before averaging")
    replicates: int = Field(256, ge=4, description="independent populations (and SGD runs) per setting")
    lr: float = Field(0.1, gt=0, description="SGD learning rate eta (stable while eta * condition < 2)")
    noise: float = Field(2.0, gt=0, description="per-example gradient-noise sd s (isotropic, Sigma = s^2 I)")
    batch_sizes: list[int] = Field([1, 2, 4, 8, 16], min_length=1, description="SGD batch sizes b (T_SGD ~ eta s^2 / (2 b))")
    sgd_steps: int = Field(2000, ge=10, description="SGD steps per run (the relaxation time is 1/(eta a_min))")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")


QUANTITY = "effective temperature 2 (E[L] - L*) / D"
SHAPE = "temperature ratio stiffest / flattest axis (1 = Boltzmann)"


@ANALYSES.register(
    "temperature", TemperatureParams,
    "Stationary spread of weak-mutation Wright-Fisher (T = 1/(2(N-1) beta), Sella & Hirsh) and of SGD (T ~ eta s^2/(2b)) on one temperature axis",
    family="evolution",
)
def temperature(params: TemperatureParams, *, context: AnalysisContext) -> AnalysisResult:
    conf = params.confidence
    if params.lr * params.condition >= 2:
        raise ParameterError("lr", params.lr, f"lr * condition < 2 (SGD is unstable on the stiffest axis; condition = {params.condition})",
                             where="analysis 'temperature'")
    quad = Quadratic(params.dim, params.condition, noise=params.noise, noise_model="isotropic", device=context.device, dtype=context.dtype)
    a = quad.curvatures_np
    rows, table = [], []

    def add(temps: torch.Tensor, series: str, predicted_axes: np.ndarray, gen: torch.Generator, extra: dict) -> None:
        per_rep = temps.mean(dim=1).cpu().numpy()
        m, lo, hi = mean_ci(per_rep, conf)
        pred = float(np.mean(predicted_axes))
        rows.append(dict(quantity=QUANTITY, series=series, x_name="predicted temperature", x=pred, measured=m, measured_low=lo,
                         measured_high=hi, predicted=pred, log_x=True, log_y=True, **extra))
        if params.dim > 1:
            def ratio(x: torch.Tensor) -> torch.Tensor:
                mean = x.mean(dim=-2)
                return mean[..., -1] / mean[..., 0]
            r, rlo, rhi = bootstrap_ci(temps, ratio, n_boot=300, confidence=conf, generator=gen)
            rows.append(dict(quantity=SHAPE, series=series, x_name="predicted temperature", x=pred, measured=r, measured_low=rlo,
                             measured_high=rhi, predicted=float(predicted_axes[-1] / predicted_axes[0]), log_x=True, **extra))
        table.append(dict(series=series, predicted=pred, measured=m, measured_low=lo, measured_high=hi, **extra))

    for n in params.population_sizes:
        gen = generator_for(context, "temperature-wf", n)
        T = wf_temperature(n, params.beta)
        mu = params.scaled_mutation_rate / n
        generations = int(math.ceil(params.substitutions / mu))
        burn = int(params.burn_in_fraction * generations)
        temps = wf_axis_temperatures(quad, n, params.beta, mu, params.mutation_step * math.sqrt(T / a[0]), generations, burn,
                                     params.replicates, gen)
        add(temps, "Wright-Fisher, weak mutation (T = 1/(2(N-1) beta))", np.full(params.dim, T), gen,
            dict(population_size=n, batch_size=math.nan, generations=generations))
    sgd_burn = int(params.burn_in_fraction * params.sgd_steps)
    for b in params.batch_sizes:
        gen = generator_for(context, "temperature-sgd", b)
        temps = sgd_axis_temperatures(quad, params.lr, b, params.sgd_steps, sgd_burn, params.replicates, gen)
        add(temps, f"SGD, lr={fmt(params.lr)} (T = eta s^2 / (b (2 - eta a)))", sgd_temperature(a, params.lr, params.noise ** 2, b), gen,
            dict(population_size=math.nan, batch_size=b, generations=params.sgd_steps))

    df = comparison_table(rows)
    d = df[df["quantity"] == QUANTITY]
    inside = (d["measured_low"] <= d["predicted"]) & (d["predicted"] <= d["measured_high"])
    wf = d["series"].str.startswith("Wright")
    notes = [
        f"Effective temperature: prediction inside the {conf:.0%} CI for {int((inside & wf).sum())} of {int(wf.sum())} population sizes "
        f"and {int((inside & ~wf).sum())} of {int((~wf).sum())} batch sizes.",
        "Measured / predicted temperature: " + ", ".join(
            f"{fmt(r.measured / r.predicted)} ({'N=' + str(int(r.population_size)) if r.population_size == r.population_size else 'b=' + str(int(r.batch_size))})"
            for r in d.itertuples()) + ".",
        f"Same temperature: a Wright-Fisher population of N behaves like SGD with b / eta = (N - 1) s^2 beta; here (eta = {fmt(params.lr)}, s = {fmt(params.noise)}, "
        f"beta = {fmt(params.beta)}) b = 1 matches N = {fmt(equivalent_population_size(params.lr, params.noise ** 2, 1, params.beta))}.",
    ]
    sh = df[df["quantity"] == SHAPE]
    if len(sh):
        ok = (sh["measured_low"] <= sh["predicted"]) & (sh["predicted"] <= sh["measured_high"])
        notes.append(f"Shape (per-axis temperature ratio, 1 = Boltzmann in L): prediction inside the CI at {int(ok.sum())} of {len(sh)} settings; "
                     f"measured ratios {', '.join(fmt(x) for x in sh['measured'])}.")
    notes.append(f"Weak mutation: N mu = {fmt(params.scaled_mutation_rate)} mutations per generation per population.")
    return AnalysisResult(comparison=df, tables={"temperatures": pd.DataFrame(table)}, notes=notes, confidence=conf,
                          title="Temperature: 1/N (weak-mutation Wright-Fisher) against eta/b (SGD) on one axis")
