"""Noise and the stationary spread of SGD on a quadratic.

Noisy quadratic model (Zhang et al. 2019, 'Which algorithmic choices matter at which batch
sizes? Insights from a noisy quadratic model', NeurIPS): loss ``L(theta) = 1/2 e^T H e`` with
``e = theta - theta*``; one example's gradient is ``H e + xi_i`` with ``xi_i`` iid, mean 0,
covariance C.  SGD with learning rate eta on mini-batches of b examples:

    e_{k+1} = A e_k - eta zeta_k,   A = I - eta H,   Cov zeta_k = C / b.

When ``rho(A) < 1`` the iterates have a stationary law whose covariance Sigma solves the discrete
Lyapunov equation ``Sigma = A Sigma A^T + eta^2 C / b`` exactly (any noise law with that
covariance; e.g. Mandt, Hoffman & Blei 2017, 'Stochastic gradient descent as approximate
Bayesian inference', JMLR 18, sec. 3 for its continuous limit).  For commuting H and C, per
eigen-direction: ``sigma_j^2 = eta c_j / (b h_j (2 - eta h_j))``.

As eta -> 0 with the "temperature" eta / b fixed, Sigma approaches the stationary covariance of
the SDE ``de = -H e dt + sqrt(eta / b) C^(1/2) dW``, the continuous Lyapunov solution of
``H Sigma + Sigma H = (eta / b) C`` — which depends on eta and b only through eta / b.  The
discrete solution exceeds it by the factor ``1 / (1 - eta h / 2)`` per direction: at large
learning rates the temperature alone no longer predicts the spread.

Least squares (``model = "landscape"``: the scenario's linear_regression dataset) is the exact
case with *multiplicative* noise: one example's gradient ``x_i x_i^T e - x_i r_i`` grows with
``e = w - w*``, and the second moments solve a generalized Lyapunov equation (see
:func:`least_squares_stationary_cov`) whose extra term ``lr^2 / b (M(Sigma) - H Sigma H)`` the
plain equation (with the noise covariance at the optimum) leaves out.

The measurement runs ``chains`` independent SGD chains (vectorized) from theta*, discards a
burn-in of ``ln(1e4) / (-2 ln rho(A))`` steps, and time-averages ``||e||^2`` over ``records``
snapshots spaced one relaxation time apart; chains are iid, so the Student-t interval over chains
is the CI.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import scipy.linalg
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad_common import analysis_generator, analysis_landscape, fmt, mean_ci, single_thread
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES

KIND = "sgd_stationary"


# ----------------------------------------------------------------------------- theory
def sgd_transition(H: np.ndarray, lr: float) -> np.ndarray:
    """``A = I - lr H``, the linear part of one SGD step on ``1/2 e^T H e``."""
    H = np.asarray(H, dtype=np.float64)
    return np.eye(H.shape[0]) - lr * H


def lyapunov_stationary_cov(H: np.ndarray, C: np.ndarray, lr: float, batch_size: int) -> np.ndarray:
    """Stationary covariance of SGD iterates on the noisy quadratic: the solution of the discrete
    Lyapunov equation ``Sigma = A Sigma A^T + lr^2 C / b`` with ``A = I - lr H``
    (``scipy.linalg.solve_discrete_lyapunov``).  Requires the spectral radius of A below 1,
    i.e. ``0 < lr < 2 / lambda_max(H)``."""
    A = sgd_transition(H, lr)
    radius = float(np.abs(np.linalg.eigvals(A)).max())
    if radius >= 1.0:
        raise ParameterError("lr", lr, f"0 < lr < 2 / lambda_max(H) = {2.0 / np.linalg.eigvalsh(H).max():.4g} (SGD diverges otherwise)")
    Q = lr**2 * np.asarray(C, dtype=np.float64) / batch_size
    S = scipy.linalg.solve_discrete_lyapunov(A, Q)
    return 0.5 * (S + S.T)


def sde_stationary_cov(H: np.ndarray, C: np.ndarray, lr: float, batch_size: int) -> np.ndarray:
    """Small-learning-rate (SDE) limit: ``H Sigma + Sigma H = (lr / b) C``
    (``scipy.linalg.solve_continuous_lyapunov``); a function of the temperature lr / b only."""
    S = scipy.linalg.solve_continuous_lyapunov(np.asarray(H, dtype=np.float64), lr / batch_size * np.asarray(C, dtype=np.float64))
    return 0.5 * (S + S.T)


def stationary_variance_1d(h: float, c: float, lr: float, batch_size: int) -> float:
    """One direction (or commuting H, C): ``lr c / (b h (2 - lr h))``."""
    return lr * c / (batch_size * h * (2.0 - lr * h))


def least_squares_noise(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(w*, H, C, M) of least squares ``l_i(w) = 1/2 (x_i . w - y_i)^2`` on a dataset ``X [N, D]``, ``y [N]``:
    the minimiser, ``H = X^T X / N``, the per-example gradient covariance at w*
    ``C = (1/N) sum x_i x_i^T r_i^2`` (``r_i = y_i - x_i . w*``; ``sum x_i r_i = 0`` there) and the
    fourth-moment operator ``M = (1/N) sum (x_i x_i^T) kron (x_i x_i^T)`` as a ``[D^2, D^2]`` matrix."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    N = X.shape[0]
    w = np.linalg.lstsq(X, y, rcond=None)[0]
    r = y - X @ w
    H = X.T @ X / N
    C = (X * (r**2)[:, None]).T @ X / N
    XX = np.einsum("ni,nj->nij", X, X).reshape(N, -1)
    M = XX.T @ XX / N
    return w, H, C, M


def least_squares_moment_operator(H: np.ndarray, M: np.ndarray, lr: float, batch_size: int) -> np.ndarray:
    """The linear map ``Sigma -> E[(I - lr A_b) Sigma (I - lr A_b)]`` as a ``[D^2, D^2]`` matrix."""
    D = H.shape[0]
    I = np.eye(D)
    return (np.eye(D * D) - lr * (np.kron(H, I) + np.kron(I, H))
            + lr**2 * ((1 - 1 / batch_size) * np.kron(H, H) + M / batch_size))


def least_squares_stationary_cov(H: np.ndarray, C: np.ndarray, M: np.ndarray, lr: float, batch_size: int) -> np.ndarray | None:
    """Exact stationary covariance of SGD on least squares with mini-batches drawn with replacement.

    With ``e = w - w*`` and the mini-batch Hessian ``A_b = mean_{i in batch} x_i x_i^T``, one step is
    ``e' = (I - lr A_b) e + lr c_b`` (``c_b`` the batch mean of ``x_i r_i``, mean 0), so the second
    moment obeys ``Sigma = Sigma - lr (H Sigma + Sigma H) + lr^2 [(1 - 1/b) H Sigma H + (1/b) M(Sigma)]
    + lr^2 C / b`` at stationarity (the cross terms vanish since E e = 0 there and the batch is drawn
    independently of e): a *generalized* Lyapunov equation whose extra term
    ``lr^2 / b (M(Sigma) - H Sigma H)`` is the multiplicative part of the noise (the noise grows with
    the distance to w*).  Solved as a linear system in vec(Sigma); None when the second moments are
    unstable (spectral radius of the moment operator >= 1: SGD's variance diverges).
    """
    D = H.shape[0]
    K = least_squares_moment_operator(H, M, lr, batch_size)
    if float(np.abs(np.linalg.eigvals(K)).max()) >= 1.0:
        return None
    S = np.linalg.solve(np.eye(D * D) - K, (lr**2 / batch_size * C).reshape(-1)).reshape(D, D)
    return 0.5 * (S + S.T)


def relaxation_steps(H: np.ndarray, lr: float) -> float:
    """Correlation time of the iterates in steps: ``-1 / ln rho(A)``."""
    radius = float(np.abs(np.linalg.eigvals(sgd_transition(H, lr))).max())
    return -1.0 / math.log(radius)


# ----------------------------------------------------------------------------- the model
class StationaryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal["noisy_quadratic", "landscape"] = Field(
        "noisy_quadratic", description="noisy_quadratic: the built-in model below (additive noise: Lyapunov is exact); landscape: "
                                       "the scenario's linear_regression dataset (multiplicative noise: the generalized Lyapunov "
                                       "equation is exact, the plain one uses the noise at the optimum)")

    dim: int = Field(5, ge=1, le=200, description="dimension D of the noisy quadratic")
    h_min: float = Field(0.1, gt=0, description="smallest Hessian eigenvalue")
    h_max: float = Field(1.0, gt=0, description="largest Hessian eigenvalue (eigenvalues log-spaced in between)")
    noise: Literal["hessian", "isotropic", "rotated"] = Field(
        "rotated", description="per-example gradient-noise covariance C: proportional to H (the NQM's choice, "
                               "commutes with H), noise_scale * I, or a random non-commuting one with the same trace as 'hessian'")
    noise_scale: float = Field(1.0, gt=0, description="scale of C (C = noise_scale * H for 'hessian')")
    lr_fractions: list[float] = Field(
        [0.05, 0.1, 0.2, 0.4, 0.8], min_length=1,
        description="learning rates as fractions of the stability limit 2 / h_max (each in (0, 1))")
    batch_sizes: list[int] = Field([1, 4, 16], min_length=1, description="mini-batch sizes b")
    chains: int = Field(400, ge=2, description="independent SGD chains per (lr, b): the CI is over chains")
    records: int = Field(20, ge=1, description="snapshots per chain, one relaxation time apart, after burn-in")
    max_steps: int = Field(200_000, ge=10, description="cap on burn-in + recording steps per (lr, b) (tiny lr would take long)")


def noisy_quadratic(params: StationaryParams, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(H, C) of the model: H diagonal with log-spaced eigenvalues; C per ``params.noise``."""
    if params.h_max < params.h_min:
        raise ParameterError("h_max", params.h_max, f">= h_min = {params.h_min}", where=f"analysis {KIND!r}")
    h = np.geomspace(params.h_min, params.h_max, params.dim) if params.dim > 1 else np.array([params.h_max])
    H = np.diag(h)
    if params.noise == "hessian":
        C = params.noise_scale * H
    elif params.noise == "isotropic":
        C = params.noise_scale * np.eye(params.dim)
    else:
        g = torch.randn(params.dim, params.dim, generator=generator, dtype=torch.float64).numpy()
        C = g @ g.T + 0.1 * np.eye(params.dim)
        C *= params.noise_scale * h.sum() / np.trace(C)
    return H, C


def simulate_stationary(H: np.ndarray, C: np.ndarray, lr: float, batch_size: int, *, chains: int, records: int,
                        generator: torch.Generator, max_steps: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Run ``chains`` SGD chains on the noisy quadratic; per-example noise ``xi ~ N(0, C)``.

    Returns (per-chain time averages of ``||e||^2`` ``[chains]``, pooled covariance ``[D, D]``).
    """
    D = H.shape[0]
    tau = relaxation_steps(H, lr)
    burn = math.ceil(math.log(1e4) / 2.0 * tau)  # ||A^k||^2 <= 1e-4: start-up transient negligible
    spacing = max(1, math.ceil(tau))
    if burn + spacing * records > max_steps:
        spacing = max(1, (max_steps - burn) // records)
        if burn >= max_steps:
            raise ParameterError("lr", lr, f"a rate whose burn-in ({burn} steps) fits in max_steps = {max_steps}")
    Ht = torch.as_tensor(H, dtype=torch.float64)
    L = torch.linalg.cholesky(torch.as_tensor(C, dtype=torch.float64))
    e = torch.zeros(chains, D, dtype=torch.float64)
    sq = torch.zeros(chains, dtype=torch.float64)
    cov = torch.zeros(D, D, dtype=torch.float64)
    total = burn + spacing * records
    with single_thread():
        for k in range(1, total + 1):
            xi = torch.randn(chains, batch_size, D, generator=generator, dtype=torch.float64) @ L.T  # per-example noise
            grad = e @ Ht + xi.mean(1)  # mini-batch gradient: H e + mean of b examples' noise
            e = e - lr * grad
            if k > burn and (k - burn) % spacing == 0:
                sq += (e * e).sum(1)
                cov += e.T @ e
    return (sq / records).numpy(), (cov / (records * chains)).numpy()


def simulate_least_squares(X: np.ndarray, y: np.ndarray, w_star: np.ndarray, lr: float, batch_size: int, *, chains: int,
                           records: int, burn: int, spacing: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SGD chains on least squares over the dataset (each chain its own mini-batches, drawn with
    replacement): per-chain time averages of ``||w - w*||^2`` and the pooled covariance."""
    Xt = torch.as_tensor(X, dtype=torch.float64)
    rt = torch.as_tensor(y - X @ w_star, dtype=torch.float64)
    N, D = Xt.shape
    e = torch.zeros(chains, D, dtype=torch.float64)
    sq = torch.zeros(chains, dtype=torch.float64)
    cov = torch.zeros(D, D, dtype=torch.float64)
    with single_thread():
        for k in range(1, burn + spacing * records + 1):
            idx = torch.randint(N, (chains, batch_size), generator=generator)
            xb = Xt[idx]  # [chains, b, D]
            resid = (xb @ e.unsqueeze(-1)).squeeze(-1) - rt[idx]  # x . w - y = x . e - r
            e = e - lr * (xb * resid.unsqueeze(-1)).mean(1)
            if k > burn and (k - burn) % spacing == 0:
                sq += (e * e).sum(1)
                cov += e.T @ e
    return (sq / records).numpy(), (cov / (records * chains)).numpy()


def regression_data(landscape) -> tuple[np.ndarray, np.ndarray]:
    """Replicate 0's dataset of a least-squares landscape (checked against its own loss)."""
    where = f"analysis {KIND!r}"
    if not getattr(landscape, "finite_sum", False):
        raise ParameterError("model", "landscape", "a finite-sum least-squares landscape (linear_regression)", where=where)
    N = int(landscape.n_examples)
    batch = landscape.take(torch.arange(N, device=landscape.device).expand(landscape.replicates, N))
    if set(batch) != {"x", "y"}:
        raise ParameterError("model", "landscape", "a landscape whose examples are (x, y) pairs (linear_regression)", where=where)
    X = batch["x"][0].detach().to("cpu", torch.float64).numpy()
    y = batch["y"][0].detach().to("cpu", torch.float64).numpy()
    w = landscape.initial_point[:1]
    mine = 0.5 * float(((X @ w[0].to("cpu", torch.float64).numpy() - y) ** 2).mean())
    theirs = float(landscape.loss(w, {k: v[:1] for k, v in batch.items()})[0])
    if abs(mine - theirs) > 1e-4 * max(1.0, abs(mine)):
        raise ParameterError("model", "landscape", "a landscape with the loss 1/2 (x.w - y)^2 (linear_regression)", where=where)
    return X, y


def measure_stationary(params: StationaryParams, generator: torch.Generator, confidence: float = 0.95,
                       data: tuple[np.ndarray, np.ndarray] | None = None) -> AnalysisResult:
    """``data = (X, y)``: the least-squares dataset of ``model = "landscape"``; else the noisy quadratic."""
    where = f"analysis {KIND!r}"
    for f in params.lr_fractions:
        if not 0 < f < 1:
            raise ParameterError("lr_fractions", params.lr_fractions, "fractions in (0, 1) of the stability limit 2 / h_max", where=where)
    if data is None:
        H, C = noisy_quadratic(params, generator)
        M = w_star = None
    else:
        w_star, H, C, M = least_squares_noise(*data)
    lam_max = float(np.linalg.eigvalsh(H).max())
    rows, cov_rows, unstable = [], [], []
    inside = 0
    for b in sorted(set(params.batch_sizes)):
        for f in sorted(params.lr_fractions):
            lr = f * 2.0 / lam_max
            S_add = lyapunov_stationary_cov(H, C, lr, b)  # additive noise with the covariance at the optimum
            S_sde = sde_stationary_cov(H, C, lr, b)
            if data is None:
                S = S_add
                per_chain, cov = simulate_stationary(H, C, lr, b, chains=params.chains, records=params.records,
                                                     generator=generator, max_steps=params.max_steps)
            else:
                S = least_squares_stationary_cov(H, C, M, lr, b)
                if S is None:
                    unstable.append((b, lr))
                    continue
                radius = float(np.abs(np.linalg.eigvals(least_squares_moment_operator(H, M, lr, b))).max())
                burn = math.ceil(math.log(1e-4) / math.log(radius))  # second moments within 1e-4 of stationary
                spacing = max(1, math.ceil(relaxation_steps(H, lr)))
                if burn + spacing * params.records > params.max_steps:
                    unstable.append((b, lr))
                    continue
                per_chain, cov = simulate_least_squares(*data, w_star, lr, b, chains=params.chains, records=params.records,
                                                        burn=burn, spacing=spacing, generator=generator)
            m, lo, hi = mean_ci(per_chain, confidence)
            inside += lo <= np.trace(S) <= hi
            common = dict(series=f"b = {b}", measured=m, measured_low=lo, measured_high=hi, log_x=True, log_y=True)
            rows.append(dict(quantity="stationary E||theta - theta*||^2", x_name="learning rate", x=lr,
                             predicted=float(np.trace(S)), **common))
            rows.append(dict(quantity="stationary E||theta - theta*||^2 vs temperature (SDE limit)",
                             x_name="temperature lr / b", x=lr / b, predicted=float(np.trace(S_sde)), **common))
            cov_rows.append(dict(batch_size=b, lr=lr, temperature=lr / b, lr_fraction_of_limit=f,
                                 trace_measured=m, trace_exact=float(np.trace(S)), trace_lyapunov_additive=float(np.trace(S_add)),
                                 trace_sde=float(np.trace(S_sde)),
                                 relative_frobenius_error=float(np.linalg.norm(cov - S) / np.linalg.norm(S)),
                                 sde_underestimate=float(1.0 - np.trace(S_sde) / np.trace(S)),
                                 additive_underestimate=float(1.0 - np.trace(S_add) / np.trace(S))))
    table = pd.DataFrame(cov_rows)
    n = len(cov_rows)
    if data is None:
        what = (f"noisy quadratic, D = {params.dim}, Hessian eigenvalues {fmt(params.h_min)}..{fmt(params.h_max)}, "
                f"noise '{params.noise}'")
        exact_name = "Lyapunov"
    else:
        what = f"least squares on the landscape's dataset (N = {data[0].shape[0]}, D = {data[0].shape[1]}), Hessian eigenvalues " \
               f"{fmt(float(np.linalg.eigvalsh(H).min()))}..{fmt(lam_max)}, per-example noise at the optimum"
        exact_name = "generalized-Lyapunov (multiplicative noise)"
    notes = [f"{what} (tr C = {fmt(float(np.trace(C)))}); {params.chains} chains x {params.records} snapshots per (lr, b)."]
    if n:
        worst = table.loc[table.sde_underestimate.idxmax()]
        notes += [
            f"the {exact_name} prediction of E||theta - theta*||^2 lies inside the measured {confidence:.0%} CI at {inside} of {n} "
            f"(lr, b) pairs; median relative Frobenius error of the measured covariance: "
            f"{fmt(float(table.relative_frobenius_error.median()))}.",
            f"the temperature (SDE) limit underestimates the spread by up to {fmt(100 * float(worst.sde_underestimate))}% "
            f"(at lr = {fmt(float(worst.lr))}, b = {int(worst.batch_size)}, {fmt(float(worst.lr_fraction_of_limit))} of the stability limit 2/lambda_max).",
        ]
        if data is not None:
            w2 = table.loc[table.additive_underestimate.idxmax()]
            notes.append(f"the plain Lyapunov equation with the noise covariance at the optimum underestimates the spread by up to "
                         f"{fmt(100 * float(w2.additive_underestimate))}% (lr = {fmt(float(w2.lr))}, b = {int(w2.batch_size)}): "
                         f"the noise grows away from the optimum.")
    if unstable:
        notes.append(f"(b, lr) pairs left out because SGD's second moments diverge (or mix slower than max_steps allows): "
                     f"{[(b, float(f'{lr:.3g}')) for b, lr in unstable]}.")
    return AnalysisResult(comparison_rows(rows), tables={"stationary_covariance": table,
                                                         "model": pd.DataFrame({"hessian_eigenvalue": np.linalg.eigvalsh(H),
                                                                                "noise_cov_diagonal": np.diag(C)})},
                          notes=notes, confidence=confidence, title="Noise and the stationary spread of SGD")


@ANALYSES.register(KIND, StationaryParams,
                   "stationary covariance of SGD iterates on a noisy quadratic vs the discrete Lyapunov solution "
                   "(and its temperature lr/b SDE limit) as lr and b vary", family="gradient")
def sgd_stationary(params: StationaryParams, *, context: AnalysisContext) -> AnalysisResult:
    data = regression_data(analysis_landscape(context, f"analysis {KIND!r}")) if params.model == "landscape" else None
    return measure_stationary(params, analysis_generator(context, device="cpu"), confidence=0.95, data=data)  # a float64 host model
