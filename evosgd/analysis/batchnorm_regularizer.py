"""Is batch normalization an implicit regularizer?  Held-out loss of a teacher-student MLP trained
with and without batch norm, across batch sizes, on a held-out split the analysis draws itself.

The claim (Ioffe & Szegedy 2015; Luo et al. 2019, "Towards understanding regularization in batch
normalization", ICLR): in training mode BN normalises with the statistics of the mini-batch, which are
noisy estimates of the population's -- the noise acts like a data-dependent regularizer whose strength
falls with the batch size.  For a hidden pre-activation h with mean mu and variance s^2 over the
training set, the mini-batch mean of b examples drawn with replacement has

    Var(mean_b h) / s^2 = 1 / b                                              (exact, iid draws)

(the variance estimate's relative noise is ~ (kappa + 2) / b as well), which is the predicted noise
level the analysis checks on the trained network.  What the claim predicts for the loss is a sign, not a
number: BN lowers the held-out loss, and more so at small batches.

Set-up: ``teacher_student`` with a small teacher, a wider student, label noise and few training
examples (so that a network can overfit).  Replicate r of the BN and the plain student share the data,
teacher and start (the landscape instance depends on the seed and r only), so differences are paired.
Both are trained by the engine's ``sgd`` for the same number of epochs.  Held-out loss: ``heldout``
fresh inputs ``x ~ N(0, I)`` labelled by the replicate's teacher plus label noise, drawn by the analysis;
the BN student is evaluated in inference mode, with the hidden statistics of the whole training set
(what ``true_loss`` uses), applied to the held-out inputs (Ioffe & Szegedy 2015, sec. 3.1).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad2_common import make_optimizer, small_landscape
from evosgd.analysis.grad_common import fmt, mean_ci, single_thread
from evosgd.analysis.verdict import judge_coverage, judge_direction, verdict_table
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.registry import ANALYSES
from evosgd.core.seeding import derive_seed, make_generator
from evosgd.landscapes.mlp import ACTIVATIONS, BN_EPS, unflatten

KIND = "batchnorm_regularizer"


# ----------------------------------------------------------------------------- theory / evaluation
def batch_mean_noise(batch_size: int) -> float:
    """``Var(mean of b iid draws) / Var(one draw) = 1 / b``."""
    return 1.0 / batch_size


def forward_with_train_statistics(theta: torch.Tensor, x_train: torch.Tensor, x_eval: torch.Tensor, sizes, activation: str,
                                  batch_norm: bool) -> torch.Tensor:
    """Outputs ``[R, m, out]`` of the students ``theta [R, D]`` on ``x_eval [R, m, in]``; with batch norm,
    each hidden pre-activation is normalised with the mean and variance it has over ``x_train [R, n, in]``
    (inference mode)."""
    act = ACTIVATIONS[activation]
    layers = unflatten(theta, sizes)
    h_tr, h_ev = x_train, x_eval
    for j, (W, b) in enumerate(layers):
        a_tr = torch.baddbmm(b.unsqueeze(1), h_tr, W)
        a_ev = torch.baddbmm(b.unsqueeze(1), h_ev, W)
        if j == len(layers) - 1:
            return a_ev
        if batch_norm:
            mu = a_tr.mean(dim=1, keepdim=True)
            sd = torch.sqrt(a_tr.var(dim=1, unbiased=False, keepdim=True) + BN_EPS)
            a_tr, a_ev = (a_tr - mu) / sd, (a_ev - mu) / sd
        h_tr, h_ev = act(a_tr), act(a_ev)
    return h_ev  # pragma: no cover - a network always has an output layer


# ----------------------------------------------------------------------------- measurement
class BatchNormRegularizerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[int] = Field([4, 16, 64], min_length=2, description="mini-batch sizes b")
    n_examples: int = Field(128, ge=8, description="training examples per replicate (few: the student can overfit)")
    heldout: int = Field(2048, ge=16, description="held-out examples drawn by the analysis from the teacher")
    inputs: int = Field(8, ge=1, description="input dimension")
    widths: list[int] = Field([64], min_length=1, description="hidden widths of the student")
    teacher_widths: list[int] = Field([4], min_length=1, description="hidden widths of the teacher")
    activation: str = Field("tanh", pattern="^(tanh|relu|gelu)$", description="hidden activation")
    noise_std: float = Field(0.5, ge=0.0, description="label noise of training and held-out labels")
    lr: float = Field(0.05, gt=0.0, description="learning rate of the engine's sgd (both students)")
    epochs: int = Field(60, ge=1, description="passes over the training set (steps = epochs n / b)")
    replicates: int = Field(12, ge=3, description="paired replicates (data, teacher and start shared by both students)")


def _landscape_params(p: BatchNormRegularizerParams, bn: bool) -> dict:
    return {"n_examples": p.n_examples, "inputs": p.inputs, "widths": p.widths, "teacher_widths": p.teacher_widths,
            "activation": p.activation, "noise_std": p.noise_std, "batch_norm": bn}


@torch.no_grad()
def heldout_loss(land, theta: torch.Tensor, x: torch.Tensor, noise: torch.Tensor) -> np.ndarray:
    """Mean held-out loss ``0.5 ||student(x) - y||^2`` per replicate."""
    y = land.labelled({"x": x, "noise": noise}, land.concept)["y"]
    out = forward_with_train_statistics(theta, land.data["x"], x, land.sizes, land.params.activation, land.params.batch_norm)
    return (0.5 * ((out - y) ** 2).sum(-1).mean(-1)).double().cpu().numpy()


@torch.no_grad()
def batch_statistic_noise(land, theta: torch.Tensor, b: int, draws: int, gen: torch.Generator) -> np.ndarray:
    """Per replicate: ``Var over batches of the batch mean`` / ``Var over the training set`` of the first
    hidden pre-activations, averaged over units (batches of b drawn with replacement)."""
    W, bias = unflatten(theta, land.sizes)[0]
    a = torch.baddbmm(bias.unsqueeze(1), land.data["x"], W)  # [R, n, width]
    idx = torch.randint(0, land.n_examples, (draws, b), generator=gen)
    means = a[:, idx].mean(dim=2)  # [R, draws, width]
    ratio = means.var(dim=1) / a.var(dim=1, unbiased=False).clamp(min=1e-300)
    return ratio.mean(-1).double().cpu().numpy()


def measure_batchnorm_regularizer(p: BatchNormRegularizerParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    rows, table, verdicts, gains = [], [], [], {}
    R = p.replicates
    with single_thread():
        lands = {bn: small_landscape("teacher_student", _landscape_params(p, bn), replicates=R, seed=seed) for bn in (False, True)}
        gen = make_generator(derive_seed(seed, "heldout"))
        x = torch.randn(R, p.heldout, p.inputs, generator=gen, dtype=torch.float64)
        noise = torch.randn(R, p.heldout, 1, generator=gen, dtype=torch.float64) * p.noise_std
        for b in sorted(set(p.batch_sizes)):
            steps = max(1, int(math.ceil(p.epochs * p.n_examples / b)))
            held, train = {}, {}
            for bn, land in lands.items():
                opt, _ = make_optimizer("sgd", {"lr": p.lr, "batch_size": b}, land, seed=seed + b)
                for _ in range(steps):
                    opt.step()
                theta = opt.recommend()
                if bool(opt.diverged.any()):
                    theta = torch.where(opt.diverged.unsqueeze(1), torch.full_like(theta, math.nan), theta)
                held[bn] = heldout_loss(land, theta, x, noise)
                train[bn] = land.true_loss(theta).double().cpu().numpy()
                name = "with batch norm" if bn else "without batch norm"
                m, lo, hi = mean_ci(held[bn], confidence)
                rows.append(dict(quantity="held-out loss after training", series=name, x_name="batch size b", x=float(b),
                                 measured=m, measured_low=lo, measured_high=hi, log_x=True, log_y=True))
                g = held[bn] - train[bn]
                gm, glo, ghi = mean_ci(g, confidence)
                rows.append(dict(quantity="generalization gap (held-out - training loss)", series=name, x_name="batch size b",
                                 x=float(b), measured=gm, measured_low=glo, measured_high=ghi, log_x=True))
                if bn:
                    nz = batch_statistic_noise(land, theta, b, 512, make_generator(derive_seed(seed, "bn-noise", b)))
                    nm, nlo, nhi = mean_ci(nz, confidence)
                    rows.append(dict(quantity="noise of BN's batch mean: Var(mean_b h) / Var(h)", series="first hidden layer",
                                     x_name="batch size b", x=float(b), measured=nm, measured_low=nlo, measured_high=nhi,
                                     predicted=batch_mean_noise(b), log_x=True, log_y=True))
            gain = held[False] - held[True]  # > 0: batch norm generalises better
            gains[b] = gain
            gm, glo, ghi = mean_ci(gain, confidence)
            rows.append(dict(quantity="held-out loss without BN - with BN (paired; > 0: BN regularises)", series="",
                             x_name="batch size b", x=float(b), measured=gm, measured_low=glo, measured_high=ghi, log_x=True))
            verdicts.append(judge_direction(f"batch norm lowers the held-out loss at b = {b}", gm, glo, ghi, expected="positive",
                                            confidence=confidence, what="paired held-out loss without - with BN"))
            table.append(dict(batch_size=b, steps=steps, heldout_without_bn=float(np.nanmean(held[False])),
                              heldout_with_bn=float(np.nanmean(held[True])), train_without_bn=float(np.nanmean(train[False])),
                              train_with_bn=float(np.nanmean(train[True])), bn_gain=gm, bn_gain_low=glo, bn_gain_high=ghi))
    bs = sorted(gains)
    d = gains[bs[0]] - gains[bs[-1]]
    dm, dlo, dhi = mean_ci(d, confidence)
    verdicts.append(judge_direction(f"batch norm's held-out benefit is larger at small batches (b = {bs[0]} vs {bs[-1]})",
                                    dm, dlo, dhi, expected="positive", confidence=confidence,
                                    what="paired difference of the BN gains"))
    comp = comparison_rows(rows)
    nz = comp[comp.quantity.str.startswith("noise of BN")]
    verdicts.append(judge_coverage("the noise of BN's batch statistics is 1/b of the population variance", nz.measured_low,
                                   nz.measured_high, nz.predicted, measured=nz.measured, confidence=confidence, what="batch sizes"))
    t = pd.DataFrame(table)
    notes = [f"teacher {p.teacher_widths} -> student {p.widths} ({p.activation}), {p.n_examples} training examples with label "
             f"noise {fmt(p.noise_std)}, {p.heldout} held-out examples per replicate drawn by the analysis; engine sgd "
             f"lr = {fmt(p.lr)} for {p.epochs} epochs; {R} paired replicates.",
             "held-out loss without -> with BN: " + ", ".join(f"b = {int(r.batch_size)}: {fmt(r.heldout_without_bn)} -> "
                                                              f"{fmt(r.heldout_with_bn)}" for r in t.itertuples()) + "."]
    return AnalysisResult(comp, tables={"heldout": t, "verdicts": verdict_table(verdicts)}, notes=notes, confidence=confidence,
                          title="Batch norm as an implicit regularizer: held-out loss with and without BN")


@ANALYSES.register(KIND, BatchNormRegularizerParams,
                   "held-out loss of teacher-student MLPs trained (engine sgd) with and without batch norm across batch sizes, "
                   "on a held-out split drawn by the analysis; BN's batch-statistic noise vs 1/b; verdicts", family="gradient")
def batchnorm_regularizer(params: BatchNormRegularizerParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_batchnorm_regularizer(params, seed=context.seed, confidence=0.95)
