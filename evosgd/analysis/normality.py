"""Is the mini-batch gradient Gaussian?  The CLT for mini-batch means, measured.

For a statistic v of one example (a projection ``u . g_i`` of its gradient, or its loss ``l_i``)
with population mean mu, standard deviation sigma, skewness gamma, excess kurtosis kappa and
third absolute central moment rho, the mean ``v_b`` of b iid draws has, exactly,

* skewness ``gamma / sqrt(b)`` and excess kurtosis ``kappa / b`` (cumulants of a sum add);

and its standardized law ``F_b`` of ``z = (v_b - mu) sqrt(b) / sigma`` is close to the normal:

* Berry-Esseen: ``sup_z |F_b(z) - Phi(z)| <= C rho / (sigma^3 sqrt(b))`` with C = 0.4748
  (Shevtsova 2011, 'On the absolute constants in the Berry-Esseen type inequalities');
* one-term Edgeworth expansion (Hall, *The Bootstrap and Edgeworth Expansion*, 1992, eq. 2.17):
  ``F_b(z) ~ Phi(z) - gamma (z^2 - 1) phi(z) / (6 sqrt(b))``, whose largest deviation is at z = 0:
  ``|gamma| phi(0) / (6 sqrt(b))`` — the predicted Kolmogorov distance.

CLT tail of the mini-batch loss: ``P(|L_b - L| > eps) ~ 2 (1 - Phi(eps sqrt(b) / sigma_L))``, within
``2 C rho / (sigma^3 sqrt(b))`` by Berry-Esseen (the band).

The Kolmogorov distance of ``samples`` draws is measured by the Kolmogorov-Smirnov statistic D;
the Dvoretzky-Kiefer-Wolfowitz inequality (Massart 1990) puts the true distance within
``D +- sqrt(ln(2 / alpha) / (2 n))`` with probability >= 1 - alpha (the CI).  Goodness-of-fit
p-values (Shapiro-Wilk, KS with the known mean and sd, Anderson-Darling with estimated mean and sd), and
Q-Q data, go to tables.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from evosgd.analysis.grad_common import (
    POINT_DESCRIPTION,
    Point,
    analysis_generator,
    analysis_landscape,
    bootstrap_ci,
    evaluation_point,
    example_population,
    fmt,
    proportion_ci,
    require_separable,
    single_thread,
)
from evosgd.analysis.verdict import judge_coverage, judge_test, verdict_table
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES
from evosgd.landscapes.base import per_example_grads

KIND = "minibatch_normality"

#: Shevtsova (2011): the Berry-Esseen constant for iid summands
BERRY_ESSEEN_C = 0.4748


# ----------------------------------------------------------------------------- theory
def population_moments(v: np.ndarray) -> dict[str, float]:
    """mean, sd, skewness gamma, excess kurtosis kappa, rho = E|v - mu|^3 of a finite population
    (divisor N: these are the moments of one iid draw from it)."""
    v = np.asarray(v, dtype=np.float64)
    mu = v.mean()
    c = v - mu
    sd = math.sqrt(float((c**2).mean()))
    if sd == 0:
        return dict(mean=float(mu), sd=0.0, skewness=0.0, excess_kurtosis=0.0, rho=0.0)
    return dict(mean=float(mu), sd=sd, skewness=float((c**3).mean() / sd**3),
                excess_kurtosis=float((c**4).mean() / sd**4 - 3.0), rho=float(np.abs(c**3).mean()))


def mean_skewness(skewness: float, b: int) -> float:
    """Skewness of the mean of b iid draws: ``gamma / sqrt(b)`` (third cumulant of a sum adds)."""
    return skewness / math.sqrt(b)


def mean_excess_kurtosis(excess_kurtosis: float, b: int) -> float:
    """Excess kurtosis of the mean of b iid draws: ``kappa / b`` (fourth cumulant adds)."""
    return excess_kurtosis / b


def berry_esseen_bound(rho: float, sd: float, b: int, constant: float = BERRY_ESSEEN_C) -> float:
    """``sup_z |F_b(z) - Phi(z)| <= C rho / (sd^3 sqrt(b))`` (capped at 1)."""
    return min(1.0, constant * rho / (sd**3 * math.sqrt(b)))


def edgeworth_kolmogorov_distance(skewness: float, b: int) -> float:
    """One-term Edgeworth prediction of ``sup_z |F_b(z) - Phi(z)|``: ``|gamma| phi(0) / (6 sqrt(b))``."""
    return abs(skewness) / (6.0 * math.sqrt(2.0 * math.pi * b))


def clt_tail_probability(eps: float, sd: float, b: int) -> float:
    """CLT: ``P(|v_b - mu| > eps) ~ 2 (1 - Phi(eps sqrt(b) / sd))``."""
    return float(2.0 * stats.norm.sf(eps * math.sqrt(b) / sd))


def dkw_halfwidth(n: int, confidence: float = 0.95) -> float:
    """Dvoretzky-Kiefer-Wolfowitz-Massart: ``sup |F_n - F| <= sqrt(ln(2/alpha) / (2n))`` w.p. 1 - alpha."""
    return math.sqrt(math.log(2.0 / (1.0 - confidence)) / (2.0 * n))


# ----------------------------------------------------------------------------- measurement
class NormalityParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[int] = Field([1, 2, 4, 8, 16, 32, 64, 128], min_length=1, description="mini-batch sizes b to measure")
    population: int = Field(4096, ge=8, description="N examples in the fixed population mini-batches are drawn from (with replacement)")
    samples: int = Field(2000, ge=20, le=5000, description="mini-batches per batch size (Shapiro-Wilk accepts at most 5000)")
    projection: Literal["mean_gradient", "coordinate", "random"] = Field(
        "mean_gradient", description="gradient statistic: its projection on the full gradient's direction, "
                                     "its first coordinate, or a random unit direction")
    eps_relative: float = Field(0.2, gt=0, description="loss tail threshold eps as a multiple of the per-example loss sd")
    qq_points: int = Field(41, ge=5, le=999, description="probability levels of the Q-Q table")
    bootstrap: int = Field(500, ge=50, description="bootstrap resamples for the skewness / kurtosis CIs")
    point: Point = Field("initial", description=POINT_DESCRIPTION)


def _skew(a: np.ndarray) -> np.ndarray:
    c = a - a.mean(-1, keepdims=True)
    return (c**3).mean(-1) / (c**2).mean(-1) ** 1.5


def _kurt(a: np.ndarray) -> np.ndarray:
    c = a - a.mean(-1, keepdims=True)
    return (c**4).mean(-1) / (c**2).mean(-1) ** 2 - 3.0


def measure_normality(landscape, params: NormalityParams, generator: torch.Generator, confidence: float = 0.95) -> AnalysisResult:
    where = f"analysis {KIND!r}"
    require_separable(landscape, where)
    theta = evaluation_point(landscape, params.point, where)
    pop, N = example_population(landscape, params.population, generator)
    G = per_example_grads(landscape, theta, pop)[0].to(torch.float64)  # [N, D]
    losses = landscape.example_losses(theta, pop)[0].detach().to(torch.float64)  # [N]
    if params.projection == "coordinate":
        u = torch.zeros(G.shape[1], dtype=torch.float64, device=G.device)
        u[0] = 1.0
    elif params.projection == "random":
        u = torch.randn(G.shape[1], generator=generator, device=G.device, dtype=landscape.dtype).to(torch.float64)
        u = u / u.norm()
    else:
        g = G.mean(0)
        u = g / g.norm() if g.norm() > 0 else torch.ones_like(g) / math.sqrt(g.numel())
    variables = {"gradient projection": (G @ u).cpu().numpy(), "loss": losses.cpu().numpy()}
    moments = {k: population_moments(v) for k, v in variables.items()}
    for k, m in moments.items():
        if m["sd"] == 0:
            raise ParameterError("landscape", landscape.kind, f"examples whose {k} varies (noise_std > 0 or a dataset)", where=where)

    rows, gof, qq = [], [], []
    probs = np.linspace(0.0, 1.0, params.qq_points + 2)[1:-1]
    half = dkw_halfwidth(params.samples, confidence)
    eps = params.eps_relative * moments["loss"]["sd"]
    tail_inside = 0
    for b in sorted(set(params.batch_sizes)):
        idx = torch.randint(N, (params.samples, b), generator=generator, device=G.device).cpu().numpy()
        for name, v in variables.items():
            m = moments[name]
            means = v[idx].mean(1)
            z = (means - m["mean"]) * math.sqrt(b) / m["sd"]
            ks = stats.kstest(z, "norm")
            D = float(ks.statistic)
            rows.append(dict(quantity="Kolmogorov distance to the normal", series=name, x_name="batch size", x=b,
                             measured=D, measured_low=max(0.0, D - half), measured_high=D + half,
                             predicted=edgeworth_kolmogorov_distance(m["skewness"], b), predicted_low=0.0,
                             predicted_high=berry_esseen_bound(m["rho"], m["sd"], b), log_x=True, log_y=True))
            seed = int(b * 7919 + len(rows))
            s, slo, shi = bootstrap_ci(z, _skew, confidence=confidence, resamples=params.bootstrap, seed=seed)
            rows.append(dict(quantity="skewness of the mini-batch mean", series=name, x_name="batch size", x=b,
                             measured=s, measured_low=slo, measured_high=shi, predicted=mean_skewness(m["skewness"], b), log_x=True))
            k, klo, khi = bootstrap_ci(z, _kurt, confidence=confidence, resamples=params.bootstrap, seed=seed + 1)
            rows.append(dict(quantity="excess kurtosis of the mini-batch mean", series=name, x_name="batch size", x=b,
                             measured=k, measured_low=klo, measured_high=khi,
                             predicted=mean_excess_kurtosis(m["excess_kurtosis"], b), log_x=True))
            ad = stats.anderson(z, "norm", method="interpolate")
            gof.append(dict(variable=name, batch_size=b, ks_statistic=D, ks_pvalue=float(ks.pvalue),
                            shapiro_pvalue=float(stats.shapiro(z).pvalue), anderson_darling=float(ad.statistic),
                            anderson_darling_pvalue=float(ad.pvalue)))
            qq.extend(dict(variable=name, batch_size=b, probability=float(p), normal_quantile=float(nq), sample_quantile=float(sq))
                      for p, nq, sq in zip(probs, stats.norm.ppf(probs), np.quantile(z, probs)))
            if name == "loss":
                hits = int((np.abs(means - m["mean"]) > eps).sum())
                p, plo, phi = proportion_ci(hits, params.samples, confidence)
                pred = clt_tail_probability(eps, m["sd"], b)
                band = 2.0 * berry_esseen_bound(m["rho"], m["sd"], b)
                tail_inside += plo <= pred <= phi
                rows.append(dict(quantity="P(|L_b - L| > eps)", series="loss", x_name="batch size", x=b, measured=p,
                                 measured_low=plo, measured_high=phi, predicted=pred,
                                 predicted_low=max(0.0, pred - band), predicted_high=min(1.0, pred + band), log_x=True))
    gof_df = pd.DataFrame(gof)
    notes = [
        f"per-example gradient projection: skewness {fmt(moments['gradient projection']['skewness'])}, "
        f"excess kurtosis {fmt(moments['gradient projection']['excess_kurtosis'])}; per-example loss: skewness "
        f"{fmt(moments['loss']['skewness'])}, excess kurtosis {fmt(moments['loss']['excess_kurtosis'])} (population of {N}).",
        f"the sampling noise floor of the Kolmogorov distance at {params.samples} mini-batches is {fmt(half)} (DKW, {confidence:.0%}).",
        f"CLT tail P(|L_b - L| > {fmt(eps)}): prediction inside the measured {confidence:.0%} CI at {tail_inside} of {len(set(params.batch_sizes))} batch sizes.",
    ]
    for name in variables:
        sub = gof_df[gof_df.variable == name]
        rejected = sub[sub.shapiro_pvalue < 0.05].batch_size.tolist()
        notes.append(f"{name}: Shapiro-Wilk rejects normality at 5% for b in {rejected}" if rejected
                     else f"{name}: Shapiro-Wilk rejects normality at 5% at none of the batch sizes")
    tables = {"goodness_of_fit": gof_df, "qq": pd.DataFrame(qq), "verdicts": verdict_table(_verdicts(comparison_rows(rows), gof_df, confidence)),
              "population_moments": pd.DataFrame([dict(variable=k, **v) for k, v in moments.items()])}
    return AnalysisResult(comparison_rows(rows), tables=tables, notes=notes, confidence=confidence,
                          title="Is the mini-batch gradient Gaussian? The CLT, measured")


def _verdicts(comp: pd.DataFrame, gof: pd.DataFrame, confidence: float) -> list:
    """Per variable: the Edgeworth Kolmogorov distance, gamma/sqrt(b) and kappa/b (coverage over batch sizes),
    normality at the largest batch (Shapiro-Wilk); and the CLT tail of the loss (coverage)."""
    out = []
    for name in gof.variable.unique():
        for q, claim in (("Kolmogorov distance to the normal", "Kolmogorov distance = Edgeworth |gamma| phi(0) / (6 sqrt b)"),
                         ("skewness of the mini-batch mean", "skewness = gamma / sqrt(b)"),
                         ("excess kurtosis of the mini-batch mean", "excess kurtosis = kappa / b")):
            g = comp[(comp.quantity == q) & (comp.series == name)]
            out.append(judge_coverage(f"{name}: {claim}", g.measured_low, g.measured_high, g.predicted, measured=g.measured,
                                      confidence=confidence, what="batch sizes"))
        sub = gof[gof.variable == name].sort_values("batch_size")
        last = sub.iloc[-1]
        out.append(judge_test(f"{name}: the mini-batch mean is Gaussian at the largest batch b = {int(last.batch_size)} (CLT)",
                              float(last.shapiro_pvalue), test="Shapiro-Wilk"))
    tail = comp[comp.quantity == "P(|L_b - L| > eps)"]
    out.append(judge_coverage("the CLT tail 2(1 - Phi(eps sqrt(b) / sigma)) gives P(|L_b - L| > eps)", tail.measured_low,
                              tail.measured_high, tail.predicted, measured=tail.measured, confidence=confidence,
                              what="batch sizes"))
    return out


@ANALYSES.register(KIND, NormalityParams,
                   "normality of mini-batch gradient and loss vs b: Kolmogorov distance against Berry-Esseen/Edgeworth, "
                   "skewness/kurtosis against gamma/sqrt(b), kappa/b, CLT loss tail", family="gradient")
def minibatch_normality(params: NormalityParams, *, context: AnalysisContext) -> AnalysisResult:
    landscape = analysis_landscape(context, f"analysis {KIND!r}")
    with single_thread():  # small tensors: threads only add synchronisation
        return measure_normality(landscape, params, analysis_generator(context), confidence=0.95)
