"""A vanilla recurrent network on a sequence regression task: the landscape with exploding gradients.

The model (Elman 1990), for an input sequence ``x_1 .. x_T`` (``x_t in R^I``), hidden size H:

    h_0 = 0,   h_t = tanh(W h_{t-1} + U x_t + c),   prediction  y_hat = v . h_T,

``theta`` = flat ``(W [H, H], U [H, I], c [H], v [H])``, each row-major, ``D = H^2 + H I + 2 H``;
the loss of an example is ``0.5 (y_hat - y)^2``.

Tasks (the label ``y`` of a sequence):

* ``teacher``: a fixed random teacher RNN of the same architecture (the *concept*, its flat weights)
  with a contracting recurrence (spectral radius ``teacher_spectral_radius`` < 1, so the target
  depends mostly on recent inputs and is learnable), plus label noise.  With no noise the
  teacher's weights are a global optimum of loss 0.
* ``memory``: ``y = x_1[0]``, the first coordinate of the *first* input, to be recalled after T steps
  (the long-memory tasks of Hochreiter & Schmidhuber 1997 and Pascanu et al. 2013, sec. 5).

Exploding gradients (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent
neural networks", ICML, sec. 2-3).  Back-propagation through time multiplies the Jacobians of the
recurrence:

    dh_T / dh_k = prod_{t=k+1..T} diag(1 - h_t^2) W,    so   ||dh_T / dh_k|| <= sigma_max(W)^(T-k)

(``|tanh'| <= 1``), and the gradient of the loss with respect to W, U and c sums such products over
k.  When the recurrence expands -- spectral radius of W above 1 with the hidden states not fully
saturated, as in a random tanh network of gain g > 1, which is chaotic (Sompolinsky, Crisanti &
Sommers 1988) -- the products grow like ``exp(lambda (T - k))`` with lambda > 0 the largest
Lyapunov exponent of the driven recurrence, bounded by ``log sigma_max(W)``: the gradient norm
grows exponentially with the sequence length T.  The loss itself stays bounded (``|h| <= 1``), so the
surface has the "cliff" structure of Pascanu et al. (Fig. 6): plateaus cut by narrow walls where
the gradient is huge, and a plain gradient step there throws the parameters far away (into
saturated regions where tanh' ~ 0 and learning stalls).  Gradient-norm clipping is the remedy
they propose.  ``init_spectral_radius`` places the starting point's W in that regime (1.5-3).

Every population member is evaluated at once: theta ``[R, *S, D]`` is viewed as ``[R, P, ...]``
weight tensors and each time step is one batched ``matmul`` over ``[R, P, n, H]`` (the Python loop
runs over the T time steps only).

Per replicate r (from ``derive_seed(seed, "landscape", r)``), in this order: the starting point
(W with spectral radius ``init_spectral_radius``, then U, v), the teacher, then the data -- so the
starting point and the teacher do not depend on ``n_examples`` or ``sequence_length``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.core.errors import ParameterError
from evosgd.core.registry import LANDSCAPES
from evosgd.landscapes.base import Batch, Time
from evosgd.landscapes.data import DataLandscape


def rnn_sizes(hidden: int, inputs: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the blocks of the flat parameter vector, in layout order."""
    return {"W": (hidden, hidden), "U": (hidden, inputs), "c": (hidden,), "v": (hidden,)}


def rnn_dim(hidden: int, inputs: int) -> int:
    return hidden * hidden + hidden * inputs + 2 * hidden


def unflatten_rnn(theta: torch.Tensor, hidden: int, inputs: int) -> dict[str, torch.Tensor]:
    """Views ``W [..., H, H], U [..., H, I], c [..., H], v [..., H]`` of a flat ``theta [..., D]``."""
    out, k = {}, 0
    lead = theta.shape[:-1]
    for name, shape in rnn_sizes(hidden, inputs).items():
        size = math.prod(shape)
        out[name] = theta[..., k:k + size].reshape(lead + shape)
        k += size
    if k != theta.shape[-1]:
        raise ValueError(f"theta has {theta.shape[-1]} entries, the RNN needs {k}")
    return out


def flatten_rnn(W: torch.Tensor, U: torch.Tensor, c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    lead = W.shape[:-2]
    return torch.cat([W.reshape(lead + (-1,)), U.reshape(lead + (-1,)), c, v], dim=-1)


def rnn_forward(theta: torch.Tensor, x: torch.Tensor, hidden: int, inputs: int, *,
                return_states: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Predictions ``[R, P, n]`` of the networks ``theta [R, P, D]`` on sequences ``x [R, n, T, I]``
    (and, with ``return_states``, the hidden states ``[R, P, n, T, H]``)."""
    p = unflatten_rnn(theta, hidden, inputs)
    W, U, c, v = p["W"], p["U"], p["c"], p["v"]
    R, P = theta.shape[:2]
    n, T = x.shape[1], x.shape[2]
    # input drive of every step at once: [R, P, n, T, H] = x [R, 1, n, T, I] @ U^T [R, P, 1, I, H]
    drive = torch.matmul(x.unsqueeze(1), U.transpose(-1, -2).unsqueeze(2)) + c[:, :, None, None, :]
    Wt = W.transpose(-1, -2)  # row vectors: h @ W^T = (W h)^T
    h = torch.zeros(R, P, n, hidden, device=theta.device, dtype=theta.dtype)
    states = []
    for t in range(T):
        h = torch.tanh(torch.matmul(h, Wt) + drive[:, :, :, t])
        if return_states:
            states.append(h)
    y = (h * v.unsqueeze(2)).sum(-1)
    if return_states:
        return y, torch.stack(states, dim=3)
    return y


def spectral_radius(W: torch.Tensor) -> torch.Tensor:
    """Largest modulus of the eigenvalues of ``W [..., H, H]``."""
    return torch.linalg.eigvals(W).abs().amax(dim=-1)


def random_recurrence(hidden: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian ``W`` (float64) rescaled to spectral radius exactly ``radius`` (0: the zero matrix)."""
    W = torch.randn(hidden, hidden, generator=generator, dtype=torch.float64) / math.sqrt(hidden)
    rho = float(spectral_radius(W))
    return W * (radius / rho) if rho > 0 else W * 0.0


def random_rnn(hidden: int, inputs: int, radius: float, generator: torch.Generator, bias_std: float = 0.0) -> torch.Tensor:
    """Flat float64 weights: W of spectral radius ``radius``, U ~ N(0, 1/I), c ~ N(0, bias_std^2), v ~ N(0, 1/H)."""
    W = random_recurrence(hidden, radius, generator)
    U = torch.randn(hidden, inputs, generator=generator, dtype=torch.float64) / math.sqrt(inputs)
    c = torch.randn(hidden, generator=generator, dtype=torch.float64) * bias_std
    v = torch.randn(hidden, generator=generator, dtype=torch.float64) / math.sqrt(hidden)
    return flatten_rnn(W, U, c, v)


class RNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_examples: int = Field(256, ge=1, description="dataset size n (sequences per replicate)")
    sequence_length: int = Field(20, ge=1, le=10_000, description="T, time steps per sequence (gradients grow like exp(lambda T))")
    hidden: int = Field(8, ge=1, le=1024, description="hidden size H")
    inputs: int = Field(1, ge=1, le=1024, description="input size I; inputs x_t ~ N(0, input_std^2 I)")
    input_std: float = Field(1.0, gt=0.0, description="standard deviation of the input entries")
    init_spectral_radius: float = Field(
        2.0, ge=0.0, le=100.0,
        description="spectral radius of W at the starting point (> 1: expanding, exploding-gradient regime; 1.5-3 typical)")
    task: Literal["teacher", "memory"] = Field(
        "teacher", description="teacher: labels from a random contracting teacher RNN; memory: recall x_1[0] after T steps")
    teacher_spectral_radius: float = Field(0.8, ge=0.0, le=100.0, description="spectral radius of the teacher's W (task 'teacher')")
    noise_std: float = Field(0.0, ge=0.0, description="label noise: y + noise_std * N(0, 1)")


@LANDSCAPES.register("rnn", RNNParams,
                     "vanilla tanh RNN h_t = tanh(W h_{t-1} + U x_t + c), y = v.h_T, on a sequence regression task "
                     "(teacher RNN or memory); exploding gradients for init_spectral_radius > 1",
                     family="data")
class RNNRegression(DataLandscape):
    """Sequence regression with a vanilla RNN (see the module docstring).  ``optimum`` is the
    teacher's weights (``optimal_loss`` 0) for the noise-free teacher task; otherwise unknown (None).
    Starting point: W Gaussian rescaled to spectral radius ``init_spectral_radius``, U ~ N(0, 1/I),
    c = 0, v ~ N(0, 1/H)."""

    kind = "rnn"

    @classmethod
    def memory_estimate(cls, params: dict, *, replicates: int, itemsize: int, points: int, batch: int) -> tuple[int, int]:
        """(D, bytes of the landscape's own tensors) for the memory guard: the sequences
        ``R n T I``, and the hidden states of every time step kept for backpropagation through
        time (about three per unit: state, pre-activation, gradient) for ``points`` networks on
        ``batch`` sequences and for the full-data true loss."""
        H, I = int(params.get("hidden", 8)), int(params.get("inputs", 1))
        T, n, R = int(params.get("sequence_length", 20)), int(params.get("n_examples", 256)), replicates
        count = R * n * (T * I + 1) + 3 * R * points * batch * T * H + 3 * R * n * T * H
        return rnn_dim(H, I), itemsize * count

    def __init__(self, params: RNNParams, *, replicates: int, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        where = "landscape 'rnn'"
        H, I, T, n = params.hidden, params.inputs, params.sequence_length, params.n_examples
        cells = replicates * n * T * max(H, I)
        if cells > 200_000_000:
            raise ParameterError("n_examples", n, f"a dataset with replicates * n_examples * sequence_length * max(hidden, inputs) "
                                 f"<= 2e8 (this one: {cells:.3g})", where=where)
        super().__init__(dim=rnn_dim(H, I), n_examples=n, replicates=replicates, device=device, dtype=dtype)
        self.params = params
        self.seed = seed  # the held-out examples' stream (DataLandscape.heldout_sets)
        self.hidden, self.inputs = H, I
        self.realisable = params.task == "teacher" and params.noise_std == 0
        starts, teach, xs, noise = [], [], [], []
        for g in self.replicate_generators(seed, replicates):
            # starting point and teacher first: they do not change with n_examples or sequence_length
            starts.append(random_rnn(H, I, params.init_spectral_radius, g, bias_std=0.0))
            teach.append(random_rnn(H, I, params.teacher_spectral_radius, g, bias_std=0.1))
            xs.append(torch.randn(n, T, I, generator=g, dtype=torch.float64) * params.input_std)
            noise.append(torch.randn(n, generator=g, dtype=torch.float64) * params.noise_std)
        self.data = {"x": torch.stack(xs).to(self.device, dtype), "noise": torch.stack(noise).to(self.device, dtype)}
        if params.task == "teacher":
            self.concept = torch.stack(teach).to(self.device, dtype)
        self.initial_point = torch.stack(starts).to(self.device, dtype)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``W, U, c, v`` views of ``theta [..., D]``."""
        return unflatten_rnn(theta, self.hidden, self.inputs)

    def heldout_examples(self, generator: torch.Generator, r: int, m: int) -> Batch:
        p = self.params
        return {"x": torch.randn(m, p.sequence_length, self.inputs, generator=generator, dtype=torch.float64) * p.input_std,
                "noise": torch.randn(m, generator=generator, dtype=torch.float64) * p.noise_std}

    def labelled(self, examples: Batch, concept: torch.Tensor) -> Batch:
        x = examples["x"]
        if self.params.task == "memory":
            y = x[:, :, 0, 0]
        else:
            y = rnn_forward(concept.unsqueeze(1), x, self.hidden, self.inputs).squeeze(1)
        return {"x": x, "y": y + examples["noise"]}

    def example_losses(self, theta: torch.Tensor, batch: Batch, t: Time = None) -> torch.Tensor:
        R = theta.shape[0]
        th = theta.reshape(R, -1, self.dim)
        res = rnn_forward(th, batch["x"], self.hidden, self.inputs) - batch["y"].unsqueeze(1)  # [R, P, n]
        losses = 0.5 * res * res
        return losses.reshape(theta.shape[:-1] + (losses.shape[-1],))

    def optimum_for(self, concept: torch.Tensor) -> torch.Tensor | None:
        return concept.clone() if self.realisable else None

    def optimal_loss_for(self, concept: torch.Tensor) -> torch.Tensor | None:
        return torch.zeros(self.replicates, device=self.device, dtype=self.dtype) if self.realisable else None


__all__ = ["RNNParams", "RNNRegression", "flatten_rnn", "random_recurrence", "random_rnn", "rnn_dim", "rnn_forward",
           "spectral_radius", "unflatten_rnn"]
