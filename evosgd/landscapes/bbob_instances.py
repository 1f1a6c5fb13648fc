"""BBOB instance data: the legacy BBOB-2009 random generator and every function's per-instance
constants (x_opt, f_opt, rotations, Gallagher peaks), computed once in float64 with numpy.

Sources: Hansen, Finck, Ros & Auger 2009, "Real-parameter black-box optimization benchmarking
2009: noiseless functions definitions" (INRIA RR-6829), its reference C code (``bbob2009_unif``,
``bbob2009_gauss``, ``bbob2009_compute_rotation``) and IOHexperimenter's reimplementation
(``ioh/problem/bbob``), which fixes the instances the literature reports on.  Written from those
definitions; equality with ``ioh`` is checked in ``tests/test_bbob.py``.

The generator: a Park–Miller minimal-standard LCG (``a = 16807``, ``m = 2^31 - 1``, Schrage's
factorisation ``q = 127773``, ``r = 2836``) behind a 32-entry Bays–Durham shuffle table, warmed up
with 40 draws; uniforms are ``u = value / 2.147483647e9`` (0 replaced by 1e-99).  Gaussians are
Box–Muller on 2N uniforms: ``g_i = sqrt(-2 log u_i) cos(2 pi u_{N+i})``.

Seeds (``seed = fid + 10000 * instance``; f4 uses 3 and f18 uses 17 as ``fid``): x_opt from
``uniform(D, seed)`` (f12: ``seed + 1e6``) as ``8 floor(1e4 u) / 1e4 - 4`` (0 -> -1e-5); f_opt =
``round(100 * 100 g1 / g2) / 100`` clamped to [-1000, 1000] with ``g1 = gauss(1, seed)``,
``g2 = gauss(1, seed + 1)``; the rotations ``R = rot(seed + 1e6)`` and ``Q = rot(seed)`` are
Gram–Schmidt orthonormalisations of a D x D Gaussian matrix filled column-major.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

_A, _M, _Q, _R = 16807, 2147483647, 127773, 2836


def _lcg(seed: int) -> int:
    """One Park–Miller step with Schrage's trick (exact in 32-bit integer arithmetic)."""
    hi = seed // _Q
    seed = _A * (seed - hi * _Q) - _R * hi
    return seed + _M if seed < 0 else seed


def uniform(n: int, seed: int) -> np.ndarray:
    """``n`` uniforms in (0, 1] from the BBOB-2009 shuffled LCG started at ``seed`` (>= 1)."""
    seed = max(abs(int(seed)), 1)
    table = [0] * 32
    for i in range(39, -1, -1):
        seed = _lcg(seed)
        if i < 32:
            table[i] = seed
    out = np.empty(n, dtype=np.float64)
    current = table[0]
    for i in range(n):
        seed = _lcg(seed)
        j = current // 67108865  # 2^31 / 32, the table slot of the previous output
        current = table[j]
        table[j] = seed
        out[i] = current / 2.147483647e9
        if out[i] == 0.0:
            out[i] = 1e-99
    return out


def gauss(n: int, seed: int) -> np.ndarray:
    """``n`` standard normals by Box–Muller on ``uniform(2n, seed)``."""
    u = uniform(2 * n, seed)
    g = np.sqrt(-2.0 * np.log(u[:n])) * np.cos(2.0 * math.pi * u[n:])
    g[g == 0.0] = 1e-99
    return g


@lru_cache(maxsize=512)
def rotation(seed: int, dim: int) -> np.ndarray:
    """The BBOB orthogonal matrix of ``seed``: Gram–Schmidt on the columns of a Gaussian matrix
    ``B[i, j] = g[j * D + i]`` (row i, column j), in the reference code's order."""
    b = gauss(dim * dim, seed).reshape(dim, dim).T.copy()
    for i in range(dim):
        for j in range(i):
            b[:, i] -= (b[:, i] @ b[:, j]) * b[:, j]
        b[:, i] /= math.sqrt(b[:, i] @ b[:, i])
    b.flags.writeable = False
    return b


def instance_seed(fid: int, instance: int) -> int:
    return (fid - 1 if fid in (4, 18) else fid) + 10000 * instance


def raw_xopt(seed: int, dim: int) -> np.ndarray:
    x = 8.0 * np.floor(1e4 * uniform(dim, seed)) / 1e4 - 4.0
    x[x == 0.0] = -1e-5
    return x


def fopt(seed: int) -> float:
    g1, g2 = gauss(1, seed)[0], gauss(1, seed + 1)[0]
    return float(min(1000.0, max(-1000.0, math.floor(100.0 * 100.0 * g1 / g2 + 0.5) / 100.0)))


def exponents(dim: int) -> np.ndarray:
    """``(i - 1) / (D - 1)`` for i = 1..D (0 when D = 1)."""
    return np.arange(dim, dtype=np.float64) / max(dim - 1, 1)


def gallagher_peaks(seed: int, dim: int, n_peaks: int, b: float, c: float, top_condition: float) -> dict[str, np.ndarray]:
    """Gallagher's peaks (f21: 101 peaks, b = 10, c = 5, top condition sqrt(1000); f22: 21 peaks,
    b = 9.8, c = 4.9, top condition 1000): heights ``v_0 = 10``, ``v_i = 1.1 + 8 (i-1)/(n-2)``;
    condition of peak i >= 1 ``1000^(pi(i-1)/(n-2))`` for a random permutation pi (argsort of
    uniforms); per-coordinate scales ``C_i^(pi_i(j)/(D-1) - 0.5)``; centres ``y_i = Q (b u_i - c)``
    in the rotated space, the global one shrunk by 0.8 (so x_opt = 0.8 (b u_0 - c))."""
    perm = np.argsort(uniform(n_peaks - 1, seed), kind="stable")
    conditions = np.empty(n_peaks)
    conditions[0] = top_condition
    conditions[1:] = 1000.0 ** (perm / (n_peaks - 2.0))
    heights = np.empty(n_peaks)
    heights[0] = 10.0
    heights[1:] = (np.arange(1, n_peaks) - 1.0) / (n_peaks - 2.0) * (9.1 - 1.1) + 1.1
    scales = np.empty((n_peaks, dim))
    for i in range(n_peaks):
        order = np.argsort(uniform(dim, seed + 1000 * i), kind="stable")
        scales[i] = conditions[i] ** (order / max(dim - 1.0, 1.0) - 0.5)
    u = uniform(dim * n_peaks, seed).reshape(n_peaks, dim)
    q = rotation(seed, dim)
    centres = (b * u - c) @ q.T
    centres[0] *= 0.8
    return {"heights": heights, "scales": scales, "centres": centres, "xopt": 0.8 * (b * u[0] - c)}


def constants(fid: int, instance: int, dim: int) -> dict[str, np.ndarray | float]:
    """Everything function ``fid`` needs for one instance: ``xopt`` (its minimizer), ``fopt`` and,
    where used, ``R = rot(seed + 1e6)``, ``Q = rot(seed)``, a combined matrix ``M`` and extras."""
    seed = instance_seed(fid, instance)
    e = exponents(dim)
    x = raw_xopt(seed + 1000000 if fid == 12 else seed, dim)
    out: dict[str, np.ndarray | float] = {"fopt": fopt(seed)}

    def m2(condition: float) -> np.ndarray:  # R diag(condition^e) Q: "Lambda^(condition^2)" between rotations
        return rotation(seed + 1000000, dim) @ np.diag(condition**e) @ rotation(seed, dim)

    if fid == 4:  # Buche-Rastrigin: the odd coordinates (1-based) of the optimum are positive
        x[::2] = np.abs(x[::2])
    elif fid == 5:  # linear slope: the optimum is the corner +-5 on the side of x_opt's signs
        out["sign"] = np.where(x < 0.0, -1.0, 1.0)
        x = 5.0 * out["sign"]
    elif fid == 8:
        x = 0.75 * x
    elif fid in (9, 19):  # z = factor Q x + 1/2, optimum where z = 1
        factor = max(1.0, math.sqrt(dim) / 8.0)
        out["M"] = factor * rotation(seed, dim)
        x = rotation(seed, dim).T @ np.full(dim, 0.5) / factor
    elif fid == 20:
        x = np.where(uniform(dim, seed) < 0.5, -1.0, 1.0) * 0.5 * 4.2096874637
    elif fid in (21, 22):
        peaks = gallagher_peaks(seed, dim, *((101, 10.0, 5.0, math.sqrt(1000.0)) if fid == 21 else (21, 9.8, 4.9, 1000.0)))
        out.update({k: v for k, v in peaks.items() if k != "xopt"})
        out["Q"] = rotation(seed, dim)
        x = peaks["xopt"]
    elif fid == 24:
        x = np.where(gauss(dim, seed) < 0.0, -1.25, 1.25)
    if fid in (7, 10, 11, 12, 14, 15, 16, 17, 18, 24):
        out["R"] = rotation(seed + 1000000, dim)
    if fid in (7, 24):
        out["Q"] = rotation(seed, dim)
    if fid in (6, 13, 15):
        out["M"] = m2(math.sqrt(10.0))
    elif fid == 16:
        out["M"] = m2(0.1)
    elif fid == 23:
        out["M"] = m2(10.0)
    elif fid in (17, 18):
        out["M"] = np.diag(math.sqrt(10.0 if fid == 17 else 1000.0) ** e) @ rotation(seed, dim)
    out["xopt"] = np.asarray(x, dtype=np.float64)
    return out
