"""Selection is gradient ascent on (log mean) fitness: Lande's equation against a measured
Wright-Fisher generation, and against the SGD step on the same landscape.

Setting: an asexual population of N individuals with genotypes ``z_i ~ N(zbar, G)`` (standing
genetic variation ``G = sigma_G^2 I``), fitness ``w(z) = exp(-beta L(z))`` on the quadratic
``L(z) = 1/2 (z - z*)^T A (z - z*)`` of :class:`~evosgd.analysis.evo_common.Quadratic`, one
Wright-Fisher generation (parents drawn with probabilities ``w_i / sum w``, then optional
Gaussian mutation of the offspring).

Theory.

* Lande's equation (Lande 1979, Evolution 33:402; Lande & Arnold 1983, Evolution 37:1210):
  ``Delta zbar = G beta_L`` with the selection gradient ``beta_L = grad_zbar ln wbar(zbar)``.
  For Gaussian genotypes it is *exact* (Stein's lemma turns the Robertson-Price covariance
  ``Cov(w, z) / wbar`` into ``G grad ln wbar``), in the infinite-population limit.
* The Gaussian fitness case is closed form: ``ln wbar = const - 1/2 d^T (G + (beta A)^{-1})^{-1} d``
  with ``d = zbar - z*``, so ``Delta zbar = -G (I + beta A G)^{-1} beta A d``.
* Weak selection (``beta A G << I``): ``Delta zbar ~ -beta G grad L(zbar)``; with ``G = sigma_G^2 I``
  this is the gradient-descent step ``-lr grad L`` with the *equivalent learning rate*
  ``lr = beta sigma_G^2``.  The two part as the genetic variance (set by mutation) grows: the
  population's step is the SGD step preconditioned by ``(I + beta sigma_G^2 A)^{-1}``.
* Finite N: the selected parents are a sample of N; the expected step carries an O(1/N) bias
  and a drift noise of covariance O(G/N) (see ``drift_decomposition``).  To leading order in
  weak selection the bias is the factor ``(N-1)/N`` of the sample covariance in the
  Robertson-Price identity ``Delta zbar = Cov_sample(w, z) / wbar`` (Price 1970, Nature 227:520),
  reported as ``predicted_finite_n``.

Second measurement, closer to the seed's "large asexual population with weak mutation": populations
*evolving* under selection and mutation (every offspring mutates by ``N(0, M I)``, M small), from
a monomorphic start, whose own covariance G_t builds up and becomes anisotropic (selection
depletes variation along stiff directions).  Per generation the change of the mean is regressed
on Lande's response computed from G_t (predicted slope 1) and on the isotropic gradient step
``-beta (tr G_t / D) grad L`` (a slope below 1 measures how far selection is from plain gradient
descent: it is gradient descent preconditioned by G).
"""

from __future__ import annotations

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
from evosgd.core.registry import ANALYSES

# ---------------------------------------------------------------------------------------------
# theory (numpy, float64; A and G are full matrices so the formulas read as in the papers)


def lande_response(G: np.ndarray, selection_gradient: np.ndarray) -> np.ndarray:
    """Lande's equation ``Delta zbar = G beta`` (Lande 1979)."""
    return np.asarray(G, float) @ np.asarray(selection_gradient, float)


def gaussian_selection_gradient(zbar: np.ndarray, optimum: np.ndarray, A: np.ndarray, G: np.ndarray, beta: float) -> np.ndarray:
    """``grad ln wbar`` for ``z ~ N(zbar, G)`` and ``w = exp(-beta/2 (z-z*)^T A (z-z*))``:
    ``-(I + beta A G)^{-1} beta A (zbar - z*)`` (= ``-(G + (beta A)^{-1})^{-1} d``, defined at beta = 0)."""
    A, G = np.asarray(A, float), np.asarray(G, float)
    d = np.asarray(zbar, float) - np.asarray(optimum, float)
    D = d.shape[-1]
    return -np.linalg.solve(np.eye(D) + beta * A @ G, beta * A @ d)


def gaussian_selection_response(zbar: np.ndarray, optimum: np.ndarray, A: np.ndarray, G: np.ndarray, beta: float) -> np.ndarray:
    """Exact infinite-population change of the mean in one generation of selection on Gaussian
    genotypes: Lande's ``G grad ln wbar`` with :func:`gaussian_selection_gradient`."""
    return lande_response(G, gaussian_selection_gradient(zbar, optimum, A, G, beta))


def sgd_step(zbar: np.ndarray, optimum: np.ndarray, A: np.ndarray, lr: float) -> np.ndarray:
    """The gradient-descent step on the quadratic: ``-lr A (zbar - z*)``."""
    return -lr * np.asarray(A, float) @ (np.asarray(zbar, float) - np.asarray(optimum, float))


def finite_population_response(response: np.ndarray, population_size: int) -> np.ndarray:
    """Leading-order finite-N response ``(1 - 1/N) Delta zbar``: the Robertson-Price covariance
    of a sample of N carries the factor ``(N-1)/N`` (weak selection)."""
    return (1.0 - 1.0 / population_size) * np.asarray(response, float)


def equivalent_learning_rate(genetic_variance: float, beta: float) -> float:
    """``lr = beta sigma_G^2``: the learning rate whose gradient step equals the weak-selection
    response ``-beta G grad L`` of a population with ``G = sigma_G^2 I``."""
    return beta * genetic_variance


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


# ---------------------------------------------------------------------------------------------
# measurement


@torch.no_grad()
def one_generation_steps(
    quad: Quadratic, zbar: torch.Tensor, genetic_variance: float, population_size: int, beta: float,
    replicates: int, generator: torch.Generator, *, mutation_sd: float = 0.0,
) -> torch.Tensor:
    """``Delta zbar`` ``[R, D]`` of ``replicates`` independent populations, each N genotypes drawn
    from ``N(zbar, sigma_G^2 I)`` and taken through one Wright-Fisher generation with fitness
    ``exp(-beta L)``: the mean of the offspring minus the mean of their parents' generation."""
    D = quad.dim
    pop = zbar + genetic_variance ** 0.5 * torch.randn(replicates, population_size, D, generator=generator,
                                                       device=quad.device, dtype=quad.dtype)
    log_w = -beta * quad.loss(pop) if beta > 0 else torch.zeros(pop.shape[:2], device=pop.device, dtype=pop.dtype)
    offspring = wright_fisher_generation(pop, log_w, generator, mutation_rate=1.0, mutation_effect=mutation_sd)
    return offspring.mean(1) - pop.mean(1)


@torch.no_grad()
def evolving_population_steps(
    quad: Quadratic, zbar: torch.Tensor, population_size: int, beta: float, mutation_sd: float, generations: int,
    replicates: int, generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An asexual Wright-Fisher population evolving under selection and mutation (every offspring
    mutates by ``N(0, mutation_sd^2 I)``), started monomorphic at ``zbar``.  For every generation t
    returns the change of the mean ``Delta_t`` and two predictions from the population itself:
    Lande's exact-Gaussian response with the population's own covariance G_t,
    ``-G_t (I + beta A G_t)^{-1} beta A (zbar_t - z*)``, and the gradient step at the equivalent
    isotropic rate, ``-beta (tr G_t / D) A (zbar_t - z*)``.  Shapes ``[T, R, D]`` each."""
    D = quad.dim
    A = torch.diag(quad.curvatures)
    eye = torch.eye(D, device=quad.device, dtype=quad.dtype)
    pop = zbar.expand(replicates, population_size, D).clone()
    steps, lande, sgd = [], [], []
    for _ in range(generations):
        mean = pop.mean(1)
        dev = pop - mean.unsqueeze(1)
        G = dev.transpose(1, 2) @ dev / population_size  # population covariance: the Robertson-Price convention
        bad = beta * quad.grad(mean)  # beta A (zbar - z*)
        lande.append(-(G @ torch.linalg.solve(eye + beta * A @ G, bad.unsqueeze(-1))).squeeze(-1))
        sgd.append(-(G.diagonal(dim1=1, dim2=2).mean(-1, keepdim=True)) * bad)
        pop = wright_fisher_generation(pop, -beta * quad.loss(pop), generator, mutation_rate=1.0, mutation_effect=mutation_sd)
        steps.append(pop.mean(1) - mean)
    return torch.stack(steps), torch.stack(lande), torch.stack(sgd)


def slope_stat(x: torch.Tensor) -> torch.Tensor:
    """``[B, n, 2]`` per-replicate sums (``sum_t Delta . P``, ``sum_t |P|^2``) -> least-squares slope
    of Delta on the prediction P over the resampled replicates ``[B]``."""
    return x[..., 0].sum(-1) / x[..., 1].sum(-1)


def debiased_sq_norm(x: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate of ``||E x||^2`` from samples ``[B, n, D]`` (U-statistic
    ``(||sum x||^2 - sum ||x||^2) / (n (n-1))``): the plain ``||mean x||^2`` is biased up by
    ``tr Cov / n``, which would make a relative error look nonzero from noise alone."""
    n = x.shape[-2]
    s = x.sum(-2)
    return ((s * s).sum(-1) - (x * x).sum((-1, -2))) / (n * (n - 1))


def relative_error_stat(target: torch.Tensor):
    """Statistic ``[B, n, D] -> [B]``: ``sqrt(max(0, U)) / ||target||`` with U the debiased
    squared distance of ``E x`` from ``target``."""
    tn = float(target.norm())

    def stat(x: torch.Tensor) -> torch.Tensor:
        return debiased_sq_norm(x - target).clamp_min(0).sqrt() / tn

    return stat


def cosine_stat(direction: torch.Tensor):
    """Statistic ``[B, n, D] -> [B]``: cosine of the sample mean with ``direction``."""
    u = direction / direction.norm()

    def stat(x: torch.Tensor) -> torch.Tensor:
        m = x.mean(-2)
        return (m * u).sum(-1) / m.norm(dim=-1)

    return stat


# ---------------------------------------------------------------------------------------------
# the registered analysis

EVOLVING_LANDE = "evolving: slope of Delta zbar on Lande's G_t beta_t"
EVOLVING_SGD = "evolving: slope of Delta zbar on -beta (tr G_t/D) grad L"


class SelectionGradientParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(4, ge=1, le=256, description="dimension D of the quadratic landscape")
    condition: float = Field(10.0, ge=1, description="condition number of the Hessian A (curvatures log-spaced in [1, condition])")
    start_distance: float = Field(1.0, gt=0, description="distance of the population mean from the optimum, along (1,...,1)/sqrt(D)")
    beta: float = Field(1.0, gt=0, description="selection strength: fitness w = exp(-beta L)")
    population_sizes: list[int] = Field([4, 16, 64, 256], min_length=1, description="population sizes N (the agreement with Lande improves as N grows)")
    genetic_variances: list[float] = Field(
        [0.01, 0.1, 1.0], min_length=1, description="standing genetic variances sigma_G^2 (G = sigma_G^2 I; grows with the mutation rate)"
    )
    mutation_sd: float = Field(0.0, ge=0, description="sd of the Gaussian mutation of offspring (zero-mean: adds noise, no bias)")
    replicates: int = Field(2000, ge=20, description="independent populations per (N, sigma_G^2): one generation each")
    bootstrap: int = Field(300, ge=50, description="bootstrap resamples for the CIs of norms and cosines")
    evolving_generations: int = Field(
        40, ge=0, description="generations of the evolving populations (selection + mutation from a monomorphic start); 0: skip that part"
    )
    evolving_population_sizes: list[int] = Field([16, 256], min_length=1, description="population sizes N of the evolving populations")
    mutation_variances: list[float] = Field(
        [1e-4, 1e-3, 1e-2], min_length=1, description="mutational variances per generation M = m^2 (every offspring mutates by N(0, M I))"
    )
    evolving_replicates: int = Field(200, ge=4, description="independent evolving populations per (N, M)")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")


@ANALYSES.register(
    "selection_gradient", SelectionGradientParams,
    "One Wright-Fisher generation on a quadratic: change of the mean against Lande's G beta and the SGD step -beta sigma_G^2 grad L",
    family="evolution",
)
def selection_gradient(params: SelectionGradientParams, *, context: AnalysisContext) -> AnalysisResult:
    conf = params.confidence
    quad = Quadratic(params.dim, params.condition, device=context.device, dtype=context.dtype)
    A = np.diag(quad.curvatures_np)
    opt = np.zeros(params.dim)
    zbar_np = np.full(params.dim, params.start_distance / np.sqrt(params.dim))
    zbar = torch.as_tensor(zbar_np, device=context.device, dtype=context.dtype)
    grad = A @ zbar_np
    u = -grad / np.linalg.norm(grad)
    u_t = torch.as_tensor(u, device=context.device, dtype=context.dtype)
    rows, table = [], []
    for s2 in params.genetic_variances:
        G = s2 * np.eye(params.dim)
        lande = gaussian_selection_response(zbar_np, opt, A, G, params.beta)
        lr = equivalent_learning_rate(s2, params.beta)
        sgd = sgd_step(zbar_np, opt, A, lr)
        lande_t = torch.as_tensor(lande, device=context.device, dtype=context.dtype)
        sgd_t = torch.as_tensor(sgd, device=context.device, dtype=context.dtype)
        sgd_err_pred = float(np.linalg.norm(lande - sgd) / np.linalg.norm(sgd))
        for n in params.population_sizes:
            gen = generator_for(context, "selection_gradient", s2, n)
            steps = one_generation_steps(quad, zbar, s2, n, params.beta, params.replicates, gen, mutation_sd=params.mutation_sd)
            common = dict(series=f"sigma_G^2={fmt(s2)}", x_name="population size N", x=float(n), log_x=True)
            m, lo, hi = mean_ci((steps @ u_t).cpu().numpy(), conf)
            rows.append(dict(quantity="progress along -grad L per generation", measured=m, measured_low=lo, measured_high=hi,
                             predicted=float(lande @ u), predicted_sgd=float(sgd @ u),
                             predicted_finite_n=float(finite_population_response(lande, n) @ u),
                             # band: from the leading-order finite-N value (N-1)/N to the N -> infinity value
                             predicted_low=float(finite_population_response(lande, n) @ u), predicted_high=float(lande @ u), **common))
            c, clo, chi = bootstrap_ci(steps, cosine_stat(-torch.as_tensor(grad, device=context.device, dtype=context.dtype)),
                                       n_boot=params.bootstrap, confidence=conf, generator=gen)
            rows.append(dict(quantity="cosine(E[Delta zbar], -grad L)", measured=c, measured_low=clo, measured_high=chi,
                             predicted=float(lande @ u / np.linalg.norm(lande)), predicted_sgd=1.0, **common))
            e, elo, ehi = bootstrap_ci(steps, relative_error_stat(lande_t), n_boot=params.bootstrap, confidence=conf, generator=gen)
            rows.append(dict(quantity="|E[Delta zbar] - Lande| / |Lande| (finite-N error)", measured=e, measured_low=elo, measured_high=ehi,
                             predicted=0.0, **common))
            e2, e2lo, e2hi = bootstrap_ci(steps, relative_error_stat(sgd_t), n_boot=params.bootstrap, confidence=conf, generator=gen)
            rows.append(dict(quantity="|E[Delta zbar] - SGD step| / |SGD step| (lr = beta sigma_G^2)", series=f"N={n}",
                             x_name="genetic variance sigma_G^2", x=float(s2), measured=e2, measured_low=e2lo, measured_high=e2hi,
                             predicted=sgd_err_pred, log_x=True))
            mean_step = steps.mean(0).cpu().numpy()
            table.append(dict(N=n, genetic_variance=s2, lr_equivalent=lr, replicates=params.replicates,
                              **{f"measured_{k}": float(v) for k, v in enumerate(mean_step)},
                              **{f"lande_{k}": float(v) for k, v in enumerate(lande)},
                              **{f"sgd_{k}": float(v) for k, v in enumerate(sgd)}))

    if params.evolving_generations > 0:
        for n in params.evolving_population_sizes:
            for m2 in params.mutation_variances:
                gen = generator_for(context, "evolving", n, m2)
                steps, lande, sgd = evolving_population_steps(quad, zbar, n, params.beta, m2 ** 0.5, params.evolving_generations,
                                                              params.evolving_replicates, gen)
                common = dict(series=f"evolving, N={n}", x_name="mutational variance per generation M", x=float(m2), log_x=True)
                for pred, q in ((lande, EVOLVING_LANDE), (sgd, EVOLVING_SGD)):
                    sums = torch.stack([(steps * pred).sum((0, 2)), (pred * pred).sum((0, 2))], dim=-1).double()
                    b, blo, bhi = bootstrap_ci(sums, slope_stat, n_boot=params.bootstrap, confidence=conf, generator=gen)
                    rows.append(dict(quantity=q, measured=b, measured_low=blo, measured_high=bhi,
                                     predicted=1.0 if q == EVOLVING_LANDE else float("nan"), **common))

    df = comparison_table(rows)
    notes = []
    ev = df[df["quantity"] == EVOLVING_LANDE]
    if len(ev):
        es = df[df["quantity"] == EVOLVING_SGD]
        notes.append("Evolving asexual populations (selection + mutation, monomorphic start): slope of the change of the mean on Lande's "
                     "G_t grad ln wbar_t (own covariance G_t) " + ", ".join(
                         f"{fmt(r.measured)} [{fmt(r.measured_low)}, {fmt(r.measured_high)}] ({r.series}, M={fmt(r.x)})" for r in ev.itertuples())
                     + "; on the isotropic gradient step -beta (tr G_t / D) grad L " + ", ".join(
                         f"{fmt(r.measured)} ({r.series}, M={fmt(r.x)})" for r in es.itertuples()) + ".")
    pq = "progress along -grad L per generation"
    d = df[df["quantity"] == pq]
    inside = ((d["measured_low"] <= d["predicted"]) & (d["predicted"] <= d["measured_high"]))
    inside_n = ((d["measured_low"] <= d["predicted_finite_n"]) & (d["predicted_finite_n"] <= d["measured_high"]))
    notes.append(f"Progress along the gradient: Lande's exact-Gaussian prediction G grad ln wbar (N -> infinity) lies in the {conf:.0%} CI at "
                 f"{int(inside.sum())} of {len(d)} (N, sigma_G^2) points (misses at N = "
                 f"{sorted(set(int(x) for x in d.loc[~inside, 'x'])) or 'none'}); with the finite-sample factor (N-1)/N at "
                 f"{int(inside_n.sum())} of {len(d)}.")
    first = d[d["series"] == d["series"].iloc[0]]
    notes.append(f"Measured progress / Lande ({first['series'].iloc[0]}): " + ", ".join(
        f"{fmt(r.measured / r.predicted)} at N={int(r.x)} (1 - 1/N = {fmt(1 - 1 / r.x)})" for r in first.itertuples()) + ".")
    eq = "|E[Delta zbar] - Lande| / |Lande| (finite-N error)"
    for s2 in params.genetic_variances:
        e = df[(df["quantity"] == eq) & (df["series"] == f"sigma_G^2={fmt(s2)}")].sort_values("x")
        if len(e) >= 2:
            notes.append(f"sigma_G^2={fmt(s2)}: relative error against Lande {fmt(e['measured'].iloc[0])} at N={int(e['x'].iloc[0])} "
                         f"and {fmt(e['measured'].iloc[-1])} at N={int(e['x'].iloc[-1])}.")
    sq = "|E[Delta zbar] - SGD step| / |SGD step| (lr = beta sigma_G^2)"
    nmax = max(params.population_sizes)
    e = df[(df["quantity"] == sq) & (df["series"] == f"N={nmax}")].sort_values("x")
    if len(e):
        notes.append("Against the SGD step -beta sigma_G^2 grad L (N=" + str(nmax) + "): relative difference " + ", ".join(
            f"{fmt(r.measured)} (predicted {fmt(r.predicted)}) at sigma_G^2={fmt(r.x)}" for r in e.itertuples())
            + "; selection is gradient descent only while beta sigma_G^2 A << I.")
    return AnalysisResult(comparison=df, tables={"mean_steps": pd.DataFrame(table)}, notes=notes, confidence=conf,
                          title="Selection as gradient ascent: one Wright-Fisher generation against Lande's equation and the SGD step")
