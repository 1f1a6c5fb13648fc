"""Does mini-batch noise help escape poor local minima?  The escape rate of SGD from a sharp, shallow
basin against its temperature eta sigma^2 / (2b), beside the Arrhenius/Kramers law.

Setting: the ``two_basins`` landscape (``evosgd.landscapes.basins``), tilt noise of variance
``sigma^2`` per example, so SGD with rate eta and batch b is the Euler scheme of the Langevin diffusion

    dx = -V'(x) dt + sqrt(2T) dW,        T = eta sigma^2 / (2 b),    one step = eta units of time

(Mandt, Hoffman & Blei 2017).  Predictions for the rate of escape from the sharp minimum a into the deep
basin (first passage to the deep minimum c), per SGD step = eta / (mean first-passage time):

* **Kramers** (1940; Haenggi, Talkner & Borkovec 1990, Rev. Mod. Phys. 62:251, eq. 4.7, overdamped):
  ``r_K = sqrt(V''(a) |V''(s)|) / (2 pi) exp(-Delta V / T)``, ``Delta V = V(s) - V(a)``: Arrhenius in T,
  asymptotically exact as ``Delta V / T -> inf``;
* **exact first passage** of the 1-D diffusion (Gardiner, *Handbook of Stochastic Methods*, eq. 5.2.158;
  the finite-barrier correction of Kramers):
  ``tau(a -> c) = (1/T) int_a^c dy exp(V(y)/T) int_{-inf}^y dz exp(-V(z)/T)``, by scipy quadrature.

So the noise of small batches (high T) escapes exponentially faster: ``log r`` is linear in ``1/T``
with slope ``-Delta V`` (Arrhenius).

Measurement: R replicates start at the sharp minimum and follow the SGD recursion with the landscape's
closed-form gradient and b fresh tilts per step; the first step at which ``x >= c`` is the escape time.
The rate is ``1 / mean first-passage steps`` (the prediction is exactly that: ``eta / tau``; a censored
rate estimate ``k / exposure`` would be biased, because the first-passage law is not exponential at its
head), with the Student-t interval of the mean; the Arrhenius slope is the weighted least-squares slope
of ``log r`` on ``1/T``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import integrate, stats

from evosgd.analysis.grad_common import fmt, single_thread
from evosgd.analysis.verdict import (
    judge_coverage,
    judge_direction,
    judge_value,
    verdict_table,
)
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES
from evosgd.core.seeding import derive_seed
from evosgd.landscapes.basins import (
    TwoBasinsParams,
    critical_points,
    potential,
    potential_grad,
)

KIND = "escape_rate"


# ----------------------------------------------------------------------------- theory
def sgd_temperature(lr: float, noise_std: float, batch_size: int) -> float:
    """``T = eta sigma^2 / (2 b)``: the Langevin temperature of SGD with isotropic gradient noise."""
    return lr * noise_std**2 / (2.0 * batch_size)


def kramers_rate(barrier: float, well_curvature: float, saddle_curvature: float, temperature: float) -> float:
    """Overdamped Kramers rate ``sqrt(V''(a) |V''(s)|) / (2 pi) exp(-Delta V / T)`` (per unit time)."""
    return math.sqrt(well_curvature * abs(saddle_curvature)) / (2 * math.pi) * math.exp(-barrier / temperature)


def mean_first_passage_time(V, start: float, target: float, temperature: float, left: float) -> float:
    """``(1/T) int_start^target dy e^{V(y)/T} int_left^y dz e^{-V(z)/T}`` (reflecting at ``left``, which
    is ``-inf`` in the limit; pick it where ``V`` is high).  Exponents are taken relative to ``V(start)``
    so that cold temperatures do not overflow."""
    v0 = float(V(start))

    def inner(y: float) -> float:
        return integrate.quad(lambda z: math.exp(-(float(V(z)) - v0) / temperature), left, y, limit=200)[0]

    outer = integrate.quad(lambda y: math.exp((float(V(y)) - v0) / temperature) * inner(y), start, target, limit=200)[0]
    return outer / temperature


def exact_escape_rate(p: TwoBasinsParams, temperature: float) -> float:
    """``1 / tau(sharp minimum -> deep minimum)`` per unit time for the two-basin potential."""
    c = critical_points(p)
    left = p.sharp_center - 10.0 * max(p.sharp_width, 1.0) - (10.0 / math.sqrt(p.confinement) if p.confinement > 0 else 0.0)
    return 1.0 / mean_first_passage_time(lambda x: potential(x, p), c["sharp_min"], c["deep_min"], temperature, left)


# ----------------------------------------------------------------------------- measurement
class EscapeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(0.005, gt=0.0, description="learning rate eta (keep eta V''(a) << 1: the Langevin limit)")
    noise_std: float = Field(19.1, gt=0.0, description="per-example gradient noise sigma (T = eta sigma^2 / (2b))")
    batch_sizes: list[int] = Field([2, 3, 4, 5], min_length=2, description="batch sizes b (each sets a temperature)")
    replicates: int = Field(1000, ge=8, description="independent SGD runs per batch size")
    max_steps: int = Field(100000, ge=10, description="steps before a run is censored (its remaining time from the exponential tail)")
    landscape: TwoBasinsParams = Field(default_factory=TwoBasinsParams, description="the two-basin potential (dim, noise and start are set by the analysis)")


def escape_times(p: EscapeParams, batch_size: int, seed: int) -> np.ndarray:
    """First step at which ``x >= deep minimum`` per replicate (``inf`` if not within ``max_steps``).

    The loop is the SGD recursion ``x <- x - eta (V'(x) - mean of b tilts)`` in numpy with the
    landscape's closed-form ``V'`` (``basins.potential_grad``, which the tests check against the torch
    landscape's ``loss_and_grad``): a 1-D escape needs 10^4-10^5 steps, where a torch call per step
    would dominate."""
    lp = TwoBasinsParams(**(p.landscape.model_dump() | {"dim": 1, "noise_std": p.noise_std, "start": "sharp"}))
    c = critical_points(lp)
    rng = np.random.default_rng(derive_seed(seed, "escape", batch_size))
    x = np.full(p.replicates, c["sharp_min"])
    t_esc = np.full(p.replicates, math.inf)
    sd = p.noise_std / math.sqrt(batch_size)
    alive = np.arange(p.replicates)
    for k in range(1, p.max_steps + 1):
        xa = x[alive]
        xa -= p.lr * (potential_grad(xa, lp) - sd * rng.standard_normal(alive.size))
        x[alive] = xa
        hit = xa >= c["deep_min"]
        if hit.any():
            t_esc[alive[hit]] = k
            alive = alive[~hit]
            if alive.size == 0:
                break
    return t_esc


def mean_passage_time(t: np.ndarray, horizon: int, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Mean first-passage time with its Student-t interval; a run not escaped by the horizon H counts as
    ``H + 1 / r_tail``, with ``r_tail`` the exponential MLE over the second half of the window (escapes after
    H/2 over the time survivors spent there): the tail of a metastable escape is exponential."""
    t = np.asarray(t, dtype=float)
    cens = ~np.isfinite(t)
    if cens.any():
        half = horizon / 2.0
        late = t > half
        exposure = float((np.minimum(t[late], horizon) - half).sum())
        events = int((late & ~cens).sum())
        resid = exposure / events if events > 0 else math.inf
        t = np.where(cens, horizon + resid, t)
    m = float(t.mean())
    if not np.isfinite(m):
        return math.inf, math.nan, math.nan, int(cens.sum())
    se = float(t.std(ddof=1) / math.sqrt(t.size))
    q = float(stats.t.ppf(0.5 + confidence / 2, t.size - 1))
    return m, m - q * se, m + q * se, int(cens.sum())


def measure_escape(p: EscapeParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    c = critical_points(p.landscape)
    if p.lr * c["sharp_curvature"] >= 1.0:
        raise ParameterError("lr", p.lr, f"< 1 / V''(a) = {1 / c['sharp_curvature']:.3g} (the Langevin limit needs eta V'' << 1)",
                             where=f"analysis {KIND!r}")
    rows, table = [], []
    with single_thread():
        for b in sorted(set(p.batch_sizes)):
            T = sgd_temperature(p.lr, p.noise_std, b)
            t = escape_times(p, b, seed + b)
            mfpt, mlo, mhi, cens = mean_passage_time(t, p.max_steps, confidence)
            r, lo, hi = 1.0 / mfpt, (1.0 / mhi if mhi > 0 else math.nan), (1.0 / mlo if mlo > 0 else math.inf)
            r_k = p.lr * kramers_rate(c["barrier"], c["sharp_curvature"], c["saddle_curvature"], T)
            r_x = p.lr * exact_escape_rate(p.landscape, T)
            x = c["barrier"] / T
            for series, pred in (("Kramers (asymptotic)", r_k), ("exact first passage", r_x)):
                rows.append(dict(quantity="escape rate from the sharp basin, per SGD step (1 / mean first-passage steps)",
                                 series=series, x_name="barrier / temperature  Delta V / T", x=x, measured=r,
                                 measured_low=lo, measured_high=hi, predicted=pred, log_y=True))
            table.append(dict(batch_size=b, temperature=T, barrier_over_T=x, censored=cens, replicates=p.replicates,
                              mean_passage_steps=mfpt, rate_measured=r, rate_low=lo, rate_high=hi, rate_kramers=r_k,
                              rate_exact=r_x, median_escape_step=float(np.median(t))))
    t = pd.DataFrame(table)
    verdicts = []
    ok = t[np.isfinite(t.rate_low) & (t.rate_low > 0)]
    if len(ok) >= 2:
        # weighted LS of log r on 1/T (weights 1 / Var log r from each rate's interval), slope = -Delta V
        w = 1.0 / (np.log(ok.rate_high.to_numpy() / ok.rate_low.to_numpy()) / (2 * 1.96)) ** 2
        X = 1.0 / ok.temperature.to_numpy()
        Y = np.log(ok.rate_measured.to_numpy())
        Xm, Ym = np.average(X, weights=w), np.average(Y, weights=w)
        slope = float(np.sum(w * (X - Xm) * (Y - Ym)) / np.sum(w * (X - Xm) ** 2))
        # known-variance weighted least squares: Var(slope) = 1 / sum w (X - Xm)^2, normal quantile
        se = math.sqrt(1.0 / np.sum(w * (X - Xm) ** 2))
        q = float(stats.norm.ppf(0.5 + confidence / 2))
        verdicts.append(judge_direction("smaller batches (higher SGD temperature eta/b) escape the sharp, shallow basin "
                                        "faster", -slope, -slope - q * se, -slope + q * se, expected="positive",
                                        confidence=confidence, what="-d log(rate) / d(1/T)"))
        # the exact-passage curve's own Arrhenius slope over the same temperatures (finite-barrier correction)
        Yx = np.log(ok.rate_exact.to_numpy())
        sx = float(np.sum(w * (X - Xm) * (Yx - np.average(Yx, weights=w))) / np.sum(w * (X - Xm) ** 2))
        verdicts.append(judge_value("Arrhenius: log(rate) falls with 1/T at the slope -Delta V", -slope, -slope - q * se,
                                    -slope + q * se, c["barrier"], corrected=-sx,
                                    correction="the finite-barrier correction (slope of the exact first-passage rate)",
                                    confidence=confidence))
    verdicts.append(judge_coverage("Kramers' rate sqrt(V''(a)|V''(s)|)/(2 pi) exp(-Delta V/T) predicts the escape rate",
                                   t.rate_low, t.rate_high, t.rate_kramers, measured=t.rate_measured, corrected=t.rate_exact,
                                   correction="the exact first-passage integral (finite barrier)", confidence=confidence,
                                   what="temperatures"))
    notes = [f"two-basin potential: barrier Delta V = {fmt(c['barrier'])} from the sharp minimum (V'' = "
             f"{fmt(c['sharp_curvature'])}) over the saddle (V'' = {fmt(c['saddle_curvature'])}) to the deep minimum "
             f"(V'' = {fmt(c['deep_curvature'])}, {fmt(c['sharp_value'] - c['deep_value'])} lower); eta = {fmt(p.lr)}, "
             f"sigma = {fmt(p.noise_std)}, {p.replicates} runs of at most {p.max_steps} steps per batch size.",
             "mean first-passage steps: " + ", ".join(f"b = {int(r.batch_size)}: {fmt(r.mean_passage_steps)} (Delta V / T = "
                                                      f"{fmt(r.barrier_over_T)}, {int(r.censored)} censored)" for r in t.itertuples()) + "."]
    return AnalysisResult(comparison_rows(rows), tables={"escape": t, "verdicts": verdict_table(verdicts)}, notes=notes,
                          confidence=confidence, title="Escape from a sharp minimum: SGD temperature against Kramers")


@ANALYSES.register(KIND, EscapeParams,
                   "escape rate of SGD from the sharp basin of the two_basins landscape against its temperature eta sigma^2/(2b): "
                   "Kramers' law and the exact first-passage time, Arrhenius slope, verdicts", family="gradient")
def escape_rate(params: EscapeParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_escape(params, seed=context.seed, confidence=0.95)
