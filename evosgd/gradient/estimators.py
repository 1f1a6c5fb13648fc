"""Gradient estimators: mini-batch sampling and autograd gradients, vectorized over replicates.

A mini-batch gradient of replicate r at ``theta_r`` is ``g_r = (1/b) sum_i grad l(theta_r; x_ri)``,
an unbiased estimate of ``grad F(theta_r)`` with covariance ``Sigma / b`` (the seed text's WLLN /
CLT section).  Every replicate draws its own examples (``[R, b, ...]`` batches from one generator:
one draw per step for all replicates, so no per-replicate loop).

* :class:`BatchSampler` draws batches with replacement (``landscape.sample``) or without
  replacement in shuffled epochs (finite-sum landscapes: one permutation of the n examples per
  replicate and epoch; an epoch ends when fewer than b examples are left, which are dropped, as
  ``DataLoader(drop_last=True)`` does).
* :func:`batch_gradient` — the gradient of the batch mean loss (``landscape.loss_and_grad``:
  autograd, or the landscape's closed form where it has one); with ``stats=True``
  also the per-example gradient variance ``tr(Sigma_hat)`` (via ``vmap``; costs more, so only
  when a transform or metric asks).
* :func:`accumulated_gradient` — the size-weighted mean of k micro-batch gradients: equal to the
  gradient of the concatenated batch of sum b_j examples (also for unequal sizes) when the loss of an example does not depend on the others in its
  batch (``landscape.per_example_separable``); with batch normalization in training mode it is not.

Per-replicate batch sizes (adaptive batch size): a batch of ``b_max`` examples is drawn and
replicate r averages its first ``b_r`` (weights ``[R, b_max]``); only separable landscapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from evosgd.landscapes.base import Batch, Landscape, Time, per_example_grads

Tensor = torch.Tensor


@dataclass
class GradientInfo:
    """What an estimator returns: the gradient and what transforms may want to know about it."""

    grads: Tensor  # [R, D]
    loss: Tensor  # [R] mini-batch loss at the point
    batch_size: Any  # int, or [R] tensor (adaptive)
    grad_variance: Tensor | None = None  # [R] tr(Sigma_hat), unbiased, when computed
    extra: dict[str, Any] = field(default_factory=dict)

    def extras(self) -> dict[str, Any]:
        """Keyword extras for ``GradientTransform.update``."""
        out: dict[str, Any] = {"batch_size": self.batch_size, **self.extra}
        if self.grad_variance is not None:
            out["grad_variance"] = self.grad_variance
        return out


class BatchSampler:
    """Draws ``[R, b, ...]`` mini-batches, with or without replacement (see module docstring)."""

    def __init__(self, landscape: Landscape, generator: torch.Generator, replacement: bool = True) -> None:
        self.landscape = landscape
        self.generator = generator
        self.replacement = replacement
        if not replacement:
            if not landscape.finite_sum or not landscape.n_examples:
                raise ValueError(f"sampling without replacement needs a finite-sum landscape; {landscape.kind!r} is not one")
            self.n = int(landscape.n_examples)
            self.perm: Tensor | None = None
            self.pos = 0
            self.epochs = 0

    def _shuffle(self) -> None:
        R = self.landscape.replicates
        keys = torch.rand(R, self.n, generator=self.generator, device=self.landscape.device)
        self.perm = keys.argsort(dim=1)  # an independent uniform permutation per replicate
        self.pos = 0
        self.epochs += 1

    def draw(self, b: int, t: Time = None) -> Batch:
        if self.replacement:
            return self.landscape.sample(int(b), self.generator, t)
        b = int(b)
        if b > self.n:
            raise ValueError(f"batch size {b} exceeds the {self.n} examples of the landscape (sampling without replacement)")
        # The position is common to all replicates (same b), so epochs are in step: no host sync.
        if self.perm is None or self.pos + b > self.n:
            self._shuffle()
        idx = self.perm[:, self.pos:self.pos + b]
        self.pos += b
        return self.landscape.take(idx, t)


def _weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """Mean over the last dim of ``[R, n]`` values, or the weighted mean with 0/1 weights ``[R, n]``."""
    if weights is None:
        return values.mean(dim=-1)
    return (values * weights).sum(dim=-1) / weights.sum(dim=-1)


def batch_gradient(landscape: Landscape, theta: Tensor, batch: Batch, t: Time = None, *, stats: bool = False,
                   weights: Tensor | None = None) -> GradientInfo:
    """Gradient of the mini-batch mean loss at ``theta`` ``[R, D]``.

    ``weights`` ``[R, n]`` (0/1) restricts replicate r to its first examples (adaptive batch sizes).
    With ``stats``, the gradient is the mean of the per-example gradients and ``grad_variance`` is
    ``sum_d Var_i(g_id)`` with divisor ``b - 1`` (unbiased for ``tr(Sigma)``).
    """
    theta = theta.detach()
    n = next(iter(batch.values())).shape[1]
    bsize: Any = n if weights is None else weights.sum(dim=-1)
    if stats:
        G = per_example_grads(landscape, theta, batch, t)  # [R, n, D]
        with torch.no_grad():
            losses = landscape.example_losses(theta, batch, t)
            loss = _weighted_mean(losses, weights)
            if weights is None:
                g = G.mean(dim=1)
                var = (G - g.unsqueeze(1)).pow(2).sum(dim=(1, 2)) / max(n - 1, 1)
            else:
                w = weights.unsqueeze(-1)
                g = (G * w).sum(dim=1) / bsize.unsqueeze(-1)
                var = ((G - g.unsqueeze(1)).pow(2) * w).sum(dim=(1, 2)) / (bsize - 1).clamp(min=1)
        return GradientInfo(g, loss, bsize, var)
    if weights is None:
        loss, g = landscape.loss_and_grad(theta, batch, t)  # closed form where the landscape has one
        return GradientInfo(g, loss, bsize)
    with torch.enable_grad():
        th = theta.requires_grad_(True)
        loss = _weighted_mean(landscape.example_losses(th, batch, t), weights)
        # Replicates are independent, so the gradient of the sum is each replicate's gradient.
        (g,) = torch.autograd.grad(loss.sum(), th)
    return GradientInfo(g, loss.detach(), bsize)


def accumulated_gradient(landscape: Landscape, theta: Tensor, batches: list[Batch], t: Time = None, *,
                         stats: bool = False) -> GradientInfo:
    """Gradient of k micro-batches of sizes ``b_1..b_k`` accumulated into one update of
    ``n = sum_j b_j`` examples: the size-weighted mean of the micro-batch mean gradients,

        g = sum_j (b_j / n) g_j = (1/n) sum_i grad l_i,

    which is exactly the gradient of the concatenated batch of n examples (for a separable loss)
    whatever the sizes; equal sizes give the plain mean of the g_j (computed as such, so results
    with equal micro-batches are unchanged bit for bit).  The loss is weighted the same way and the
    reported ``batch_size`` is n.  Micro-batches of unequal size are therefore accepted, never
    averaged as if they were equal.

    The per-example variance of the n examples is combined from the micro-batches with the
    parallel algorithm of Chan, Golub & LeVeque 1979: ``M2 = M2_a + M2_b + ||m_a - m_b||^2
    n_a n_b / (n_a + n_b)``.
    """
    if len(batches) == 1:
        return batch_gradient(landscape, theta, batches[0], t, stats=stats)
    infos = [batch_gradient(landscape, theta, bt, t, stats=stats) for bt in batches]
    sizes = [int(i.batch_size) for i in infos]
    n_total = sum(sizes)
    if len(set(sizes)) == 1:
        g = torch.stack([i.grads for i in infos]).mean(dim=0)
        loss = torch.stack([i.loss for i in infos]).mean(dim=0)
    else:
        g = sum(i.grads * (b / n_total) for i, b in zip(infos, sizes))
        loss = sum(i.loss * (b / n_total) for i, b in zip(infos, sizes))
    var = None
    if stats:
        mean, m2, n = infos[0].grads, infos[0].grad_variance * (sizes[0] - 1), sizes[0]
        for info, b in zip(infos[1:], sizes[1:]):
            delta = info.grads - mean
            tot = n + b
            m2 = m2 + info.grad_variance * (b - 1) + delta.pow(2).sum(dim=-1) * n * b / tot
            mean = mean + delta * b / tot
            n = tot
        var = m2 / (n - 1)
    return GradientInfo(g, loss, n_total, var)
