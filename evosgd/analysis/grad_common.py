"""Shared pieces of the gradient-side analyses: confidence intervals, the landscape instance an
analysis measures on, the point it measures at, and the per-example gradients of a fixed
population of examples.

Confidence intervals (all two-sided at level ``confidence``):

* :func:`mean_ci` — Student-t interval of a mean of iid values (CLT; exact for Gaussian data).
* :func:`proportion_ci` — Clopper-Pearson interval of a binomial proportion (exact coverage
  >= confidence; Clopper & Pearson 1934).
* :func:`bootstrap_ci` — percentile bootstrap of any statistic (Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats

from evosgd.core.analysis_api import AnalysisContext
from evosgd.core.errors import ConfigError, ParameterError
from evosgd.core.seeding import derive_seed, make_generator

Point = Literal["initial", "optimum", "midway"]

POINT_DESCRIPTION = (
    "where the gradient statistics are taken: 'initial' (the landscape's common starting point), "
    "'optimum' (needs a known optimum), or 'midway' (halfway between them)"
)


# ----------------------------------------------------------------------- confidence intervals
def mean_ci(x: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval ``mean +- t_{n-1} s / sqrt(n)`` of iid values."""
    a = np.asarray(x, dtype=np.float64).ravel()
    m = float(a.mean())
    if a.size < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size))
    return m, m - half, m + half


def proportion_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(k/n, low, high): Clopper-Pearson exact interval of a binomial proportion."""
    k, n = int(k), int(n)
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return k / n, low, high


def bootstrap_ci(
    x: Any, statistic: Callable[[np.ndarray], np.ndarray], *, confidence: float = 0.95,
    resamples: int = 1000, seed: int = 0,
) -> tuple[float, float, float]:
    """(statistic, low, high): percentile bootstrap over the first axis of ``x``.

    ``statistic`` maps an array ``[m, n, ...]`` (m resamples) to ``[m]``; it is applied to the
    data itself as ``x[None]``.
    """
    a = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.shape[0], size=(resamples, a.shape[0]))
    boot = np.asarray(statistic(a[idx]), dtype=np.float64)
    est = float(np.asarray(statistic(a[None]))[0])
    lo, hi = np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return est, float(lo), float(hi)


# ----------------------------------------------------------------------- landscape and point
def analysis_landscape(context: AnalysisContext, where: str, replicates: int = 1) -> Any:
    """The scenario's landscape, built with ``replicates`` instances (default: one, replicate 0's
    instance, since these analyses report absolute values that differ between instances)."""
    if context.make_landscape is None:
        raise ConfigError(f"{where}: this analysis measures on the scenario's [landscape]; none was given")
    return context.make_landscape(replicates=replicates)


def evaluation_point(landscape: Any, point: str, where: str) -> torch.Tensor:
    """The point ``[R, D]`` named by ``point`` (see ``POINT_DESCRIPTION``)."""
    x0 = landscape.initial_point
    if point == "initial":
        return x0.clone()
    opt = landscape.optimum()
    if opt is None:
        raise ParameterError("point", point, "'initial' (this landscape has no known optimum)", where=where)
    if point == "optimum":
        return opt.clone()
    if point == "midway":
        return 0.5 * (x0 + opt)
    raise ParameterError("point", point, "'initial', 'optimum' or 'midway'", where=where)


def example_population(landscape: Any, n: int, generator: torch.Generator) -> tuple[dict, int]:
    """A fixed population of examples ``[R, N, ...]``, returned with its size N.

    Finite-sum landscape: its whole dataset when ``n`` covers it, else ``n`` of its examples drawn
    without replacement.  Otherwise: ``n`` draws from the data distribution (which then *are* the
    finite population that mini-batches are drawn from, so finite-population formulas are exact).
    """
    if getattr(landscape, "finite_sum", False) and getattr(landscape, "n_examples", None):
        total = int(landscape.n_examples)
        R = landscape.replicates
        if n >= total:
            idx = torch.arange(total, device=landscape.device).expand(R, total)
        else:
            keys = torch.rand(R, total, generator=generator, device=landscape.device)
            idx = keys.argsort(dim=1)[:, :n]
        return landscape.take(idx), int(idx.shape[1])
    return landscape.sample(int(n), generator), int(n)


def require_separable(landscape: Any, where: str) -> None:
    """Per-example gradients need a loss that is a mean of per-example losses."""
    if not getattr(landscape, "per_example_separable", True):
        raise ParameterError("landscape", getattr(landscape, "kind", "?"),
                             "a landscape whose loss is a mean of per-example losses (no batch norm, no in-batch pairs)", where=where)


def analysis_generator(context: AnalysisContext, *keys: object, device: torch.device | str | None = None) -> torch.Generator:
    """The analysis's own random stream (seeded from the scenario seed and its label), on
    ``device`` (default: the scenario's device)."""
    return make_generator(derive_seed(context.seed, "analysis", context.label, *keys), device or context.device)


def split_batch(batch: dict, parts: int) -> list[dict]:
    """Split a batch ``[R, n, ...]`` into ``parts`` consecutive micro-batches of equal size."""
    return [dict(zip(batch, vs)) for vs in zip(*(v.chunk(parts, dim=1) for v in batch.values()))]


def index_batch(batch: dict, idx: torch.Tensor) -> dict:
    """Examples ``idx`` ``[R, m]`` of a batch ``[R, n, ...]``."""
    out = {}
    for k, v in batch.items():
        ix = idx.reshape(idx.shape + (1,) * (v.dim() - 2)).expand(idx.shape + v.shape[2:])
        out[k] = torch.gather(v, 1, ix)
    return out


def fmt(x: float, digits: int = 3) -> str:
    """A number for a note (3 significant digits)."""
    return f"{x:.{digits}g}"


class single_thread:
    """Run a block with one torch intra-op thread (restored after).

    The loops of these analyses work on small tensors, where a multi-threaded kernel spends more
    time synchronising its threads than computing (measured: a [400, 4, 2] batched matmul ran
    ~100x slower with 2 threads on a loaded 2-core machine).
    """

    def __enter__(self) -> single_thread:
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._threads)
