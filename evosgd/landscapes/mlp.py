"""Teacher–student MLP regression: theta is the flat vector of a small network's weights.

A fixed random *teacher* network (the concept) labels Gaussian inputs; the *student* (theta) is
trained with the squared loss ``0.5 ||student(x) - y||^2``.  With the same architecture and no
label noise the teacher's own weights are a global optimum of loss 0 (Gardner & Derrida 1989;
Saad & Solla 1995 for the online-learning analysis of this set-up).

Optional batch normalization (Ioffe & Szegedy 2015, without the affine part): each hidden
pre-activation is normalised as ``(h - mu) / sqrt(var + 1e-5)`` with mu, var over the examples of
the batch in training mode (the ``loss`` of a batch: one example's loss depends on the others,
``per_example_separable = False``) and over the whole dataset (population statistics at the
current theta) in ``true_loss``.

Every population member is evaluated at once: theta ``[R, *S, D]`` is viewed as weight matrices
``[R, P, in, out]`` (see :func:`unflatten`) and each layer is one batched ``einsum``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from evosgd.core.errors import ParameterError
from evosgd.core.registry import LANDSCAPES
from evosgd.landscapes.base import Batch, Time
from evosgd.landscapes.data import DataLandscape

ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "gelu": F.gelu}
BN_EPS = 1e-5


def layer_sizes(inputs: int, widths: list[int], outputs: int) -> list[tuple[int, int]]:
    dims = [inputs, *widths, outputs]
    return list(zip(dims[:-1], dims[1:]))


def n_params(sizes: list[tuple[int, int]]) -> int:
    """Number of weights and biases of the layers ``sizes``."""
    return sum(i * o + o for i, o in sizes)


def unflatten(theta: torch.Tensor, sizes: list[tuple[int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Views ``(W [..., in, out], b [..., out])`` per layer of a flat ``theta [..., D]``; the layout is
    layer by layer, W row-major then b."""
    lead = theta.shape[:-1]
    widths = [n for i, o in sizes for n in (i * o, o)]
    k = sum(widths)
    if k != theta.shape[-1]:
        raise ValueError(f"theta has {theta.shape[-1]} entries, the layers need {k}")
    # One ``split`` rather than a slice per piece: the same views, but autograd then assembles
    # the gradient of theta with one concatenation instead of a zero-filled [.., D] tensor per
    # piece summed together (2 x layers passes over theta's size, the bulk of a step at large D).
    pieces = theta.split(widths, dim=-1)
    return [(pieces[2 * j].reshape(lead + (i, o)), pieces[2 * j + 1]) for j, (i, o) in enumerate(sizes)]


def mlp_forward(theta: torch.Tensor, x: torch.Tensor, sizes: list[tuple[int, int]], activation: str,
                batch_norm: bool = False) -> torch.Tensor:
    """Outputs ``[R, P, *B, n, out]`` of the networks ``theta [R, P, D]`` on inputs ``x [R, *B, n, in]``;
    batch-norm statistics (when on) are taken over the n axis."""
    act = ACTIVATIONS[activation]
    layers = unflatten(theta, sizes)
    extra = x.dim() - 3  # dims of *B

    def hidden(h: torch.Tensor) -> torch.Tensor:
        """Batch norm over the n axis (when on), then the activation."""
        if batch_norm:
            mu = h.mean(dim=-2, keepdim=True)
            var = h.var(dim=-2, unbiased=False, keepdim=True)
            h = (h - mu) / torch.sqrt(var + BN_EPS)
        return act(h)

    last = len(layers) - 1
    if extra == 0 and theta.dim() == 3 and theta.shape[1] == 1:
        # One network per replicate (SGD): each layer is one ``baddbmm`` (bias + [R, n, in] @
        # [R, in, out] in one kernel), as ``nn.Linear`` is one ``addmm``; the broadcast 4-D
        # ``matmul`` + add below costs a third more per step at small batches (a reshape-copy and
        # a sum over the broadcast dims in its backward).
        h = x
        for j, (W, b) in enumerate(layers):
            h = torch.baddbmm(b.reshape(b.shape[0], 1, b.shape[-1]), h, W.reshape(W.shape[:1] + W.shape[2:]))
            h = hidden(h) if j < last else h
        return h.unsqueeze(1)
    h = x.unsqueeze(1)  # [R, 1, *B, n, in]
    for j, (W, b) in enumerate(layers):
        Wv = W.reshape(W.shape[:2] + (1,) * extra + W.shape[2:])  # [R, P, 1.., in, out]
        bv = b.reshape(b.shape[:2] + (1,) * (extra + 1) + b.shape[2:])
        h = torch.matmul(h, Wv) + bv
        h = hidden(h) if j < last else h
    return h


def mlp_forward_eval(theta: torch.Tensor, x_train: torch.Tensor, x: torch.Tensor, sizes: list[tuple[int, int]],
                     activation: str) -> torch.Tensor:
    """Outputs ``[R, P, m, out]`` on inputs ``x [R, m, in]`` with every batch-norm layer using the
    *training* inputs' statistics at theta (``x_train [R, n, in]``: population statistics, what
    eval mode with converged running averages computes), not the statistics of ``x`` itself."""
    act = ACTIVATIONS[activation]
    layers = unflatten(theta, sizes)
    h_tr, h = x_train.unsqueeze(1), x.unsqueeze(1)
    last = len(layers) - 1
    for j, (W, b) in enumerate(layers):
        bv = b.unsqueeze(-2)
        h_tr, h = torch.matmul(h_tr, W) + bv, torch.matmul(h, W) + bv
        if j < last:
            mu = h_tr.mean(dim=-2, keepdim=True)
            sd = torch.sqrt(h_tr.var(dim=-2, unbiased=False, keepdim=True) + BN_EPS)
            h_tr, h = act((h_tr - mu) / sd), act((h - mu) / sd)
    return h


def lecun_init(sizes: list[tuple[int, int]], generator: torch.Generator, bias_std: float = 0.0) -> torch.Tensor:
    """Flat weights with W ~ N(0, 1/fan_in) (LeCun et al. 1998) and biases ~ N(0, bias_std^2)."""
    parts = []
    for i, o in sizes:
        parts.append(torch.randn(i * o, generator=generator, dtype=torch.float64) / math.sqrt(i))
        parts.append(torch.randn(o, generator=generator, dtype=torch.float64) * bias_std)
    return torch.cat(parts)


class TeacherStudentParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_examples: int = Field(512, ge=1, description="dataset size n (per replicate)")
    inputs: int = Field(8, ge=1, description="input dimension; inputs are N(0, I)")
    widths: list[int] = Field([16], description="hidden-layer widths of the student (theta's network)")
    outputs: int = Field(1, ge=1, description="output dimension")
    activation: Literal["tanh", "relu", "gelu"] = Field("tanh", description="hidden activation (student and teacher)")
    teacher_widths: list[int] | None = Field(None, description="hidden widths of the teacher; None = the student's (realisable)")
    noise_std: float = Field(0.0, ge=0.0, description="label noise added to the teacher's outputs")
    batch_norm: bool = Field(False, description="batch-normalise the student's hidden pre-activations (mini-batch statistics in training)")


@LANDSCAPES.register("teacher_student", TeacherStudentParams,
                     "MLP student fitting a random teacher MLP (squared loss); optional batch norm; theta = flat weights",
                     family="data")
class TeacherStudent(DataLandscape):
    """Teacher–student regression (see module docstring).  ``optimum`` is the teacher's weights
    (``optimal_loss`` 0) when the student has the teacher's architecture, no label noise and no
    batch norm; otherwise unknown (None).  Starting point: LeCun-initialised student."""

    kind = "teacher_student"

    @classmethod
    def memory_estimate(cls, params: dict, *, replicates: int, itemsize: int, points: int, batch: int) -> tuple[int, int]:
        """(D, bytes of the landscape's own tensors) for the memory guard (``evosgd.run.memory``):
        the dataset ``R n (inputs + outputs)``, the teacher, and about three activations per unit
        (pre-activation, activation, its gradient) for ``points`` networks on ``batch`` examples
        and for the full-data true loss of the recommendation."""
        widths, teacher = list(params.get("widths") or []), params.get("teacher_widths")
        teacher = widths if teacher is None else list(teacher)
        inputs, outputs, n = int(params.get("inputs", 8)), int(params.get("outputs", 1)), int(params.get("n_examples", 512))
        dim = n_params(layer_sizes(inputs, widths, outputs))
        units, t_units = sum(widths) + outputs, sum(teacher) + outputs
        R = replicates
        count = (R * n * (inputs + outputs) + R * n_params(layer_sizes(inputs, teacher, outputs))
                 + 3 * R * points * batch * units + R * batch * t_units + 3 * R * n * (units + t_units))
        return dim, itemsize * count

    def __init__(self, params: TeacherStudentParams, *, replicates: int, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        where = "landscape 'teacher_student'"
        for name in ("widths", "teacher_widths"):
            ws = getattr(params, name)
            if ws is not None and any(w < 1 for w in ws):
                raise ParameterError(name, ws, "a list of integers >= 1", where=where)
        self.sizes = layer_sizes(params.inputs, params.widths, params.outputs)
        teacher_widths = params.widths if params.teacher_widths is None else params.teacher_widths
        self.teacher_sizes = layer_sizes(params.inputs, teacher_widths, params.outputs)
        super().__init__(dim=n_params(self.sizes), n_examples=params.n_examples, replicates=replicates, device=device, dtype=dtype)
        self.params = params
        self.realisable = self.teacher_sizes == self.sizes and params.noise_std == 0 and not params.batch_norm
        self.per_example_separable = not params.batch_norm
        self.seed = seed
        xs, noise, teach, x0 = [], [], [], []
        for g in self.replicate_generators(seed, replicates):
            xs.append(torch.randn(params.n_examples, params.inputs, generator=g, dtype=torch.float64))
            noise.append(torch.randn(params.n_examples, params.outputs, generator=g, dtype=torch.float64) * params.noise_std)
            teach.append(lecun_init(self.teacher_sizes, g, bias_std=0.1))
            x0.append(lecun_init(self.sizes, g))
        self.data = {"x": torch.stack(xs).to(self.device, dtype), "noise": torch.stack(noise).to(self.device, dtype)}
        self.concept = torch.stack(teach).to(self.device, dtype)
        self.initial_point = torch.stack(x0).to(self.device, dtype)

    def unflatten(self, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The student's ``(W [..., in, out], b [..., out])`` per layer."""
        return unflatten(theta, self.sizes)

    def heldout_examples(self, generator: torch.Generator, r: int, m: int) -> Batch:
        """Fresh inputs and label noise (held-out losses: see :meth:`heldout_metrics_with`)."""
        p = self.params
        return {"x": torch.randn(m, p.inputs, generator=generator, dtype=torch.float64),
                "noise": torch.randn(m, p.outputs, generator=generator, dtype=torch.float64) * p.noise_std}

    def heldout_metrics_with(self, theta: torch.Tensor, concept: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Held-out losses; with batch norm in eval mode: each layer normalised with the training
        set's statistics at theta (:func:`mlp_forward_eval`), as a deployed network would be."""
        if not self.params.batch_norm:
            return super().heldout_metrics_with(theta, concept)
        sets = self.heldout_sets()
        c = self.concept if concept is None else concept
        x_train = self.full_batch(concept)["x"]
        R = theta.shape[0]
        th = theta.reshape(R, -1, self.dim)
        out = {}
        for split, examples in sets.items():
            batch = self.labelled(examples, c)
            res = mlp_forward_eval(th, x_train, batch["x"], self.sizes, self.params.activation) - batch["y"].unsqueeze(1)
            out[f"{split}_loss"] = (0.5 * (res * res).sum(-1)).mean(-1).reshape(theta.shape[:-1])
        return out

    def labelled(self, examples: Batch, concept: torch.Tensor) -> Batch:
        y = mlp_forward(concept.unsqueeze(1), examples["x"], self.teacher_sizes, self.params.activation).squeeze(1)
        return {"x": examples["x"], "y": y + examples["noise"]}

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        R = theta.shape[0]
        th = theta.reshape(R, -1, self.dim)
        out = mlp_forward(th, batch["x"], self.sizes, self.params.activation, self.params.batch_norm)  # [R, P, n, o]
        res = out - batch["y"].unsqueeze(1)
        losses = 0.5 * (res * res).sum(-1)
        return losses.reshape(theta.shape[:-1] + (losses.shape[-1],))

    def loss_and_grad(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Backpropagation written out (Rumelhart, Hinton & Williams 1986), without batch norm.

        Forward ``a_j = h_{j-1} W_j + b_j``, ``h_j = act(a_j)`` (``h_0 = x``, the last layer
        linear); loss ``L = (1/2n) sum_i ||a_L,i - y_i||^2``.  Backward from ``d_L = (a_L - y)/n``:
        ``dL/dW_j = h_{j-1}^T d_j``, ``dL/db_j = sum_i d_j,i``, ``d_{j-1} = (d_j W_j^T) * act'(a_{j-1})``.
        The same batched GEMMs autograd runs, without its graph: a fifth less time per step at
        b = 32 for a 100-256-256-1 network.  Batch norm (the batch couples the examples) and
        population-shaped ``theta`` use autograd (the default)."""
        if theta.dim() != 2 or self.params.batch_norm:
            return super().loss_and_grad(theta, batch, t)
        x, y = batch["x"], batch["y"]
        R, n = x.shape[0], x.shape[1]
        act, name = ACTIVATIONS[self.params.activation], self.params.activation
        layers = self.unflatten(theta.detach())  # W [R, in, out], b [R, out]
        hs, pre = [x], []
        h = x
        for j, (W, b) in enumerate(layers):
            a = torch.baddbmm(b.unsqueeze(1), h, W)
            if j < len(layers) - 1:
                pre.append(a)
                h = act(a)
                hs.append(h)
            else:
                h = a
        res = h - y
        loss = res.square().sum(-1).mean(-1).mul_(0.5)
        d = res.div(n)
        grads: list[torch.Tensor] = [x] * (2 * len(layers))
        for j in range(len(layers) - 1, -1, -1):
            W = layers[j][0]
            grads[2 * j] = torch.bmm(hs[j].transpose(1, 2), d).reshape(R, -1)
            grads[2 * j + 1] = d.sum(1)
            if j > 0:
                d = torch.bmm(d, W.transpose(1, 2))
                a, hj = pre[j - 1], hs[j]
                if name == "relu":
                    # autograd's own ReLU backward (d where h > 0, else 0).  Not masked_fill/where:
                    # on the CPU those branch per element and a ReLU mask is a coin flip, 30x slower
                    d = torch.ops.aten.threshold_backward(d, hj, 0)
                elif name == "tanh":
                    d = d.mul_(1.0 - hj * hj)
                else:  # exact (erf) GELU: d/da [a Phi(a)] = Phi(a) + a phi(a)
                    cdf = 0.5 * (1.0 + torch.erf(a * (1.0 / math.sqrt(2.0))))
                    pdf = torch.exp(-0.5 * a * a) * (1.0 / math.sqrt(2.0 * math.pi))
                    d = d.mul_(cdf + a * pdf)
        return loss, torch.cat(grads, dim=1)

    def optimum_for(self, concept: torch.Tensor) -> torch.Tensor | None:
        return concept.clone() if self.realisable else None

    def optimal_loss_for(self, concept: torch.Tensor) -> torch.Tensor | None:
        return torch.zeros(self.replicates, device=self.device, dtype=self.dtype) if self.realisable else None
