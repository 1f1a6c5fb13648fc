"""Update transforms: small ``(init, update)`` pairs composed with :func:`chain` (the optax shape).

Conventions (shared with every optimizer that uses them, e.g. OpenAI-ES):

* ``params``, ``grads`` and ``updates`` are ``[R, D]`` (replicates x flat parameters);
* ``state = transform.init(params)``;
* ``updates, state = transform.update(grads, state, params)``; the caller does
  ``params = params + updates``.  Sign convention of optax: the learning-rate transform
  multiplies by ``-lr``, so a chain without one ascends (use it for a plain gradient).
* every per-replicate counter is a tensor ``[R]``, so replicates that stop (diverged, out of
  budget) can be frozen with :func:`tree_where` while the others go on.

Extras.  ``update`` also accepts keyword arguments, passed unchanged by :func:`chain` to every
transform; a transform reads the ones it needs and ignores the rest, so plain use
``update(grads, state, params)`` keeps working.  The keys in use:

* ``grad_variance``: ``[R]``, ``tr(Sigma)``: the per-example gradient variance summed over
  coordinates, estimated in the batch (unbiased, divisor ``b - 1``);
* ``batch_size``: int or ``[R]``, the ``b`` the gradient was averaged over;
* ``staleness``: ``[R]``, how many updates old the gradient is (asynchronous training).

A transform that cannot work without an extra names it in ``needs`` (the third, optional field of
:class:`GradientTransform`); :func:`chain` unions them, so an estimator computes per-example
statistics (which cost a ``vmap`` of per-example gradients) only when some transform needs them.

Metrics.  A state that has something to report defines ``metrics() -> dict[str, Tensor[R]]``;
:func:`transform_metrics` collects them from a (chained) state: ``lr``, ``clip_fraction``,
``confidence``, ...

Specs (:mod:`evosgd.gradient.transform_specs`).  ``TransformSpec`` is a pydantic discriminated
union on ``kind``; a scenario writes
``transforms = [{kind="clip_norm", max_norm=1.0}, {kind="momentum", beta=0.9},
{kind="lr", lr=0.1, schedule={kind="cosine", total_steps=1000}}]`` and :func:`build_transform`
chains them in the order given.  Order matters exactly as in optax: torch.optim.SGD is
``[weight_decay, momentum, lr]``; AdamW is ``[adam, weight_decay, lr]`` (decay added after the
preconditioning, hence "decoupled", Loshchilov & Hutter 2019); torch.optim.Adam with
``weight_decay`` is ``[weight_decay, adam, lr]`` (coupled, an L2 penalty).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from evosgd.core.device import to_device
from evosgd.gradient.schedules import (
    Schedule,
    ScheduleSpec,
    constant_schedule,
)

Tensor = torch.Tensor


class GradientTransform(NamedTuple):
    """An update transform: ``init(params) -> state``; ``update(grads, state, params, **extras)
    -> (updates, new_state)``.  ``needs`` names the extras it cannot do without.  ``apply``, when
    set, is the same update fused with ``params + updates``: ``apply(grads, state, params,
    **extras) -> (new_params, new_state)`` (see :func:`apply_updates`)."""

    init: Callable[[Tensor], Any]
    update: Callable[..., tuple[Tensor, Any]]
    needs: frozenset = frozenset()
    apply: Callable[..., tuple[Tensor, Any]] | None = None


def apply_updates(tx: GradientTransform, grads: Tensor, state: Any, params: Tensor, **extras: Any) -> tuple[Tensor, Any]:
    """``(params + updates, new_state)``, through ``tx.apply`` when the transform fuses the two
    (a constant learning rate last in the chain: ``params - eta u`` as one ``add`` with
    ``alpha = -eta``, as ``torch.optim.SGD`` does, instead of a product and a sum: one pass over
    ``[R, D]`` less per step).  The fused form can differ from the unfused one in the last bit."""
    if tx.apply is not None:
        return tx.apply(grads, state, params, **extras)
    updates, new_state = tx.update(grads, state, params, **extras)
    return params + updates, new_state


class EmptyState(NamedTuple):
    """State of a stateless transform."""


# ---------------------------------------------------------------------------- helpers
def _rows(x: Tensor, like: Tensor) -> Tensor:
    """A per-replicate ``[R]`` value viewed to broadcast against ``[R, ...]``."""
    return x.reshape(x.shape[:1] + (1,) * (like.dim() - 1))


def _counter(params: Tensor) -> Tensor:
    return torch.zeros(params.shape[0], dtype=torch.long, device=params.device)


def tree_where(mask: Tensor, new: Any, old: Any) -> Any:
    """Per replicate, ``new`` where ``mask`` ``[R]`` is true, else ``old``, through a state tree
    (tensors with leading dim R, nested tuples / NamedTuples / dicts; other leaves from ``new``).

    Use it to freeze replicates that diverged or ran out of budget::

        new_state = tree_where(active, new_state, state)
    """
    if isinstance(new, Tensor):
        if new.dim() == 0 or new.shape[0] != mask.shape[0]:
            return new
        return torch.where(_rows(mask, new), new, old)
    if isinstance(new, tuple):
        items = [tree_where(mask, n, o) for n, o in zip(new, old)]
        return type(new)(*items) if hasattr(new, "_fields") else tuple(items)
    if isinstance(new, dict):
        return {k: tree_where(mask, v, old[k]) for k, v in new.items()}
    return new


def transform_metrics(state: Any) -> dict[str, Tensor]:
    """Metrics ``[R]`` reported by the states of a (chained) transform; later ones win on a clash."""
    out: dict[str, Tensor] = {}
    if hasattr(state, "metrics") and callable(state.metrics):
        out.update(state.metrics())
    if isinstance(state, tuple):
        for s in state:
            out.update(transform_metrics(s))
    return out


def chain(*transforms: GradientTransform) -> GradientTransform:
    """Compose transforms left to right: the updates of one are the gradients of the next."""
    transforms = tuple(transforms)

    def init(params: Tensor) -> tuple:
        return tuple(t.init(params) for t in transforms)

    def update(grads: Tensor, state: tuple, params: Tensor, **extras: Any) -> tuple[Tensor, tuple]:
        new_states = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params, **extras)
            new_states.append(s)
        return grads, tuple(new_states)

    def apply(grads: Tensor, state: tuple, params: Tensor, **extras: Any) -> tuple[Tensor, tuple]:
        # every transform but the last as in ``update``; the last one fused with the sum
        new_states = []
        for t, s in zip(transforms[:-1], state[:-1]):
            grads, s = t.update(grads, s, params, **extras)
            new_states.append(s)
        new_params, s = transforms[-1].apply(grads, state[-1], params, **extras)
        new_states.append(s)
        return new_params, tuple(new_states)

    needs = frozenset().union(*(t.needs for t in transforms)) if transforms else frozenset()
    fused = bool(transforms) and transforms[-1].apply is not None
    return GradientTransform(init, update, needs, apply if fused else None)


def identity() -> GradientTransform:
    """Pass the gradients through unchanged."""
    return GradientTransform(lambda params: EmptyState(), lambda g, s, p, **e: (g, s))


# ---------------------------------------------------------------------------- learning rate
class LearningRateState(NamedTuple):
    count: Tensor  # [R] updates made so far
    lr: Tensor  # [R] learning rate used by the last update

    def metrics(self) -> dict[str, Tensor]:
        return {"lr": self.lr}


def scale_by_learning_rate(lr: float | Schedule) -> GradientTransform:
    """``u = -eta_t g`` with ``eta_t`` a constant or a schedule of the per-replicate step count t
    (see :mod:`evosgd.gradient.schedules`); the first update uses ``eta_0``."""
    schedule = lr if callable(lr) else constant_schedule(float(lr))

    def init(params: Tensor) -> LearningRateState:
        c = _counter(params)
        return LearningRateState(c, schedule(c).to(params.dtype))

    constant = getattr(schedule, "constant", None)

    def update(grads: Tensor, state: LearningRateState, params: Tensor, **extras: Any):
        if constant is not None and state.lr.dtype == grads.dtype:
            # Constant schedule (the common case): the state's lr tensor already holds eta_0, and
            # multiplying by the Python float -eta_0 rounds exactly as by the tensor -eta_0 (the
            # scalar is cast to the tensor's dtype), without building an [R] tensor every step.
            return grads * -constant, LearningRateState(state.count + 1, state.lr)
        eta = schedule(state.count).to(grads.dtype)
        return -_rows(eta, grads) * grads, LearningRateState(state.count + 1, eta)

    def apply(grads: Tensor, state: LearningRateState, params: Tensor, **extras: Any):
        if constant is not None and state.lr.dtype == grads.dtype and params.dtype == grads.dtype:
            return torch.add(params, grads, alpha=-constant), LearningRateState(state.count + 1, state.lr)
        updates, new_state = update(grads, state, params, **extras)
        return params + updates, new_state

    return GradientTransform(init, update, frozenset(), apply)


def scale(factor: float) -> GradientTransform:
    """``u = factor * g`` (a constant, e.g. -1 to turn an ascent direction into descent)."""
    return GradientTransform(lambda params: EmptyState(), lambda g, s, p, **e: (g * float(factor), s))


# ---------------------------------------------------------------------------- momentum
class MomentumState(NamedTuple):
    buffer: Tensor  # [R, D]
    started: Tensor  # [R] bool: buffer holds a first gradient


def momentum(beta: float, dampening: float = 0.0, nesterov: bool = False) -> GradientTransform:
    """Heavy-ball (Polyak 1964) or Nesterov (Sutskever et al. 2013 form) momentum with exactly the
    semantics of ``torch.optim.SGD``::

        b_1 = g_1;   b_t = beta b_{t-1} + (1 - dampening) g_t
        u_t = g_t + beta b_t   (nesterov)   or   u_t = b_t   (heavy ball)

    The first buffer is the gradient itself, undamped, as in torch.  Follow with the learning rate.
    """
    beta, damp = float(beta), float(dampening)

    def init(params: Tensor) -> MomentumState:
        return MomentumState(torch.zeros_like(params), torch.zeros(params.shape[0], dtype=torch.bool, device=params.device))

    def update(grads: Tensor, state: MomentumState, params: Tensor, **extras: Any):
        if damp == 0.0:
            # A buffer not yet started is still the zeros of ``init`` (a replicate that has not
            # moved keeps its old state), so ``beta * 0 + g = g`` needs no mask; computed as
            # torch does (``buf.mul_(beta).add_(g)``), in place on the fresh product: 2 passes
            # over [R, D] instead of 4.  (Only -0.0 gradients become +0.0 on the first step.)
            buf = torch.mul(state.buffer, beta).add_(grads)
        else:
            buf = torch.where(_rows(state.started, grads), beta * state.buffer + (1.0 - damp) * grads, grads)
        out = grads + beta * buf if nesterov else buf
        return out, MomentumState(buf, torch.ones_like(state.started))

    return GradientTransform(init, update)


# ---------------------------------------------------------------------------- weight decay
def add_decayed_weights(weight_decay: float) -> GradientTransform:
    """``u = g + lambda * params``.  Before momentum/Adam and the learning rate it is the coupled
    L2 penalty of ``torch.optim.SGD`` / ``torch.optim.Adam`` (``weight_decay``); after Adam and
    before the learning rate it is the decoupled decay of AdamW (Loshchilov & Hutter 2019,
    "Decoupled weight decay regularization"): ``p <- p - eta_t (adam(g) + lambda p)``."""
    wd = float(weight_decay)
    return GradientTransform(lambda params: EmptyState(), lambda g, s, p, **e: (g + wd * p, s))


# ---------------------------------------------------------------------------- clipping
class ClipNormState(NamedTuple):
    steps: Tensor  # [R] updates seen
    clipped: Tensor  # [R] of them clipped

    def metrics(self) -> dict[str, Tensor]:
        return {"clip_fraction": self.clipped.double() / self.steps.clamp(min=1).double()}


def clip_by_global_norm(max_norm: float) -> GradientTransform:
    """Rescale each replicate's vector to norm at most ``c``: ``u = g * min(1, c / ||g||)``
    (Pascanu et al. 2013, "On the difficulty of training recurrent neural networks").  The direction
    is kept; ``clip_fraction`` reports the fraction of updates that were clipped so far."""
    c = float(max_norm)

    def init(params: Tensor) -> ClipNormState:
        z = _counter(params)
        return ClipNormState(z, z.clone())

    def update(grads: Tensor, state: ClipNormState, params: Tensor, **extras: Any):
        norm = torch.linalg.vector_norm(grads, dim=-1)
        clipped = norm > c
        # norm == 0 gives c/0 = inf, clamped to 1: a zero gradient passes unchanged.
        factor = torch.clamp(c / norm, max=1.0)
        return grads * _rows(factor, grads), ClipNormState(state.steps + 1, state.clipped + clipped.long())

    return GradientTransform(init, update)


class ClipValueState(NamedTuple):
    fraction: Tensor  # [R] fraction of coordinates clipped at the last update

    def metrics(self) -> dict[str, Tensor]:
        return {"clip_value_fraction": self.fraction}


def clip_by_value(max_value: float) -> GradientTransform:
    """Clamp every coordinate to ``[-c, c]`` (changes the direction, unlike clipping by norm)."""
    c = float(max_value)

    def init(params: Tensor) -> ClipValueState:
        return ClipValueState(torch.zeros(params.shape[0], dtype=params.dtype, device=params.device))

    def update(grads: Tensor, state: ClipValueState, params: Tensor, **extras: Any):
        frac = (grads.abs() > c).to(grads.dtype).mean(dim=-1)
        return grads.clamp(-c, c), ClipValueState(frac)

    return GradientTransform(init, update)


# ---------------------------------------------------------------------------- Adam
class AdamState(NamedTuple):
    count: Tensor  # [R]
    m: Tensor  # [R, D] first moment
    v: Tensor  # [R, D] second moment


def scale_by_adam(beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> GradientTransform:
    """Adam's preconditioning (Kingma & Ba 2015) with the semantics of ``torch.optim.Adam``::

        m_t = beta1 m_{t-1} + (1 - beta1) g_t,     v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
        u_t = (m_t / (1 - beta1^t)) / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)

    (eps added after the bias-corrected square root, as torch does).  Follow with the learning rate.
    """
    b1, b2, eps = float(beta1), float(beta2), float(eps)

    def init(params: Tensor) -> AdamState:
        return AdamState(_counter(params), torch.zeros_like(params), torch.zeros_like(params))

    def update(grads: Tensor, state: AdamState, params: Tensor, **extras: Any):
        t = state.count + 1
        m = torch.lerp(state.m, grads, 1.0 - b1)
        v = b2 * state.v + (1.0 - b2) * grads * grads
        tf = t.to(torch.float64 if grads.device.type != "mps" else torch.float32)
        bc1 = _rows((1.0 - b1**tf).to(grads.dtype), grads)
        bc2_sqrt = _rows(torch.sqrt(1.0 - b2**tf).to(grads.dtype), grads)
        return (m / bc1) / (v.sqrt() / bc2_sqrt + eps), AdamState(t, m, v)

    return GradientTransform(init, update)


# ---------------------------------------------------------------------------- confidence
class ConfidenceState(NamedTuple):
    factor: Tensor  # [R] factor applied at the last update
    snr: Tensor  # [R] signal-to-noise ratio estimated at the last update

    def metrics(self) -> dict[str, Tensor]:
        return {"confidence": self.factor, "snr": self.snr}


def _batch_tensor(b: Any, like: Tensor) -> Tensor:
    return to_device(b, like.device, like.dtype).expand(like.shape[0])


def scale_by_confidence(rule: str = "snr", theta: float = 1.0, min_factor: float = 0.0) -> GradientTransform:
    """Scale the step by how sure the mini-batch is about the gradient (the seed text's CLT
    argument: the batch mean ``g`` is about Gaussian around the true gradient with covariance
    ``Sigma / b``).  With ``V = tr(Sigma)`` estimated from the per-example gradients of the batch
    (extra ``grad_variance``) and ``b`` the batch size (extra ``batch_size``):

    * ``rule = "snr"`` — variance adaptation, the factor that minimises the expected loss after a
      step along ``g`` on a quadratic (Balles & Hennig 2018, "Dissecting Adam", eq. for
      M-SVAG's gamma, here for the whole vector)::

          factor = ||grad F||^2 / E||g||^2  ~=  max(0, 1 - (V / b) / ||g||^2)

      (``E||g||^2 = ||grad F||^2 + V/b``, and ``||g||^2 - V/b`` is the unbiased estimate of the
      numerator), i.e. ``snr / (1 + snr)`` with ``snr = ||grad F||^2 / (V / b)``.
    * ``rule = "norm_test"`` — the step is cut when the batch fails the norm test of Byrd, Chin,
      Nocedal & Wu 2012 ("Sample size selection in optimization methods for machine learning"),
      ``V / b <= theta^2 ||g||^2``::

          factor = min(1, theta^2 ||g||^2 b / V)

      (the step is scaled as if the batch were as large as the test asks; Balles, Romero & Hennig
      2017, "Coupling adaptive batch sizes with learning rates", couple b and lr the same way).

    The factor is clamped to ``[min_factor, 1]``; reported as metric ``confidence`` (and ``snr``).
    Place it before momentum (it judges the fresh gradient) and anywhere before the learning rate.
    """
    if rule not in ("snr", "norm_test"):
        raise ValueError(f"confidence rule must be 'snr' or 'norm_test', got {rule!r}")
    th2, lo = float(theta) ** 2, float(min_factor)

    def init(params: Tensor) -> ConfidenceState:
        one = torch.ones(params.shape[0], dtype=params.dtype, device=params.device)
        return ConfidenceState(one, torch.full_like(one, math.inf))

    def update(grads: Tensor, state: ConfidenceState, params: Tensor, **extras: Any):
        if "grad_variance" not in extras or "batch_size" not in extras:
            raise ValueError("the confidence transform needs the extras 'grad_variance' and 'batch_size' "
                             "(per-example gradient statistics from the estimator)")
        V = extras["grad_variance"].to(grads.dtype)
        b = _batch_tensor(extras["batch_size"], V)
        g2 = (grads * grads).sum(dim=-1)
        noise = V / b  # E||g - grad F||^2
        signal = torch.clamp(g2 - noise, min=0.0)
        snr = signal / noise
        if rule == "snr":
            factor = torch.where(g2 > 0, signal / g2, torch.ones_like(g2))
        else:
            factor = torch.clamp(th2 * g2 / noise, max=1.0)
        factor = torch.nan_to_num(factor, nan=1.0).clamp(lo, 1.0)  # V = 0: no noise, full confidence
        return grads * _rows(factor, grads), ConfidenceState(factor, snr)

    return GradientTransform(init, update, frozenset({"grad_variance", "batch_size"}))


# ---------------------------------------------------------------------------- staleness
class StalenessState(NamedTuple):
    factor: Tensor  # [R]


def scale_by_staleness() -> GradientTransform:
    """``u = g / max(1, tau)`` with tau the staleness of the gradient (extra ``staleness``): the
    staleness-aware step of Zhang, Gupta, Lian & Liu 2016 ("Staleness-aware async-SGD")."""

    def init(params: Tensor) -> StalenessState:
        return StalenessState(torch.ones(params.shape[0], dtype=params.dtype, device=params.device))

    def update(grads: Tensor, state: StalenessState, params: Tensor, **extras: Any):
        if "staleness" not in extras:
            raise ValueError("the staleness transform needs the extra 'staleness'")
        tau = torch.as_tensor(extras["staleness"], device=grads.device).to(grads.dtype).expand(grads.shape[0])
        factor = 1.0 / torch.clamp(tau, min=1.0)
        return grads * _rows(factor, grads), StalenessState(factor)

    return GradientTransform(init, update, frozenset({"staleness"}))


__all__ = [
    "AdamState",
    "ClipNormState",
    "ClipValueState",
    "ConfidenceState",
    "EmptyState",
    "GradientTransform",
    "LearningRateState",
    "MomentumState",
    "ScheduleSpec",
    "add_decayed_weights",
    "chain",
    "clip_by_global_norm",
    "clip_by_value",
    "identity",
    "momentum",
    "scale",
    "scale_by_adam",
    "scale_by_confidence",
    "scale_by_learning_rate",
    "scale_by_staleness",
    "transform_metrics",
    "tree_where",
]


#: the scenario-file specs of the transforms live in :mod:`evosgd.gradient.transform_specs` (which
#: imports this module); they stay reachable as ``transforms.<name>``
_SPEC_NAMES = frozenset({'AdamSpec', 'ClipNormSpec', 'ClipValueSpec', 'ConfidenceSpec', 'LearningRateSpec', 'MomentumSpec', 'ScaleSpec', 'StalenessSpec', 'TransformSpec', 'WeightDecaySpec', 'build_transform', 'validate_transforms'})


def __getattr__(name: str) -> Any:
    if name in _SPEC_NAMES:
        from evosgd.gradient import transform_specs

        return getattr(transform_specs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
