"""The landscape contract (contract 1 of DESIGN.md).

A landscape is a *batch of R problem instances*, one per replicate: replicate r's instance (its
shift, rotation, dataset, drift path and starting point) is drawn from ``derive_seed(seed,
"landscape", r)`` alone, so every optimizer of a scenario meets the same R instances (common
random numbers) and comparisons can be paired.

Shapes.  A point is a flat vector; ``theta`` has shape ``[R, *S, D]`` where R is the replicate
dimension (it selects the instance) and ``S`` are any further leading dimensions (a population
``P``, or none for SGD).  A batch is a dict of tensors, each ``[R, n, ...]`` (replicate r's
examples are drawn from instance r).  Then

* ``sample(n, generator, t) -> batch``  draws n examples per replicate from the data
  distribution at time t;
* ``example_losses(theta, batch, t) -> [R, *S, n]``  the loss of each example at each point;
* ``loss(theta, batch, t) -> [R, *S]``  the mean over the batch, differentiable with autograd;
* ``loss_and_grad(theta, batch, t) -> ([R, *S], [R, *S, D])``  the mean loss and its gradient,
  what the SGD step calls: autograd of ``loss`` by default, written out where a landscape has a
  closed form (linear and logistic regression, the teacher-student MLP without batch norm);
* ``true_loss(theta, t) -> [R, *S]``  the expected (full-data) loss, what users compare;
* ``optimum(t) -> [R, D]`` and ``optimal_loss(t) -> [R]`` where known, else ``None``;
* ``initial_point``: ``[R, D]``, the common starting point (drawn uniformly in ``domain``);
* ``full_cost``: sample-evaluations charged for one evaluation of the full objective (n for a
  finite sum of n examples, 1 for an analytic function).

``t`` is the environment clock of contract 2: ``None`` (= 0), a float, or a tensor ``[R]``.
Static landscapes ignore it; drifting ones move the problem with it.

Per-example gradients (for gradient-noise statistics) are obtained generically with
``torch.func.vmap`` over the example dimension: see :func:`per_example_grads`.  Landscapes whose
loss of one example depends on the others in its batch (in-batch pairwise losses, batch
normalization in training mode) set ``per_example_separable = False``.
"""

from __future__ import annotations

import abc
from typing import Any, Union

import torch

from evosgd.core.device import to_device

Time = Union[float, torch.Tensor, None]
Batch = dict[str, torch.Tensor]


def per_replicate(x: torch.Tensor, theta_ndim: int, feature_ndim: int = 1) -> torch.Tensor:
    """View a per-replicate tensor ``[R, *F]`` so it broadcasts against ``[R, *S, *F]``.

    ``theta_ndim`` is the number of dims of the tensor it will meet (``1 + len(S) + len(F)``).
    """
    extra = theta_ndim - 1 - feature_ndim
    if extra < 0:
        raise ValueError(f"tensor of {theta_ndim} dims cannot hold [R, ..., {feature_ndim} feature dims]")
    return x.reshape(x.shape[:1] + (1,) * extra + x.shape[1:])


def time_tensor(t: Time, replicates: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``t`` as a tensor ``[R]`` (``None`` means 0)."""
    if t is None:
        return torch.zeros(replicates, device=device, dtype=dtype)
    tt = to_device(t, torch.device(device), dtype)
    return tt.expand(replicates) if tt.dim() == 0 else tt


class Landscape(abc.ABC):
    """Base class; subclasses implement ``sample``, ``example_losses`` and ``true_loss``."""

    #: registry name, set by subclasses
    kind: str = ""
    finite_sum: bool = False
    n_examples: int | None = None
    drifting: bool = False
    per_example_separable: bool = True

    def __init__(self, *, dim: int, replicates: int, device: torch.device, dtype: torch.dtype) -> None:
        self.dim = int(dim)
        self.replicates = int(replicates)
        self.device = torch.device(device)
        self.dtype = dtype
        self.initial_point: torch.Tensor = torch.zeros(self.replicates, self.dim, device=self.device, dtype=dtype)

    # -- contract --------------------------------------------------------------------
    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator, t: Time = None) -> Batch:
        """n examples per replicate from the data distribution at time t."""

    @abc.abstractmethod
    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        """Per-example losses ``[R, *S, n]``."""

    def loss(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        """Mean loss over the batch ``[R, *S]``."""
        return self.example_losses(theta, batch, t).mean(dim=-1)

    def loss_and_grad(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss [R, *S], grad [R, *S, D])``: the mini-batch mean loss at ``theta`` and its
        gradient with respect to each point (points are independent), no graph kept.  The SGD
        step calls it with one point per replicate, ``theta [R, D]``.

        The default differentiates :meth:`loss` with autograd (replicates are independent, so the
        gradient of the sum over replicates is each one's gradient).  A landscape with a closed-form
        gradient overrides it: the SGD step calls it every step, and at small batches autograd's
        graph and backward pass cost more than the arithmetic (tests check every override against
        this default).
        """
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            loss = self.loss(th, batch, t)
            (g,) = torch.autograd.grad(loss.sum(), th)
        return loss.detach(), g

    @abc.abstractmethod
    def true_loss(self, theta: torch.Tensor, t: Time = None) -> torch.Tensor:
        """Expected (full-data) loss ``[R, *S]``."""

    def optimum(self, t: Time = None) -> torch.Tensor | None:
        return None

    def optimal_loss(self, t: Time = None) -> torch.Tensor | None:
        return None

    @property
    def full_cost(self) -> float:
        return float(self.n_examples) if self.finite_sum and self.n_examples else 1.0

    def take(self, indices: torch.Tensor, t: Time = None) -> Batch:
        """Examples by index ``[R, n]`` (finite-sum landscapes only)."""
        raise NotImplementedError(f"landscape {self.kind!r} is not a finite sum; it has no examples to index")

    def describe(self) -> dict[str, Any]:
        """Provenance: kind, shapes and whatever the subclass adds."""
        return {"kind": self.kind, "dim": self.dim, "replicates": self.replicates,
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", "")}

    # -- conveniences ----------------------------------------------------------------
    def distance_to_optimum(self, theta: torch.Tensor, t: Time = None) -> torch.Tensor | None:
        """Euclidean distance ``[R, *S]`` to the optimum, where the optimum is known."""
        opt = self.optimum(t)
        if opt is None:
            return None
        return (theta - per_replicate(opt, theta.dim())).norm(dim=-1)

    def check_theta(self, theta: torch.Tensor) -> None:
        if theta.dim() < 2 or theta.shape[0] != self.replicates or theta.shape[-1] != self.dim:
            raise ValueError(f"theta must have shape [R={self.replicates}, ..., D={self.dim}], got {tuple(theta.shape)}")


def per_example_grads(landscape: Landscape, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
    """Per-example gradients ``[R, n, D]`` at ``theta`` ``[R, D]`` (no graph kept).

    Uses ``torch.func.vmap`` over the example dimension of the batch: example i is evaluated as a
    batch of one, so this is only meaningful for ``per_example_separable`` landscapes.
    """
    from torch.func import grad, vmap

    def one(th: torch.Tensor, example: Batch) -> torch.Tensor:
        b = {k: v.unsqueeze(1) for k, v in example.items()}
        return landscape.loss(th, b, t).sum()

    # out_dims=0 then move: with out_dims=1 vmap broadcasts an output that does not depend on
    # the example (a noise-free analytic loss) along the wrong dimension.
    return vmap(grad(one), in_dims=(None, 1), out_dims=0)(theta.detach(), batch).movedim(0, 1)
