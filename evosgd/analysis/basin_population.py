"""Population search vs a single trajectory on a multimodal landscape: the probability of ending in the
global basin against the population size / number of restarts, beside the basin-volume prediction.

Basin-volume prediction.  Let ``B`` be the basin of attraction of the global minimum under gradient
descent and ``p = vol(B ∩ X) / vol(X)`` its share of the search box X.  k independent local searches from
uniform starts end in the global basin with probability

    P(k) = 1 - (1 - p)^k

(a geometric "restart" law; e.g. Schoen 1991, "Stochastic techniques for global optimization: a survey of
recent advances", J. Global Optim. 1:207).  The engine's GA starts member 0 at the landscape's initial
point and the k - 1 others uniformly in the box, so for it and for the matching restarts the prediction
per instance r is ``1 - (1 - p_r)^(k-1) (1 - [x0 in B_r])``, averaged over instances (each replicate's
Rastrigin is shifted: its own p_r).  p_r is measured by Monte Carlo: gradient descent from ``basin_samples``
uniform starts of instance r.

Measured: (a) k restarts of gradient descent (fresh starts, the same law: checks independence and the
estimate of p); (b) the engine's GA with a population of k (selection, crossover, mutation) for a fixed
number of generations -- does a population do better than k independent trajectories (it can pool
information: on Rastrigin the global structure is a bowl) or worse (it converges on one basin)?  Success:
the final recommendation within 1/2 of the optimum in every coordinate (Rastrigin's cell of the global
minimum).  Proportions carry exact Clopper-Pearson intervals.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from evosgd.analysis.grad2_common import small_landscape
from evosgd.analysis.grad_common import fmt, single_thread
from evosgd.analysis.verdict import judge_coverage, judge_direction, verdict_table
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.registry import ANALYSES, OPTIMIZERS
from evosgd.core.seeding import derive_seed, make_generator

KIND = "basin_population"


# ----------------------------------------------------------------------------- theory
def restart_success(p: float | np.ndarray, k: int) -> np.ndarray:
    """``1 - (1 - p)^k``: at least one of k independent local searches lands in a basin of share p."""
    return 1.0 - (1.0 - np.asarray(p, dtype=float)) ** k


def population_success(p: np.ndarray, start_in_basin: np.ndarray, k: int) -> float:
    """Mean over instances of ``1 - (1 - p_r)^(k-1) (1 - [x0_r in B_r])`` (member 0 at x0, k-1 uniform)."""
    p, b0 = np.asarray(p, dtype=float), np.asarray(start_in_basin, dtype=float)
    return float(np.mean(1.0 - (1.0 - p) ** (k - 1) * (1.0 - b0)))


def proportion_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence, method="exact")
    return k / n, float(ci.low), float(ci.high)


# ----------------------------------------------------------------------------- measurement
class BasinPopulationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    landscape: str = Field("rastrigin", pattern="^(rastrigin)$", description="multimodal landscape (Rastrigin: cells of side 1 around the integers)")
    dim: int = Field(2, ge=1, le=4, description="dimension D")
    population_sizes: list[int] = Field([1, 4, 16, 64], min_length=2, description="population sizes / numbers of restarts k")
    replicates: int = Field(64, ge=8, description="instances (shifted Rastrigins), one trial of each method per instance and k")
    basin_samples: int = Field(2000, ge=100, description="uniform starts per instance for the Monte Carlo share p_r of the global basin")
    gd_lr: float = Field(0.002, gt=0.0, description="gradient-descent rate (Rastrigin's curvature at a minimum is 2 + 40 pi^2 ~ 397: lr < 0.005)")
    gd_steps: int = Field(400, ge=10, description="gradient-descent steps (to converge in a cell)")
    generations: int = Field(60, ge=1, description="GA generations")
    mutation_sigma: float = Field(0.3, gt=0.0, description="GA Gaussian mutation step")


@torch.no_grad()
def descend(land, x: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """Gradient descent on the noise-free landscape from ``x [R, M, D]`` (all points at once)."""
    empty = {"xi": torch.zeros(land.replicates, 1, land.dim, dtype=land.dtype)}
    for _ in range(steps):
        _, g = land.loss_and_grad(x, empty)
        x = x - lr * g
    return x


def in_global_cell(land, x: torch.Tensor) -> torch.Tensor:
    """``||x - theta*||_inf < 1/2`` for ``x [R, ..., D]``."""
    s = land.optimum()
    s = s.reshape(s.shape[:1] + (1,) * (x.dim() - 2) + s.shape[1:])
    return ((x - s).abs() < 0.5).all(dim=-1)


def uniform_box(land, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    lo, hi = land.domain
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=land.dtype)


def measure_basin_population(p: BasinPopulationParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    import evosgd.evolution  # noqa: F401  (registers the GA)

    R, D = p.replicates, p.dim
    rows, table = [], []
    with single_thread():
        land = small_landscape(p.landscape, {"dim": D}, replicates=R, seed=seed)
        gen = make_generator(derive_seed(seed, KIND, "basin"))
        starts = uniform_box(land, (R, p.basin_samples, D), gen)
        share = in_global_cell(land, descend(land, starts, p.gd_lr, p.gd_steps)).double().mean(dim=1).numpy()  # p_r
        x0 = land.initial_point.unsqueeze(1)
        b0 = in_global_cell(land, descend(land, x0, p.gd_lr, p.gd_steps))[:, 0].numpy()
        lows, highs, preds, meas = {"restarts": [], "ga": []}, {"restarts": [], "ga": []}, {"restarts": [], "ga": []}, {"restarts": [], "ga": []}
        success = {}
        for k in sorted(set(p.population_sizes)):
            pred = population_success(share, b0, k)
            # (a) k restarts of gradient descent: x0 plus k - 1 fresh uniform starts
            fresh = uniform_box(land, (R, k - 1, D), make_generator(derive_seed(seed, KIND, "restarts", k)))
            pts = torch.cat([x0, fresh], dim=1)
            hit_gd = in_global_cell(land, descend(land, pts, p.gd_lr, p.gd_steps)).any(dim=1).numpy()
            # (b) the engine's GA with k members (member 0 = x0, the others uniform in the box), best member at the end
            cfg = {"population_size": max(k, 2), "init_radius": (land.domain[1] - land.domain[0]) / 2.0,
                   "mutation": {"kind": "gaussian", "sigma": p.mutation_sigma}}
            budget = Budget(R, 3.0, BudgetLimits())
            ga = OPTIMIZERS.build("ga", cfg, landscape=land, budget=budget, generator=make_generator(derive_seed(seed, KIND, "ga", k)))
            for _ in range(p.generations):
                ga.step()
            hit_ga = in_global_cell(land, ga.recommend()).numpy()
            success[k] = {"restarts": hit_gd, "ga": hit_ga}
            pred_ga = population_success(share, b0, max(k, 2))  # a GA needs two members
            for name, hit, pr in (("restarts", hit_gd, pred), ("ga", hit_ga, pred_ga)):
                m, lo, hi = proportion_interval(int(hit.sum()), R, confidence)
                series = "gradient descent, k restarts" if name == "restarts" else f"GA, population k ({p.generations} generations)"
                rows.append(dict(quantity="probability of ending in the global basin (line: 1 - (1 - p)^k, basin volume)",
                                 series=series, x_name="population size / restarts k", x=float(k), measured=m, measured_low=lo,
                                 measured_high=hi, predicted=pr, log_x=True))
                lows[name].append(lo), highs[name].append(hi), preds[name].append(pr), meas[name].append(m)
            table.append(dict(k=k, predicted=pred, restarts_success=float(hit_gd.mean()), ga_success=float(hit_ga.mean()),
                              ga_population=max(k, 2)))
    verdicts = [
        judge_coverage("k gradient-descent restarts reach the global basin with probability 1 - (1 - p)^k (basin volume)",
                       lows["restarts"], highs["restarts"], preds["restarts"], measured=meas["restarts"], confidence=confidence,
                       what="values of k"),
        judge_coverage("a GA population of k reaches the global basin as k independent trajectories would (basin volume)",
                       lows["ga"], highs["ga"], preds["ga"], measured=meas["ga"], confidence=confidence, what="values of k"),
    ]
    ks = sorted(success)
    d = success[ks[-1]]["ga"].astype(float) - success[ks[0]]["restarts"].astype(float)  # paired: the same instances
    dm = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    q = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1))
    verdicts.append(judge_direction(f"a population (GA, k = {ks[-1]}) ends in the global basin more often than a single "
                                    "gradient trajectory", dm, dm - q * se, dm + q * se, expected="positive",
                                    confidence=confidence, what="paired difference of success rates"))
    d = success[ks[-1]]["ga"].astype(float) - success[ks[-1]]["restarts"].astype(float)
    dm = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(len(d)))
    verdicts.append(judge_direction(f"at equal k = {ks[-1]}, a GA population ends in the global basin more often than k "
                                    "independent gradient trajectories", dm, dm - q * se, dm + q * se, expected="positive",
                                    confidence=confidence, what="paired difference of success rates"))
    t = pd.DataFrame(table)
    notes = [f"{p.landscape} D = {D}: Monte Carlo share of the global basin under gradient descent p = {fmt(float(share.mean()))} "
             f"(instances {fmt(float(share.min()))}..{fmt(float(share.max()))}, {p.basin_samples} starts each); {R} instances.",
             "success with k = " + ", ".join(f"{int(r.k)}: restarts {fmt(r.restarts_success)}, GA {fmt(r.ga_success)}, "
                                             f"predicted {fmt(r.predicted)}" for r in t.itertuples()) + "."]
    return AnalysisResult(comparison_rows(rows), tables={"success": t, "basin_share": pd.DataFrame({"instance": range(R), "p": share,
                                                                                                      "start_in_basin": b0}),
                                                        "verdicts": verdict_table(verdicts)},
                          notes=notes, confidence=confidence, title="Population vs single trajectory: the global basin against k")


@ANALYSES.register(KIND, BasinPopulationParams,
                   "probability of ending in the global basin of a multimodal landscape: k gradient-descent restarts and a GA of "
                   "population k against the basin-volume prediction 1 - (1 - p)^k; verdicts", family="evolution")
def basin_population(params: BasinPopulationParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_basin_population(params, seed=context.seed, confidence=0.95)
