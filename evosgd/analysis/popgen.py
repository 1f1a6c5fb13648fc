"""Classic population genetics, reproduced: heterozygosity decay under drift, Kimura's fixation
probability, and the mean time to fixation of a neutral allele.

Convention (stated once, used everywhere here): a **haploid Wright-Fisher population of N gene
copies**, one biallelic locus, non-overlapping generations.  An allele at frequency p with
relative fitness ``1 + s`` is, after selection, at ``p_s = p (1 + s) / (1 + p s)``, and the next
generation's count is ``Binomial(N, p_s)``.  A diploid population of ``N_d`` individuals with
genic (additive) selection is the same model with ``N = 2 N_d`` copies, and the diploid
formulas of the literature follow by that substitution (noted in each docstring).

Theory functions (pure, numpy) are separate from the measurement, which runs the engine's
Wright-Fisher generation (``evosgd.evolution.wright_fisher``, biallelic genotypes) vectorized
over replicate populations and selection strengths; the exact finite-N answer is also computed from
the Wright-Fisher Markov chain, so the diffusion formulas can be judged against an exact
reference as well as against simulation.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from evosgd.analysis.evo_common import (
    comparison_table,
    fmt,
    generator_for,
    mean_ci,
    wilson_ci,
    wright_fisher_generation,
)
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES

# ---------------------------------------------------------------------------------------------
# theory


def expected_heterozygosity(h0: float, n_copies: int, t: np.ndarray | float) -> np.ndarray:
    """``E[H_t] = H_0 (1 - 1/N)^t`` with ``H = 2 p (1 - p)``, for neutral haploid Wright-Fisher
    sampling of N copies (exact: ``E[p'(1-p') | p] = p (1-p) (1 - 1/N)``; Wright 1931, Ewens
    2004 eq. 1.44).  Diploid with ``N_d`` individuals: ``(1 - 1/(2 N_d))^t``."""
    return h0 * (1.0 - 1.0 / n_copies) ** np.asarray(t, dtype=float)


def kimura_fixation_probability(p: np.ndarray | float, s: np.ndarray | float, n_copies: int) -> np.ndarray:
    """Diffusion fixation probability (Kimura 1962, Genetics 47:713), haploid convention:

        u(p) = (1 - exp(-2 N s p)) / (1 - exp(-2 N s)),   u(p) = p when s = 0,

    from drift mean ``M = s p (1-p)`` and variance ``V = p (1-p) / N``.  Kimura's diploid form
    ``(1 - e^{-4 N_e s p}) / (1 - e^{-4 N_e s})`` is this with ``N = 2 N_e`` copies."""
    p = np.asarray(p, dtype=float)
    s = np.asarray(s, dtype=float)
    p, s = np.broadcast_arrays(p, s)
    out = p.copy()
    nz = s != 0
    out[nz] = np.expm1(-2 * n_copies * s[nz] * p[nz]) / np.expm1(-2 * n_copies * s[nz])
    return out


def kimura_ohta_fixation_time(p: np.ndarray | float, n_copies: int) -> np.ndarray:
    """Mean time (generations) to fixation of a neutral allele, conditional on its fixation
    (Kimura & Ohta 1969, Genetics 61:763), haploid convention:

        t_1(p) = -2 N (1 - p) ln(1 - p) / p   ->  2 N  as p -> 0,

    i.e. about 2N generations for a new mutant among N copies.  The diploid form
    ``-4 N_e (1-p) ln(1-p) / p`` (about 4 N_e generations) is this with ``N = 2 N_e``."""
    p = np.asarray(p, dtype=float)
    return -2.0 * n_copies * (1.0 - p) * np.log1p(-p) / p


def kimura_ohta_selected_fixation_time(p: float, s: float, n_copies: int) -> float:
    """Mean time (generations) to fixation conditional on fixation, with selection (Kimura & Ohta
    1969, eq. 17), haploid convention (M = s x(1-x), V = x(1-x)/N, G(x) = exp(-2 N s x)):

        t_1(p) = int_p^1 psi u (1 - u) dx + (1 - u(p)) / u(p) int_0^p psi u^2 dx,
        psi(x) = 2 int_0^1 G / (V(x) G(x)),   u = Kimura's fixation probability.

    Evaluated by adaptive quadrature; reduces to :func:`kimura_ohta_fixation_time` at s = 0 and
    is symmetric in s (Maruyama 1974: a deleterious allele that fixes takes as long as a
    beneficial one)."""
    if s == 0:
        return float(kimura_ohta_fixation_time(p, n_copies))
    from scipy import integrate

    a = 2.0 * n_copies * s
    int_g = -np.expm1(-a) / a  # int_0^1 e^{-a x} dx

    def u(x: float) -> float:
        return float(np.expm1(-a * x) / np.expm1(-a))

    def psi(x: float) -> float:
        return 2.0 * int_g * n_copies * math.exp(a * x) / (x * (1.0 - x))

    first = integrate.quad(lambda x: psi(x) * u(x) * (1.0 - u(x)), p, 1.0, limit=200)[0]
    second = integrate.quad(lambda x: psi(x) * u(x) ** 2, 0.0, p, limit=200)[0]
    up = u(p)
    return first + (1.0 - up) / up * second


def selected_frequency(p: np.ndarray | torch.Tensor, s: np.ndarray | torch.Tensor | float):
    """Frequency after viability selection with relative fitness ``1 + s``: ``p (1+s) / (1 + p s)``."""
    return p * (1 + s) / (1 + p * s)


def wright_fisher_chain(n_copies: int, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact fixation probability ``u[i]`` and mean time to fixation conditional on fixation
    ``t1[i]`` from every initial count ``i = 0..N``, from the Wright-Fisher Markov chain with
    transition ``P[i, j] = Binomial(N, p_s(i/N)).pmf(j)``.

    With ``Q`` the transient block and ``G = (I - Q)^{-1}`` (expected visits), ``u = G r`` where
    ``r[i] = P[i, N]``, and ``E[T 1{fix} | i] = sum_j G[i, j] u[j]`` (each generation spent in j
    counts once and fixation is decided by the future from j), so ``t1 = (G u) / u``."""
    n = int(n_copies)
    i = np.arange(n + 1)
    ps = selected_frequency(i / n, s)
    P = stats.binom.pmf(i[None, :], n, ps[:, None])
    Q = P[1:n, 1:n]
    G = np.linalg.inv(np.eye(n - 1) - Q)
    u_inner = G @ P[1:n, n]
    t1_inner = (G @ u_inner) / np.where(u_inner > 0, u_inner, np.nan)
    u = np.concatenate([[0.0], u_inner, [1.0]])
    t1 = np.concatenate([[np.nan], t1_inner, [0.0]])
    return u, t1


# ---------------------------------------------------------------------------------------------
# measurement


def _allele_population(replicates: int, n_copies: int, count: int, device: torch.device | str) -> torch.Tensor:
    """Boolean genotypes ``[R, N, 1]`` with the first ``count`` individuals carrying allele 1
    (the order of individuals is immaterial in Wright-Fisher sampling)."""
    g = torch.zeros(replicates, n_copies, 1, dtype=torch.bool, device=device)
    g[:, :count] = True
    return g


@torch.no_grad()
def simulate_heterozygosity(
    n_copies: int, p0: float, generations: int, replicates: int, generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Heterozygosity ``H = 2 p (1-p)`` of ``replicates`` neutral populations of N haploid
    individuals at generations ``0..generations`` (``[generations + 1, replicates]``), each
    generation by the engine's :func:`~evosgd.evolution.wright_fisher.wright_fisher_generation`."""
    g = _allele_population(replicates, n_copies, round(p0 * n_copies), device)
    neutral = torch.zeros(replicates, n_copies, dtype=torch.float64, device=device)
    out = torch.empty(generations + 1, replicates, dtype=torch.float64, device=device)
    for t in range(generations + 1):
        p = g.to(torch.float64).mean(dim=(1, 2))
        out[t] = 2 * p * (1 - p)
        if t < generations:
            g = wright_fisher_generation(g, neutral, generator)
    return out


@torch.no_grad()
def simulate_fixation(
    n_copies: int, s: torch.Tensor, initial_count: int, replicates: int, generator: torch.Generator,
    max_generations: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``replicates`` populations of N haploid individuals for each selection coefficient in
    ``s`` ``[S]`` (allele 1 has relative fitness ``1 + s``) until allele 1 is lost or fixed, each
    generation by the engine's ``wright_fisher_generation``.  Absorbed populations are dropped
    from the working set (a new mutant is mostly lost within a few generations, so the work is
    ~ R N log T rather than R N T).  Returns ``fixed [S, R]`` (bool) and ``time [S, R]``
    (generation of absorption; -1 if still segregating after ``max_generations``)."""
    S = s.shape[0]
    device = s.device
    total = S * replicates
    fixed = torch.zeros(total, dtype=torch.bool, device=device)
    time = torch.full((total,), -1, dtype=torch.long, device=device)
    ids = torch.arange(total, device=device)
    log_fitness_1 = torch.log1p(s.to(torch.float64)).repeat_interleave(replicates)  # log(1 + s) of each row
    g = _allele_population(total, n_copies, initial_count, device)
    for t in range(1, max_generations + 1):
        log_w = log_fitness_1[ids].unsqueeze(1) * g[:, :, 0].to(torch.float64)
        g = wright_fisher_generation(g, log_w, generator)
        count = g[:, :, 0].sum(dim=1)
        done = (count == 0) | (count == n_copies)
        if bool(done.any()):
            time[ids[done]] = t
            fixed[ids[done]] = count[done] == n_copies
            keep = ~done
            ids, g = ids[keep], g[keep]
            if ids.numel() == 0:
                break
    return fixed.reshape(S, replicates), time.reshape(S, replicates)


# ---------------------------------------------------------------------------------------------
# the registered analysis


class PopgenParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    population_sizes: list[int] = Field(
        [20, 100], min_length=1, description="numbers N of gene copies (haploid Wright-Fisher); diploid N_d individuals = 2 N_d copies"
    )
    replicates: int = Field(4000, ge=10, description="replicate populations for the heterozygosity decay (CI width ~ 1/sqrt)")
    initial_frequency: float = Field(0.5, gt=0, lt=1, description="allele frequency p_0 at generation 0 for the heterozygosity decay (H_0 = 2 p_0 (1-p_0))")
    horizon: float = Field(
        2.0, gt=0, le=20, description="generations of neutral drift followed for the heterozygosity decay, in units of N (H falls to ~e^-horizon)"
    )
    record_points: int = Field(12, ge=2, description="generations (evenly spaced) reported per population size")
    scaled_selection: list[float] = Field(
        [-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 4.0], min_length=1,
        description="selection strengths as N s (s = scaled / N); 0 is the neutral case u = p",
    )
    initial_count: int = Field(1, ge=1, description="copies of the allele at the start of the fixation runs (1 = a new mutant, p = 1/N)")
    fixation_replicates: int = Field(20000, ge=10, description="replicate populations per (N, s) for the fixation probability and time")
    max_generations_factor: float = Field(
        60.0, gt=0, description="fixation runs stop after this many times N generations (mean absorption time is O(N))"
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")


WHERE = "analysis 'popgen'"


def _check(params: PopgenParams) -> None:
    for n in params.population_sizes:
        if n < 2:
            raise ParameterError("population_sizes", params.population_sizes, "integers >= 2", where=WHERE)
        if params.initial_count >= n:
            raise ParameterError("initial_count", params.initial_count, f"an integer in [1, N-1] for every N (smallest N = {min(params.population_sizes)})", where=WHERE)
        if n > 2000:
            raise ParameterError("population_sizes", params.population_sizes, "integers <= 2000 (the exact Markov chain is O(N^3))", where=WHERE)


def _coverage(df: pd.DataFrame, quantity: str, reference: str = "predicted") -> tuple[int, int]:
    d = df[df["quantity"] == quantity]
    ok = (d["measured_low"] <= d[reference]) & (d[reference] <= d["measured_high"])
    return int(ok.sum()), int(len(d))


@ANALYSES.register(
    "popgen", PopgenParams,
    "Wright-Fisher drift and selection against heterozygosity decay, Kimura's fixation probability and the Kimura-Ohta fixation time",
    family="evolution",
)
def popgen(params: PopgenParams, *, context: AnalysisContext) -> AnalysisResult:
    _check(params)
    conf = params.confidence
    device = context.device
    rows: list[dict] = []

    # 1. heterozygosity decay under neutral drift
    for n in params.population_sizes:
        gen = generator_for(context, "heterozygosity", n)
        p0 = round(params.initial_frequency * n) / n
        h0_n = 2 * p0 * (1 - p0)
        horizon = max(1, int(math.ceil(params.horizon * n)))
        H = simulate_heterozygosity(n, p0, horizon, params.replicates, gen, device).cpu().numpy()
        ts = np.unique(np.linspace(0, horizon, params.record_points).round().astype(int))
        for t in ts:
            m, lo, hi = mean_ci(H[t] / h0_n, conf)
            rows.append(dict(quantity="heterozygosity H_t / H_0 (neutral drift)", series=f"N={n}", x_name="generation t", x=float(t),
                             measured=m, measured_low=lo, measured_high=hi,
                             predicted=float(expected_heterozygosity(1.0, n, t)), unit="", log_y=True))

    # 2. fixation probability and 3. conditional fixation time
    fix_rows = []
    scaled = np.asarray(params.scaled_selection, dtype=float)
    for n in params.population_sizes:
        gen = generator_for(context, "fixation", n)
        s = scaled / n
        fixed, time = simulate_fixation(n, torch.as_tensor(s, device=device), params.initial_count, params.fixation_replicates,
                                        gen, max_generations=int(math.ceil(params.max_generations_factor * n)))
        fixed_np, time_np = fixed.cpu().numpy(), time.cpu().numpy()
        p = params.initial_count / n
        for j, sj in enumerate(s):
            k = int(fixed_np[j].sum())
            u_m, lo, hi = wilson_ci(k, params.fixation_replicates, conf)
            u_exact, t1_exact = wright_fisher_chain(n, float(sj))
            pred = float(kimura_fixation_probability(p, sj, n))
            rows.append(dict(quantity="fixation probability", series=f"N={n}", x_name="N s", x=float(scaled[j]),
                             measured=u_m, measured_low=lo, measured_high=hi, predicted=pred, unit="",
                             exact_wf=float(u_exact[params.initial_count])))
            fix_rows.append(dict(N=n, s=float(sj), Ns=float(scaled[j]), p0=p, replicates=params.fixation_replicates, fixed=k,
                                 unabsorbed=int((time_np[j] < 0).sum()), measured=u_m, kimura=pred,
                                 exact_wf=float(u_exact[params.initial_count])))
            times = time_np[j][fixed_np[j]]
            if len(times) >= 5:
                m, lo, hi = mean_ci(times, conf)
                rows.append(dict(quantity="fixation time given fixation", series=f"N={n}", x_name="N s", x=float(scaled[j]),
                                 measured=m, measured_low=lo, measured_high=hi, unit="generations",
                                 predicted=kimura_ohta_selected_fixation_time(p, float(sj), n),
                                 exact_wf=float(t1_exact[params.initial_count]), fixations=len(times)))
            if sj == 0:
                m, lo, hi = mean_ci(times, conf)
                rows.append(dict(quantity="neutral fixation time given fixation", series=f"p0={params.initial_count}/N",
                                 x_name="N (gene copies)", x=float(n), measured=m, measured_low=lo, measured_high=hi,
                                 predicted=float(kimura_ohta_fixation_time(p, n)), unit="generations", log_x=True, log_y=True,
                                 exact_wf=float(t1_exact[params.initial_count]), fixations=len(times)))

    df = comparison_table(rows)
    notes = []
    hq = "heterozygosity H_t / H_0 (neutral drift)"
    c, m = _coverage(df, hq)
    notes.append(f"Heterozygosity (haploid Wright-Fisher, H_t = H_0 (1 - 1/N)^t): the {conf:.0%} CI of the measured mean contains the prediction at {c} of {m} (N, t) points.")
    fq = "fixation probability"
    c, m = _coverage(df, fq)
    ce, _ = _coverage(df, fq, "exact_wf")
    d = df[df["quantity"] == fq]
    worst = float((d["predicted"] - d["exact_wf"]).abs().max())
    notes.append(f"Fixation probability (Kimura 1962, haploid: u = (1 - e^(-2Nsp)) / (1 - e^(-2Ns))): Wilson CI contains Kimura's value at {c} of {m} (N, s) points and the exact Wright-Fisher chain value at {ce} of {m}; largest |Kimura - exact| = {fmt(worst)}.")
    neutral = d[d["x"] == 0]
    if len(neutral):
        notes.append("Neutral fixation probability (= p0): measured " + ", ".join(
            f"{r.series}: {fmt(r.measured)} [{fmt(r.measured_low)}, {fmt(r.measured_high)}] vs {fmt(r.predicted)}" for r in neutral.itertuples()) + ".")
    sq = "fixation time given fixation"
    c, m = _coverage(df, sq)
    ce, _ = _coverage(df, sq, "exact_wf")
    if m:
        notes.append(f"Fixation time given fixation against N s (Kimura & Ohta 1969 diffusion, symmetric in s): CI contains the diffusion value at {c} of {m} "
                     f"(N, s) points and the exact-chain value at {ce} of {m}.")
    tq = "neutral fixation time given fixation"
    t = df[df["quantity"] == tq]
    if len(t):
        notes.append("Neutral fixation time (Kimura & Ohta 1969, haploid: -2N(1-p)ln(1-p)/p ~ 2N for a new mutant; diploid ~4N_e): measured/2N = " + ", ".join(
            f"{fmt(r.measured / (2 * r.x))} at N={int(r.x)}" for r in t.itertuples()) + ".")
    return AnalysisResult(comparison=df, tables={"fixation": pd.DataFrame(fix_rows)}, notes=notes, confidence=conf,
                          title="Classic population genetics: drift, fixation probability, fixation time (haploid Wright-Fisher)")
