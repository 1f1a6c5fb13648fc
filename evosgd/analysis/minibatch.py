"""How big must a batch be?  Concentration of the mini-batch gradient around the full gradient.

Setting.  A population of N examples with per-example gradients ``g_i`` (at a fixed point),
mean ``g`` and population covariance ``Sigma = (1/N) sum (g_i - g)(g_i - g)^T``.  The mini-batch
gradient ``g_b`` is the mean of b examples drawn

* with replacement (iid):      ``E||g_b - g||^2 = tr(Sigma) / b``;
* without replacement:         ``E||g_b - g||^2 = tr(Sigma) / b * (N - b) / (N - 1)``
  (the finite-population correction; Cochran, *Sampling Techniques*, 3rd ed. 1977, thm 2.2).

Chebyshev (Markov on ``||g_b - g||^2``):  ``P(||g_b - g|| > eps) <= tr(Sigma) / (b eps^2)``, so
``b >= tr(Sigma) / (delta eps^2)`` guarantees failure probability <= delta (the weak-law
argument of the seed text).  The CLT instead treats ``g_b - g ~ N(0, Sigma/b)``: then
``b ||g_b - g||^2 ~ sum_i lambda_i Z_i^2`` (lambda_i the eigenvalues of Sigma), a generalized
chi-square whose tail is computed exactly by Imhof's (1961) inversion formula; the CLT-sized
batch is ``b = q_{1-delta} / eps^2`` with q the quantile of that law.

The measurement draws ``samples`` mini-batches per batch size from the fixed population and
counts; every prediction is computed from the same population, so it is exact for the
variance rows and a bound / an approximation for the failure rows.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import integrate, optimize, stats

from evosgd.analysis.grad_common import (
    POINT_DESCRIPTION,
    Point,
    analysis_generator,
    analysis_landscape,
    evaluation_point,
    example_population,
    fmt,
    mean_ci,
    proportion_ci,
    require_separable,
    single_thread,
)
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES
from evosgd.landscapes.base import per_example_grads

KIND = "minibatch_concentration"


# ----------------------------------------------------------------------------- theory
def minibatch_gradient_variance(trace_cov: float, batch_size: int, population: int | None = None) -> float:
    """``E||g_b - g||^2``: ``tr(Sigma)/b``, times ``(N - b)/(N - 1)`` when drawing b of a population
    of N without replacement (Cochran 1977, thm 2.2).  ``Sigma`` is the population covariance
    (divisor N) of the per-example gradients."""
    v = float(trace_cov) / batch_size
    if population is not None:
        if batch_size > population:
            raise ParameterError("batch_size", batch_size, f"<= the population size {population} without replacement")
        v *= (population - batch_size) / (population - 1) if population > 1 else 0.0
    return v


def chebyshev_failure_bound(trace_cov: float, batch_size: int, eps: float) -> float:
    """Chebyshev/Markov: ``P(||g_b - g|| > eps) <= min(1, tr(Sigma) / (b eps^2))``."""
    return min(1.0, float(trace_cov) / (batch_size * eps**2))


def chebyshev_batch_size(trace_cov: float, eps: float, delta: float) -> int:
    """Smallest b with ``tr(Sigma) / (b eps^2) <= delta``: ``b = ceil(tr(Sigma) / (delta eps^2))``."""
    if not (eps > 0 and 0 < delta < 1):
        raise ParameterError("eps/delta", (eps, delta), "eps > 0 and 0 < delta < 1")
    return max(1, math.ceil(float(trace_cov) / (delta * eps**2) - 1e-12))


def gaussian_quadratic_tail(eigenvalues: np.ndarray, x: float) -> float:
    """``P(sum_i lambda_i Z_i^2 > x)`` for iid standard normal Z_i and lambda_i >= 0.

    Ruben's (1962) mixture series, 'Probability content of regions under spherical normal
    distributions IV', Ann. Math. Statist. 33: with ``beta = min lambda``,
    ``P(Q > x) = sum_k a_k P(chi2_{n + 2k} > x / beta)``, ``a_0 = prod sqrt(beta / lambda_i)``,
    ``a_k = (1 / 2k) sum_{r<k} h_{k-r} a_r``, ``h_j = sum_i (1 - beta / lambda_i)^j``.  The a_k are
    >= 0 and sum to 1, so the tail is summed without cancellation and ``1 - sum a_k`` bounds the
    truncation error.  Falls back to Imhof's (1961) inversion integral when the eigenvalues are
    so spread that the series would need more than 5000 terms.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    lam = lam[lam > 1e-12 * lam.max()] if lam.size and lam.max() > 0 else lam[:0]
    if lam.size == 0:
        return 0.0 if x >= 0 else 1.0
    if x <= 0:
        return 1.0
    beta = lam.min()
    n = lam.size
    q = 1.0 - beta / lam
    log_a0 = 0.5 * np.log(beta / lam).sum()
    a0 = math.exp(log_a0)
    terms, total, max_terms = [a0], a0, 5000
    powers = np.ones_like(q)
    h: list[float] = []  # h[j - 1] = h_j
    while 1.0 - total > 1e-13 and len(terms) < max_terms:
        k = len(terms)
        powers = powers * q
        h.append(float(powers.sum()))
        a_k = float(np.dot(np.asarray(h[::-1]), np.asarray(terms))) / (2 * k)
        terms.append(a_k)
        total += a_k
    if 1.0 - total <= 1e-10:
        a = np.asarray(terms)
        dof = n + 2 * np.arange(a.size)
        return float(min(1.0, np.dot(a, stats.chi2.sf(x / beta, dof))))
    return _imhof_tail(lam, x)


def _imhof_tail(lam: np.ndarray, x: float) -> float:
    """Imhof (1961), Biometrika 48: ``P(Q > x) = 1/2 + (1/pi) int_0^inf sin(theta(u)) / (u rho(u)) du``,
    ``theta(u) = (1/2) sum arctan(lambda_i u) - x u / 2``, ``rho(u) = prod (1 + lambda_i^2 u^2)^(1/4)``."""
    scale = lam.max()
    lam, x = lam / scale, x / scale

    def integrand(u: float) -> float:
        theta = 0.5 * np.arctan(lam * u).sum() - 0.5 * x * u
        rho = np.exp(0.25 * np.log1p((lam * u) ** 2).sum())
        return math.sin(theta) / (u * rho)

    with warnings.catch_warnings():  # slow oscillatory decay: quad warns but the value is accurate to ~1e-6
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        val, _ = integrate.quad(integrand, 0.0, np.inf, limit=500)
    return float(min(1.0, max(0.0, 0.5 + val / math.pi)))


def clt_failure_probability(eigenvalues: np.ndarray, batch_size: int, eps: float) -> float:
    """CLT approximation of ``P(||g_b - g|| > eps)``: ``g_b - g ~ N(0, Sigma / b)``."""
    return gaussian_quadratic_tail(np.asarray(eigenvalues) / batch_size, eps**2)


def clt_batch_size(eigenvalues: np.ndarray, eps: float, delta: float) -> int:
    """Smallest b with CLT failure probability <= delta: ``b = ceil(q_{1-delta} / eps^2)`` where
    ``q_{1-delta}`` is the upper-delta quantile of ``sum lambda_i Z_i^2``."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    lam = lam[lam > 0]
    if lam.size == 0:
        return 1
    hi = lam.sum() / delta  # Markov: P(Q > tr/delta) <= delta, so the quantile lies below
    q = optimize.brentq(lambda y: gaussian_quadratic_tail(lam, y) - delta, 0.0, hi, xtol=1e-10 * hi)
    return max(1, math.ceil(q / eps**2 - 1e-12))


# ----------------------------------------------------------------------------- measurement
class MinibatchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[int] = Field(
        [1, 2, 4, 8, 16, 32, 64, 128, 256], min_length=1,
        description="mini-batch sizes b to measure (log-spaced shows the 1/b law)")
    population: int = Field(
        2048, ge=2, description="N examples in the fixed population (a finite-sum landscape's dataset, or N draws); "
                                "large enough that N >> b, small enough to hold N gradients")
    samples: int = Field(2000, ge=10, description="mini-batches drawn per batch size: the CI half-width shrinks as 1/sqrt(samples)")
    eps_relative: float = Field(
        0.5, gt=0, description="accuracy eps as a multiple of sqrt(tr Sigma), the RMS deviation of one example's gradient")
    eps: float | None = Field(None, gt=0, description="absolute accuracy eps (overrides eps_relative when set)")
    delta: float = Field(0.1, gt=0, lt=1, description="allowed failure probability (P(||g_b - g|| > eps) <= delta)")
    point: Point = Field("initial", description=POINT_DESCRIPTION)


def measure_concentration(landscape, params: MinibatchParams, generator: torch.Generator, confidence: float = 0.95) -> AnalysisResult:
    """Run the measurement on replicate 0 of ``landscape`` (see the module docstring)."""
    where = f"analysis {KIND!r}"
    require_separable(landscape, where)
    theta = evaluation_point(landscape, params.point, where)
    pop, N = example_population(landscape, params.population, generator)
    G = per_example_grads(landscape, theta, pop)[0].to(torch.float64)  # [N, D]
    g = G.mean(0)
    centred = G - g
    cov = centred.T @ centred / N
    eig = np.clip(np.linalg.eigvalsh(cov.cpu().numpy()), 0.0, None)
    trace = float(eig.sum())
    if trace <= 0:
        raise ParameterError("landscape", landscape.kind, "a landscape whose per-example gradients vary (noise_std > 0 or a dataset)", where=where)
    eps = params.eps if params.eps is not None else params.eps_relative * math.sqrt(trace)
    b_cheb = chebyshev_batch_size(trace, eps, params.delta)
    b_clt = clt_batch_size(eig, eps, params.delta)

    def draw(b: int, replace: bool) -> np.ndarray:
        """Squared errors ``||g_b - g||^2`` of ``samples`` mini-batches of size b."""
        out = []
        chunk = max(1, int(4e6 // max(1, b * G.shape[1])))  # bounded memory for big b
        for start in range(0, params.samples, chunk):
            m = min(chunk, params.samples - start)
            if replace:
                idx = torch.randint(N, (m, b), generator=generator, device=G.device)
            else:
                idx = torch.rand(m, N, generator=generator, device=G.device).argsort(dim=1)[:, :b]
            out.append(((G[idx].mean(1) - g) ** 2).sum(1))
        return torch.cat(out).cpu().numpy()

    rows, fail_rows = [], []
    within = 0
    empirical_b = None
    for b in sorted(set(params.batch_sizes)):
        e2 = draw(b, True)
        m, lo, hi = mean_ci(e2, confidence)
        pred = minibatch_gradient_variance(trace, b)
        within += lo <= pred <= hi
        rows.append(dict(quantity="E||g_b - g||^2", series="with replacement", x_name="batch size", x=b, measured=m,
                         measured_low=lo, measured_high=hi, predicted=pred, log_x=True, log_y=True))
        k = int((e2 > eps**2).sum())
        p, plo, phi = proportion_ci(k, len(e2), confidence)
        if empirical_b is None and p <= params.delta:
            empirical_b = b
        fail_rows.append(dict(quantity="P(||g_b - g|| > eps)", series="with replacement", x_name="batch size", x=b,
                              measured=p, measured_low=plo, measured_high=phi,
                              predicted=clt_failure_probability(eig, b, eps), predicted_low=0.0,
                              predicted_high=chebyshev_failure_bound(trace, b, eps), log_x=True))
        if b < N:  # b = N draws the whole population: the error is exactly 0 (nothing to plot on a log axis)
            e2w = draw(b, False)
            m, lo, hi = mean_ci(e2w, confidence)
            pred = minibatch_gradient_variance(trace, b, N)
            within += lo <= pred <= hi
            rows.append(dict(quantity="E||g_b - g||^2", series="without replacement", x_name="batch size", x=b, measured=m,
                             measured_low=lo, measured_high=hi, predicted=pred, log_x=True, log_y=True))
    n_var = len(rows)
    for name, b in (("Chebyshev batch size", b_cheb), ("CLT batch size", b_clt)):
        e2 = draw(b, True)
        p, plo, phi = proportion_ci(int((e2 > eps**2).sum()), len(e2), confidence)
        fail_rows.append(dict(quantity="P(||g_b - g|| > eps) at the recommended b", series=name, x_name="batch size", x=b,
                              measured=p, measured_low=plo, measured_high=phi,
                              predicted=clt_failure_probability(eig, b, eps),
                              predicted_low=0.0, predicted_high=params.delta, log_x=True))
    comparison = comparison_rows(rows + fail_rows)
    cheb_row, clt_row = fail_rows[-2], fail_rows[-1]
    summary = {
        "trace_cov": trace, "squared_norm_mean_grad": float(g @ g), "eps": eps, "delta": params.delta,
        "population": N, "chebyshev_b": b_cheb, "clt_b": b_clt,
        "empirical_b_in_grid": empirical_b if empirical_b is not None else float("nan"),
        "failure_at_chebyshev_b": cheb_row["measured"], "failure_at_clt_b": clt_row["measured"],
    }
    notes = [
        f"tr(Sigma) = {fmt(trace)} over N = {N} examples at the {params.point} point; eps = {fmt(eps)}, delta = {params.delta}.",
        f"Chebyshev asks for b >= {b_cheb}; the CLT asks for b >= {b_clt} ({fmt(b_cheb / b_clt)}x fewer examples); "
        f"measured failure rate {fmt(cheb_row['measured'])} at b = {b_cheb} and {fmt(clt_row['measured'])} at b = {b_clt}.",
        f"the measured E||g_b - g||^2 contains the exact prediction in its {confidence:.0%} CI at {within} of {n_var} (batch size, sampling) pairs.",
    ]
    if empirical_b is not None:
        notes.append(f"smallest batch size of the grid whose measured failure rate is <= delta: {empirical_b}.")
    tables = {
        "summary": pd.DataFrame([summary]),
        "gradient_covariance_spectrum": pd.DataFrame([{"index": i, "eigenvalue": float(v)} for i, v in enumerate(eig[::-1])]),
    }
    return AnalysisResult(comparison, tables=tables, notes=notes, confidence=confidence,
                          title="How big must a batch be? Concentration of the mini-batch gradient")


@ANALYSES.register(KIND, MinibatchParams,
                   "mini-batch gradient error vs b: variance against tr(Sigma)/b (with/without replacement), "
                   "failure rate against Chebyshev and CLT", family="gradient")
def minibatch_concentration(params: MinibatchParams, *, context: AnalysisContext) -> AnalysisResult:
    landscape = analysis_landscape(context, f"analysis {KIND!r}")
    with single_thread():  # small tensors: threads only add synchronisation
        return measure_concentration(landscape, params, analysis_generator(context), confidence=0.95)
