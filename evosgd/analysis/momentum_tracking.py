"""Tracking a moving optimum with momentum: the steady-state lag of heavy-ball and Nesterov SGD on
a quadratic whose optimum drifts linearly (beside gradient descent in ``tracking_lag.py``).

Setting of ``tracking_lag``: ``L_k(x) = 1/2 (x - theta_k)^T A (x - theta_k)``, ``theta_k = theta_0 +
v k u``; every method steps on the landscape of step k, then the optimum moves; the lag is
``d_k = theta_k - x_k`` (x the parameters the optimizer holds).  With the momentum of
``torch.optim.SGD`` (the product's ``momentum`` transform: ``b_t = beta b_{t-1} + (1 - tau) g_t``,
update ``-eta b_t``, Nesterov ``-eta (g_t + beta b_t)``), a steady state moves x at the optimum's
speed with a constant gradient ``g = -A d``, so ``b = (1 - tau) g / (1 - beta)`` and both updates are
``-eta (1 - tau) g / (1 - beta)`` (Nesterov: ``g + beta b`` with tau = 0 is ``g / (1 - beta)`` too).
Hence, per eigen-direction of curvature a,

    d* = v (1 - beta) / ((1 - tau) eta a) u       (heavy ball and torch's Nesterov alike),

the gradient-descent lag ``v / (eta a)`` shrunk by ``(1 - beta)/(1 - tau)``: momentum tracks as
gradient descent with the effective rate ``eta (1 - tau) / (1 - beta)``.  The classical form of
Nesterov (Sutskever et al. 2013) keeps the iterate x and evaluates the gradient at the look-ahead
``y = x + beta (x_k - x_{k-1})``; its iterate lags a further ``beta v``: ``d*_x = d* + beta v u``.
The steady state is reached when the linear recursion is stable: ``0 < eta a < 2 (1 + beta)`` for
heavy ball, ``0 < eta a < 2 (1 + beta) / (1 + 2 beta)`` for Nesterov (tau = 0; Polyak 1964,
Lessard, Recht & Packard 2016).  With an unbiased mini-batch gradient the mean lag is the same
(the recursion is linear); noise only spreads it.

:func:`simulate_momentum_tracking` measures the lag with the product's own transforms
(``momentum`` then ``scale_by_learning_rate``, applied by ``apply_updates``), vectorised over replicates.
"""

from __future__ import annotations

import numpy as np
import torch

from evosgd.analysis.evo_common import Quadratic
from evosgd.gradient.transforms import apply_updates, chain, momentum, scale_by_learning_rate


def momentum_stable(lr: float, beta: float, curvatures: np.ndarray, nesterov: bool = False) -> bool:
    """Whether heavy-ball (or Nesterov) momentum with damping 0 is stable on every curvature."""
    x = lr * np.asarray(curvatures, dtype=float)
    upper = 2.0 * (1.0 + beta) / (1.0 + 2.0 * beta) if nesterov else 2.0 * (1.0 + beta)
    return bool(0 <= beta < 1 and np.all(x > 0) and np.all(x < upper))


def momentum_lag_vector(speed: float, lr: float, beta: float, curvatures: np.ndarray, direction: np.ndarray, *,
                        nesterov: bool = False, dampening: float = 0.0, iterate: str = "parameters") -> np.ndarray:
    """Steady-state lag ``d* = v (1 - beta) / ((1 - tau) eta A) u`` of the parameters of torch-style
    heavy-ball or Nesterov SGD; ``iterate = "classical_nesterov"`` gives the classical Nesterov
    iterate's lag, ``d* + beta v u``.  Raises ValueError where the recursion is unstable."""
    a = np.asarray(curvatures, dtype=float)
    if dampening == 0.0 and not momentum_stable(lr, beta, a, nesterov):
        raise ValueError(f"momentum with lr = {lr}, beta = {beta} is unstable on curvatures up to {a.max():g}")
    u = np.asarray(direction, dtype=float)
    d = speed * (1.0 - beta) / ((1.0 - dampening) * lr * a) * u
    if iterate == "classical_nesterov":
        return d + beta * speed * u
    if iterate != "parameters":
        raise ValueError("iterate: 'parameters' or 'classical_nesterov'")
    return d


@torch.no_grad()
def simulate_momentum_tracking(quad: Quadratic, direction: torch.Tensor, speed: float, lr: float, beta: float, steps: int,
                               replicates: int, generator: torch.Generator, *, nesterov: bool = False,
                               batch_size: int | None = None) -> torch.Tensor:
    """Lags ``[steps + 1, R, D]`` of SGD with momentum (the product's transforms) behind the optimum of
    ``quad`` moving by ``speed * direction`` per step, from ``x_0 = theta_0`` (the optimum's frame:
    ``z = x - theta``); ``batch_size`` None is the exact gradient."""
    tx = chain(momentum(beta, nesterov=nesterov), scale_by_learning_rate(lr))
    z = torch.zeros(replicates, quad.dim, device=quad.device, dtype=quad.dtype)
    state = tx.init(z)
    out = [-z]
    for _ in range(steps):
        g = quad.grad(z) if batch_size is None else quad.minibatch_grad(z, batch_size, generator)
        z, state = apply_updates(tx, g, state, z)
        z = z - speed * direction  # the optimum moves: x - theta_{k+1}
        out.append(-z)
    return torch.stack(out)
