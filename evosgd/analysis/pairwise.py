"""Pairwise losses live in the batch: how batch size and batch composition change the gradient of an
in-batch contrastive (InfoNCE) objective, against what a per-example (separable) loss would do.

For a separable loss ``L_B = (1/B) sum_i l(theta; x_i)`` with iid examples, the mini-batch gradient
is unbiased for every B and its noise shrinks as 1/B (Cochran 1977, thm 2.2 with replacement)::

    E g_B = grad F (independent of B),    E||g_B - E g_B||^2 = V / B,    SNR_B = ||E g_B||^2 / E||g_B - E g_B||^2 ~ B.

The ``contrastive`` landscape's InfoNCE loss of anchor i uses the other B - 1 positives of its batch
as negatives (van den Oord et al. 2018; Chen et al. 2020), so the *expected* gradient itself changes
with B (more negatives, a harder softmax: the bound ``log B - I(a; p)`` of Poole et al. 2019 moves
with B), and with how the batch is composed: ``class_balanced`` batches hold every class,
``hard_negatives`` batches only the few classes nearest to an anchor class (negatives that look
like the positives).  The "prediction" here is the separable baseline scaled from the smallest
batch size of the same composition (``V_B = V_B0 B0 / B``, ``E g_B = E g_B0``): the gap between it and
the measurement is the batch-dependence of a pairwise loss.  For a separable landscape (e.g.
``linear_regression``) the same measurement agrees with it (the tests check this).

Measured per (composition, B) from ``batches`` independent draws of the landscape's own ``sample``
at a fixed point (the common starting point): the gradient noise ``E||g_B - mean||^2`` (Student-t
CI over draws), the mean-gradient norm and the SNR (percentile bootstrap CIs over draws), and the
cosine between the mean gradient and a reference (the largest batch, random composition): the
direction of the learning signal.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad2_common import small_landscape
from evosgd.analysis.grad_common import (
    bootstrap_ci,
    fmt,
    mean_ci,
    single_thread,
)
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.registry import ANALYSES
from evosgd.core.seeding import make_generator

KIND = "pairwise_batch"
Composition = Literal["random", "class_balanced", "hard_negatives"]


# ----------------------------------------------------------------------------- theory
def separable_noise(noise_b0: float, b0: int, b: int) -> float:
    """Separable loss, iid examples: ``E||g_B - E g_B||^2 = V / B = noise_B0 B0 / B``."""
    return noise_b0 * b0 / b


def separable_snr(snr_b0: float, b0: int, b: int) -> float:
    """Separable loss: the mean gradient does not depend on B, so ``SNR_B = SNR_B0 B / B0``."""
    return snr_b0 * b / b0


# ----------------------------------------------------------------------------- measurement
def batch_gradients(landscape: Any, theta: torch.Tensor, batch_size: int, batches: int, generator: torch.Generator) -> np.ndarray:
    """Gradients ``[batches, D]`` of the mini-batch loss of replicate 0 at ``theta [R, D]``, each on a
    fresh batch from the landscape's own ``sample`` (which honours its batch composition)."""
    out = []
    for _ in range(batches):
        batch = landscape.sample(batch_size, generator)
        th = theta.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(landscape.loss(th, batch).sum(), th)
        out.append(g[0].to(torch.float64))
    return torch.stack(out).cpu().numpy()


def change(new: float, old: float) -> str:
    """``"by x<new/old>"``; the bias-corrected signal can be 0 (not resolved from the noise of its
    estimate at few batches), and a ratio to 0 is said in words rather than as "x inf"."""
    new, old = float(new), float(old)
    if old > 0:
        return f"by x{fmt(new / old)}"
    return "from 0 (not resolved from the noise of its estimate)" if new > 0 else "not at all (0 at both)"


def gradient_statistics(grads: np.ndarray, confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """(estimate, low, high) of the noise ``E||g - E g||^2``, the mean-gradient norm ``||E g||``
    (bias-corrected: ``||mean||^2 - noise / M``) and the SNR, from M draws ``grads [M, D]``."""
    M = grads.shape[0]
    dev2 = ((grads - grads.mean(0)) ** 2).sum(1) * M / (M - 1)  # unbiased: E dev2 = noise

    def signal(x: np.ndarray) -> np.ndarray:  # x [m, M, D]
        mean = x.mean(axis=-2)
        noise = ((x - mean[..., None, :]) ** 2).sum(-1).mean(-1) * M / (M - 1)
        return np.sqrt(np.clip((mean**2).sum(-1) - noise / M, 0.0, None))

    def snr(x: np.ndarray) -> np.ndarray:
        mean = x.mean(axis=-2)
        noise = ((x - mean[..., None, :]) ** 2).sum(-1).mean(-1) * M / (M - 1)
        return np.clip((mean**2).sum(-1) - noise / M, 0.0, None) / noise

    return {"noise": mean_ci(dev2, confidence), "signal": bootstrap_ci(grads, signal, confidence=confidence, resamples=400, seed=seed),
            "snr": bootstrap_ci(grads, snr, confidence=confidence, resamples=400, seed=seed)}


class PairwiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[int] = Field([4, 8, 16, 32, 64], min_length=2, description="batch sizes B (>= 2: InfoNCE needs negatives)")
    compositions: list[Composition] = Field(["random", "class_balanced", "hard_negatives"], min_length=1,
                                            description="batch compositions (the contrastive landscape's batch_sampling)")
    batches: int = Field(200, ge=10, description="independent batches per (composition, B)")
    landscape: dict[str, Any] = Field(default_factory=dict,
                                      description="parameters of the contrastive landscape (batch_sampling is set per composition)")
    kind: str = Field("contrastive", description="landscape kind (a separable one, e.g. linear_regression, as a control: "
                                                 "compositions then do not apply and only 'random' is used)")


def measure_pairwise(params: PairwiseParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    sizes = sorted(set(params.batch_sizes))
    comps = params.compositions if params.kind == "contrastive" else ["random"]
    rows, table = [], []
    grads_by: dict[tuple[str, int], np.ndarray] = {}
    with single_thread():
        for comp in comps:
            lp = dict(params.landscape)
            if params.kind == "contrastive":
                lp["batch_sampling"] = comp
            land = small_landscape(params.kind, lp, replicates=1, seed=seed)
            theta = land.initial_point
            gen = make_generator(seed + 17 * len(table) + 1)
            for B in sizes:
                grads_by[(comp, B)] = batch_gradients(land, theta, B, params.batches, gen)
    ref = grads_by[(comps[0] if "random" not in comps else "random", sizes[-1])].mean(0)
    for comp in comps:
        base = gradient_statistics(grads_by[(comp, sizes[0])], confidence, seed)
        for B in sizes:
            g = grads_by[(comp, B)]
            st = gradient_statistics(g, confidence, seed)
            mean = g.mean(0)
            cos = float(mean @ ref / (np.linalg.norm(mean) * np.linalg.norm(ref) + 1e-300))
            common = dict(series=comp, x_name="batch size B", x=float(B), log_x=True)
            rows.append(dict(quantity="gradient noise E||g_B - E g_B||^2 (line: separable, ~1/B)", measured=st["noise"][0],
                             measured_low=st["noise"][1], measured_high=st["noise"][2],
                             predicted=separable_noise(base["noise"][0], sizes[0], B), log_y=True, **common))
            rows.append(dict(quantity="mean-gradient norm ||E g_B|| (line: separable, constant)", measured=st["signal"][0],
                             measured_low=st["signal"][1], measured_high=st["signal"][2], predicted=base["signal"][0], log_y=True, **common))
            rows.append(dict(quantity="gradient SNR (line: separable, ~B)", measured=st["snr"][0],
                             measured_low=st["snr"][1], measured_high=st["snr"][2], predicted=separable_snr(base["snr"][0], sizes[0], B),
                             log_y=True, **common))
            rows.append(dict(quantity="cosine of E g_B to the reference (random, largest B)", measured=cos, log_y=False, **common))
            table.append(dict(composition=comp, batch_size=B, noise=st["noise"][0], separable_noise=separable_noise(base["noise"][0], sizes[0], B),
                              mean_gradient_norm=st["signal"][0], snr=st["snr"][0], separable_snr=separable_snr(base["snr"][0], sizes[0], B),
                              cosine_to_reference=cos))
    t = pd.DataFrame(table)
    notes = [f"landscape '{params.kind}' at its starting point; {params.batches} batches per (composition, B)."]
    for comp, g in t.groupby("composition", sort=False):
        g = g.sort_values("batch_size")
        lo_, hi_ = g.iloc[0], g.iloc[-1]
        notes.append(f"{comp}: from B = {int(lo_.batch_size)} to {int(hi_.batch_size)} the mean-gradient norm changes "
                     f"{change(hi_.mean_gradient_norm, lo_.mean_gradient_norm)} (separable: x1), the noise "
                     f"{change(hi_.noise, lo_.noise)} (separable: x{fmt(float(lo_.batch_size / hi_.batch_size))}), the SNR "
                     f"{change(hi_.snr, lo_.snr)} (separable: x{fmt(float(hi_.batch_size / lo_.batch_size))}); cosine to the "
                     f"reference {fmt(float(g.cosine_to_reference.min()))}..{fmt(float(g.cosine_to_reference.max()))}.")
    if t.composition.nunique() > 1:
        B = sizes[-1]
        at = t[t.batch_size == B].set_index("composition")
        best = at.snr.idxmax()
        notes.append(f"at B = {B} the highest SNR has '{best}' ({fmt(float(at.snr[best]))}); "
                     + ", ".join(f"{c}: {fmt(float(at.snr[c]))}" for c in at.index if c != best) + ".")
    return AnalysisResult(comparison_rows(rows), tables={"gradient_statistics": t}, notes=notes, confidence=confidence,
                          title="Pairwise (in-batch) loss: gradient signal and noise vs batch size and composition")


@ANALYSES.register(KIND, PairwiseParams,
                   "mini-batch gradient noise, mean-gradient norm, SNR and direction of the in-batch InfoNCE loss vs batch size and "
                   "composition (random, class_balanced, hard_negatives) against the separable-loss baseline V/B", family="gradient")
def pairwise_batch(params: PairwiseParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_pairwise(params, seed=context.seed, confidence=0.95)
