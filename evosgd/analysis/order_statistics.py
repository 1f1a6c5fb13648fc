"""Moments of order statistics of worker times (beside the means in ``stragglers.py``) and the
exact finite-N absorption times of the Wright-Fisher chain (beside ``popgen.wright_fisher_chain``).

**Order statistics.**  For iid non-negative times with distribution function F, the k-th fastest
of n, ``T_(k:n)``, has survival ``P(T_(k:n) > x) = 1 - I_{F(x)}(k, n - k + 1)`` (I the regularized
incomplete beta; David & Nagaraja 2003, eq. 2.1.5), so

    E T_(k:n) = int_0^inf S_k(x) dx,    E T_(k:n)^2 = int_0^inf 2 x S_k(x) dx,
    Var T_(k:n) = E T^2 - (E T)^2     (by adaptive quadrature).

Closed forms: exponential of mean mu (Renyi 1953: the spacings are independent exponentials of
means ``mu / (n - j + 1)``) ``Var T_(k:n) = mu^2 sum_{j=n-k+1}^{n} 1/j^2``; uniform on [0, 1]: T_(k:n)
is ``Beta(k, n - k + 1)``.  The step time of synchronous training with K workers and b backups is
``T_(K:K+b)``: its variance says how much the steps jitter, not only how long they take.

**Wright-Fisher absorption.**  The haploid Wright-Fisher chain on counts 0..N with transition
``P[i, j] = Binomial(N, p_s(i/N)).pmf(j)``, ``p_s(p) = p (1 + s) / (1 + p s)``.  With Q its transient
block (states 1..N-1) the expected absorption time t, the fixation probability u and the time to
fixation conditional on fixation t1 solve linear systems (Ewens 2004, ch. 2.9):

    (I - Q) t = 1,    (I - Q) u = P[1:N, N],    (I - Q) v = u,  t1 = v / u,

(``v_i = E[T 1{fix} | i]``, each generation spent in j counts with the probability ``u_j`` of
fixing from there), solved with ``numpy.linalg.solve``, O(N^3).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import integrate, special, stats


def _order_survival(cdf: Any, k: int, n: int):
    if not 1 <= k <= n:
        raise ValueError(f"order k = {k} must lie in [1, n = {n}]")
    return lambda x: 1.0 - float(special.betainc(k, n - k + 1, min(1.0, max(0.0, float(cdf(x))))))


def order_statistic_moments(cdf: Any, k: int, n: int) -> tuple[float, float]:
    """(``E T_(k:n)``, ``Var T_(k:n)``) of the k-th smallest of n iid non-negative times with
    distribution function ``cdf``, by scipy.integrate.quad of the survival function."""
    surv = _order_survival(cdf, k, n)
    m1 = integrate.quad(surv, 0.0, np.inf, limit=200, epsabs=1e-12, epsrel=1e-10)[0]
    m2 = integrate.quad(lambda x: 2.0 * x * surv(x), 0.0, np.inf, limit=200, epsabs=1e-12, epsrel=1e-10)[0]
    return m1, max(m2 - m1 * m1, 0.0)


def order_statistic_variance(cdf: Any, k: int, n: int) -> float:
    """``Var T_(k:n)`` by numerical integration (see :func:`order_statistic_moments`)."""
    return order_statistic_moments(cdf, k, n)[1]


def variance_order_statistic_exponential(k: int, n: int, mean: float) -> float:
    """``Var T_(k:n) = mu^2 sum_{j=n-k+1}^{n} 1/j^2`` for iid exponential times of mean mu (Renyi 1953);
    the slowest of n: ``mu^2 sum_{j<=n} 1/j^2 -> mu^2 pi^2/6``."""
    if not 1 <= k <= n:
        raise ValueError(f"order k = {k} must lie in [1, n = {n}]")
    return mean * mean * sum(1.0 / (j * j) for j in range(n - k + 1, n + 1))


def variance_order_statistic_lognormal(k: int, n: int, mu: float, sigma: float) -> float:
    """``Var T_(k:n)`` for ``T = exp(N(mu, sigma^2))`` by numerical integration."""
    return order_statistic_variance(stats.lognorm(s=sigma, scale=math.exp(mu)).cdf, k, n)


def wright_fisher_absorption(n_copies: int, s: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact (u, t, t1) from every count i = 0..N of the haploid Wright-Fisher chain: fixation
    probability, mean absorption time, mean fixation time given fixation (generations), by solving
    the linear systems of the module docstring (t1 is NaN at i = 0, u = 0 there)."""
    n = int(n_copies)
    i = np.arange(n + 1)
    p = i / n
    ps = p * (1 + s) / (1 + p * s)
    P = stats.binom.pmf(i[None, :], n, ps[:, None])
    A = np.eye(n - 1) - P[1:n, 1:n]
    u_in = np.linalg.solve(A, P[1:n, n])
    t_in = np.linalg.solve(A, np.ones(n - 1))
    v_in = np.linalg.solve(A, u_in)
    t1_in = v_in / np.where(u_in > 0, u_in, np.nan)
    return (np.concatenate([[0.0], u_in, [1.0]]), np.concatenate([[0.0], t_in, [0.0]]),
            np.concatenate([[np.nan], t1_in, [0.0]]))
