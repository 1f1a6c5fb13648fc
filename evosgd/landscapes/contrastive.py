"""Contrastive embedding learning with an in-batch InfoNCE loss: the loss of one example depends
on the other examples of its batch, and how the batch is sampled is part of the model.

Data (per replicate): ``classes`` class centres ``mu_c ~ N(0, class_separation^2 I_d)`` (the
concept), example i of class ``c_i = i mod classes`` has latent ``z_i = mu_{c_i} + within_std eta_i``
and two views (augmentations) ``a_i = z_i + view_std zeta_i``, ``p_i = z_i + view_std zeta'_i``.
The model is a linear embedding ``e(x) = normalize(x E)`` with ``E [d, k]`` the flat theta.

Loss of a batch of B pairs (InfoNCE, van den Oord et al. 2018; SimCLR, Chen et al. 2020, one
direction): with logits ``L_ij = e(a_i) . e(p_j) / temperature``, the loss of anchor i is
``-log softmax_j(L_ij)[j = i]``: its positive is its own second view, its negatives the other B-1
positives of the batch (including same-class "false negatives").  ``per_example_separable = False``.

``batch_sampling`` (honoured by ``sample``):

* ``random``: B examples uniformly with replacement;
* ``class_balanced``: slot j of the batch is from class ``(offset + j) mod classes`` (offset
  uniform per draw), the example uniform within its class: every class equally represented;
* ``hard_negatives``: a random anchor class is drawn per batch and every slot comes from one of the
  ``hard_classes`` classes whose centres are nearest to it (itself included), so negatives
  resemble the anchors (closest centres under the concept at t).

``true_loss``: the expected loss at the reference batch size, estimated on a fixed evaluation
set of ``eval_batches`` random batches of ``reference_batch_size`` examples drawn once from the
seed: ``true_loss = mean over those batches of loss(batch)``.  It is not a finite sum, so the
optimum and optimal loss are unknown (None); ``full_cost`` is charged as n.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.core.errors import ParameterError
from evosgd.core.registry import LANDSCAPES
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.landscapes.base import Batch, Time
from evosgd.landscapes.data import DataLandscape, gather_examples


class ContrastiveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_examples: int = Field(512, ge=2, description="dataset size n (per replicate)")
    features: int = Field(8, ge=1, description="input dimension d")
    embed_dim: int = Field(4, ge=1, description="embedding dimension k; theta = E [d, k], D = d k")
    classes: int = Field(8, ge=2, description="number of latent classes")
    class_separation: float = Field(2.0, gt=0.0, description="std of the class centres")
    within_std: float = Field(0.5, ge=0.0, description="spread of the examples of a class around its centre")
    view_std: float = Field(0.3, ge=0.0, description="augmentation noise between the two views of an example")
    temperature: float = Field(0.5, gt=0.0, description="softmax temperature of the InfoNCE logits")
    batch_sampling: Literal["random", "class_balanced", "hard_negatives"] = Field(
        "random", description="how sample() composes a batch: random | class_balanced | hard_negatives")
    hard_classes: int = Field(2, ge=1, description="hard_negatives: number of nearest classes a batch is drawn from")
    reference_batch_size: int = Field(32, ge=2, description="batch size B at which true_loss is the expected loss")
    eval_batches: int = Field(16, ge=1, description="number of fixed batches that estimate true_loss")


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-anchor InfoNCE loss ``[..., B]`` of embeddings ``[..., B, k]`` (row i's positive is column i)."""
    logits = anchors @ positives.transpose(-1, -2) / temperature
    return torch.logsumexp(logits, dim=-1) - torch.diagonal(logits, dim1=-2, dim2=-1)


@LANDSCAPES.register("contrastive", ContrastiveParams,
                     "linear embedding trained with in-batch InfoNCE (loss depends on the batch); batch sampling is a parameter",
                     family="data")
class Contrastive(DataLandscape):
    """See the module docstring. Starting point: ``E ~ N(0, 1/d)``."""

    kind = "contrastive"
    per_example_separable = False

    @classmethod
    def memory_estimate(cls, params: dict, *, replicates: int, itemsize: int, points: int, batch: int) -> tuple[int, int]:
        """(D, bytes of the landscape's own tensors) for the memory guard: three views of the
        dataset ``3 R n d``, and for ``points`` embeddings of a batch the two views' embeddings
        and the ``B x B`` logits (times three for their gradients), and the same for the
        ``eval_batches`` reference batches of the true loss."""
        d, k = int(params.get("features", 8)), int(params.get("embed_dim", 4))
        n, R = int(params.get("n_examples", 512)), replicates
        E, B0 = int(params.get("eval_batches", 16)), int(params.get("reference_batch_size", 32))
        per_batch = lambda b: 2 * b * (d + k) + b * b
        count = 3 * R * n * d + 3 * R * points * per_batch(batch) + 3 * R * E * per_batch(B0)
        return d * k, itemsize * count

    def __init__(self, params: ContrastiveParams, *, replicates: int, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        if params.hard_classes > params.classes:
            raise ParameterError("hard_classes", params.hard_classes, f"an integer <= classes = {params.classes}",
                                 where="landscape 'contrastive'")
        super().__init__(dim=params.features * params.embed_dim, n_examples=params.n_examples, replicates=replicates,
                         device=device, dtype=dtype)
        self.params = params
        n, d, C = params.n_examples, params.features, params.classes
        lat, va, vp, mu, x0, ev = [], [], [], [], [], []
        for r, g in enumerate(self.replicate_generators(seed, replicates)):
            mu.append(torch.randn(C, d, generator=g, dtype=torch.float64) * params.class_separation)
            lat.append(torch.randn(n, d, generator=g, dtype=torch.float64) * params.within_std)
            va.append(torch.randn(n, d, generator=g, dtype=torch.float64) * params.view_std)
            vp.append(torch.randn(n, d, generator=g, dtype=torch.float64) * params.view_std)
            x0.append(torch.randn(d * params.embed_dim, generator=g, dtype=torch.float64) / math.sqrt(d))
            ge = make_generator(derive_seed(seed, "landscape", r, "eval"))
            ev.append(torch.randint(0, n, (params.eval_batches * params.reference_batch_size,), generator=ge))
        labels = (torch.arange(n) % C).expand(replicates, n)
        self.data = {"within": torch.stack(lat).to(self.device, dtype), "view_a": torch.stack(va).to(self.device, dtype),
                     "view_p": torch.stack(vp).to(self.device, dtype), "label": labels.to(self.device)}
        self.concept = torch.stack(mu).reshape(replicates, C * d).to(self.device, dtype)
        self.initial_point = torch.stack(x0).to(self.device, dtype)
        self.eval_indices = torch.stack(ev).to(self.device)  # [R, E * B]
        # class c holds examples c, c + C, c + 2C, ...
        self._class_counts = torch.tensor([len(range(c, n, C)) for c in range(C)], device=self.device)

    # -- data ------------------------------------------------------------------------------
    def centres(self, concept: torch.Tensor) -> torch.Tensor:
        return concept.reshape(self.replicates, self.params.classes, self.params.features)

    def labelled(self, examples: Batch, concept: torch.Tensor) -> Batch:
        mu = self.centres(concept)
        rows = torch.arange(self.replicates, device=self.device).unsqueeze(1)
        z = mu[rows, examples["label"]] + examples["within"]
        return {"anchor": z + examples["view_a"], "positive": z + examples["view_p"], "label": examples["label"]}

    def _member(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A uniform example index of each class in ``classes [R, m]``."""
        counts = self._class_counts[classes]
        u = torch.rand(classes.shape, generator=generator, device=self.device, dtype=torch.float64)
        k = torch.minimum((u * counts).floor().long(), counts - 1)
        return classes + self.params.classes * k

    def sample_indices(self, n: int, generator: torch.Generator, concept: torch.Tensor) -> torch.Tensor:
        mode, C, R = self.params.batch_sampling, self.params.classes, self.replicates
        if mode == "random":
            return super().sample_indices(n, generator, concept)
        if mode == "class_balanced":
            offset = torch.randint(0, C, (R, 1), generator=generator, device=self.device)
            return self._member((offset + torch.arange(n, device=self.device)) % C, generator)
        mu = self.centres(concept)
        nearest = torch.cdist(mu, mu).argsort(dim=-1)[..., : self.params.hard_classes]  # [R, C, h] (self first)
        anchor = torch.randint(0, C, (R,), generator=generator, device=self.device)
        pool = nearest[torch.arange(R, device=self.device), anchor]  # [R, h]
        pick = torch.randint(0, self.params.hard_classes, (R, n), generator=generator, device=self.device)
        return self._member(torch.gather(pool, 1, pick), generator)

    # -- loss ------------------------------------------------------------------------------
    def _embed(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """normalize(x E): theta [R, P, D], x [R, *B, n, d] -> [R, P, *B, n, k]."""
        R, P = theta.shape[:2]
        E = theta.reshape(R, P, self.params.features, self.params.embed_dim)
        extra = x.dim() - 3
        e = torch.matmul(x.unsqueeze(1), E.reshape((R, P) + (1,) * extra + E.shape[2:]))
        return e / torch.sqrt((e * e).sum(-1, keepdim=True) + 1e-12)

    def _losses(self, theta: torch.Tensor, batch: Batch) -> torch.Tensor:
        R = theta.shape[0]
        th = theta.reshape(R, -1, self.dim)
        return info_nce(self._embed(th, batch["anchor"]), self._embed(th, batch["positive"]), self.params.temperature)

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        losses = self._losses(theta, batch)  # [R, P, n]
        return losses.reshape(theta.shape[:-1] + (losses.shape[-1],))

    def eval_batch(self, concept: torch.Tensor | None = None) -> Batch:
        """The fixed evaluation batches, each tensor ``[R, eval_batches, reference_batch_size, ...]``."""
        b = self.labelled(gather_examples(self.data, self.eval_indices), self.concept if concept is None else concept)
        E, B = self.params.eval_batches, self.params.reference_batch_size
        return {k: v.reshape((self.replicates, E, B) + v.shape[2:]) for k, v in b.items()}

    def true_loss_with(self, theta: torch.Tensor, concept: torch.Tensor | None) -> torch.Tensor:
        losses = self._losses(theta, self.eval_batch(concept))  # [R, P, E, B]
        return losses.mean(dim=(-1, -2)).reshape(theta.shape[:-1])
