"""The Fisher-Muller advantage of recombination: how long a population takes to bring L beneficial
mutations together, with and without recombination, against the theory.

Model: haploid Wright-Fisher population of N, L loci, allele 1 beneficial at each (fitness
``(1 + s)^k`` for k beneficial alleles, multiplicative), one-way mutation 0 -> 1 at rate U per locus per
generation; a generation is selection, then (with probability ``recombination``) free recombination of two
random parents (each locus from either parent with probability 1/2), then mutation, then multinomial
sampling of N.  The state is the vector of the 2^L genotype frequencies, so the simulation is exact and
vectorized over replicates.  Measured: the first generation at which every beneficial allele is in the
majority (frequency > 1/2).

Theory (Fisher 1930, Muller 1932; Crow & Kimura 1965, Am. Nat. 99:439; Felsenstein 1974, Genetics 78:737).
With ``s_e = ln(1 + s)``, Kimura's fixation probability of one new mutant ``pi = (1 - e^{-2 s_e}) /
(1 - e^{-2 N s_e})`` and the logistic sweep from the established frequency ``x0 = 1/(N pi)``:
``t_half = ln((1 - x0)/x0) / s_e`` (to 1/2) and ``t_fix = ln((1 - x0)(N - 1)/x0) / s_e`` (to 1 - 1/N).

* **with free recombination** the loci evolve independently (no linkage): each waits ``W_i ~ Exp(N U pi)``
  for a mutation that establishes and then sweeps, so
  ``E T_sex = E max_i W_i + t_half = H_L / (N U pi) + t_half``   (H_L the harmonic number);
* **asexual, successive mutations** (``N U L pi t_fix << 1``: a mutation arises only after the previous one
  fixed, on its background -- Muller's ratchet-free "periodic selection"): the k-th wait is for one of the
  L - k + 1 remaining loci, so ``E T_asex = H_L / (N U pi) + (L - 1) t_fix + t_half``.

The advantage of recombination is then ``(L - 1) t_fix``; it matters once ``N U pi t_fix`` is not small,
where the successive-mutations formula stops holding for the asexual population (clonal interference:
mutations arising during a sweep on other backgrounds are lost, or ride along -- Gerrish & Lenski 1998).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad_common import fmt, mean_ci
from evosgd.analysis.verdict import judge_coverage, judge_direction, verdict_table
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES
from evosgd.core.seeding import derive_seed

KIND = "fisher_muller"


# ----------------------------------------------------------------------------- theory
def fixation_probability(s: float, n: int) -> float:
    """Kimura's haploid Wright-Fisher ``(1 - e^{-2 s_e}) / (1 - e^{-2 N s_e})``, ``s_e = ln(1 + s)``."""
    se = math.log1p(s)
    return -math.expm1(-2 * se) / -math.expm1(-2 * n * se)


def sweep_times(s: float, n: int) -> tuple[float, float]:
    """``(t_half, t_fix)`` of a logistic sweep from ``x0 = 1/(N pi)``."""
    se = math.log1p(s)
    x0 = 1.0 / (n * fixation_probability(s, n))
    return math.log((1 - x0) / x0) / se, math.log((1 - x0) * (n - 1) / x0) / se


def harmonic(n: int) -> float:
    return sum(1.0 / k for k in range(1, n + 1))


def time_with_recombination(n: int, u: float, s: float, loci: int) -> float:
    """``H_L / (N U pi) + t_half``: independent loci."""
    return harmonic(loci) / (n * u * fixation_probability(s, n)) + sweep_times(s, n)[0]


def time_without_recombination(n: int, u: float, s: float, loci: int) -> float:
    """``H_L / (N U pi) + (L - 1) t_fix + t_half``: successive mutations (valid for ``N U L pi t_fix << 1``)."""
    th, tf = sweep_times(s, n)
    return harmonic(loci) / (n * u * fixation_probability(s, n)) + (loci - 1) * tf + th


# ----------------------------------------------------------------------------- simulation
def _genotypes(loci: int) -> np.ndarray:
    return np.array(list(itertools.product((0, 1), repeat=loci)), dtype=np.int64)  # [G, L]


def recombination_tensor(loci: int) -> np.ndarray:
    """``T[g, g1, g2] = P(offspring g | parents g1, g2)`` under free recombination."""
    G = _genotypes(loci)
    eq1 = (G[:, None, :] == G[None, :, :]).astype(float)  # [g, g1, L]
    per_locus = 0.5 * (eq1[:, :, None, :] + eq1[:, None, :, :])  # [g, g1, g2, L]
    return per_locus.prod(axis=-1)


def mutation_matrix(loci: int, u: float) -> np.ndarray:
    """``M[g_from, g_to]``: each locus mutates 0 -> 1 with probability u (1 stays 1)."""
    G = _genotypes(loci)
    frm, to = G[:, None, :], G[None, :, :]
    p = np.where(frm == 1, (to == 1).astype(float), np.where(to == 1, u, 1 - u))
    return p.prod(axis=-1)


def time_to_combine(n: int, u: float, s: float, loci: int, recombination: float, replicates: int, max_generations: int,
                    seed: int) -> np.ndarray:
    """Generations until every beneficial allele has frequency > 1/2, per replicate (inf if not by
    ``max_generations``)."""
    rng = np.random.default_rng(seed)
    G = _genotypes(loci)
    w = (1.0 + s) ** G.sum(axis=1)
    M = mutation_matrix(loci, u)
    Rt = recombination_tensor(loci) if recombination > 0 else None
    p = np.zeros((replicates, len(G)))
    p[:, 0] = 1.0
    done = np.full(replicates, math.inf)
    for gen in range(1, max_generations + 1):
        q = p * w
        q /= q.sum(axis=1, keepdims=True)
        if Rt is not None:
            q = (1 - recombination) * q + recombination * np.einsum("gab,ra,rb->rg", Rt, q, q)
        q = q @ M
        p = rng.multinomial(n, np.clip(q, 0, None) / q.sum(axis=1, keepdims=True)) / n
        allele = p @ G  # [R, L] beneficial allele frequencies
        hit = np.isinf(done) & (allele > 0.5).all(axis=1)
        done[hit] = gen
        if np.isfinite(done).all():
            break
    return done


# ----------------------------------------------------------------------------- analysis
class FisherMullerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    population_size: int = Field(1000, ge=10, description="haploid population size N")
    selection: float = Field(0.05, gt=0.0, le=1.0, description="selection coefficient s per beneficial allele (multiplicative)")
    loci: int = Field(3, ge=2, le=5, description="number L of loci with a beneficial allele")
    mutation_rates: list[float] = Field([3e-6, 1e-5, 3e-5, 1e-4], min_length=2, description="mutation rates U per locus per generation")
    recombination: float = Field(1.0, gt=0.0, le=1.0, description="fraction of offspring from free recombination in the sexual population")
    replicates: int = Field(48, ge=3, description="replicate populations per (U, reproduction)")
    max_generations: int = Field(60000, ge=10, description="generations before a population is counted as not done")


def measure_fisher_muller(p: FisherMullerParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    N, s, L = p.population_size, p.selection, p.loci
    pi = fixation_probability(s, N)
    th, tf = sweep_times(s, N)
    rows, table, verdicts = [], [], []
    lows = {"sex": [], "asex": []}
    highs, preds, meas = {"sex": [], "asex": []}, {"sex": [], "asex": []}, {"sex": [], "asex": []}
    for u in sorted(set(p.mutation_rates)):
        t = {}
        for mode, rec in (("sex", p.recombination), ("asex", 0.0)):
            t[mode] = time_to_combine(N, u, s, L, rec, p.replicates, p.max_generations,
                                      derive_seed(seed, KIND, mode, repr(u)))
            if not np.isfinite(t[mode]).all():
                raise ParameterError("max_generations", p.max_generations, f"more generations: {int((~np.isfinite(t[mode])).sum())} "
                                     f"populations did not combine the {L} mutations at U = {u:g} ({mode})",
                                     where=f"analysis {KIND!r}")
            m, lo, hi = mean_ci(t[mode], confidence)
            pred = time_with_recombination(N, u, s, L) if mode == "sex" else time_without_recombination(N, u, s, L)
            series = "with recombination" if mode == "sex" else "asexual"
            rows.append(dict(quantity=f"generations until all {L} beneficial alleles are in the majority", series=series,
                             x_name="N U pi t_fix (mutation supply x sweep time)", x=N * u * pi * tf, measured=m, measured_low=lo,
                             measured_high=hi, predicted=pred, unit="generations", log_x=True, log_y=True))
            lows[mode].append(lo), highs[mode].append(hi), preds[mode].append(pred), meas[mode].append(m)
        d = t["asex"] - t["sex"]  # independent populations: Welch-type interval of the difference of means
        dm = float(d.mean())
        se = math.sqrt(t["asex"].var(ddof=1) / len(t["asex"]) + t["sex"].var(ddof=1) / len(t["sex"]))
        q = 1.959963984540054 if confidence == 0.95 else float(__import__("scipy").stats.norm.ppf(0.5 + confidence / 2))
        rows.append(dict(quantity="advantage of recombination: T_asex - T_sex", series="measured (line: (L - 1) t_fix)",
                         x_name="N U pi t_fix (mutation supply x sweep time)", x=N * u * pi * tf, measured=dm,
                         measured_low=dm - q * se, measured_high=dm + q * se,
                         predicted=(L - 1) * tf, unit="generations", log_x=True))
        verdicts.append(judge_direction(f"U = {u:g} (N U pi t_fix = {fmt(N * u * pi * tf)}): recombination combines the {L} "
                                        "beneficial mutations faster", dm, dm - q * se, dm + q * se, expected="positive",
                                        confidence=confidence, what="T_asex - T_sex", unit="generations"))
        table.append(dict(mutation_rate=u, supply_times_sweep=N * u * pi * tf, time_sex=float(t["sex"].mean()),
                          time_asex=float(t["asex"].mean()), predicted_sex=time_with_recombination(N, u, s, L),
                          predicted_asex=time_without_recombination(N, u, s, L), predicted_advantage=(L - 1) * tf))
    verdicts.insert(0, judge_coverage("with recombination: T = H_L/(N U pi) + t_half (independent loci)", lows["sex"],
                                      highs["sex"], preds["sex"], measured=meas["sex"], confidence=confidence,
                                      what="mutation rates"))
    verdicts.insert(1, judge_coverage("asexual: T = H_L/(N U pi) + (L-1) t_fix + t_half (successive mutations)", lows["asex"],
                                      highs["asex"], preds["asex"], measured=meas["asex"], confidence=confidence,
                                      what="mutation rates"))
    tt = pd.DataFrame(table)
    notes = [f"N = {N}, s = {fmt(s)}, L = {L}; fixation probability pi = {fmt(pi)}, sweep to 1/2 in {fmt(th)} and to fixation "
             f"in {fmt(tf)} generations; {p.replicates} populations per (U, reproduction).",
             "mean generations with / without recombination: " + ", ".join(
                 f"U = {r.mutation_rate:g}: {fmt(r.time_sex)} / {fmt(r.time_asex)} (predicted {fmt(r.predicted_sex)} / "
                 f"{fmt(r.predicted_asex)})" for r in tt.itertuples()) + "."]
    return AnalysisResult(comparison_rows(rows), tables={"times": tt, "verdicts": verdict_table(verdicts)}, notes=notes,
                          confidence=confidence, title="Fisher-Muller: recombination combines beneficial mutations faster")


@ANALYSES.register(KIND, FisherMullerParams,
                   "time for a Wright-Fisher population to combine L beneficial mutations with and without recombination "
                   "(exact genotype-frequency simulation) against H_L/(N U pi) + sweep times; verdicts", family="evolution")
def fisher_muller(params: FisherMullerParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_fisher_muller(params, seed=context.seed, confidence=0.95)
