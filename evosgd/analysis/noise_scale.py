"""The gradient noise scale of McCandlish, Kaplan, Amodei et al. 2018 (*An Empirical Model of
Large-Batch Training*, arXiv:1812.06162, sec. 2.2), with the Hessian: the optimal step and the
best improvement per step as functions of the batch size B, beside ``B_simple`` (``hardware.py``).

For a loss with gradient G and Hessian H at the current point, and a mini-batch gradient g of
mean G and covariance ``Sigma / B``, a step ``-eps g`` changes the loss, to second order (exactly
for a quadratic), in expectation by

    E[Delta L] = -eps |G|^2 + eps^2 / 2 (G^T H G + tr(H Sigma) / B)

which is smallest at

    eps_opt(B) = eps_max / (1 + B_noise / B),     eps_max = |G|^2 / (G^T H G),
    Delta L_opt(B) = Delta L_max / (1 + B_noise / B),  Delta L_max = |G|^4 / (2 G^T H G),
    B_noise = tr(H Sigma) / (G^T H G).

With ``H`` a multiple of I, ``B_noise = B_simple = tr(Sigma) / |G|^2``.
"""

from __future__ import annotations

import numpy as np

from evosgd.analysis.hardware import simple_noise_scale  # noqa: F401  (beside it, re-exported)


def _arrays(G, H, Sigma):
    return np.asarray(G, float).ravel(), np.atleast_2d(np.asarray(H, float)), np.atleast_2d(np.asarray(Sigma, float))


def hessian_noise_scale(G, H, Sigma) -> float:
    """``B_noise = tr(H Sigma) / (G^T H G)``: Sigma the per-example gradient covariance."""
    g, h, s = _arrays(G, H, Sigma)
    return float(np.trace(h @ s) / (g @ h @ g))


def expected_loss_change(eps, batch_size, G, H, Sigma):
    """``E[Delta L] = -eps |G|^2 + eps^2/2 (G^T H G + tr(H Sigma)/B)`` of one SGD step (exact for a
    quadratic loss and any gradient noise of covariance Sigma/B)."""
    g, h, s = _arrays(G, H, Sigma)
    eps = np.asarray(eps, float)
    return -eps * (g @ g) + eps * eps / 2.0 * (g @ h @ g + np.trace(h @ s) / np.asarray(batch_size, float))


def optimal_step_size(batch_size, G, H, Sigma):
    """``eps_opt(B) = (|G|^2 / G^T H G) / (1 + B_noise / B)``."""
    g, h, _ = _arrays(G, H, Sigma)
    return (g @ g) / (g @ h @ g) / (1.0 + hessian_noise_scale(G, H, Sigma) / np.asarray(batch_size, float))


def optimal_improvement(batch_size, G, H, Sigma):
    """``Delta L_opt(B) = (|G|^4 / (2 G^T H G)) / (1 + B_noise / B)``: the largest expected decrease
    of the loss per step at batch size B (the gain per step; per example it is this over B)."""
    g, h, _ = _arrays(G, H, Sigma)
    return (g @ g) ** 2 / (2.0 * (g @ h @ g)) / (1.0 + hessian_noise_scale(G, H, Sigma) / np.asarray(batch_size, float))
