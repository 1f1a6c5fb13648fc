"""Why clipping?  Gradient descent at the foot of a cliff, with and without gradient-norm clipping.

The ``cliff`` landscape (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent
neural networks", sec. 3 and Fig. 6): ``g(z) = ||z||^2 + H S((||z|| - (w - eps)) / (2 eps))`` with the
smoothstep ``S(u) = 3u^2 - 2u^3``; the basin ``||z|| < w - eps`` lies behind a face of width 2 eps
whose gradient is radial and as large as

    G_max = max ||grad g|| ~= 2 w + 1.5 H / (2 eps)      (S' peaks at 1.5; 7502 for H = 100, w = 1, eps = 0.01).

Clipping by norm (``u = g min(1, c / ||g||)``, Pascanu et al. 2013, Alg. 1) bounds every step by
``lr min(c, G_max)``; without it a step taken on the face throws the iterate ``lr G`` away.
Noise-free, the motion is radial (the gradient points along z) and, for ``lr < 1/2``, exact facts follow:

* **largest step** = ``lr min(c, ||grad g||)``, at most ``lr min(c, G_max)``;
* **recovery threshold**: from any point of the face a step of length ``s <= lr c`` lands at radius
  ``|r - s|``; if ``lr c <= 2 (w - eps)`` that is inside the basin (or still on the face), and inside
  the basin the clipped quadratic step ``lr min(c, 2r) < r`` never leaves it.  So every run with
  ``c <= c* = 2 (w - eps) / lr`` ends in the basin, given time to get there;
* **time to reach the face** from radius ``r0``: while ``2 r > c`` the clipped step is the constant
  ``lr c`` (linear phase), then the step ``2 lr r`` shrinks r by ``(1 - 2 lr)`` per step (geometric
  phase) — :func:`steps_to_face`.  A run of T steps is predicted to fail when this exceeds T.
Above ``c*`` no guarantee holds: whether a throw lands in the basin depends on where on the face the
step was taken (measured, not predicted).

The measurement runs the engine's ``sgd`` (``clip_norm = c``, and unclipped) on the ``cliff``
landscape for T steps, R replicates (different shifts and starts): the failure rate (not in the
basin at the end, or diverged) with its Clopper-Pearson interval, the final loss error, and the
largest update norm.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from evosgd.analysis.grad2_common import make_optimizer, small_landscape
from evosgd.analysis.grad_common import fmt, mean_ci, proportion_ci, single_thread
from evosgd.core.analysis_api import AnalysisContext, AnalysisResult, comparison_rows
from evosgd.core.errors import ParameterError
from evosgd.core.registry import ANALYSES

KIND = "clipping_cliff"


# ----------------------------------------------------------------------------- theory
def cliff_max_gradient(height: float, radius: float, width: float) -> float:
    """``G_max = max_r (2 r + H S'(u) / (2 eps))`` over the face, ``u = (r - (w - eps)) / (2 eps)``,
    ``S'(u) = 6 u (1 - u)``; maximised on a fine grid of the face (the max sits near u = 1/2)."""
    u = np.linspace(0.0, 1.0, 200_001)
    r = radius - width + 2.0 * width * u
    return float((2.0 * r + height * 6.0 * u * (1.0 - u) / (2.0 * width)).max())


def recovery_threshold(lr: float, radius: float, width: float) -> float:
    """``c* = 2 (w - eps) / lr``: clipping at or below it guarantees the basin is never left again."""
    return 2.0 * (radius - width) / lr


def largest_step(lr: float, threshold: float | None, g_max: float) -> float:
    """Bound on the update norm: ``lr min(c, G_max)`` (``lr G_max`` unclipped)."""
    return lr * (g_max if threshold is None else min(threshold, g_max))


def steps_to_face(r0: float, lr: float, threshold: float | None, radius: float, width: float) -> int:
    """Steps of noise-free clipped GD on the bowl ``||z||^2`` from radius ``r0`` until ``r <= w + eps``.

    Linear phase while ``2 r > c``: ``r`` falls by ``lr c`` per step; geometric phase: ``r <- (1 - 2 lr) r``.
    Requires ``0 < lr < 1/2``."""
    if not 0 < lr < 0.5:
        raise ParameterError("lr", lr, "0 < lr < 1/2 (the bowl step must not overshoot)")
    edge = radius + width
    r, n = float(r0), 0
    if r <= edge:
        return 0
    if threshold is not None and 2.0 * r > threshold:
        stop = max(threshold / 2.0, edge)
        k = math.ceil((r - stop) / (lr * threshold))
        r, n = r - k * lr * threshold, k
        if r <= edge:
            return n
    return n + max(0, math.ceil(math.log(edge / r) / math.log(1.0 - 2.0 * lr)))


# ----------------------------------------------------------------------------- measurement
class ClippingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: list[float] = Field([0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0], min_length=1,
                                    description="clip_norm thresholds c (an unclipped run is always added)")
    lr: float = Field(0.005, gt=0.0, lt=0.5, description="learning rate (small enough that the bowl steps cannot jump over the face: "
                                                          "2 lr (w + eps) < 2 eps)")
    steps: int = Field(2000, ge=1, description="steps T of each run")
    replicates: int = Field(32, ge=2, description="replicates (shifts and starting points)")
    dim: int = Field(2, ge=1, description="dimension of the cliff landscape")
    cliff_height: float = Field(100.0, ge=0.0, description="H")
    cliff_radius: float = Field(1.0, gt=0.0, description="w")
    cliff_width: float = Field(0.01, gt=0.0, description="eps")


def run_clipped(params: ClippingParams, threshold: float | None, seed: int) -> dict[str, np.ndarray]:
    land = small_landscape("cliff", {"dim": params.dim, "cliff_height": params.cliff_height, "cliff_radius": params.cliff_radius,
                                     "cliff_width": params.cliff_width}, replicates=params.replicates, seed=seed)
    p = {"lr": params.lr, "batch_size": 1}
    if threshold is not None:
        p["clip_norm"] = threshold
    opt, _ = make_optimizer("sgd", p, land, seed=seed)
    s = land.optimum()
    r0 = torch.linalg.vector_norm(land.initial_point - s, dim=-1).numpy()
    biggest = torch.zeros(params.replicates, dtype=torch.float64)
    prev = opt.recommend().clone()
    for _ in range(params.steps):
        opt.step()
        cur = opt.recommend()
        biggest = torch.maximum(biggest, torch.linalg.vector_norm(cur - prev, dim=-1))
        prev = cur.clone()
    final = opt.recommend()
    err = (land.true_loss(final) - land.optimal_loss()).numpy()
    radius = torch.linalg.vector_norm(final - s, dim=-1).numpy()
    diverged = opt.diverged.numpy() | ~np.isfinite(err)
    in_basin = (radius < params.cliff_radius - params.cliff_width) & ~diverged
    return {"error": err, "in_basin": in_basin, "largest_step": biggest.numpy(), "r0": r0, "diverged": diverged}


def measure_clipping(params: ClippingParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    if not params.cliff_width < params.cliff_radius:
        raise ParameterError("cliff_width", params.cliff_width, f"< cliff_radius = {params.cliff_radius}", where=f"analysis {KIND!r}")
    w, eps, lr, T = params.cliff_radius, params.cliff_width, params.lr, params.steps
    g_max = cliff_max_gradient(params.cliff_height, w, eps)
    c_star = recovery_threshold(lr, w, eps)
    rows, table = [], []
    with single_thread():
        for c in sorted(set(params.thresholds)) + [None]:
            out = run_clipped(params, c, seed)
            x = g_max if c is None else c  # clipping at >= G_max never acts: the unclipped run sits there
            series = "unclipped (drawn at c = G_max)" if c is None else "clip_norm = c"
            fails = int((~out["in_basin"]).sum())
            f, flo, fhi = proportion_ci(fails, params.replicates, confidence)
            guaranteed = c is not None and c <= c_star
            late = np.array([steps_to_face(r, lr, c, w, eps) > T for r in out["r0"]])
            pred_fail = float(late.mean()) if guaranteed else math.nan
            rows.append(dict(quantity=f"failure rate (not in the basin after T = {T} steps)", series=series, x_name="clip threshold c",
                             x=x, measured=f, measured_low=flo, measured_high=fhi, predicted=pred_fail, log_x=True, log_y=False))
            fin = np.where(np.isfinite(out["error"]), out["error"], np.nan)
            m, lo, hi = mean_ci(fin[np.isfinite(fin)], confidence) if np.isfinite(fin).sum() >= 2 else (math.nan,) * 3
            rows.append(dict(quantity="final loss error", series=series, x_name="clip threshold c", x=x, measured=m,
                             measured_low=lo, measured_high=hi, log_x=True, log_y=True))
            rows.append(dict(quantity="largest update norm (max over the run)", series=series, x_name="clip threshold c", x=x,
                             measured=float(out["largest_step"].max()), predicted=largest_step(lr, c, g_max), log_x=True, log_y=True))
            table.append(dict(threshold=x, clipped=c is not None, failures=fails, runs=params.replicates, failure_rate=f,
                              predicted_failure_rate=pred_fail, recovery_guaranteed=guaranteed, diverged=int(out["diverged"].sum()),
                              mean_final_error=m, largest_step=float(out["largest_step"].max()), step_bound=largest_step(lr, c, g_max)))
    t = pd.DataFrame(table)
    g = t[t.recovery_guaranteed]
    ok = int((g.failures == np.round(g.predicted_failure_rate * g.runs)).sum()) if len(g) else 0
    notes = [f"cliff D = {params.dim}, H = {fmt(params.cliff_height)}, w = {fmt(w)}, eps = {fmt(eps)}: G_max = {fmt(g_max)}; lr = {fmt(lr)}, "
             f"so clipping at c <= c* = 2(w - eps)/lr = {fmt(c_star)} guarantees recovery.",
             f"below c*, the measured failure count equals the predicted one (runs that cannot reach the face in {T} steps) at "
             f"{ok} of {len(g)} thresholds.",
             f"unclipped: {int(t[~t.clipped].failures.iloc[0])} of {params.replicates} runs end outside the basin; largest step "
             f"{fmt(float(t[~t.clipped].largest_step.iloc[0]))} (bound lr G_max = {fmt(lr * g_max)}).",
             f"every measured largest step is within its bound lr min(c, G_max): "
             f"{bool((t.largest_step <= t.step_bound * (1 + 1e-9)).all())}."]
    above = t[t.clipped & ~t.recovery_guaranteed]
    if len(above):
        notes.append(f"above c*: failure rate {fmt(float(above.failure_rate.min()))}..{fmt(float(above.failure_rate.max()))} "
                     f"over {len(above)} thresholds.")
    return AnalysisResult(comparison_rows(rows), tables={"clipping": t}, notes=notes, confidence=confidence,
                          title="Gradient clipping at a cliff: failure rate, final loss and step size vs threshold")


@ANALYSES.register(KIND, ClippingParams,
                   "SGD on the cliff landscape with clip_norm thresholds and without: failure rate, final loss and largest step "
                   "vs threshold against the recovery threshold 2(w-eps)/lr and the step bound lr min(c, G_max)", family="gradient")
def clipping_cliff(params: ClippingParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_clipping(params, seed=context.seed, confidence=0.95)


# ============================================================================= recurrent network
#
# The same question on a vanilla tanh RNN (``rnn`` landscape, Pascanu, Mikolov & Bengio 2013):
# started with a recurrence of spectral radius > 1 the gradient norm grows like exp(lambda T) with
# the sequence length, so an unclipped step can be orders of magnitude longer than the steps that
# trained the network.  The loss of a tanh network is bounded in W, U and c but not in the readout
# v, whose Hessian is E[h_T h_T^T]: a throw that saturates the hidden states raises its largest
# eigenvalue towards ||h_T||^2 = H, and plain SGD at learning rate lr is unstable on it once
# lr lambda_max > 2 -- that is how a thrown RNN ends with a non-finite loss.  Clipping bounds every
# step by lr c (the one exact prediction here); divergence and final loss against c are measured.

RNN_KIND = "clipping_rnn"


class ClippingRNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: list[float] = Field([0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0], min_length=1,
                                    description="clip_norm thresholds c (an unclipped run is always added)")
    lr: float = Field(0.2, gt=0.0, description="learning rate of SGD (0.2: the readout is stable at the start, "
                                                "lr lambda_max(E[h h^T]) < 2, in most replicates, but not after a throw)")
    batch_size: int = Field(16, ge=1, description="mini-batch size b")
    steps: int = Field(500, ge=1, description="steps of each run")
    check_every: int = Field(25, ge=1, description="the full loss is measured every this many steps (for the blow-up rate)")
    blowup_factor: float = Field(10.0, gt=1.0, description="a run blows up when its full loss ever exceeds this times its initial loss")
    replicates: int = Field(16, ge=2, description="replicates (datasets, teachers and starting points)")
    n_examples: int = Field(256, ge=1, description="sequences per dataset")
    sequence_length: int = Field(30, ge=1, description="T")
    hidden: int = Field(16, ge=1, description="hidden size H")
    input_std: float = Field(0.5, gt=0.0, description="input standard deviation")
    init_spectral_radius: float = Field(3.0, ge=0.0, description="spectral radius of W at the start (> 1: exploding gradients)")
    task: Literal["teacher", "memory"] = Field("teacher", description="rnn task: teacher or memory")
    dtype: Literal["float32", "float64"] = Field("float32", description="precision of the runs (float32 as in practice)")


def median_ci(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): distribution-free interval of the median from order statistics -- the
    number of values below the median is Binomial(n, 1/2), so ``[x_(l), x_(n+1-l)]`` with
    ``l = F^-1(alpha/2)`` covers it with probability >= confidence (Conover 1999, sec. 3.2).
    Non-finite values (diverged runs) sort as +inf."""
    from scipy import stats

    a = np.sort(np.where(np.isnan(x), np.inf, np.asarray(x, dtype=np.float64)))
    n = a.size
    l = int(stats.binom.ppf((1.0 - confidence) / 2.0, n, 0.5))
    lo = float(a[l - 1]) if l >= 1 else -math.inf
    hi = float(a[n - l]) if l >= 1 else math.inf
    with np.errstate(over="ignore", invalid="ignore"):  # the middle pair of blown-up runs may overflow when averaged
        mid = float(np.median(a))
    return mid, lo, hi


def rnn_landscape(params: ClippingRNNParams, seed: int):
    return small_landscape("rnn", {"n_examples": params.n_examples, "sequence_length": params.sequence_length,
                                   "hidden": params.hidden, "input_std": params.input_std,
                                   "init_spectral_radius": params.init_spectral_radius, "task": params.task},
                           replicates=params.replicates, seed=seed, dtype=getattr(torch, params.dtype))


def readout_curvature(land) -> np.ndarray:
    """``lambda_max(E[h_T h_T^T])`` at the starting point, per replicate: the largest eigenvalue of the
    loss's Hessian in the readout v (exact: the loss is quadratic in v)."""
    from evosgd.landscapes.rnn import rnn_forward

    x = land.full_batch()["x"]
    _, states = rnn_forward(land.initial_point.unsqueeze(1), x, land.hidden, land.inputs, return_states=True)
    h = states[:, 0, :, -1].double()
    return torch.linalg.eigvalsh(torch.einsum("rni,rnj->rij", h, h) / h.shape[1])[:, -1].numpy()


def run_clipped_rnn(params: ClippingRNNParams, threshold: float | None, seed: int) -> dict[str, np.ndarray]:
    """SGD (``clip_norm = threshold`` or unclipped) on the rnn landscape: per replicate the initial and
    final full loss, whether it diverged (non-finite), blew up, and the largest update norm."""
    land = rnn_landscape(params, seed)
    p: dict = {"lr": params.lr, "batch_size": params.batch_size}
    if threshold is not None:
        p["clip_norm"] = threshold
    opt, _ = make_optimizer("sgd", p, land, seed=seed)
    with torch.no_grad():
        start = land.true_loss(land.initial_point).double()
    worst = start.clone()
    biggest = torch.zeros(params.replicates, dtype=torch.float64)
    prev = opt.recommend().clone()
    for k in range(1, params.steps + 1):
        opt.step()
        cur = opt.recommend()
        biggest = torch.maximum(biggest, torch.linalg.vector_norm((cur - prev).double(), dim=-1).nan_to_num(math.inf))
        prev = cur.clone()
        if k % params.check_every == 0 or k == params.steps:
            with torch.no_grad():
                now = land.true_loss(cur).double().nan_to_num(math.inf)
            worst = torch.maximum(worst, now)
    final = now.numpy()
    diverged = opt.diverged.numpy() | ~np.isfinite(final)
    return {"initial": start.numpy(), "final": final, "diverged": diverged,
            "blew_up": diverged | (worst.numpy() > params.blowup_factor * start.numpy()),
            "largest_step": biggest.numpy()}


def initial_gradient_norms(params: ClippingRNNParams, seed: int) -> np.ndarray:
    land = rnn_landscape(params, seed)
    th = land.initial_point.clone().requires_grad_(True)
    land.true_loss(th).sum().backward()
    return th.grad.double().norm(dim=-1).numpy()


def measure_clipping_rnn(params: ClippingRNNParams, seed: int, confidence: float = 0.95) -> AnalysisResult:
    lr, n = params.lr, params.replicates
    with single_thread():
        g0 = initial_gradient_norms(params, seed)
        curv = readout_curvature(rnn_landscape(params, seed))
        x_free = float(max(g0.max(), 10.0 * max(params.thresholds)))
        rows, table = [], []
        for c in sorted(set(params.thresholds)) + [None]:
            out = run_clipped_rnn(params, c, seed)
            x = x_free if c is None else c
            series = "unclipped (drawn right of every c)" if c is None else "clip_norm = c"
            for name, flag in (("divergence rate (non-finite loss)", out["diverged"]),
                               (f"blow-up rate (loss > {fmt(params.blowup_factor)} x initial, or diverged)", out["blew_up"])):
                k = int(flag.sum())
                f, lo, hi = proportion_ci(k, n, confidence)
                rows.append(dict(quantity=name, series=series, x_name="clip threshold c", x=x, measured=f, measured_low=lo,
                                 measured_high=hi, log_x=True, log_y=False))
            m, lo, hi = median_ci(out["final"], confidence)
            rows.append(dict(quantity="final loss (median over runs; diverged = inf)", series=series, x_name="clip threshold c",
                             x=x, measured=m, measured_low=lo, measured_high=hi, log_x=True, log_y=True))
            bound = math.inf if c is None else lr * c
            step = float(out["largest_step"].max())
            rows.append(dict(quantity="largest update norm (max over runs)", series=series, x_name="clip threshold c", x=x,
                             measured=step, predicted=bound if c is not None else math.nan, log_x=True, log_y=True))
            table.append(dict(threshold=x, clipped=c is not None, runs=n, diverged=int(out["diverged"].sum()),
                              blew_up=int(out["blew_up"].sum()), trained=int((out["final"] < out["initial"]).sum()),
                              median_final_loss=m,
                              mean_initial_loss=float(out["initial"].mean()), largest_step=step, step_bound=bound))
    t = pd.DataFrame(table)
    free = t[~t.clipped].iloc[0]
    clipped = t[t.clipped]
    best = clipped.loc[clipped.median_final_loss.idxmin()]
    stable = int((lr * curv < 2.0).sum())
    notes = [f"rnn ({params.task}), H = {params.hidden}, T = {params.sequence_length}, spectral radius of W at the start "
             f"{fmt(params.init_spectral_radius)}; ||grad L|| at the start: median {fmt(float(np.median(g0)))}, max {fmt(float(g0.max()))}; "
             f"SGD lr = {fmt(lr)}, b = {params.batch_size}, {params.steps} steps, {n} replicates.",
             f"unclipped: {int(free.diverged)} of {n} runs diverge (non-finite loss), {int(free.blew_up)} blow up; "
             f"largest step {fmt(float(free.largest_step))}.",
             f"clipped: divergences {int(clipped.diverged.min())}..{int(clipped.diverged.max())} of {n} over {len(clipped)} thresholds; "
             f"best median final loss {fmt(float(best.median_final_loss))} at c = {fmt(float(best.threshold))} "
             f"(initial loss {fmt(float(best.mean_initial_loss))}).",
             f"every clipped run's largest step is within lr c: {bool((clipped.largest_step <= clipped.step_bound * (1 + 1e-5)).all())}.",
             f"readout stability at the start (lr lambda_max(E[h_T h_T^T]) < 2): {stable} of {n} replicates; a throw that saturates "
             f"h_T raises lambda_max towards H = {params.hidden} (lr H = {fmt(lr * params.hidden)})."]
    return AnalysisResult(comparison_rows(rows), tables={"clipping_rnn": t}, notes=notes, confidence=confidence,
                          title="Gradient clipping on a recurrent network with exploding gradients: divergence, blow-up and "
                                "final loss vs threshold")


@ANALYSES.register(RNN_KIND, ClippingRNNParams,
                   "SGD on a vanilla tanh RNN started in the exploding-gradient regime, with clip_norm thresholds and without: "
                   "divergence and blow-up rates, final loss and largest step (bound lr c) vs threshold", family="gradient")
def clipping_rnn(params: ClippingRNNParams, *, context: AnalysisContext) -> AnalysisResult:
    return measure_clipping_rnn(params, seed=context.seed, confidence=0.95)
