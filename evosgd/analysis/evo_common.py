"""Shared pieces of the evolution-side theory analyses (popgen, selection_gradient,
drift_decomposition, temperature).

* confidence intervals: Student-t interval of a mean, Wilson score interval of a proportion,
  percentile bootstrap (vectorized resampling);
* :class:`Quadratic`: the exact-case landscape of the analyses,
  ``L(z) = 1/2 sum_k a_k (z_k - z*_k)^2`` with log-spaced curvatures ``a_k`` in ``[1, condition]``
  and a per-example noise model (so that SGD has a mini-batch gradient on the *same* landscape
  whose true loss the population's fitness ``w = exp(-beta L)`` uses).  A diagonal Hessian loses
  nothing: isotropic mutation, isotropic standing variation and plain SGD are all rotation
  equivariant, so a rotated quadratic gives the same numbers in rotated coordinates;
* the Wright-Fisher generation itself is the engine's pure function
  :func:`evosgd.evolution.wright_fisher.wright_fisher_generation` (re-exported here), so these
  analyses measure the product's own engine.

Everything here is pure torch / numpy; nothing reads or writes the results store.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from evosgd.core.analysis_api import AnalysisContext, comparison_rows
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.evolution.wright_fisher import wright_fisher_generation  # noqa: F401  (re-export)

# ---------------------------------------------------------------------------------------------
# confidence intervals


def mean_ci(x: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval ``mean +- t_{(1+c)/2, n-1} s / sqrt(n)``."""
    x = np.asarray(x, dtype=float).ravel()
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if n < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half


def wilson_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(k/n, low, high): Wilson score interval of a binomial proportion (Wilson 1927)."""
    if n <= 0:
        return math.nan, math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends (rounding would leave 1e-18)
    high = 1.0 if k == n else min(1.0, centre + half)
    return p, low, high


def bootstrap_ci(
    data: torch.Tensor,
    statistic: Any,
    *,
    n_boot: int = 400,
    confidence: float = 0.95,
    generator: torch.Generator | None = None,
) -> tuple[float, float, float]:
    """(statistic(data), low, high): percentile bootstrap over the first dim of ``data``.

    ``statistic`` maps a tensor ``[B, n, ...]`` to ``[B]`` (it is applied to the data itself as
    ``B = 1``), so all resamples are computed in one vectorized call.
    """
    n = data.shape[0]
    point = float(statistic(data.unsqueeze(0))[0])
    idx = torch.randint(0, n, (n_boot, n), generator=generator, device=data.device)
    boot = statistic(data[idx]).double().cpu().numpy()
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return point, math.nan, math.nan
    a = (1 - confidence) / 2
    return point, float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


def generator_for(context: AnalysisContext, *keys: object) -> torch.Generator:
    """The analysis' own random stream, derived from the scenario seed, its label and ``keys``."""
    return make_generator(derive_seed(context.seed, "analysis", context.label, *keys), context.device)


def comparison_table(rows: list[dict]) -> pd.DataFrame:
    """:func:`comparison_rows` with the figure flags ``log_x``/``log_y`` False where a row left
    them unset (rows of different quantities set different flags)."""
    df = comparison_rows(rows)
    for c in ("log_x", "log_y"):
        df[c] = df[c].astype(object).where(df[c].notna(), False).astype(bool)
    return df


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


# ---------------------------------------------------------------------------------------------
# the exact-case landscape


class Quadratic:
    """``L(z) = 1/2 sum_k a_k (z_k - z*_k)^2`` (optimum ``z* = 0``, ``L* = 0``), curvatures
    ``a_k = condition^{k/(D-1)}`` (log-spaced from 1 to ``condition``).

    Per-example losses (what a mini-batch averages; their mean over the data is ``L``):

    * ``noise_model = "isotropic"``: ``l(z; zeta) = L(z) - zeta . z`` with ``zeta ~ N(0, s^2 I)``,
      so a per-example gradient is ``A z - zeta``: gradient-noise covariance ``Sigma = s^2 I``;
    * ``noise_model = "shift"``: ``l(z; xi) = 1/2 (z - xi)^T A (z - xi) - 1/2 tr(A Cov xi)`` with
      ``xi ~ N(0, s^2 A^{-1})`` (a random shift of the optimum per example), per-example gradient
      ``A (z - xi)``: ``Sigma = s^2 A`` (noise shaped like the Hessian, as when the Fisher
      information equals the Hessian).
    """

    def __init__(self, dim: int, condition: float, *, noise: float = 0.0, noise_model: str = "isotropic",
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> None:
        self.dim = int(dim)
        self.condition = float(condition)
        self.noise = float(noise)
        self.noise_model = noise_model
        self.device = torch.device(device)
        self.dtype = dtype
        k = np.arange(self.dim)
        a = self.condition ** (k / max(self.dim - 1, 1))
        self.curvatures_np = a.astype(float)
        self.curvatures = torch.as_tensor(a, device=self.device, dtype=dtype)

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        """True loss ``[...]`` of points ``[..., D]``."""
        return 0.5 * (self.curvatures * z * z).sum(-1)

    def grad(self, z: torch.Tensor) -> torch.Tensor:
        return self.curvatures * z

    def gradient_noise_cov(self) -> np.ndarray:
        """Covariance ``Sigma`` of one per-example gradient (diagonal, as a vector ``[D]``)."""
        if self.noise_model == "isotropic":
            return np.full(self.dim, self.noise ** 2)
        return self.noise ** 2 * self.curvatures_np

    def minibatch_grad(self, z: torch.Tensor, b: int, generator: torch.Generator) -> torch.Tensor:
        """Mini-batch gradient at ``z`` ``[R, D]``: the mean of ``b`` per-example gradients,
        each example drawn independently (one batch per row)."""
        eps = torch.randn(z.shape[0], b, self.dim, generator=generator, device=self.device, dtype=self.dtype)
        if self.noise_model == "isotropic":
            per_example = self.grad(z).unsqueeze(1) - self.noise * eps
        else:
            xi = self.noise * eps / self.curvatures.sqrt()
            per_example = self.curvatures * (z.unsqueeze(1) - xi)
        return per_example.mean(1)
