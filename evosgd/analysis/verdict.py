"""Verdicts: one computed line per claim -- supported, not supported, or supported only with a
stated correction -- from a measurement, its confidence interval and the theory's prediction.

Nothing here is written by hand: every verdict is a pure function of numbers.  Three judges:

* :func:`judge_value` -- one measurement ``m`` with interval ``[lo, hi]`` against a prediction
  ``p``: supported when ``p`` lies in the interval widened by a stated relative tolerance
  (``lo - tol |p| <= p <= hi + tol |p|``; the tolerance is the claim's "up to x%", 0 by default);
  else, when a ``corrected`` prediction (e.g. Lande's equation with the finite-population factor)
  lies in it, "supported only with <correction>"; else not supported.
* :func:`judge_coverage` -- a prediction against measurements at n settings, each with its own
  ``confidence`` interval.  If the theory is exact and the intervals are nominal, the number of
  misses is ~ Binomial(n, 1 - confidence) (independent settings), so the claim is rejected when
  ``P(Bin(n, 1 - confidence) >= misses) < alpha`` (alpha = 0.05 by default, the usual level; with 95%
  intervals one miss in up to 7 settings passes, two in 4 do not): a few misses are the intervals' own
  error rate, many are the theory's.  The same test on a corrected prediction gives
  the "with correction" verdict.
* :func:`judge_test` -- a claim that a null hypothesis holds (normality): supported when the named
  test does not reject it at alpha, not supported when it does.
* :func:`judge_direction` -- a directional claim ("smaller batches wait less"): an effect with its
  interval is supported when the interval lies strictly on the claimed side of 0, contradicted
  when it lies strictly on the other side, and not supported ("no effect distinguishable from 0")
  when it contains 0.

A verdict travels as a row of the analysis' ``verdicts`` table (:func:`verdict_table`); the report
prints :func:`verdict_lines` in the findings and at the head of the analysis section.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
WITH_CORRECTION = "supported only with a correction"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, WITH_CORRECTION)
VERDICT_COLUMNS = ["claim", "verdict", "evidence", "measured", "measured_low", "measured_high", "predicted",
                   "correction"]


def _g(x: float) -> str:
    """Three significant digits (the report's format, without importing the report layer)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


@dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str
    evidence: str
    measured: float = math.nan
    measured_low: float = math.nan
    measured_high: float = math.nan
    predicted: float = math.nan
    correction: str = ""

    def line(self) -> str:
        v = self.verdict.upper() if self.verdict != WITH_CORRECTION else f"SUPPORTED ONLY WITH {self.correction}"
        return f"Verdict -- {self.claim}: {v} ({self.evidence})."


def inside(low: float, high: float, value: float, rel_tol: float = 0.0) -> bool:
    """``low - tol |value| <= value <= high + tol |value|`` (False when anything is NaN)."""
    if any(not np.isfinite(x) for x in (low, high, value)):
        return False
    slack = rel_tol * abs(value)
    return bool(low - slack <= value <= high + slack)


def judge_value(claim: str, measured: float, low: float, high: float, predicted: float, *, rel_tol: float = 0.0,
                corrected: float | None = None, correction: str = "", confidence: float = 0.95, unit: str = "") -> Verdict:
    """One measurement against one prediction (and optionally a corrected prediction)."""
    u = f" {unit}" if unit else ""
    tol = f" widened by {_g(100 * rel_tol)}%" if rel_tol > 0 else ""
    base = f"measured {_g(measured)}{u}, {confidence:.0%} CI [{_g(low)}, {_g(high)}]{tol}; predicted {_g(predicted)}"
    kw = dict(measured=float(measured), measured_low=float(low), measured_high=float(high), predicted=float(predicted))
    if inside(low, high, predicted, rel_tol):
        return Verdict(claim, SUPPORTED, base + " inside", **kw)
    if corrected is not None and inside(low, high, corrected, rel_tol):
        return Verdict(claim, WITH_CORRECTION, base + f" outside; with {correction}: {_g(corrected)} inside",
                       correction=correction, **kw)
    extra = f"; with {correction}: {_g(corrected)}, also outside" if corrected is not None else ""
    return Verdict(claim, NOT_SUPPORTED, base + " outside" + extra, **kw)


def coverage_pvalue(misses: int, n: int, confidence: float = 0.95) -> float:
    """``P(Bin(n, 1 - confidence) >= misses)``: how surprising ``misses`` intervals out of n that miss
    an exact prediction are."""
    if misses <= 0:
        return 1.0
    return float(stats.binom.sf(misses - 1, n, 1.0 - confidence))


def judge_coverage(claim: str, low: Sequence[float], high: Sequence[float], predicted: Sequence[float], *,
                   measured: Sequence[float] | None = None, corrected: Sequence[float] | None = None, correction: str = "",
                   confidence: float = 0.95, alpha: float = 0.05, rel_tol: float = 0.0, what: str = "settings") -> Verdict:
    """A prediction against n measurements with their intervals (binomial test of the misses)."""
    lo, hi, pr = (np.asarray(x, dtype=float) for x in (low, high, predicted))
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(pr)
    n = int(ok.sum())
    tol = f" (widened by {_g(100 * rel_tol)}%)" if rel_tol > 0 else ""
    if n == 0:
        return Verdict(claim, NOT_SUPPORTED, f"no {what} with both a measured interval and a prediction")
    hit = np.array([inside(a, b, c, rel_tol) for a, b, c in zip(lo[ok], hi[ok], pr[ok])])
    misses = int(n - hit.sum())
    p = coverage_pvalue(misses, n, confidence)
    m = np.asarray(measured, dtype=float)[ok] if measured is not None else (lo[ok] + hi[ok]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):  # a prediction of 0: no ratio (NaN, left out below)
        ratio = m / pr[ok]
    rng = f"measured/predicted {_g(float(np.nanmin(ratio)))}..{_g(float(np.nanmax(ratio)))}" if np.isfinite(ratio).any() else ""
    base = (f"prediction inside the {confidence:.0%} CI{tol} at {n - misses} of {n} {what}; "
            f"P(>= {misses} misses | exact theory) = {_g(p)}" + (f"; {rng}" if rng else ""))
    kw = dict(measured=float(np.nanmedian(m)), predicted=float(np.nanmedian(pr[ok])))
    if p >= alpha:
        return Verdict(claim, SUPPORTED, base, **kw)
    if corrected is not None:
        cr = np.asarray(corrected, dtype=float)[ok]
        chit = np.array([inside(a, b, c, rel_tol) for a, b, c in zip(lo[ok], hi[ok], cr)])
        cm = int(n - chit.sum())
        cp = coverage_pvalue(cm, n, confidence)
        if cp >= alpha and np.isfinite(cr).all():
            return Verdict(claim, WITH_CORRECTION, base + f"; with {correction}: inside at {n - cm} of {n} "
                           f"(P = {_g(cp)})", correction=correction, **kw)
        base += f"; with {correction}: inside at {n - cm} of {n} (P = {_g(cp)})"
    return Verdict(claim, NOT_SUPPORTED, base, **kw)


def judge_direction(claim: str, effect: float, low: float, high: float, *, expected: str = "positive",
                    what: str = "effect", confidence: float = 0.95, unit: str = "") -> Verdict:
    """A directional claim: ``expected`` is "positive" or "negative" (the sign the claim says the
    effect has)."""
    if expected not in ("positive", "negative"):
        raise ValueError(f"expected must be 'positive' or 'negative', not {expected!r}")
    sign = 1.0 if expected == "positive" else -1.0
    u = f" {unit}" if unit else ""
    base = f"{what} {_g(effect)}{u}, {confidence:.0%} CI [{_g(low)}, {_g(high)}]; the claim needs it {expected}"
    kw = dict(measured=float(effect), measured_low=float(low), measured_high=float(high), predicted=math.nan)
    if not (np.isfinite(low) and np.isfinite(high)):
        return Verdict(claim, NOT_SUPPORTED, base + ": no interval", **kw)
    if sign * low > 0 and sign * high > 0:
        return Verdict(claim, SUPPORTED, base, **kw)
    if sign * low < 0 and sign * high < 0:
        return Verdict(claim, NOT_SUPPORTED, base + ": the measurement shows the opposite", **kw)
    return Verdict(claim, NOT_SUPPORTED, base + ": no effect distinguishable from 0", **kw)


def judge_test(claim: str, pvalue: float, *, test: str, alpha: float = 0.05) -> Verdict:
    """A claim that a null hypothesis holds (e.g. "the mini-batch mean is Gaussian"): supported when the
    named test does not reject it at ``alpha`` (absence of evidence against the claim, at the test's
    power), not supported when it does."""
    if not np.isfinite(pvalue):
        return Verdict(claim, NOT_SUPPORTED, f"{test}: no p-value")
    if pvalue >= alpha:
        return Verdict(claim, SUPPORTED, f"{test} p = {_g(pvalue)} >= {_g(alpha)}: not rejected", measured=float(pvalue))
    return Verdict(claim, NOT_SUPPORTED, f"{test} p = {_g(pvalue)} < {_g(alpha)}: rejected", measured=float(pvalue))


def verdict_table(verdicts: Iterable[Verdict]) -> pd.DataFrame:
    """The ``verdicts`` table an analysis returns (one row per claim)."""
    return pd.DataFrame([asdict(v) for v in verdicts], columns=VERDICT_COLUMNS)


def verdict_lines(table: pd.DataFrame | None) -> list[str]:
    """The one-line verdicts of a ``verdicts`` table, in its order."""
    if table is None or len(table) == 0:
        return []
    out = []
    for r in table.itertuples(index=False):
        v = Verdict(**{c: getattr(r, c) for c in VERDICT_COLUMNS})
        out.append(v.line())
    return out


def paired_log_ratio(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Geometric-mean ratio ``a / b`` over paired replicates with its Student-t interval (computed on
    ``log a - log b``, iid over replicates)."""
    d = np.log(np.asarray(a, dtype=float)) - np.log(np.asarray(b, dtype=float))
    d = d[np.isfinite(d)]
    if d.size < 2:
        return math.nan, math.nan, math.nan
    m, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))
    q = float(stats.t.ppf(0.5 + confidence / 2, d.size - 1))
    return math.exp(m), math.exp(m - q * se), math.exp(m + q * se)


def slope_ci(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Least-squares slope of y on x with its t interval (scipy.stats.linregress' standard error)."""
    r = stats.linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    q = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 2)) if len(x) > 2 else math.nan
    return float(r.slope), float(r.slope - q * r.stderr), float(r.slope + q * r.stderr)


__all__ = ["NOT_SUPPORTED", "SUPPORTED", "VERDICTS", "VERDICT_COLUMNS", "WITH_CORRECTION", "Verdict", "coverage_pvalue",
           "inside", "judge_coverage", "judge_direction", "judge_test", "judge_value", "paired_log_ratio", "slope_ci", "verdict_lines",
           "verdict_table"]
