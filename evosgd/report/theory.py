"""Theory beside measurement for a noisy quadratic: the stationary error floor of SGD (and of
heavy-ball momentum) under the per-example noise of the analytic landscapes.

Landscape (``evosgd.landscapes.analytic``): ``f(theta) = sum_j lambda_j z_j^2`` with
``z = Q (theta - s)`` (sphere: ``lambda = 1``; ellipsoid: ``lambda_j = kappa^((j-1)/(D-1))``); an
example shifts the optimum by ``xi ~ N(0, sigma^2 I)``.  In the eigenbasis the Hessian is
``h_j = 2 lambda_j`` and one example's gradient is ``h_j (e_j - xi_j)``, so a mini-batch of b
examples adds noise ``zeta_j`` of variance ``sigma^2 h_j^2 / b`` (the rotation Q does not matter:
xi is isotropic).  SGD with heavy-ball momentum beta (torch semantics ``v <- beta v + g``,
``theta <- theta - eta v``) is, per direction, the linear system

    x' = A x + B zeta,   x = (e, v),   A = [[1 - eta h, -eta beta], [h, beta]],   B = (-eta, 1),

whose stationary covariance solves the discrete Lyapunov equation ``S = A S A^T + B B^T sigma^2
h^2 / b`` exactly when ``rho(A) < 1``.  The expected loss error at stationarity is
``E[f - f*] = sum_j lambda_j S_ee,j``; for beta = 0 it is
``sum_j eta sigma^2 lambda_j^2 / (b (1 - eta lambda_j))``, which for small eta is
``eta tr(C) / (4 b)`` with C the per-example gradient covariance ``sigma^2 H^2`` (Mandt, Hoffman
& Blei 2017, sec. 3; Zhang et al. 2019, the noisy quadratic model).  The chain forgets its start
after ``ln(1e4) / (-2 ln rho)`` steps (a 1e-4 residual of the initial squared error); the
measurement averages each replicate's error over its records after that burn-in, and the
replicates (independent) give a Student-t interval.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import scipy.linalg
from scipy import stats

from evosgd.report.document import fmt

PLAIN_SGD_DEFAULTS = {"dampening": 0.0, "nesterov": False, "clip_norm": None, "clip_value": None, "weight_decay": 0.0,
                      "transforms": None, "restarts": "none", "confidence": "off", "adaptive_batch": False,
                      "accumulation_steps": 1, "gradient_noise": False}


def eigenvalues(kind: str, params: dict) -> np.ndarray | None:
    """The curvatures lambda_j of ``f = sum lambda_j z_j^2`` (None: not a quadratic landscape)."""
    d = int(params.get("dim", 10))
    if kind == "sphere":
        return np.ones(d)
    if kind == "ellipsoid":
        kappa = float(params.get("condition", 1e3))
        return np.ones(1) if d == 1 else kappa ** (np.arange(d) / (d - 1))
    return None


def heavy_ball_floor(lam: np.ndarray, sigma: float, lr: float, batch: int, beta: float = 0.0) -> tuple[float, float]:
    """(expected stationary loss error, spectral radius of the slowest direction); the error is
    inf when some direction is unstable (rho >= 1)."""
    total, rho_max = 0.0, 0.0
    for lam_j in np.asarray(lam, dtype=float):
        h = 2.0 * lam_j
        A = np.array([[1.0 - lr * h, -lr * beta], [h, beta]])
        rho = float(np.max(np.abs(np.linalg.eigvals(A))))
        rho_max = max(rho_max, rho)
        if rho >= 1.0:
            return math.inf, rho_max
        B = np.array([[-lr], [1.0]])
        S = scipy.linalg.solve_discrete_lyapunov(A, B @ B.T * (sigma**2 * h**2 / batch))
        total += lam_j * S[0, 0]
    return total, rho_max


def sgd_floor(lam: np.ndarray, sigma: float, lr: float, batch: int) -> float:
    """Closed form for plain SGD: ``sum_j lr sigma^2 lambda_j^2 / (b (1 - lr lambda_j))``."""
    lam = np.asarray(lam, dtype=float)
    return float(np.sum(lr * sigma**2 * lam**2 / (batch * (1.0 - lr * lam))))


def _config(runs: pd.DataFrame, run_id: str) -> dict:
    c = runs.loc[runs["run_id"] == run_id, "config"].iloc[0]
    return json.loads(c) if isinstance(c, str) else dict(c)


def _plain_sgd(cfg: dict) -> tuple[float, int, float] | None:
    """(lr, batch size, momentum) of an SGD config the linear theory covers exactly, else None."""
    if cfg.get("kind") != "sgd":
        return None
    p = cfg.get("params") or {}
    for k, default in PLAIN_SGD_DEFAULTS.items():
        if k in p and p[k] != default:
            return None
    sched = p.get("schedule") or {"kind": "constant"}
    if sched.get("kind") != "constant" or sched.get("warmup_steps", 0):
        return None
    if p.get("lr") is None or p.get("batch_size") is None:
        return None
    return float(p["lr"]), int(p["batch_size"]), float(p.get("momentum") or 0.0)


def noise_floor_rows(runs: pd.DataFrame, group: str = "variant", confidence: float = 0.95) -> pd.DataFrame:
    """Prediction beside measurement for every plain-SGD variant of a noisy quadratic store.

    Columns: ``variant``, ``lr``, ``batch_size``, ``momentum``, ``predicted`` (stationary
    E[f - f*]), ``burn_in_steps``, ``last_step``, ``stationary`` (records after the burn-in),
    ``records`` (per replicate after the burn-in), ``measured`` (mean over replicates of the
    time-averaged error after the burn-in; without such records, of the last record), ``low``,
    ``high`` (Student-t CI over replicates), ``final`` (median final error), ``ratio`` (measured /
    predicted), ``verdict``.  The mean, not the median, is what the theory predicts: a snapshot of
    the error is a weighted sum of chi-square variables, whose median lies well below its mean."""
    rows = []
    if "config" not in runs or "error" not in runs:
        return pd.DataFrame()
    for (variant, run_id), g in runs.groupby([group, "run_id"], sort=False):
        cfg = _config(runs, run_id)
        land = cfg.get("landscape") or {}
        lp = land.get("params") or {}
        lam = eigenvalues(str(land.get("kind")), lp)
        sigma = float(lp.get("noise_std") or 0.0)
        sgd = _plain_sgd(cfg)
        if lam is None or sigma <= 0 or sgd is None or land.get("drift"):
            continue
        lr, b, beta = sgd
        pred, rho = heavy_ball_floor(lam, sigma, lr, b, beta)
        burn = math.inf if rho >= 1 else math.log(1e4) / (-2.0 * math.log(rho))
        last_step = int(g["step"].max())
        ok = g[np.isfinite(g["error"])]
        after = ok[ok["step"] >= burn]
        stationary = after["replicate"].nunique() == g["replicate"].nunique() and len(after) > 0
        if stationary:
            per_rep = after.groupby("replicate")["error"].mean().to_numpy(dtype=float)
        else:  # no record after the burn-in: the last record of each replicate, transient included
            per_rep = ok.sort_values("step").groupby("replicate")["error"].last().to_numpy(dtype=float)
        final = float(np.median(g.sort_values("step").groupby("replicate")["error"].last()))
        row = dict(variant=variant, lr=lr, batch_size=b, momentum=beta, predicted=pred, burn_in_steps=burn,
                   last_step=last_step, stationary=stationary,
                   records=int(after.groupby("replicate").size().min()) if stationary else 0,
                   measured=np.nan, low=np.nan, high=np.nan, final=final, ratio=np.nan)
        caveat = "" if stationary else (f" (the runs end at step {last_step}, before the burn-in of {fmt(burn)} steps: "
                                        "the measurement is the last record, its transient included)")
        if not math.isfinite(pred):
            row["verdict"] = "unstable: the theory predicts divergence at this step size"
        elif per_rep.size >= 2:
            m = float(per_rep.mean())
            half = float(stats.t.ppf(0.5 + confidence / 2, per_rep.size - 1) * per_rep.std(ddof=1) / math.sqrt(per_rep.size))
            row.update(measured=m, low=m - half, high=m + half, ratio=m / pred if pred > 0 else np.nan)
            if m - half <= pred <= m + half:
                row["verdict"] = f"agrees: the prediction lies in the measured {fmt(100 * confidence)}% interval" + caveat
            else:
                side = "above" if m - half > pred else "below"
                row["verdict"] = (f"disagrees: measured {side} the prediction (measured / predicted = "
                                  f"{fmt(row['ratio'])}, the interval excludes it)" + caveat)
        else:
            row["verdict"] = "not measurable: fewer than 2 replicates"
        rows.append(row)
    return pd.DataFrame(rows)


def step_size_rows(runs: pd.DataFrame, group: str = "variant") -> pd.DataFrame:
    """The measured step-size behaviour of every variant that reports ``sigma`` (CMA-ES, CSA-ES):
    median over replicates of the first and last sigma, and their ratio."""
    if "m_sigma" not in runs:
        return pd.DataFrame()
    rows = []
    for variant, g in runs.groupby(group, sort=False):
        s = g[np.isfinite(g["m_sigma"].to_numpy(dtype=float))].sort_values("step")
        if s.empty:
            continue
        first = float(s.groupby("replicate")["m_sigma"].first().median())
        last = float(s.groupby("replicate")["m_sigma"].last().median())
        fin = float(g.sort_values("step").groupby("replicate")["error"].last().median()) if "error" in g else np.nan
        rows.append(dict(variant=variant, sigma_first=first, sigma_last=last,
                         shrink=first / last if last > 0 else np.inf, final_error=fin))
    return pd.DataFrame(rows)
