"""Is gradient accumulation really the same as one big batch?

Accumulation splits a batch of B examples into k micro-batches of B/k, back-propagates
``loss_j / k`` for each and lets autograd sum the gradients before one update.  For a loss that is
a mean of per-example losses (``per_example_separable``) the gradient is linear in the examples,

    (1/k) sum_j (k/B) sum_{i in j} grad l_i  =  (1/B) sum_i grad l_i,

so the two gradients (and the updates ``-lr g``, whose relative difference is the same) differ by
rounding only.  Bound (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed. 2002,
eq. 4.4 for recursive summation): each way of summing B terms errs by at most
``gamma_{B} sum_i |p_i| / B`` per coordinate, ``gamma_n = n u / (1 - n u)``, u the unit roundoff, so

    ||g_acc - g_big|| / ||g_big||  <=  2 gamma_{B + c} kappa,   kappa = || (1/B) sum_i |p_i| || / || g ||

(kappa: the condition number of the sum, computed from the per-example gradients p_i in float64;
c = 8 allows for the few flops that form one example's gradient).  Typical errors are far
smaller (~ sqrt(B) u; Higham & Mary 2019).

Where it breaks: batch normalization normalises with the statistics of the (micro-)batch, so a
micro-batch's loss is not the restriction of the big batch's loss; the accumulated gradient is a
different gradient.  Its predicted relative difference is the float64 value of the same
difference (a real difference, not rounding).

Memory per micro-batch: the batch's tensors (exactly b times the bytes of one example) and the
tensors autograd saves for the backward pass (counted with ``saved_tensors_hooks``, each tensor
once), against the least-squares line ``a + c b``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad_common import (
    POINT_DESCRIPTION,
    Point,
    analysis_generator,
    analysis_landscape,
    evaluation_point,
    fmt,
    mean_ci,
    single_thread,
)
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES
from evosgd.landscapes.base import per_example_grads

KIND = "gradient_accumulation"

#: flops that form one example's gradient, added to the summation length in the rounding bound
PER_EXAMPLE_FLOPS = 8


# ----------------------------------------------------------------------------- theory
def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2 (2^-24 for float32, 2^-53 for float64)."""
    return torch.finfo(dtype).eps / 2.0


def gamma(n: int, u: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)`` (the summation error constant)."""
    nu = n * u
    return nu / (1.0 - nu) if nu < 1 else float("inf")


def accumulation_rounding_bound(batch_size: int, kappa: float, dtype: torch.dtype) -> float:
    """Upper bound of ``||g_acc - g_big|| / ||g_big||`` from rounding alone: ``2 gamma_{B + c} kappa``."""
    return 2.0 * gamma(batch_size + PER_EXAMPLE_FLOPS, unit_roundoff(dtype)) * kappa


def summation_condition(per_example: torch.Tensor) -> float:
    """``kappa = || mean_i |p_i| || / || mean_i p_i ||`` of per-example gradients ``[B, D]``."""
    p = per_example.to(torch.float64)
    return float(p.abs().mean(0).norm() / p.mean(0).norm())


# ----------------------------------------------------------------------------- measurement
def full_batch_gradient(landscape: Any, theta: torch.Tensor, batch: dict) -> torch.Tensor:
    """``grad loss(theta; batch)``, ``[R, D]``."""
    th = theta.detach().clone().requires_grad_(True)
    landscape.loss(th, batch).sum().backward()
    return th.grad.detach()


def micro_batches_of(batch: dict, parts: int) -> list[dict]:
    """Split a batch ``[R, B, ...]`` into exactly ``parts`` consecutive micro-batches whose sizes
    differ by at most one (``torch.tensor_split``; ``torch.chunk`` may return fewer parts, e.g. 2
    chunks of 4 examples asked for 3)."""
    B = next(iter(batch.values())).shape[1]
    if not 1 <= parts <= B:
        raise ValueError(f"cannot split a batch of {B} examples into {parts} non-empty micro-batches")
    return [dict(zip(batch, vs)) for vs in zip(*(v.tensor_split(parts, dim=1) for v in batch.values()))]


def accumulated_gradient(landscape: Any, theta: torch.Tensor, batch: dict, micro_batches: int) -> torch.Tensor:
    """Back-propagate ``(b_j / B) loss_j`` for each of k micro-batches of sizes b_j (sum B), letting
    autograd accumulate into ``.grad`` (what a training loop with accumulation does).  Since
    ``loss_j`` is the mean over its b_j examples, ``sum_j (b_j / B) loss_j`` is the mean over all B:
    the exact big-batch gradient for separable losses, also when k does not divide B (then the
    micro-batches differ in size by one).  With equal sizes ``b_j / B = 1 / k`` exactly."""
    th = theta.detach().clone().requires_grad_(True)
    micro = micro_batches_of(batch, micro_batches)
    sizes = [next(iter(m.values())).shape[1] for m in micro]
    B = sum(sizes)
    for m, b in zip(micro, sizes):
        loss = landscape.loss(th, m).sum()
        # equal sizes: divide by k, the historical computation (bit for bit); else weight b_j / B
        (loss / micro_batches if len(set(sizes)) == 1 else loss * (b / B)).backward()
    return th.grad.detach()


def saved_for_backward_bytes(landscape: Any, theta: torch.Tensor, batch: dict) -> int:
    """Bytes of the tensors autograd saves during the forward pass of ``loss(theta; batch)``
    (a tensor saved twice is counted once)."""
    storages: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[(t.data_ptr(), tuple(t.shape), tuple(t.stride()))] = t.numel() * t.element_size()
        return t

    th = theta.detach().clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        landscape.loss(th, batch).sum()
    return int(sum(storages.values()))


def batch_bytes(batch: dict) -> int:
    return int(sum(v.numel() * v.element_size() for v in batch.values()))


class AccumulationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(256, ge=2, description="the big batch B (every micro-batch count must divide it)")
    micro_batches: list[int] = Field([1, 2, 4, 8, 16, 32, 64], min_length=1,
                                     description="numbers k of micro-batches (micro-batch size B / k)")
    repeats: int = Field(10, ge=2, description="independent big batches per k: the CI is over them")
    point: Point = Field("initial", description=POINT_DESCRIPTION)
    batch_norm_case: bool = Field(True, description="also measure a batch-normalised teacher-student MLP (where accumulation breaks)")
    bn_widths: list[int] = Field([16], description="hidden widths of the batch-norm MLP")
    bn_inputs: int = Field(8, ge=1, description="input dimension of the batch-norm MLP")


def _series_label(kind: str, separable: bool, dtype: torch.dtype) -> str:
    return f"{kind}{'' if separable else ' (batch norm)'}, {str(dtype).replace('torch.', '')}"


def measure_accumulation(cases: list[tuple[Any, Any]], params: AccumulationParams, generator: torch.Generator,
                         confidence: float = 0.95) -> AnalysisResult:
    """``cases``: (landscape in its dtype, the same instance in float64 or None) pairs."""
    where = f"analysis {KIND!r}"
    B = params.batch_size
    ks = sorted(set(params.micro_batches))
    bad = [k for k in ks if k < 1 or B % k]
    if bad:
        raise ParameterError("micro_batches", bad, f"divisors of batch_size = {B}", where=where)
    rows, mem_rows, notes = [], [], []
    for land, land64 in cases:
        separable = bool(getattr(land, "per_example_separable", True))
        point = "initial" if not separable else params.point
        variants = [(land, land.dtype)] + ([(land64, torch.float64)] if land64 is not None and land.dtype != torch.float64 else [])
        theta64 = evaluation_point(land64 if land64 is not None else land, point, where).to(torch.float64)
        seeds = torch.randint(0, 2**62, (params.repeats,), generator=generator, device=generator.device).tolist()
        diffs: dict[tuple[torch.dtype, int], list[float]] = {}
        kappas: list[float] = []
        source = land64 if land64 is not None else land
        for seed in seeds:
            # the same examples in both dtypes: drawn once (in float64 where available), then cast
            drawn = source.sample(B, torch.Generator(device=source.device).manual_seed(int(seed)))
            for L, dt in variants:
                batch = {k: (v.to(L.device, dt) if v.is_floating_point() else v.to(L.device)) for k, v in drawn.items()}
                theta = theta64.to(L.device, dt)
                big = full_batch_gradient(L, theta, batch)
                if separable and dt == torch.float64:
                    kappas.append(summation_condition(per_example_grads(L, theta, batch)[0]))
                for k in ks:
                    acc = accumulated_gradient(L, theta, batch, k)
                    d = float((acc - big).to(torch.float64).norm() / big.to(torch.float64).norm())
                    diffs.setdefault((dt, k), []).append(d)
        kappa = float(np.mean(kappas)) if kappas else float("nan")
        for (dt, k), vals in diffs.items():
            if k == 1:  # the same computation as the big batch (bit-identical): nothing to plot on a log axis
                continue
            if not separable and dt == torch.float64 and land.dtype != torch.float64:
                continue  # the float64 values are the prediction of the batch-norm series
            m, lo, hi = mean_ci(vals, confidence)
            if separable:
                pred, plo, phi = float("nan"), 0.0, accumulation_rounding_bound(B, kappa, dt)
            else:  # the real difference, computed in float64
                ref = diffs.get((torch.float64, k))
                pred, plo, phi = (float(np.mean(ref)) if ref else float("nan")), float("nan"), float("nan")
            rows.append(dict(quantity="relative update difference, accumulated vs one batch",
                             series=_series_label(land.kind, separable, dt), x_name="micro-batches k", x=k,
                             measured=m, measured_low=max(lo, 0.0), measured_high=hi, predicted=pred,
                             predicted_low=plo, predicted_high=phi, log_x=True, log_y=True))
        if 1 in ks:
            same = all(v == 0.0 for (dt, k), v2 in diffs.items() if k == 1 for v in v2)
            notes.append(f"{land.kind}{'' if separable else ' with batch norm'}: k = 1 (no split) reproduces the big-batch gradient "
                         f"{'bit for bit' if same else 'only up to rounding'}.")
        worst = max((np.max(v), dt, k) for (dt, k), v in diffs.items() if k > 1) if len(ks) > 1 else None
        if worst is not None:
            d, dt, k = worst
            if separable:
                notes.append(f"{land.kind}: largest relative difference {fmt(d)} ({str(dt).replace('torch.', '')}, k = {k}) against the "
                             f"rounding bound {fmt(accumulation_rounding_bound(B, kappa, dt))} (kappa = {fmt(kappa)}): "
                             f"{'within' if d <= accumulation_rounding_bound(B, kappa, dt) else 'OUTSIDE'} it.")
            else:
                notes.append(f"{land.kind} with batch norm: accumulated and big-batch gradients differ by up to {fmt(d)} "
                             f"(relative, k = {k}) — {fmt(d / unit_roundoff(dt))} units of roundoff: not rounding, a different gradient.")
        # memory per micro-batch (separable or not: the forward pass is what is measured)
        if land is cases[0][0]:
            theta = theta64.to(land.device, land.dtype)
            batch = land.sample(B, torch.Generator(device=land.device).manual_seed(int(seeds[0])))
            sizes, data_b, saved_b = [], [], []
            for k in ks:
                micro = {name: v.clone() for name, v in micro_batches_of(batch, k)[0].items()}  # loaded on its own
                sizes.append(B // k)
                data_b.append(batch_bytes(micro))
                saved_b.append(saved_for_backward_bytes(land, theta, micro))
            per_example = data_b[0] / sizes[0]
            X = np.vstack([np.ones(len(sizes)), sizes]).T
            coef = np.linalg.lstsq(X, np.asarray(saved_b, dtype=np.float64), rcond=None)[0]
            for b, db, sb in zip(sizes, data_b, saved_b):
                mem_rows.append(dict(quantity="memory per micro-batch", series="batch tensors", x_name="micro-batch size", x=b,
                                     measured=db, predicted=per_example * b, unit="bytes", log_x=True, log_y=True))
                mem_rows.append(dict(quantity="memory per micro-batch", series="saved for backward", x_name="micro-batch size", x=b,
                                     measured=sb, predicted=float(coef[0] + coef[1] * b), unit="bytes", log_x=True, log_y=True))
            notes.append(f"memory: {fmt(per_example)} bytes of batch tensors per example; autograd saves {fmt(coef[1])} bytes per example "
                         f"+ {fmt(float(round(coef[0])))} bytes fixed; a micro-batch of {sizes[-1]} needs "
                         f"{fmt(saved_b[-1] / saved_b[0])} of the saved-for-backward memory of the batch of {sizes[0]}.")
    return AnalysisResult(comparison_rows(rows + mem_rows), tables={}, notes=notes, confidence=confidence,
                          title="Is gradient accumulation really the same as one big batch?")


def rebuild(landscape: Any, *, seed: int, dtype: torch.dtype, **changes: Any) -> Any:
    """The same registered landscape (replicate 0's instance, from ``seed``) in another dtype, or None
    when it cannot be rebuilt from its kind and params (e.g. a drifting wrapper)."""
    from evosgd.landscapes import build_landscape

    params = getattr(landscape, "params", None)
    if params is None or not hasattr(params, "model_dump") or getattr(landscape, "drifting", False):
        return None
    p = params.model_dump()
    p.update(changes)
    return build_landscape(landscape.kind, p, replicates=landscape.replicates, seed=seed, device=landscape.device, dtype=dtype)


@ANALYSES.register(KIND, AccumulationParams,
                   "accumulated micro-batch gradients vs one big batch: difference against the rounding bound, "
                   "memory per micro-batch, and the batch-norm case where they differ", family="gradient")
def gradient_accumulation(params: AccumulationParams, *, context: AnalysisContext) -> AnalysisResult:
    from evosgd.landscapes import build_landscape

    land = analysis_landscape(context, f"analysis {KIND!r}")
    cases = [(land, rebuild(land, seed=context.seed, dtype=torch.float64))]
    if params.batch_norm_case and getattr(land, "per_example_separable", True):
        bn = {"n_examples": max(4 * params.batch_size, 512), "inputs": params.bn_inputs, "widths": params.bn_widths, "batch_norm": True}
        mk = lambda dt: build_landscape("teacher_student", bn, replicates=1, seed=context.seed, device=context.device, dtype=dt)
        cases.append((mk(context.dtype), mk(torch.float64)))
    with single_thread():
        return measure_accumulation(cases, params, analysis_generator(context), confidence=0.95)
