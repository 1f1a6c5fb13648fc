"""A torch model as a landscape: an ``nn.Module`` + data + a loss, over the module's flat parameter
vector.

    landscape = ModelLandscape(lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
                               "digits", loss="cross_entropy", replicates=4, seed=0, device="cpu")

theta ``[R, *S, D]`` is the concatenation of ``module.named_parameters()``, each flattened in
row-major order (``nn.Linear``: weight ``[out, in]`` then bias).  A point is evaluated with
``torch.func.functional_call`` (the module's own forward with theta's pieces as its parameters),
vectorized with ``torch.func.vmap`` over the population ``P`` (the data shared) and over the
replicates ``R`` (replicate r's data), so an SGD step ``[R, D]`` and a population ``[R, P, D]``
are one batched forward each.  Gradients are autograd's through the vmapped forward; per-example
gradients come from :func:`evosgd.landscapes.base.per_example_grads` (vmap over examples).

Losses (per example i, then the mean over the batch): ``cross_entropy``
``-log softmax(f(x_i))_{y_i}`` (``nn.CrossEntropyLoss``); ``mse`` ``mean_k (f(x_i)_k - y_ik)^2``
(``nn.MSELoss``).  ``l2 > 0`` adds ``0.5 l2 ||theta||^2`` to every example's loss.

Batch normalization (Ioffe & Szegedy 2015).  *Train mode* (``loss`` / ``loss_and_grad`` on a
mini-batch, and ``true_loss`` on the whole training split): the module runs in ``train()`` mode,
so each BN layer normalises with the statistics of the batch (one example's loss depends on the
others: ``per_example_separable = False``); the layer's running-statistics update goes into a
scratch copy and is dropped, so theta alone defines the landscape.  *Eval mode* (the held-out
measures): the module runs in ``eval()`` mode with running statistics equal to the training
split's mean and unbiased variance at theta, what ``nn.BatchNorm1d`` stores after one pass over the
training set with ``momentum = 1`` (the fixed point of the running averages for a fixed theta:
"precise BN", Wu & Johnson 2021).

Held-out data: ``heldout_metrics(theta, t)`` gives the validation and test loss (eval mode, the
same loss formula) and, for classification, the accuracy on train, validation and test; the
recorder stores them beside the training loss and never charges them to the budget.

Drift (concept drift on real data): the concept is a feature shift ``delta [R, d]`` (0 when
static), added to the inputs of every example (training and held-out) at time t, so the existing
drift wrappers (``linear``, ``periodic``, ``random_walk``, ``switch``) move the input distribution
away from the one the network was initialised on (covariate shift).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evosgd.core.errors import ConfigError
from evosgd.core.seeding import derive_seed
from evosgd.landscapes.base import Batch, Time
from evosgd.landscapes.data import DataLandscape
from evosgd.landscapes.tabular import (
    BUNDLED,
    DataSplits,
    TabularParams,
    splits_from_arrays,
    splits_from_params,
)

LOSSES = ("cross_entropy", "mse")
#: modules that draw random numbers in train mode: their draws would not come from the run's generator
RANDOM_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class ModelLandscape(DataLandscape):
    """``module_factory`` (no arguments, returns a fresh ``nn.Module``) + ``dataset`` (a
    :class:`DataSplits`; ``(x, y)`` arrays, split like a table; or the name of a bundled data set /
    the path of a CSV, Parquet or .npy file, see :mod:`evosgd.landscapes.tabular`) + ``loss``.
    BN layers built with ``track_running_stats=False`` use batch statistics in eval mode too.

    Replicate r's starting point is the module's own initialisation drawn under
    ``torch.manual_seed(derive_seed(seed, "landscape", r, "init"))``; its data split is the one
    :func:`~evosgd.landscapes.tabular.split_table` draws for (seed, r)."""

    kind = "model"

    def __init__(self, module_factory: Callable[[], nn.Module], dataset: DataSplits | tuple, *,
                 loss: str = "cross_entropy", l2: float = 0.0, replicates: int = 1, seed: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, kind: str | None = None,
                 params: Any = None) -> None:
        if loss not in LOSSES:
            raise ConfigError(f"ModelLandscape: loss {loss!r} is not supported; allowed: {', '.join(LOSSES)}")
        task = "classification" if loss == "cross_entropy" else "regression"
        if isinstance(dataset, (str, Path)):  # a bundled data set's name or a file's path
            name = str(dataset)
            dataset = splits_from_params(TabularParams(dataset=name, task=None if name in BUNDLED else task),
                                         replicates=replicates, seed=seed, where="dataset")
        elif not isinstance(dataset, DataSplits):
            x, y = dataset
            dataset = splits_from_arrays(x, y, task=task, replicates=replicates, seed=seed)
        if (loss == "cross_entropy") != (dataset.task == "classification"):
            raise ConfigError(f"ModelLandscape: loss {loss!r} does not fit a {dataset.task} data set; allowed: "
                              f"{'cross_entropy' if dataset.task == 'classification' else 'mse'}")
        if dataset.train["x"].shape[0] != replicates:
            raise ConfigError(f"ModelLandscape: the data splits hold {dataset.train['x'].shape[0]} replicates, "
                              f"the landscape {replicates}")
        device = torch.device(device)
        inits, module = [], None
        for r in range(replicates):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "landscape", r, "init"))
                m = module_factory()
            if not isinstance(m, nn.Module):
                raise ConfigError(f"ModelLandscape: module_factory returned {type(m).__name__}, not an nn.Module")
            inits.append(torch.cat([p.detach().reshape(-1).to(torch.float64) for p in m.parameters()]))
            module = module if module is not None else m
        assert module is not None
        random = [type(m).__name__ for m in module.modules() if isinstance(m, RANDOM_MODULES) and m.p > 0]
        if random:
            raise ConfigError(f"ModelLandscape: the module holds {', '.join(random)}: random layers are not supported "
                              "(their draws would not come from the run's seeded generator); allowed: deterministic "
                              "modules (remove dropout or set p = 0)")
        self.module = module.to(device, dtype)
        self.names = [n for n, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.numels = [p.numel() for _, p in module.named_parameters()]
        self.bn_layers = {n: m for n, m in module.named_modules()
                          if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}
        fixed = {n: b for n, b in module.named_buffers()}
        self.bn_stats = [f"{n}.{s}" for n in self.bn_layers for s in ("running_mean", "running_var")]
        self.fixed_buffers = {n: b for n, b in fixed.items() if n not in self.bn_stats}
        super().__init__(dim=sum(self.numels), n_examples=dataset.train["x"].shape[1], replicates=replicates,
                         device=device, dtype=dtype)
        if kind:
            self.kind = kind
        self.params = params
        self.loss_kind, self.l2 = loss, float(l2)
        self.per_example_separable = not self.bn_layers
        self.splits = dataset.to(device, dtype)
        self.task, self.n_classes = dataset.task, dataset.n_classes
        self.data = dict(self.splits.train)
        self.concept = torch.zeros(replicates, self.splits.features, device=device, dtype=dtype) \
            if self.data["x"].dim() == 3 else torch.zeros(replicates, 0, device=device, dtype=dtype)
        self.initial_point = torch.stack(inits).to(device, dtype)

    def drift_refusal(self, kind: str) -> str | None:
        """Why drift ``kind`` cannot move this landscape (None: it can)."""
        if self.concept.shape[-1] == 0:
            return "the feature-shift drift needs inputs [n, features]; allowed: no drift for other input shapes"
        if kind == "rotation":
            return ("the concept is a feature shift that starts at 0, which a rotation about 0 leaves at 0; allowed: "
                    "linear, periodic, random_walk, switch")
        return None

    # -- the functional forward ----------------------------------------------------------
    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The module's parameters as views of one flat ``theta [D]``."""
        return {n: p.view(s) for n, p, s in zip(self.names, theta.split(self.numels, dim=-1), self.shapes)}

    def _scratch_stats(self, R: int, P: int) -> dict[str, torch.Tensor]:
        """Fresh running statistics ``[R, P, C]`` for the BN layers to write into (train mode)."""
        out = {}
        for n, m in self.bn_layers.items():
            c = m.num_features
            out[f"{n}.running_mean"] = torch.zeros(R, P, c, device=self.device, dtype=self.dtype)
            out[f"{n}.running_var"] = torch.ones(R, P, c, device=self.device, dtype=self.dtype)
        return out

    def forward(self, theta: torch.Tensor, x: torch.Tensor, *, train: bool = True,
                stats: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Outputs ``[R, P, n, ...]`` of the networks ``theta [R, P, D]`` on inputs ``x [R, n, ...]``.

        ``train``: BN layers use batch statistics and write their running statistics into
        ``stats`` (scratch ``[R, P, C]`` tensors when None); eval: BN layers read ``stats``."""
        from torch.func import functional_call, vmap

        R, P = theta.shape[0], theta.shape[1]
        if stats is None:
            stats = self._scratch_stats(R, P)
        fixed = self.fixed_buffers
        module = self.module

        def one(th: torch.Tensor, st: dict[str, torch.Tensor], xx: torch.Tensor) -> torch.Tensor:
            return functional_call(module, (self.unflatten(th), st, fixed), (xx,), strict=False)

        switch = module.training != train  # Module.train walks every submodule: only when the mode changes
        if switch:
            module.train(train)
        try:
            if P == 1:  # one network per replicate (an SGD step): one vmap level, half the dispatch
                out = vmap(one, in_dims=(0, 0, 0))(theta[:, 0], {k: v[:, 0] for k, v in stats.items()}, x)
                return out.unsqueeze(1)
            over_population = vmap(one, in_dims=(0, 0, None))
            return vmap(over_population, in_dims=(0, 0, 0))(theta, stats, x)
        finally:
            if switch:
                module.train(True)

    def _example_loss(self, out: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Per-example losses ``[R, P, n]`` of outputs ``out [R, P, n, k]`` against ``y [R, n(, k)]``."""
        R, P, n = out.shape[:3]
        if self.loss_kind == "cross_entropy":
            yy = y.unsqueeze(1).expand(R, P, n)
            losses = F.cross_entropy(out.reshape(R * P * n, -1), yy.reshape(-1), reduction="none").view(R, P, n)
        else:
            res = out.reshape(R, P, n, -1) - y.reshape(R, 1, n, -1)
            losses = res.square().mean(-1)
        if self.l2:
            losses = losses + 0.5 * self.l2 * theta.square().sum(-1, keepdim=True)
        return losses

    # -- the landscape contract ------------------------------------------------------------
    def labelled(self, examples: Batch, concept: torch.Tensor) -> Batch:
        if concept.shape[-1] == 0:
            return dict(examples)
        return {"x": examples["x"] + concept.unsqueeze(1), "y": examples["y"]}

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        R = theta.shape[0]
        th = theta.reshape(R, -1, self.dim)
        losses = self._example_loss(self.forward(th, batch["x"], train=True), batch["y"], th)
        return losses.reshape(theta.shape[:-1] + (losses.shape[-1],))

    # -- held-out measures (eval mode) -----------------------------------------------------
    @contextlib.contextmanager
    def _momentum_one(self):
        saved = {n: m.momentum for n, m in self.bn_layers.items()}
        try:
            for m in self.bn_layers.values():
                m.momentum = 1.0
            yield
        finally:
            for n, m in self.bn_layers.items():
                m.momentum = saved[n]

    def eval_statistics(self, theta: torch.Tensor, concept: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """BN running statistics ``[R, P, C]`` at ``theta [R, P, D]``: the training split's mean
        and unbiased variance of each BN layer's input (one train-mode pass with momentum 1)."""
        stats = self._scratch_stats(theta.shape[0], theta.shape[1])
        if self.bn_layers:
            with self._momentum_one():
                self.forward(theta, self.full_batch(concept)["x"], train=True, stats=stats)
        return stats

    def eval_outputs(self, theta: torch.Tensor, x: torch.Tensor, concept: torch.Tensor | None = None) -> torch.Tensor:
        """Eval-mode outputs ``[R, P, n, ...]`` (BN with :meth:`eval_statistics`)."""
        return self.forward(theta, x, train=False, stats=self.eval_statistics(theta, concept))

    def heldout_metrics_with(self, theta: torch.Tensor, concept: torch.Tensor | None) -> dict[str, torch.Tensor]:
        th = theta.reshape(theta.shape[0], -1, self.dim)
        stats = self.eval_statistics(th, concept)
        out: dict[str, torch.Tensor] = {}
        sets = {"train": self.splits.train, "validation": self.splits.validation, "test": self.splits.test}
        for name, split in sets.items():
            if split is None:
                continue
            batch = self.labelled(split, self.concept if concept is None else concept)
            pred = self.forward(th, batch["x"], train=False, stats=stats)
            if name != "train":
                out[f"{name}_loss"] = self._example_loss(pred, batch["y"], th).mean(-1).reshape(theta.shape[:-1])
            if self.task == "classification":
                hit = (pred.argmax(-1) == batch["y"].unsqueeze(1)).to(self.dtype)
                out[f"{name}_accuracy"] = hit.mean(-1).reshape(theta.shape[:-1])
        return out

    def heldout_metrics(self, theta: torch.Tensor, t: Time = None) -> dict[str, torch.Tensor]:
        """Validation/test loss and train/validation/test accuracy ``[R, *S]`` (eval mode)."""
        return self.heldout_metrics_with(theta, None)

    def describe(self) -> dict:
        d = {"kind": self.kind, "dim": self.dim, "replicates": self.replicates, "device": str(self.device),
             "dtype": str(self.dtype).replace("torch.", ""), "loss": self.loss_kind, "l2": self.l2,
             "module": repr(self.module), "data": self.splits.info}
        if self.params is not None:
            d.update(self.params.model_dump())
        return d
