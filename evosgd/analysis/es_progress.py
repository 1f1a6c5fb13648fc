"""Progress-rate and success-rate theory of evolution strategies on the sphere (Beyer 2001, *The
Theory of Evolution Strategies*, ch. 3 and 6; Rechenberg 1973), as functions beside the engines'
``weights`` option (equal weights give Beyer's (mu/mu_I, lambda)-ES).

Normalisation on the sphere ``f = ||x||^2`` in N dimensions at distance R:
``sigma* = N sigma / R``, ``phi* = N E[R - R'] / R`` (the expected normalised progress per generation).

* **(mu/mu_I, lambda)-ES** (intermediate recombination of the mu best, equal weights 1/mu), large-N
  limit (Beyer 2001, ch. 6; Rudolph 1997):

      phi* = c_{mu/mu,lambda} sigma* - sigma*^2 / (2 mu),

  ``c_{mu/mu,lambda} = (1/mu) sum_{j > lambda - mu} E Z_{(j:lambda)}`` the progress coefficient (the
  selection intensity of keeping mu of lambda).  Maximum ``mu c^2 / 2`` at ``sigma* = mu c``; zero
  progress at ``sigma* = 2 mu c``.
* **Weighted recombination** (weights w_i on the ranks, sum 1; Arnold 2006, *Weighted
  multirecombination evolution strategies*, TCS 361): ``phi* = c_w sigma* - sigma*^2 / (2 mu_eff)`` with
  ``c_w = sum_i w_i E Z_{(lambda+1-i:lambda)}`` and ``mu_eff = 1 / sum w_i^2`` (equal weights: c_w =
  c_{mu/mu,lambda}, mu_eff = mu).
* **(1+1)-ES**: the success probability (an offspring better than its parent), large N,
  ``P_s = Phi(-sigma*/2)``, and its progress rate
  ``phi* = sigma*/sqrt(2 pi) exp(-sigma*^2/8) - sigma*^2/2 (1 - Phi(sigma*/2))`` (Rechenberg 1973;
  Beyer 2001, ch. 3).  For finite N the success probability is exact: an offspring
  ``x + sigma z`` is better when ``||x/sigma + z||^2 < R^2/sigma^2``, a noncentral chi-square with N
  degrees of freedom and noncentrality ``(R/sigma)^2 = (N/sigma*)^2``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from evosgd.analysis.selection_theory import expected_normal_order_statistic, selection_intensity


def progress_coefficient(mu: int, lam: int) -> float:
    """``c_{mu/mu,lambda}``: the mean of the mu largest of lambda standard normal order statistics
    (``c_{1,2} = 1/sqrt(pi)``; ``c_{mu/mu,lambda} -> phi(x)/p``, p = mu/lambda, for large lambda)."""
    return selection_intensity(mu, lam)


def weighted_progress_coefficient(weights: list[float] | np.ndarray) -> float:
    """``c_w = sum_i w_i E Z_{(lambda+1-i:lambda)}`` for rank weights ``w_1..w_lambda`` (best first; lambda
    = ``len(weights)``, zeros for the unselected ranks)."""
    w = np.asarray(weights, dtype=float)
    lam = len(w)
    return float(sum(wi * expected_normal_order_statistic(lam - i, lam) for i, wi in enumerate(w) if wi != 0))


def progress_rate(sigma_star: float | np.ndarray, mu: int, lam: int) -> np.ndarray:
    """``phi* = c_{mu/mu,lambda} sigma* - sigma*^2/(2 mu)``: (mu/mu_I, lambda)-ES on the sphere, N -> inf."""
    s = np.asarray(sigma_star, dtype=float)
    return progress_coefficient(mu, lam) * s - s * s / (2.0 * mu)


def weighted_progress_rate(sigma_star: float | np.ndarray, weights: list[float] | np.ndarray) -> np.ndarray:
    """``phi* = c_w sigma* - sigma*^2/(2 mu_eff)`` for rank weights over the whole population
    (length lambda, best first, zeros for the unselected; they are normalised to sum 1)."""
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    s = np.asarray(sigma_star, dtype=float)
    return weighted_progress_coefficient(w) * s - s * s * float(np.sum(w * w)) / 2.0


def optimal_sigma_star(mu: int, lam: int) -> tuple[float, float]:
    """(``sigma*_opt = mu c``, ``phi*_max = mu c^2 / 2``) of the (mu/mu_I, lambda)-ES, N -> inf."""
    c = progress_coefficient(mu, lam)
    return mu * c, mu * c * c / 2.0


def one_plus_one_success_probability(sigma_star: float | np.ndarray, dim: int | None = None) -> np.ndarray:
    """Probability that an offspring of a (1+1)-ES on the sphere is better than its parent:
    ``Phi(-sigma*/2)`` for N -> inf (``dim`` None), else exact: ``P(chi'^2_N(nc) < nc)``,
    ``nc = (N / sigma*)^2``."""
    s = np.asarray(sigma_star, dtype=float)
    if dim is None:
        return stats.norm.cdf(-s / 2.0)
    nc = (dim / s) ** 2
    return stats.ncx2.cdf(nc, dim, nc)


def one_plus_one_progress_rate(sigma_star: float | np.ndarray) -> np.ndarray:
    """``phi* = sigma*/sqrt(2 pi) e^{-sigma*^2/8} - sigma*^2/2 (1 - Phi(sigma*/2))``: the (1+1)-ES on
    the sphere, N -> inf (maximum 0.2025 at sigma* = 1.224, success probability 0.270 there)."""
    s = np.asarray(sigma_star, dtype=float)
    return s / math.sqrt(2 * math.pi) * np.exp(-s * s / 8.0) - s * s / 2.0 * stats.norm.sf(s / 2.0)
