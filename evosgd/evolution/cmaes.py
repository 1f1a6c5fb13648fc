"""CMA-ES (Hansen & Ostermeier 2001) with the defaults of Hansen's tutorial, its separable variant
(sep-CMA-ES, Ros & Hansen 2008) and IPOP restarts (Auger & Hansen 2005).

Reference: N. Hansen, "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772 (2016), Table 1
(defaults) and Fig. / eqs. (38)-(47) (one generation).  With C = B diag(d)^2 B^T:

    z_k ~ N(0, I),  y_k = B diag(d) z_k,  x_k = m + sigma y_k,      k = 1..lambda;  sort by loss
    <y>_w = sum_{i<=mu} w_i y_{i:lambda}                               (positive weights)
    m <- m + sigma <y>_w                                               (c_m = 1)
    p_sigma <- (1 - c_sigma) p_sigma + sqrt(c_sigma (2 - c_sigma) mu_eff) C^{-1/2} <y>_w
    sigma <- sigma exp( c_sigma/d_sigma (||p_sigma|| / E||N(0,I)|| - 1) )
    h_sigma = 1[ ||p_sigma|| / sqrt(1 - (1 - c_sigma)^(2(g+1))) < (1.4 + 2/(D+1)) E||N(0,I)|| ]
    p_c <- (1 - c_c) p_c + h_sigma sqrt(c_c (2 - c_c) mu_eff) <y>_w
    w°_i = w_i if w_i >= 0 else w_i D / ||C^{-1/2} y_{i:lambda}||^2
    C <- (1 + c_1 delta(h_sigma) - c_1 - c_mu sum_j w_j) C + c_1 p_c p_c^T + c_mu sum_i w°_i y_i y_i^T,
         delta(h) = (1 - h) c_c (2 - c_c).

C^{-1/2} y_k = B z_k, so ||C^{-1/2} y_k|| = ||z_k|| and no inverse is formed.

Defaults (Table 1): lambda = 4 + floor(3 ln D), mu = floor(lambda/2),
w'_i = ln((lambda+1)/2) - ln i (i = 1..lambda), mu_eff = (sum_{i<=mu} w'_i)^2 / sum_{i<=mu} w'_i^2,
c_1 = 2/((D+1.3)^2 + mu_eff), c_mu = min(1 - c_1, 2 (mu_eff - 2 + 1/mu_eff)/((D+2)^2 + mu_eff)),
c_c = (4 + mu_eff/D)/(D + 4 + 2 mu_eff/D), c_sigma = (mu_eff + 2)/(D + mu_eff + 5),
d_sigma = 1 + 2 max(0, sqrt((mu_eff - 1)/(D + 1)) - 1) + c_sigma.  ``weights = "equal"`` replaces the
positive w'_i by 1 (so w_i = 1/mu, mu_eff = mu: Beyer's (mu/mu_I, lambda) recombination).  Positive weights are normalised
to sum 1; negative ones ("active" CMA, Jastrebski & Arnold 2006) to sum
-min(1 + c_1/c_mu, 1 + 2 mu_eff^-/(mu_eff + 2), (1 - c_1 - c_mu)/(D c_mu)).

Eigendecomposition: one batched ``torch.linalg.eigh`` on ``[R, D, D]``; with ``lazy_eigen`` only
every max(1, floor(1/(10 D (c_1 + c_mu)))) generations (tutorial, B.2), which keeps the cost per
generation at O(D^2) per sample.

sep-CMA-ES (``sep_cmaes``): C is diagonal (B = I, O(D) time and memory per sample), and the
learning rates c_1, c_mu are multiplied by (D + 2)/3 (Ros & Hansen 2008, "A simple modification
in CMA-ES achieving linear time and space complexity"), since a diagonal has D, not D^2/2,
entries to learn.

IPOP (``restarts = "ipop"``, Auger & Hansen 2005, "A restart CMA evolution strategy with
increasing population size"): a replicate whose run stops (criteria below) restarts from x0 with
sigma0, C = I, and twice its previous lambda.  Replicates restart independently, in place: the
population tensor is padded to the largest lambda, each replicate's weights cover only its own
lambda, and each replicate is charged only for its own offspring.  Stopping criteria (per
replicate; Hansen's tutorial, B.3, and pycma's defaults):

* tol_fun: the best losses of the last 10 + ceil(30 D/lambda) generations and all losses of the
  current one lie within ``tol_fun``;
* tol_x: sigma * max(||p_c||_inf, max_i sqrt(C_ii)) < ``tol_x`` * sigma0;
* condition: cond(C) > ``max_condition``;
* no effect: adding 0.2 sigma sqrt(C_ii) to some coordinate of the mean leaves it unchanged
  (the arithmetic of the dtype can no longer move it);
* stagnation (simplified from Hansen's median rule): the best loss since the (re)start did not
  improve during 120 + ceil(30 D / lambda) generations.

recommend(): the mean by default (with IPOP: the current run's mean once that run has evaluated a point
at least as good as the best point of the earlier runs, that best point until then); ``recommend = "best"``
returns the best point evaluated (across restarts).  Metrics: sigma, condition (cond(C), ratio of the largest to the smallest eigenvalue),
popsize, restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import Field

from evosgd.core.device import host_bool, host_list, library_sync
from evosgd.core.registry import OPTIMIZERS
from evosgd.evolution.es_base import (
    EvolutionStrategy,
    RecombinationParams,
    commit,
    default_popsize,
    expected_norm,
    log_weights,
)


class CMAParams(RecombinationParams):
    """CMA-ES / sep-CMA-ES with Hansen's (2016) default strategy parameters."""

    popsize: int | None = Field(None, ge=2, description="offspring per generation lambda; None: 4 + floor(3 ln D) (Hansen 2016, Table 1)")
    active: bool = Field(
        True, description="negative recombination weights for the worse half in the covariance update (active CMA; "
        "the default of Hansen's 2016 tutorial and of pycma)"
    )
    lazy_eigen: bool = Field(
        True, description="eigendecompose C only every max(1, floor(1/(10 D (c_1 + c_mu)))) generations (tutorial, B.2); "
        "changes nothing for small D, saves time for large D"
    )
    restarts: Literal["none", "ipop"] = Field(
        "none", description="ipop: restart a replicate that stops with twice its population size (Auger & Hansen 2005)"
    )
    max_restarts: int = Field(9, ge=0, description="most IPOP restarts per replicate (9: pycma's default; lambda grows at most 2^9-fold)")
    tol_fun: float = Field(1e-12, ge=0.0, description="IPOP stop: range of recent best losses and of the current losses below this")
    tol_x: float = Field(1e-12, ge=0.0, description="IPOP stop: sigma times the largest standard deviation and |p_c| below tol_x * sigma0")
    max_condition: float = Field(1e14, gt=1.0, description="IPOP stop: condition number of C above this (1e14: tutorial, B.3)")


@dataclass
class CMAState:
    mean: torch.Tensor      # [R, D]
    sigma: torch.Tensor     # [R]
    C: torch.Tensor         # [R, D, D] (full) or [R, D] (separable: the diagonal)
    B: torch.Tensor         # [R, D, D] eigenvectors (full); [R, 0] placeholder (separable)
    d: torch.Tensor         # [R, D] square roots of the eigenvalues of C
    p_sigma: torch.Tensor   # [R, D]
    p_c: torch.Tensor       # [R, D]
    generation: torch.Tensor  # [R] long, generations since the (re)start
    eigen_age: torch.Tensor   # [R] long, generations since the last eigendecomposition


@dataclass
class CMAConstants:
    """Strategy parameters per replicate (they differ between replicates only after IPOP restarts)."""

    popsize: torch.Tensor  # [R] long
    weights: torch.Tensor  # [R, P_max]; zero beyond each replicate's lambda
    mu_eff: torch.Tensor   # [R]
    c1: torch.Tensor
    cmu: torch.Tensor
    cc: torch.Tensor
    cs: torch.Tensor
    ds: torch.Tensor
    sum_w: torch.Tensor    # sum of all weights (enters the decay of C)
    eigen_gap: torch.Tensor  # [R] long
    history: torch.Tensor    # [R] long, 10 + ceil(30 D / lambda) (tol_fun window)
    stagnation: torch.Tensor  # [R] long, 120 + ceil(30 D / lambda)
    # derived once per (re)start rather than every generation (set by __post_init__)
    w_pos: torch.Tensor = field(init=False)     # [R, P_max] the positive weights (recombination of the mean)
    w_neg: torch.Tensor = field(init=False)     # [R, P_max] bool, negative weights (rescaled by n / ||z||^2)
    cs_keep: torch.Tensor = field(init=False)   # 1 - c_sigma
    cs_norm: torch.Tensor = field(init=False)   # sqrt(c_sigma (2 - c_sigma) mu_eff)
    cc_keep: torch.Tensor = field(init=False)   # 1 - c_c
    cc_norm: torch.Tensor = field(init=False)   # sqrt(c_c (2 - c_c) mu_eff)
    cc_delta: torch.Tensor = field(init=False)  # c_c (2 - c_c)
    decay: torch.Tensor = field(init=False)     # 1 - c_1 - c_mu sum_j w_j (decay of C when h_sigma = 1)

    def __post_init__(self) -> None:
        self.w_pos = self.weights.clamp(min=0.0)
        self.w_neg = self.weights < 0
        self.cs_keep, self.cc_keep = 1 - self.cs, 1 - self.cc
        self.cs_norm = torch.sqrt(self.cs * (2 - self.cs) * self.mu_eff)
        self.cc_delta = self.cc * (2 - self.cc)
        self.cc_norm = torch.sqrt(self.cc_delta * self.mu_eff)
        self.decay = 1 - self.c1 - self.cmu * self.sum_w


def cma_defaults(n: int, lam: int, *, active: bool = True, separable: bool = False, weights: str = "log_rank") -> dict:
    """Default strategy parameters for dimension n and population size lam (see module docstring).
    ``weights = "equal"``: the mu = floor(lambda/2) positive weights are 1/mu (mu_eff = mu); the
    negative (active) weights of the worse half stay the log-rank ones."""
    mu = lam // 2
    raw = log_weights(lam)
    pos, neg = raw[:mu], raw[mu:]
    if weights == "equal":
        pos = [1.0] * mu
    mu_eff = sum(pos) ** 2 / sum(w * w for w in pos)
    c1 = 2.0 / ((n + 1.3) ** 2 + mu_eff)
    cmu = min(1.0 - c1, 2.0 * (mu_eff - 2.0 + 1.0 / mu_eff) / ((n + 2.0) ** 2 + mu_eff))
    if separable:  # Ros & Hansen 2008: learning rates times (n + 2)/3
        c1 = c1 * (n + 2.0) / 3.0
        cmu = min(1.0 - c1, cmu * (n + 2.0) / 3.0)
    weights = [w / sum(pos) for w in pos]
    neg_sum = -sum(w for w in neg if w < 0)
    if active and neg_sum > 0 and cmu > 0:
        negs = [w for w in neg if w < 0]
        mu_eff_neg = sum(negs) ** 2 / sum(w * w for w in negs)
        alpha = min(1.0 + c1 / cmu, 1.0 + 2.0 * mu_eff_neg / (mu_eff + 2.0), (1.0 - c1 - cmu) / (n * cmu))
        weights += [alpha * w / neg_sum if w < 0 else 0.0 for w in neg]
    else:
        weights += [0.0] * len(neg)
    cs = (mu_eff + 2.0) / (n + mu_eff + 5.0)
    return dict(
        weights=weights, mu_eff=mu_eff, c1=c1, cmu=cmu, cs=cs,
        ds=1.0 + 2.0 * max(0.0, math.sqrt((mu_eff - 1.0) / (n + 1.0)) - 1.0) + cs,
        cc=(4.0 + mu_eff / n) / (n + 4.0 + 2.0 * mu_eff / n),
        sum_w=sum(weights),
        eigen_gap=max(1, int(math.floor(1.0 / (10.0 * n * (c1 + cmu))))) if c1 + cmu > 0 else 1,
        history=10 + int(math.ceil(30.0 * n / lam)),
        stagnation=120 + int(math.ceil(30.0 * n / lam)),
    )


@OPTIMIZERS.register("cmaes", CMAParams,
                     "CMA-ES with Hansen's (2016) defaults, active weights, optional IPOP restarts", family="evolution")
class CMAES(EvolutionStrategy):
    kind = "cmaes"
    separable = False

    @classmethod
    def memory_estimate(cls, params: dict, *, replicates: int, itemsize: int, dim: int) -> int:
        """Bytes beyond the population (for ``evosgd.run.memory``): C, B, the eigendecomposition's
        workspace and the rank-mu products, about ``6 R D^2`` numbers; none for the diagonal
        variant."""
        return 0 if cls.separable else 6 * replicates * dim * dim * itemsize

    # -- setup -----------------------------------------------------------------------------
    def setup(self) -> None:
        p = self.params
        R = self.replicates
        lam0 = p.popsize or default_popsize(self.dim)
        self.chi_n = expected_norm(self.dim)
        self.constants = self._constants(torch.full((R,), lam0, dtype=torch.long, device=self.device))
        self.restarts = torch.zeros(R, dtype=torch.long, device=self.device)
        self._reset_restart_records(torch.ones(R, dtype=torch.bool, device=self.device))

    def _constants(self, popsize: torch.Tensor) -> CMAConstants:
        """Per-replicate constants from per-replicate population sizes (a loop over the few distinct sizes)."""
        R, n = self.replicates, self.dim
        sizes = host_list(popsize)  # at setup and restarts only: one host read
        p_max, self._lam_min = max(sizes), min(sizes)
        table = {L: cma_defaults(n, L, active=self.params.active, separable=self.separable,
                                 weights=self.params.weights) for L in sorted(set(sizes))}
        weights = torch.zeros(R, p_max, dtype=torch.float64)
        for L, c in table.items():
            weights[[r for r in range(R) if sizes[r] == L], :L] = torch.tensor(c["weights"], dtype=torch.float64)

        def col(name: str, dtype: torch.dtype = self.dtype) -> torch.Tensor:
            return torch.tensor([table[L][name] for L in sizes], dtype=dtype, device=self.device)

        return CMAConstants(
            popsize=popsize.clone(), weights=weights.to(self.device, self.dtype), mu_eff=col("mu_eff"), c1=col("c1"),
            cmu=col("cmu"), cc=col("cc"), cs=col("cs"), ds=col("ds"), sum_w=col("sum_w"),
            eigen_gap=col("eigen_gap", torch.long), history=col("history", torch.long),
            stagnation=col("stagnation", torch.long),
        )

    def init_state(self) -> CMAState:
        R, D = self.replicates, self.dim
        kw = dict(device=self.device, dtype=self.dtype)
        eye = torch.eye(D, **kw).expand(R, D, D).clone()
        zeros = torch.zeros(R, D, **kw)
        return CMAState(
            mean=self.x0.clone(), sigma=torch.full((R,), self.sigma0, **kw),
            C=torch.ones(R, D, **kw) if self.separable else eye,
            B=torch.zeros(R, 0, **kw) if self.separable else eye.clone(),
            d=torch.ones(R, D, **kw), p_sigma=zeros, p_c=zeros.clone(),
            generation=torch.zeros(R, dtype=torch.long, device=self.device),
            eigen_age=torch.zeros(R, dtype=torch.long, device=self.device),
        )

    # -- ask / tell ------------------------------------------------------------------------
    def ask(self, state: CMAState) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._randn(self.replicates, self.constants.weights.shape[1], self.dim)
        y = self._y(state, z)
        return state.mean.unsqueeze(1) + state.sigma.view(-1, 1, 1) * y, z

    def _y(self, state: CMAState, z: torch.Tensor) -> torch.Tensor:
        """y = B diag(d) z for z ``[R, P, D]`` (rows: ``(d * z) B^T``, one ``bmm``)."""
        dz = z * state.d.unsqueeze(1)
        return dz if self.separable else torch.bmm(dz, state.B.transpose(1, 2))

    def valid_members(self, population: torch.Tensor) -> torch.Tensor | None:
        if self.params.restarts == "none":
            return None  # one lambda for every replicate: all members are real
        idx = torch.arange(population.shape[1], device=self.device)
        return idx.unsqueeze(0) < self.constants.popsize.unsqueeze(1)

    def evaluate(self, population: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Each replicate evaluates (and pays for) its own lambda; padded members get loss +inf."""
        lam = self.constants.popsize
        if population.shape[1] == self._lam_min:  # everybody has the same population size
            return super().evaluate(population, active)
        losses = torch.full(population.shape[:2], math.inf, device=self.device, dtype=self.dtype)
        for L in sorted(set(host_list(torch.where(active, lam, 0))) - {0}):  # few distinct sizes (doublings), not replicates
            group = active & (lam == L)
            f = super().evaluate(population[:, :L].contiguous(), group)
            losses[:, :L] = torch.where(group.unsqueeze(1), f, losses[:, :L])
        return losses

    def tell(self, state: CMAState, population: torch.Tensor, losses: torch.Tensor, z: torch.Tensor) -> CMAState:
        k = self.constants
        n = self.dim
        valid = self.valid_members(population)
        ranked = losses if valid is None else torch.where(valid, losses, math.inf)
        ranked = ranked.nan_to_num(nan=math.inf, posinf=math.inf, neginf=-math.inf)  # NaN losses rank last (and mark divergence)
        order = torch.argsort(ranked, dim=1, stable=True)
        z = torch.gather(z, 1, order.unsqueeze(-1).expand(-1, -1, n))
        y = self._y(state, z)
        w = k.weights                                   # [R, P], sorted ranks
        # weighted sums over the population as [R, 1, P] @ [R, P, D] products
        y_w = torch.bmm(k.w_pos.unsqueeze(1), y).squeeze(1)
        z_w = torch.bmm(k.w_pos.unsqueeze(1), z).squeeze(1)      # so C^{-1/2} <y>_w = B <z>_w
        cinv_y_w = z_w if self.separable else torch.bmm(state.B, z_w.unsqueeze(2)).squeeze(2)

        mean = torch.addcmul(state.mean, state.sigma.unsqueeze(1), y_w)
        cs = k.cs
        p_sigma = torch.addcmul(k.cs_keep.unsqueeze(1) * state.p_sigma, k.cs_norm.unsqueeze(1), cinv_y_w)
        ps_norm = p_sigma.norm(dim=1)
        sigma = state.sigma * torch.exp((cs / k.ds) * (ps_norm / self.chi_n - 1.0))
        g1 = (state.generation + 1).to(self.dtype)
        h_sigma = (ps_norm / torch.sqrt(1 - k.cs_keep ** (2 * g1)) < (1.4 + 2.0 / (n + 1)) * self.chi_n).to(self.dtype)
        p_c = torch.addcmul(k.cc_keep.unsqueeze(1) * state.p_c, (h_sigma * k.cc_norm).unsqueeze(1), y_w)

        # negative weights are rescaled by n / ||C^{-1/2} y_i||^2 = n / ||z_i||^2 (keeps C positive definite)
        z_sq = (z * z).sum(dim=2).clamp(min=torch.finfo(self.dtype).tiny)
        w_circ = torch.where(k.w_neg, w * n / z_sq, w)
        # 1 + c_1 delta(h_sigma) - c_1 - c_mu sum w, delta(h) = (1 - h) c_c (2 - c_c)
        decay = k.decay + k.c1 * (1 - h_sigma) * k.cc_delta
        if self.separable:
            C = (decay.unsqueeze(1) * state.C + k.c1.unsqueeze(1) * p_c ** 2
                 + k.cmu.unsqueeze(1) * torch.bmm(w_circ.unsqueeze(1), y * y).squeeze(1))
        else:
            rank_one = p_c.unsqueeze(2) * p_c.unsqueeze(1)
            rank_mu = torch.bmm((y * w_circ.unsqueeze(2)).transpose(1, 2), y)  # sum_i w°_i y_i y_i^T
            C = decay.view(-1, 1, 1) * state.C + k.c1.view(-1, 1, 1) * rank_one + k.cmu.view(-1, 1, 1) * rank_mu
            C = 0.5 * (C + C.transpose(1, 2))  # keep it exactly symmetric against round-off
        new = CMAState(mean=mean, sigma=sigma, C=C, B=state.B, d=state.d, p_sigma=p_sigma, p_c=p_c,
                       generation=state.generation + 1, eigen_age=state.eigen_age + 1)
        return self._decompose(new)

    def _decompose(self, state: CMAState) -> CMAState:
        """Refresh B and d where the eigendecomposition is due (every generation unless ``lazy_eigen``)."""
        tiny = torch.finfo(self.dtype).tiny
        if self.separable:
            state.d = torch.sqrt(state.C.clamp(min=tiny))
            state.eigen_age = torch.zeros_like(state.eigen_age)
            return state
        if self.params.lazy_eigen and not host_bool((self.constants.eigen_gap == 1).all()):
            due = state.eigen_age >= self.constants.eigen_gap
            if not host_bool(due.any()):
                return state
        else:
            due = None  # every replicate, every generation
        C = state.C
        if not host_bool(torch.isfinite(C.sum())):
            # a non-finite C (diverged replicate, never committed) must not stop eigh for the others
            C = torch.where(torch.isfinite(C).all(dim=(1, 2)).view(-1, 1, 1), C,
                            torch.eye(self.dim, device=self.device, dtype=self.dtype))
        with library_sync():  # eigh checks its solver's info on the host: one documented sync
            evals, B = torch.linalg.eigh(C)
        d = torch.sqrt(evals.clamp(min=tiny))
        if due is None:
            state.B, state.d, state.eigen_age = B, d, torch.zeros_like(state.eigen_age)
            return state
        state.B = torch.where(due.view(-1, 1, 1), B, state.B)
        state.d = torch.where(due.unsqueeze(1), d, state.d)
        state.eigen_age = torch.where(due, torch.zeros_like(state.eigen_age), state.eigen_age)
        return state

    def mean(self) -> torch.Tensor:
        """The current run's mean; with restarts, the best point of the earlier runs as long as the current
        run has not evaluated anything as good (a restart starts again from x0 and must not lose the result)."""
        if self.params.restarts == "none":
            return self.state.mean
        behind = self.best_since_restart > self.previous_best_f
        return torch.where(behind.unsqueeze(1), self.previous_best_x, self.state.mean)

    # -- IPOP restarts ---------------------------------------------------------------------
    def _reset_restart_records(self, which: torch.Tensor) -> None:
        """Forget the stopping-criteria records (recent best losses, stagnation) of ``which``."""
        R = self.replicates
        kw = dict(device=self.device, dtype=self.dtype)
        if not hasattr(self, "best_recent"):
            # lambda only grows, so the first window (10 + ceil(30 D / lambda_0)) is the longest
            self.best_recent = torch.full((R, int(self.constants.history.max())), math.inf, **kw)
            self.best_since_restart = torch.full((R,), math.inf, **kw)
            self.since_improvement = torch.zeros(R, dtype=torch.long, device=self.device)
            self.previous_best_f = torch.full((R,), math.inf, **kw)  # best point of the runs before the current one
            self.previous_best_x = self.x0.clone()
        self.previous_best_f = torch.where(which, self.best_f, self.previous_best_f)
        self.previous_best_x = torch.where(which.unsqueeze(1), self.best_x, self.previous_best_x)
        self.best_recent = torch.where(which.unsqueeze(1), math.inf, self.best_recent)
        self.best_since_restart = torch.where(which, math.inf, self.best_since_restart)
        self.since_improvement = torch.where(which, 0, self.since_improvement)

    def after_commit(self, committed: torch.Tensor, losses: torch.Tensor) -> None:
        if self.params.restarts != "ipop":
            return
        valid = self.valid_members(torch.empty(self.replicates, losses.shape[1], 0))
        f_best = torch.where(valid, losses, math.inf).min(dim=1).values
        f_worst = torch.where(valid, losses, -math.inf).max(dim=1).values
        col = (self.state.generation - 1) % self.constants.history  # ring buffer per replicate
        rolled = self.best_recent.scatter(1, col.unsqueeze(1), f_best.unsqueeze(1))
        self.best_recent = torch.where(committed.unsqueeze(1), rolled, self.best_recent)
        improved = committed & (f_best < self.best_since_restart)
        self.best_since_restart = torch.where(improved, f_best, self.best_since_restart)
        self.since_improvement = torch.where(improved, 0, self.since_improvement + committed.long())
        stop = committed & self._should_stop(f_best, f_worst)
        stop &= self.restarts < self.params.max_restarts
        if host_bool(stop.any()):
            self._restart(stop)

    def _should_stop(self, f_best: torch.Tensor, f_worst: torch.Tensor) -> torch.Tensor:
        p, k, s = self.params, self.constants, self.state
        H = self.best_recent.shape[1]
        window = torch.arange(H, device=self.device).unsqueeze(0) < k.history.unsqueeze(1)
        recent_hi = torch.where(window, self.best_recent, -math.inf).max(dim=1).values
        recent_lo = torch.where(window, self.best_recent, math.inf).min(dim=1).values
        full_window = s.generation >= k.history
        tol_fun = full_window & (recent_hi - recent_lo < p.tol_fun) & (f_worst - f_best < p.tol_fun)
        std = s.sigma.unsqueeze(1) * (s.C.clamp(min=0).sqrt() if self.separable else torch.diagonal(s.C, dim1=1, dim2=2).clamp(min=0).sqrt())
        tol_x = torch.maximum(std.max(dim=1).values, s.sigma * s.p_c.abs().max(dim=1).values) < p.tol_x * self.sigma0
        cond = (s.d.max(dim=1).values / s.d.min(dim=1).values) ** 2 > p.max_condition
        no_effect = ((s.mean + 0.2 * std) == s.mean).any(dim=1)
        stagnation = self.since_improvement > k.stagnation
        return tol_fun | tol_x | cond | no_effect | stagnation

    def _restart(self, which: torch.Tensor) -> None:
        """Restart the replicates in ``which`` from x0 with sigma0, C = I and twice their lambda."""
        self.restarts = self.restarts + which.long()
        popsize = torch.where(which, 2 * self.constants.popsize, self.constants.popsize)
        self.constants = self._constants(popsize)
        self.state = commit(which, self.init_state(), self.state)
        self._reset_restart_records(which)

    # -- reporting -------------------------------------------------------------------------
    def metrics(self) -> dict[str, torch.Tensor]:
        d = self.state.d
        out = {"sigma": self.state.sigma, "condition": (d.max(dim=1).values / d.min(dim=1).values) ** 2,
               "popsize": self.constants.popsize.to(self.dtype)}
        if self.params.restarts == "ipop":
            out["restarts"] = self.restarts.to(self.dtype)
        return out


@OPTIMIZERS.register("sep_cmaes", CMAParams,
                     "separable (diagonal) CMA-ES, O(D) per sample, for large D (Ros & Hansen 2008)", family="evolution")
class SepCMAES(CMAES):
    kind = "sep_cmaes"
    separable = True
