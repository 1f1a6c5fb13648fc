"""The Moran process and Wright-Fisher side by side: fixation probability and fixation time of a
new mutant against N s, on the same fitness (relative fitness ``1 + s`` of the mutant allele).

* **Moran** (one birth-death event at a time, :mod:`evosgd.evolution.moran`): the exact fixation
  probability ``(1 - 1/r) / (1 - 1/r^N)``, r = 1 + s (Moran 1958), and the exact mean time to
  fixation given fixation from the birth-death chain (events / N = generations).
* **Wright-Fisher** (the engine's multinomial generation): Kimura's diffusion
  ``(1 - e^{-2s}) / (1 - e^{-2Ns})`` (Kimura 1962, haploid), beside the exact finite-N value from
  the (N+1)-state Markov chain, and the exact conditional fixation time from the same chain.

Both models are simulated with the product's own engines (``moran_event`` and
``wright_fisher_generation``) over thousands of replicate populations.  The confidence interval
of a fixation probability is the exact (Clopper-Pearson) binomial interval of
``scipy.stats.binomtest(k, n).proportion_ci``; a point's verdict is "supported" when the prediction
lies inside it.  The overall verdict counts the misses: at confidence c each of m true
predictions misses with probability 1 - c, so the prediction is "supported" when the number of
misses does not exceed the 99% quantile of Binomial(m, 1 - c) (more misses than chance allows:
"not supported").  Times: Student-t interval of the mean over the fixed replicates, same rule.

The comparison shows the textbook difference: a Moran generation has twice the drift of a
Wright-Fisher generation (``Var dp = 2 p q / N``), so at equal N s the Moran fixation probability
is lower, close to Kimura's with N/2 copies at the same initial frequency 1/N,
``(1 - e^{-s}) / (1 - e^{-Ns})`` (the column ``kimura_half_n`` of the table).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from evosgd.analysis.evo_common import comparison_table, fmt, generator_for, mean_ci
from evosgd.analysis.popgen import kimura_fixation_probability, simulate_fixation, wright_fisher_chain
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES
from evosgd.evolution.moran import moran_chain, moran_fixation_probability, simulate_moran_fixation

KIND = "moran_vs_wright_fisher"
WHERE = f"analysis {KIND!r}"
FIX = "fixation probability of a new mutant"
TIME = "fixation time given fixation"


class MoranFixationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    population_sizes: list[int] = Field([20, 50], min_length=1, description="population sizes N (haploid individuals, both models)")
    scaled_selection: list[float] = Field(
        [-1.0, 0.0, 1.0, 2.0, 4.0], min_length=1,
        description="selection strengths N s (s = scaled / N; the mutant's relative fitness is 1 + s, > 0 required)")
    replicates: int = Field(4000, ge=20, description="replicate populations per (model, N, s); the CI width is ~ sqrt(u (1-u) / replicates)")
    max_generations_factor: float = Field(
        30.0, gt=0, description="runs stop after this many times N generations (N events each for Moran); the conditional "
        "fixation time is ~N generations for Moran and ~2N for Wright-Fisher")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")


def binomial_ci(k: int, n: int, confidence: float) -> tuple[float, float, float]:
    """(k/n, low, high): the exact Clopper-Pearson interval of ``scipy.stats.binomtest``."""
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return k / n, float(ci.low), float(ci.high)


def misses_allowed(points: int, confidence: float, level: float = 0.99) -> int:
    """The most intervals (of ``points`` independent ones at ``confidence``) that may miss a true
    value before chance is an unlikely explanation: the ``level`` quantile of Binomial(m, 1 - c)."""
    return int(stats.binom.ppf(level, points, 1.0 - confidence))


def _check(p: MoranFixationParams) -> None:
    if any(n < 2 or n > 1000 for n in p.population_sizes):
        raise ParameterError("population_sizes", p.population_sizes, "integers in [2, 1000] (the exact chains are O(N^3))", where=WHERE)
    for n in p.population_sizes:
        if any(x / n <= -1 for x in p.scaled_selection):
            raise ParameterError("scaled_selection", p.scaled_selection, f"values N s > -N (relative fitness 1 + s > 0; N = {n})", where=WHERE)


def _verdict(d: pd.DataFrame, conf: float, reference: str = "predicted") -> tuple[int, int, str]:
    inside = (d["measured_low"] <= d[reference]) & (d[reference] <= d["measured_high"])
    m, miss = len(d), int((~inside).sum())
    return m - miss, m, "supported" if miss <= misses_allowed(m, conf) else "not supported"


@ANALYSES.register(KIND, MoranFixationParams,
                   "Moran process against Wright-Fisher: fixation probability and conditional fixation time of a new mutant "
                   "against N s, with the exact Moran formula, Kimura's diffusion and the exact chains, and a computed verdict",
                   family="evolution")
def moran_vs_wright_fisher(params: MoranFixationParams, *, context: AnalysisContext) -> AnalysisResult:
    _check(params)
    conf, R = params.confidence, params.replicates
    rows, table = [], []
    scaled = np.asarray(params.scaled_selection, dtype=float)
    for n in params.population_sizes:
        s = scaled / n
        s_t = torch.as_tensor(s, device=context.device)
        gens = int(math.ceil(params.max_generations_factor * n))
        wf_fixed, wf_time = simulate_fixation(n, s_t, 1, R, generator_for(context, "wright_fisher", n), max_generations=gens)
        mo_fixed, mo_events = simulate_moran_fixation(n, s_t, 1, R, generator_for(context, "moran", n), max_events=gens * n)
        for j, sj in enumerate(s):
            r = 1.0 + float(sj)
            u_wf_exact, t1_wf_exact = wright_fisher_chain(n, float(sj))
            _, _, t1_moran = moran_chain(n, r)
            preds = {
                "Moran": (moran_fixation_probability(r, n), mo_fixed[j].cpu().numpy(), mo_events[j].cpu().numpy() / n,
                          float(t1_moran[1]) / n, float(t1_moran[1]) / n),
                "Wright-Fisher": (float(kimura_fixation_probability(1.0 / n, sj, n)), wf_fixed[j].cpu().numpy(),
                                  wf_time[j].cpu().numpy().astype(float), float(u_wf_exact[1]), float(t1_wf_exact[1])),
            }
            for model, (pred, fixed, time, exact_u, exact_t1) in preds.items():
                k = int(fixed.sum())
                u, lo, hi = binomial_ci(k, R, conf)
                exact = pred if model == "Moran" else exact_u
                common = dict(series=f"{model}, N={n}", x_name="N s", x=float(scaled[j]))
                rows.append(dict(quantity=FIX, measured=u, measured_low=lo, measured_high=hi, predicted=pred, exact_chain=exact,
                                 verdict="supported" if lo <= pred <= hi else "not supported", fixations=k, **common))
                times = time[fixed]
                if len(times) >= 5:
                    m, tlo, thi = mean_ci(times, conf)
                    rows.append(dict(quantity=TIME, measured=m, measured_low=tlo, measured_high=thi, predicted=exact_t1,
                                     exact_chain=exact_t1, unit="generations", fixations=len(times),
                                     verdict="supported" if tlo <= exact_t1 <= thi else "not supported", **common))
                table.append(dict(model=model, N=n, s=float(sj), Ns=float(scaled[j]), replicates=R, fixed=k,
                                  unabsorbed=int((time < 0).sum()), measured=u, predicted=pred, exact_chain=exact,
                                  kimura_half_n=float(kimura_fixation_probability(1.0 / n, sj, n / 2))))
    df = comparison_table(rows)
    notes = []
    for model, what in (("Moran", "the exact Moran formula (1 - 1/r)/(1 - 1/r^N)"), ("Wright-Fisher", "Kimura's diffusion")):
        d = df[(df["quantity"] == FIX) & df["series"].str.startswith(model)]
        ok, m, verdict = _verdict(d, conf)
        text = (f"{model}: the {conf:.0%} binomial CI of the fixation probability contains {what} at {ok} of {m} (N, N s) points "
                f"(chance allows {misses_allowed(m, conf)} misses): {verdict}")
        if model == "Wright-Fisher":  # the diffusion is an approximation: judge the exact chain as well
            ok_e, _, verdict_e = _verdict(d, conf, "exact_chain")
            text += f"; the exact Wright-Fisher chain at {ok_e} of {m}: {verdict_e}"
        notes.append(text + ".")
        t = df[(df["quantity"] == TIME) & df["series"].str.startswith(model)]
        if len(t):
            ok, m, verdict = _verdict(t, conf)
            notes.append(f"{model}: the CI of the mean fixation time (generations) contains the exact chain's value at {ok} of {m} points: {verdict}.")
    tab = pd.DataFrame(table)
    for n in params.population_sizes:
        both = tab[(tab["N"] == n) & (tab["Ns"] > 0)].pivot(index="Ns", columns="model", values="measured")
        if len(both) and {"Moran", "Wright-Fisher"} <= set(both.columns):
            notes.append(f"N={n}: measured Moran / Wright-Fisher fixation probability " + ", ".join(
                f"{fmt(v)} at N s={fmt(x)}" for x, v in (both["Moran"] / both["Wright-Fisher"]).items())
                + " (Moran's doubled drift: below 1 for beneficial mutants).")
    return AnalysisResult(comparison=df, tables={"fixation": tab}, notes=notes, confidence=conf,
                          title="Moran against Wright-Fisher: fixation probability and time of a new mutant against N s")
