"""Finite-sum data landscapes generated from the seed (no downloads): the base class, linear and
logistic regression.

A data landscape holds, per replicate r, a dataset of n examples drawn from
``derive_seed(seed, "landscape", r)``.  What makes an example is split in two:

* the example's own randomness (inputs, noise draws), fixed at construction, ``self.data``
  (dict of tensors ``[R, n, ...]``);
* the *concept* ``[R, C]`` that turns it into a labelled example (the true weights of a regression,
  the teacher network, the class centres).  :meth:`DataLandscape.labelled` applies a concept.

Static landscapes always use ``self.concept``; the drift wrapper (``drift.py``) moves the concept
with time t, so new examples are labelled by the concept at t (concept drift) and the true loss,
optimum and optimal loss are those of the dataset labelled by the concept at t.

``loss = mean of example_losses`` over a batch; ``true_loss`` = the mean over the whole dataset
(so it is exactly the mean of the per-example losses of ``take(arange(n))``), and ``sample(b)``
draws b indices uniformly with replacement, so a mini-batch loss (and its gradient) is an unbiased
estimate of the true loss (and its gradient) for ``per_example_separable`` landscapes.

Held-out data: :meth:`DataLandscape.heldout_metrics` gives the validation and test loss (and
accuracy for classification) at theta, what the recorder stores beside the training loss (never
charged).  The synthetic landscapes draw fresh validation and test examples from the same
distribution, from a stream of their own (``derive_seed(seed, "landscape", r, "heldout", split)``,
so the training set, concept and starting point are those of a landscape without them); the real
tables of :mod:`evosgd.landscapes.tabular` are split train / validation / test.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from evosgd.core.errors import ParameterError
from evosgd.core.registry import LANDSCAPES
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.landscapes.analytic import haar_orthogonal
from evosgd.landscapes.base import Batch, Landscape, Time

#: size cap of each synthetic held-out split (validation, test): min(n_examples, HELDOUT_MAX) examples
HELDOUT_MAX = 1024


def gather_examples(data: Batch, indices: torch.Tensor) -> Batch:
    """Rows ``indices [R, m]`` of each ``[R, n, ...]`` tensor of ``data``.

    Computed as one ``index_select`` on the flattened ``[R * n, ...]`` view with flat indices
    ``r * n + i``: the same rows as ``v[arange(R)[:, None], indices]``, but a mini-batch gather
    is on every step's hot path and advanced indexing costs several times more dispatch.
    """
    R, m = indices.shape
    out: Batch = {}
    flat = None
    for k, v in data.items():
        n = v.shape[1]
        if flat is None or flat[0] != n:
            idx = indices if R == 1 else indices + torch.arange(0, R * n, n, device=indices.device).unsqueeze(1)
            flat = (n, idx.reshape(-1))
        if v.is_contiguous():
            out[k] = v.view((R * n,) + v.shape[2:]).index_select(0, flat[1]).view((R, m) + v.shape[2:])
        else:
            out[k] = v[torch.arange(R, device=indices.device).unsqueeze(1), indices]
    return out


class DataLandscape(Landscape):
    """Base of finite-sum landscapes. Subclasses set ``self.data`` (per-example randomness,
    ``[R, n, ...]``), ``self.concept`` ``[R, C]`` and implement ``labelled`` and ``example_losses``."""

    finite_sum = True

    def __init__(self, *, dim: int, n_examples: int, replicates: int, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(dim=dim, replicates=replicates, device=device, dtype=dtype)
        self.n_examples = int(n_examples)
        self.data: Batch = {}
        self.concept = torch.zeros(self.replicates, 0, device=self.device, dtype=dtype)
        self._static_full: Batch | None = None

    @staticmethod
    def replicate_generators(seed: int, replicates: int) -> list[torch.Generator]:
        return [make_generator(derive_seed(seed, "landscape", r)) for r in range(replicates)]

    def memo(self, name: str, concept: torch.Tensor, fn):
        """``fn(concept)``, remembered for the last concept seen (a drifting landscape asks for the
        optimum and the optimal loss at the same t one after the other)."""
        cache = self.__dict__.setdefault("_memo_cache", {})
        hit = cache.get(name)
        if hit is not None and hit[0].shape == concept.shape and torch.equal(hit[0], concept):
            return hit[1]
        value = fn(concept)
        cache[name] = (concept.detach().clone(), value)
        return value

    # -- subclass hooks ------------------------------------------------------------------
    def labelled(self, examples: Batch, concept: torch.Tensor) -> Batch:
        """The batch (what ``example_losses`` reads) made of ``examples`` under ``concept`` [R, C]."""
        raise NotImplementedError

    def optimum_for(self, concept: torch.Tensor) -> torch.Tensor | None:
        return None

    def optimal_loss_for(self, concept: torch.Tensor) -> torch.Tensor | None:
        return None

    def heldout_examples(self, generator: torch.Generator, r: int, m: int) -> Batch | None:
        """``m`` fresh examples (their own randomness, as in ``self.data``, without the replicate
        dimension) of replicate r's distribution, drawn from ``generator``; None = no held-out data."""
        return None

    def accuracy(self, theta: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """Share of correctly classified examples ``[R, *S]`` (classification landscapes), else None."""
        return None

    # -- held-out data ---------------------------------------------------------------------
    def heldout_sets(self) -> dict[str, Batch]:
        """Validation and test examples of a synthetic landscape: ``min(n_examples, HELDOUT_MAX)``
        fresh draws each from the data distribution of replicate r, from ``derive_seed(seed,
        "landscape", r, "heldout", split)`` (a stream of their own: the training data, the concept
        and the starting point are the same as without them); drawn once, on first use."""
        if "_heldout" not in self.__dict__:
            seed = getattr(self, "seed", None)
            sets: dict[str, Batch] = {}
            if seed is not None:
                m = min(self.n_examples or 0, HELDOUT_MAX)
                for split in ("validation", "test"):
                    rows = [self.heldout_examples(make_generator(derive_seed(seed, "landscape", r, "heldout", split)), r, m)
                            for r in range(self.replicates)]
                    if m and all(row is not None for row in rows):
                        sets[split] = {k: torch.stack([row[k] for row in rows]).to(self.device, self.dtype)
                                       for k in rows[0]}
            self._heldout = sets
        return self._heldout

    def heldout_metrics_with(self, theta: torch.Tensor, concept: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``{split}_loss`` (the training loss formula on the held-out examples labelled by the
        concept) and, for classification, ``{split}_accuracy`` (train included), each ``[R, *S]``."""
        sets = self.heldout_sets()
        if not sets:
            return {}
        c = self.concept if concept is None else concept
        out: dict[str, torch.Tensor] = {}
        acc = self.accuracy(theta, self.full_batch(concept))
        if acc is not None:
            out["train_accuracy"] = acc
        for split, examples in sets.items():
            batch = self.labelled(examples, c)
            out[f"{split}_loss"] = self.loss(theta, batch)
            acc = self.accuracy(theta, batch)
            if acc is not None:
                out[f"{split}_accuracy"] = acc
        return out

    def heldout_metrics(self, theta: torch.Tensor, t: Time = None) -> dict[str, torch.Tensor]:
        """Held-out measures at ``theta`` (see :meth:`heldout_metrics_with`); never charged."""
        return self.heldout_metrics_with(theta, None)

    def sample_indices(self, n: int, generator: torch.Generator, concept: torch.Tensor) -> torch.Tensor:
        """Indices ``[R, n]``: uniform with replacement (subclasses may sample differently)."""
        return torch.randint(0, self.n_examples, (self.replicates, n), generator=generator, device=self.device)

    # -- concept-explicit versions (used by the drift wrapper) ---------------------------
    def take_with(self, indices: torch.Tensor, concept: torch.Tensor) -> Batch:
        return self.labelled(gather_examples(self.data, indices), concept)

    def sample_with(self, n: int, generator: torch.Generator, concept: torch.Tensor) -> Batch:
        return self.take_with(self.sample_indices(n, generator, concept), concept)

    def full_batch(self, concept: torch.Tensor | None = None) -> Batch:
        if concept is None:
            if self._static_full is None:
                self._static_full = self.labelled(self.data, self.concept)
            return self._static_full
        return self.labelled(self.data, concept)

    def true_loss_with(self, theta: torch.Tensor, concept: torch.Tensor | None) -> torch.Tensor:
        return self.loss(theta, self.full_batch(concept))

    # -- contract ------------------------------------------------------------------------
    def take(self, indices: torch.Tensor, t: Time = None) -> Batch:
        # A static concept labels every example once: rows of the cached labelled dataset (the
        # one true_loss reads) instead of labelling each mini-batch again, which for the
        # teacher-student MLP is a teacher forward pass per step.  ``labelled`` is per example,
        # so the rows are the labels ``take_with`` would compute.
        return gather_examples(self.full_batch(), indices)

    def sample(self, n: int, generator: torch.Generator, t: Time = None) -> Batch:
        return self.take(self.sample_indices(n, generator, self.concept), t)

    def true_loss(self, theta: torch.Tensor, t: Time = None) -> torch.Tensor:
        return self.true_loss_with(theta, None)

    def optimum(self, t: Time = None) -> torch.Tensor | None:
        if not hasattr(self, "_static_optimum"):
            self._static_optimum = self.optimum_for(self.concept)
        return self._static_optimum

    def optimal_loss(self, t: Time = None) -> torch.Tensor | None:
        if not hasattr(self, "_static_optimal_loss"):
            self._static_optimal_loss = self.optimal_loss_for(self.concept)
        return self._static_optimal_loss

    def describe(self) -> dict:
        d = super().describe()
        d.update(self.params.model_dump())  # type: ignore[attr-defined]
        return d


# -- linear regression -------------------------------------------------------------------------


class LinearRegressionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_examples: int = Field(256, ge=1, description="dataset size n (per replicate); must be >= features")
    features: int = Field(10, ge=1, description="number of features d = dimension D of theta")
    noise_std: float = Field(0.5, ge=0.0, description="label noise: y = x.w_true + noise_std * N(0, 1)")
    condition: float = Field(
        1.0, ge=1.0, description="condition number of the feature covariance (1 = isotropic; > 1: log-spaced scales in a random basis)"
    )


@LANDSCAPES.register("linear_regression", LinearRegressionParams,
                     "least squares 0.5 (x.w - y)^2 on a synthetic dataset; optimum = the least-squares solution",
                     family="data")
class LinearRegression(DataLandscape):
    """Linear regression with the loss ``l_i(w) = 0.5 (x_i . w - y_i)^2``.

    Data (per replicate): ``x_i = Q diag(s) g_i`` with ``g_i ~ N(0, I_d)``, scales ``s_j`` log-spaced
    from 1 to ``sqrt(condition)`` and ``Q`` Haar-random (identity when condition = 1), so the
    covariance has condition number ``condition``; ``y_i = x_i . w_true + noise_std eps_i`` with
    ``w_true ~ N(0, I_d)`` (the concept) and ``eps_i ~ N(0, 1)``.  The optimum is the least-squares
    solution ``argmin ||X w - y||^2`` (computed in float64), the optimal loss its
    ``0.5 mean residual^2``.  Starting point: ``N(0, I_d)``."""

    kind = "linear_regression"

    def __init__(self, params: LinearRegressionParams, *, replicates: int, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        if params.n_examples < params.features:
            raise ParameterError("n_examples", params.n_examples, f"an integer >= features = {params.features} (a unique optimum)",
                                 where="landscape 'linear_regression'")
        super().__init__(dim=params.features, n_examples=params.n_examples, replicates=replicates, device=device, dtype=dtype)
        self.params = params
        n, d = params.n_examples, params.features
        self.seed, self._feature_maps = seed, []
        xs, eps, w, x0 = [], [], [], []
        for g in self.replicate_generators(seed, replicates):
            scales = torch.tensor(float(params.condition), dtype=torch.float64) ** (
                0.5 * torch.arange(d, dtype=torch.float64) / max(d - 1, 1))
            q = haar_orthogonal(d, g) if params.condition > 1 else torch.eye(d, dtype=torch.float64)
            self._feature_maps.append((scales, q))
            xs.append((torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ q.T)
            eps.append(torch.randn(n, generator=g, dtype=torch.float64))
            w.append(torch.randn(d, generator=g, dtype=torch.float64))
            x0.append(torch.randn(d, generator=g, dtype=torch.float64))
        self._x64 = torch.stack(xs)  # float64 copy for the exact optimum
        self._eps64 = torch.stack(eps) * params.noise_std
        self.data = {"x": self._x64.to(self.device, dtype), "noise": self._eps64.to(self.device, dtype)}
        self.concept = torch.stack(w).to(self.device, dtype)
        self.initial_point = torch.stack(x0).to(self.device, dtype)

    def heldout_examples(self, generator: torch.Generator, r: int, m: int) -> Batch:
        scales, q = self._feature_maps[r]
        x = (torch.randn(m, self.dim, generator=generator, dtype=torch.float64) * scales) @ q.T
        return {"x": x, "noise": torch.randn(m, generator=generator, dtype=torch.float64) * self.params.noise_std}

    def labelled(self, examples: Batch, concept: torch.Tensor) -> Batch:
        y = (examples["x"] * concept.unsqueeze(1)).sum(-1) + examples["noise"]
        return {"x": examples["x"], "y": y}

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        R = theta.shape[0]
        th = theta.reshape(R, -1, self.dim)  # [R, P, D]
        # = einsum("rnd,rpd->rpn", x, th), the same bmm einsum dispatches to (bit-identical values
        # and gradients), without einsum's parsing and permutes: half the time of a small step
        pred = torch.bmm(th, batch["x"].transpose(1, 2))
        res = pred - batch["y"].unsqueeze(1)
        return (0.5 * res * res).reshape(theta.shape[:-1] + (res.shape[-1],))

    def loss_and_grad(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed form: with residuals ``r_i = x_i . w - y_i``, ``L = (1/2b) sum_i r_i^2`` and
        ``grad L = (1/b) X^T r`` (two ``bmm``; equal to autograd's up to rounding)."""
        if theta.dim() != 2:
            return super().loss_and_grad(theta, batch, t)
        x = batch["x"]
        b = x.shape[1]
        res = torch.bmm(x, theta.detach().unsqueeze(2)).squeeze(2).sub_(batch["y"])  # [R, b]
        loss = res.square().sum(-1).mul_(0.5 / b)
        grad = torch.bmm(res.unsqueeze(1), x).squeeze(1).div_(b)
        return loss, grad

    def _lstsq(self, concept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._x64
        y = (x * concept.detach().to("cpu", torch.float64).unsqueeze(1)).sum(-1) + self._eps64
        w = torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.squeeze(-1)
        res = (x * w.unsqueeze(1)).sum(-1) - y
        return w, 0.5 * (res * res).mean(-1)

    def optimum_for(self, concept: torch.Tensor) -> torch.Tensor:
        return self.memo("lstsq", concept, self._lstsq)[0].to(self.device, self.dtype)

    def optimal_loss_for(self, concept: torch.Tensor) -> torch.Tensor:
        return self.memo("lstsq", concept, self._lstsq)[1].to(self.device, self.dtype)


# -- logistic regression -----------------------------------------------------------------------


class LogisticRegressionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_examples: int = Field(256, ge=1, description="dataset size n (per replicate)")
    features: int = Field(10, ge=1, description="number of features d = dimension D of theta")
    l2: float = Field(1e-2, ge=0.0, description="L2 penalty 0.5 l2 ||w||^2 in every example's loss: > 0 makes the optimum exist and unique")
    teacher_scale: float = Field(2.0, gt=0.0, description="std of the true logit x.w_true (larger = cleaner labels)")


def _logistic_objective(w: torch.Tensor, x: torch.Tensor, s: torch.Tensor, l2: float) -> torch.Tensor:
    """Mean of softplus(-s x.w) + 0.5 l2 ||w||^2, for w ``[R, d]``."""
    m = (x * w.unsqueeze(1)).sum(-1)
    return F.softplus(-s * m).mean(-1) + 0.5 * l2 * (w * w).sum(-1)


@LANDSCAPES.register("logistic_regression", LogisticRegressionParams,
                     "L2-regularised logistic loss on synthetic labels from a true hyperplane; optimum by Newton's method",
                     family="data")
class LogisticRegression(DataLandscape):
    """Binary logistic regression, labels ``s_i in {-1, +1}``:
    ``l_i(w) = log(1 + exp(-s_i x_i . w)) + 0.5 l2 ||w||^2``.

    Data: ``x_i ~ N(0, I_d)``, ``w_true ~ N(0, teacher_scale^2 / d I_d)`` (the concept: the
    hyperplane), ``s_i = +1`` if ``u_i < sigmoid(x_i . w_true)`` else -1 with ``u_i ~ U(0, 1)``
    fixed per example.  The optimum is computed at construction in float64 by damped Newton
    (Armijo backtracking) to a gradient norm < 1e-10; with ``l2 = 0`` on separable data it does not
    exist and ``optimum`` is None.  Starting point: 0."""

    kind = "logistic_regression"

    def __init__(self, params: LogisticRegressionParams, *, replicates: int, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(dim=params.features, n_examples=params.n_examples, replicates=replicates, device=device, dtype=dtype)
        self.params = params
        n, d = params.n_examples, params.features
        self.seed = seed
        xs, us, w = [], [], []
        for g in self.replicate_generators(seed, replicates):
            xs.append(torch.randn(n, d, generator=g, dtype=torch.float64))
            us.append(torch.rand(n, generator=g, dtype=torch.float64))
            w.append(torch.randn(d, generator=g, dtype=torch.float64) * params.teacher_scale / math.sqrt(d))
        self._x64, self._u64 = torch.stack(xs), torch.stack(us)
        self.data = {"x": self._x64.to(self.device, dtype), "u": self._u64.to(self.device, dtype)}
        self.concept = torch.stack(w).to(self.device, dtype)
        self.initial_point = torch.zeros(replicates, d, device=self.device, dtype=dtype)

    def heldout_examples(self, generator: torch.Generator, r: int, m: int) -> Batch:
        return {"x": torch.randn(m, self.dim, generator=generator, dtype=torch.float64),
                "u": torch.rand(m, generator=generator, dtype=torch.float64)}

    def accuracy(self, theta: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Share of examples with ``sign(x . w) = s`` (a margin of 0 counts as wrong)."""
        R = theta.shape[0]
        m = torch.bmm(theta.reshape(R, -1, self.dim), batch["x"].transpose(1, 2))
        hit = (m * batch["s"].unsqueeze(1) > 0).to(theta.dtype).mean(-1)
        return hit.reshape(theta.shape[:-1])

    def labelled(self, examples: Batch, concept: torch.Tensor) -> Batch:
        p = torch.sigmoid((examples["x"] * concept.unsqueeze(1)).sum(-1))
        return {"x": examples["x"], "s": torch.where(examples["u"] < p, 1.0, -1.0).to(examples["x"].dtype)}

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        R = theta.shape[0]
        th = theta.reshape(R, -1, self.dim)
        m = torch.bmm(th, batch["x"].transpose(1, 2))  # = einsum("rnd,rpd->rpn", x, th), see LinearRegression
        losses = F.softplus(-batch["s"].unsqueeze(1) * m) + 0.5 * self.params.l2 * (th * th).sum(-1, keepdim=True)
        return losses.reshape(theta.shape[:-1] + (m.shape[-1],))

    def loss_and_grad(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed form: with margins ``m_i = x_i . w`` and ``z_i = -s_i m_i``,
        ``L = (1/b) sum_i softplus(z_i) + (l2/2) ||w||^2`` and, since softplus' = sigmoid,
        ``grad L = -(1/b) sum_i s_i sigmoid(z_i) x_i + l2 w`` (two ``bmm``; equal to autograd's up
        to rounding)."""
        if theta.dim() != 2:
            return super().loss_and_grad(theta, batch, t)
        x, s = batch["x"], batch["s"]
        b = x.shape[1]
        w = theta.detach()
        z = torch.bmm(x, w.unsqueeze(2)).squeeze(2).mul_(s).neg_()  # [R, b]
        l2 = self.params.l2
        loss = F.softplus(z).mean(-1)
        coef = torch.sigmoid(z).mul_(s).mul_(-1.0 / b)
        grad = torch.bmm(coef.unsqueeze(1), x).squeeze(1)
        if l2:
            loss = loss.add_(w.square().sum(-1), alpha=0.5 * l2)
            grad = grad.add_(w, alpha=l2)
        return loss, grad

    def newton(self, concept: torch.Tensor, tol: float = 1e-10, max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(w*, loss*, converged[R]) in float64 for the dataset labelled by ``concept``."""
        x = self._x64
        p_true = torch.sigmoid((x * concept.detach().to("cpu", torch.float64).unsqueeze(1)).sum(-1))
        s = torch.where(self._u64 < p_true, 1.0, -1.0).to(torch.float64)
        R, n, d = x.shape
        l2 = self.params.l2
        w = torch.zeros(R, d, dtype=torch.float64)
        eye = torch.eye(d, dtype=torch.float64)
        f = _logistic_objective(w, x, s, l2)
        for _ in range(max_iter):
            m = (x * w.unsqueeze(1)).sum(-1)
            sig = torch.sigmoid(-s * m)  # d softplus(-s m)/dm = -s sig
            grad = torch.einsum("rn,rnd->rd", -s * sig, x) / n + l2 * w
            if bool((grad.norm(dim=-1) < tol).all()):
                break
            curv = sig * (1 - sig)
            # the 1e-12 ridge only keeps the solve defined when l2 = 0 and n < d
            hess = torch.einsum("rn,rnd,rne->rde", curv, x, x) / n + (l2 + 1e-12) * eye
            step = torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
            alpha = torch.ones(R, 1, dtype=torch.float64)
            for _ in range(40):  # Armijo backtracking, per replicate
                cand = w - alpha * step
                fc = _logistic_objective(cand, x, s, l2)
                ok = fc <= f - 1e-4 * alpha.squeeze(-1) * (grad * step).sum(-1)
                if bool(ok.all()):
                    break
                alpha = torch.where(ok.unsqueeze(-1), alpha, alpha / 2)
            w, f = cand, fc
        m = (x * w.unsqueeze(1)).sum(-1)
        sig = torch.sigmoid(-s * m)
        grad = torch.einsum("rn,rnd->rd", -s * sig, x) / n + l2 * w
        hess = torch.einsum("rn,rnd,rne->rde", sig * (1 - sig), x, x) / n + l2 * eye
        # a minimizer exists where the gradient vanishes at a strictly convex point; on separable
        # data without l2 the iterates run off to infinity where the Hessian vanishes too
        strict = torch.linalg.eigvalsh(hess)[:, 0] > 1e-8
        return w, f, (grad.norm(dim=-1) < 1e-6) & strict

    def optimum_for(self, concept: torch.Tensor) -> torch.Tensor | None:
        w, _, ok = self.memo("newton", concept, self.newton)
        return w.to(self.device, self.dtype) if bool(ok.all()) else None

    def optimal_loss_for(self, concept: torch.Tensor) -> torch.Tensor | None:
        _, f, ok = self.memo("newton", concept, self.newton)
        return f.to(self.device, self.dtype) if bool(ok.all()) else None
