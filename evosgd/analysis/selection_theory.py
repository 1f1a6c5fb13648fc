"""Selection theory of quantitative genetics, beside Lande's equation (``selection_gradient``):
truncation selection on a Gaussian, selection intensity for finite n, the breeder's equation and
Price's equation with a transmission term.  Pure numpy/scipy functions.

* **Truncation selection** of the best fraction p of a Gaussian phenotype (threshold ``x_p`` with
  ``1 - Phi(x_p) = p``): the selected mean moves by ``i sigma_P`` with the selection intensity
  ``i = phi(x_p) / p`` and the variance shrinks by the factor ``1 - k``, ``k = i (i - x_p)``
  (Falconer & Mackay 1996, *Introduction to Quantitative Genetics*, ch. 11-12; Bulmer 1971).
  For genotypes ``N(m, G)``, a phenotype ``z = g + e``, ``e ~ N(0, E)``, truncated on the index
  ``y = a . z`` (variance ``a^T P a``, ``P = G + E``), the Pearson-Aitken formulas give the
  selected genotypes' mean and covariance:

      Delta m = i G a / sqrt(a^T P a),    G* = G - k (G a)(G a)^T / (a^T P a).

* **Finite n**: keeping the best k of n, the selection intensity is the mean of the top k
  expected standard normal order statistics, ``i_{k,n} = (1/k) sum_{j > n-k} E Z_{(j:n)}``,
  ``E Z_{(j:n)} = int x f_{j:n}(x) dx`` (David & Nagaraja 2003, ch. 2), computed by quadrature;
  it equals Beyer's progress coefficient ``c_{mu/mu,lambda}`` for k = mu, n = lambda.
* **Breeder's equation** ``R = h^2 S`` with ``h^2 = G / (G + E)`` (Lush 1937); multivariate
  ``R = G P^{-1} S`` (Lande 1979).
* **Price's equation** (Price 1970): with parents' phenotypes z_i, their numbers of offspring w_i
  and the mean phenotype of each parent's offspring z'_i,

      wbar Delta zbar = Cov(w, z) + E(w (z' - z))     (population moments over the parents),

  the selection term plus the transmission term (a mutation of mean ``mu_m`` hitting with
  probability ``u`` contributes ``u mu_m`` per generation to the second: a transmission bias).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, special, stats

SQRT_2PI = math.sqrt(2 * math.pi)


def truncation_point(proportion: float) -> float:
    """``x_p`` with ``P(Z > x_p) = p``, the standardized threshold that keeps the best fraction p."""
    if not 0 < proportion <= 1:
        raise ValueError(f"proportion selected must lie in (0, 1], not {proportion}")
    return float(stats.norm.isf(proportion))


def truncation_intensity(proportion: float) -> float:
    """``i = phi(x_p) / p``: mean of a standard normal above its (1 - p)-quantile (infinite n)."""
    x = truncation_point(proportion)
    return float(stats.norm.pdf(x) / proportion) if proportion < 1 else 0.0


def truncation_variance_reduction(proportion: float) -> float:
    """``k = i (i - x_p)``: a standard normal truncated to its best fraction p has variance 1 - k."""
    if proportion == 1:
        return 0.0
    i, x = truncation_intensity(proportion), truncation_point(proportion)
    return i * (i - x)


def post_selection_moments(G: np.ndarray, a: np.ndarray, proportion: float, E: np.ndarray | float = 0.0,
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(``Delta m``, ``G*``) of Gaussian genotypes ``N(m, G)`` after truncation selection of the best
    fraction p on ``y = a . (g + e)``, ``e ~ N(0, E)`` (E a matrix or a multiple of I):
    ``Delta m = i G a / sqrt(a^T P a)``, ``G* = G - k (G a)(G a)^T / (a^T P a)``."""
    G = np.atleast_2d(np.asarray(G, dtype=float))
    a = np.asarray(a, dtype=float).ravel()
    P = G + (np.asarray(E, dtype=float) if np.ndim(E) == 2 else float(E) * np.eye(len(a)))
    var_y = float(a @ P @ a)
    Ga = G @ a
    dm = truncation_intensity(proportion) * Ga / math.sqrt(var_y)
    return dm, G - truncation_variance_reduction(proportion) * np.outer(Ga, Ga) / var_y


def expected_normal_order_statistic(j: int, n: int) -> float:
    """``E Z_{(j:n)}``, the j-th smallest of n iid standard normals, ``int x f_{j:n}(x) dx`` with
    ``f_{j:n} = n!/((j-1)!(n-j)!) Phi^{j-1} (1-Phi)^{n-j} phi`` (adaptive quadrature, log-space
    coefficients so that n in the thousands does not overflow)."""
    if not 1 <= j <= n:
        raise ValueError(f"order j = {j} must lie in [1, n = {n}]")
    log_c = special.gammaln(n + 1) - special.gammaln(j) - special.gammaln(n - j + 1)

    def density(x: float) -> float:
        return math.exp(log_c + (j - 1) * special.log_ndtr(x) + (n - j) * special.log_ndtr(-x) - 0.5 * x * x) / SQRT_2PI

    centre = float(stats.norm.ppf((j - 0.375) / (n + 0.25)))  # Blom's approximation: where the mass is
    parts = [integrate.quad(lambda x: x * density(x), lo, hi, limit=200, epsabs=1e-13, epsrel=1e-11)[0]
             for lo, hi in ((-np.inf, centre), (centre, np.inf))]
    return float(sum(parts))


def selection_intensity(selected: int, n: int) -> float:
    """``i_{k,n} = (1/k) sum_{j=n-k+1}^{n} E Z_{(j:n)}``: the expected mean of the best k of n standard
    normals (truncation selection in a finite population; -> ``phi(x_p)/p`` with p = k/n as n grows).
    ``i_{1,2} = 1/sqrt(pi)``, ``i_{n,n} = 0``.  One integral instead of k: the top-k order statistic
    densities sum to ``n phi(x) P(Bin(n-1, Phi(x)) >= n-k) = n phi(x) I_{Phi(x)}(n-k, k)``, so

        i_{k,n} = (n/k) int x phi(x) I_{Phi(x)}(n - k, k) dx   (I: the regularized incomplete beta)."""
    if not 1 <= selected <= n:
        raise ValueError(f"selected = {selected} must lie in [1, n = {n}]")
    if selected == n:
        return 0.0
    k = selected

    def f(x: float) -> float:
        return x * math.exp(-0.5 * x * x) / SQRT_2PI * float(special.betainc(n - k, k, special.ndtr(x)))

    centre = float(stats.norm.isf(k / n))
    total = sum(integrate.quad(f, lo, hi, limit=200, epsabs=1e-13, epsrel=1e-11)[0] for lo, hi in ((-np.inf, centre), (centre, np.inf)))
    return n / k * total


def heritability(genetic_variance: float, environmental_variance: float) -> float:
    """Narrow-sense heritability ``h^2 = G / (G + E)`` (additive genotypes, no dominance)."""
    return genetic_variance / (genetic_variance + environmental_variance)


def breeders_equation(h2: float | np.ndarray, selection_differential: float | np.ndarray) -> np.ndarray:
    """``R = h^2 S`` (Lush 1937): the response of the mean to a selection differential S."""
    return np.asarray(h2, dtype=float) * np.asarray(selection_differential, dtype=float)


def multivariate_breeders_equation(G: np.ndarray, P: np.ndarray, S: np.ndarray) -> np.ndarray:
    """``R = G P^{-1} S`` (Lande 1979): the multivariate breeder's equation."""
    return np.asarray(G, float) @ np.linalg.solve(np.asarray(P, float), np.asarray(S, float))


def price_equation(z_parent: np.ndarray, offspring_count: np.ndarray, z_offspring_mean: np.ndarray,
                   ) -> tuple[float, float, float]:
    """(selection, transmission, Delta zbar) of Price's equation for one trait:

        Delta zbar = Cov(w, z) / wbar + E(w (z' - z)) / wbar,

    ``z_parent [N]``, ``offspring_count [N]`` (w_i), ``z_offspring_mean [N]`` (z'_i; ignored where
    w_i = 0).  Moments are population moments over the parents (divisor N), which makes the
    decomposition an identity: ``Delta zbar`` is the offspring mean minus the parent mean."""
    z = np.asarray(z_parent, dtype=float)
    w = np.asarray(offspring_count, dtype=float)
    zo = np.where(w > 0, np.asarray(z_offspring_mean, dtype=float), z)
    wbar = w.mean()
    selection = float(np.mean(w * z) - wbar * z.mean()) / wbar
    transmission = float(np.mean(w * (zo - z))) / wbar
    return selection, transmission, selection + transmission
