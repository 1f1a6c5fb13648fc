"""Report figures (matplotlib Agg + seaborn).  Every function draws one figure from tidy tables,
writes ``<name>.png`` and ``<name>.svg`` under the figures folder and returns True when it drew
something.  Colours come from one palette mapping each optimizer variant to a colour, so a
method looks the same in every figure of a report."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

DPI = 100
# text stays text in SVG (smaller files, and about twice as fast to write as glyph paths)
matplotlib.rcParams["svg.fonttype"] = "none"
RUN_KEYS = ["run_id", "replicate"]


def palette(variants: Sequence[str]) -> dict[str, tuple]:
    """One colour per variant: seaborn's colour-blind palette, husl beyond 10."""
    n = len(variants)
    cols = sns.color_palette("colorblind", n) if n <= 10 else sns.color_palette("husl", n)
    return dict(zip(variants, cols))


def _save(fig, folder: Path, name: str) -> None:
    # the layout is computed once here (not by bbox_inches="tight" at each save: a full extra draw)
    fig.set_layout_engine("tight")
    fig.savefig(folder / f"{name}.png", dpi=DPI)
    fig.set_layout_engine("none")
    fig.savefig(folder / f"{name}.svg")
    plt.close(fig)


def _positive(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v[np.isfinite(v) & (v > 0)]


def _want_log(v: np.ndarray, decades: float = 1.5, allow_zero: bool = False) -> bool:
    """Log axis when all finite values are positive and span ``decades``; with ``allow_zero``
    (a cost/time axis starting at 0) zeros are left off the axis rather than forbidding it."""
    p = _positive(v)
    fin = np.asarray(v, dtype=float)
    fin = fin[np.isfinite(fin)]
    if allow_zero:
        fin = fin[fin != 0]
    return p.size > 1 and p.size == fin.size and np.log10(p.max() / p.min()) >= decades


def band_over_replicates(
    runs: pd.DataFrame, x: str, y: str, *, group: str = "variant", points: int = 120, log_x: bool | None = None
) -> pd.DataFrame:
    """Median and quartiles of ``y`` over runs on a common ``x`` grid, per group.

    Each run is a left step function of its records (the value of the last record at or before
    the grid point), so runs recorded at different costs line up.  Quantiles use the nearest
    order statistic, so +inf (a diverged run) is carried without inf-minus-inf arithmetic.
    Columns: group, x, median, q25, q75, n (runs with a record at or before x).
    """
    xs = runs[x].to_numpy(dtype=float)
    xs = xs[np.isfinite(xs)]
    if xs.size == 0:
        return pd.DataFrame(columns=[group, x, "median", "q25", "q75", "n"])
    pos = xs[xs > 0]
    if (log_x if log_x is not None else _want_log(xs, 2.0, allow_zero=True)) and pos.size:
        grid = np.logspace(np.log10(pos.min()), np.log10(xs.max()), points)
    else:
        grid = np.linspace(xs.min(), xs.max(), points)
    out = []
    for g, sub in runs.groupby(group, sort=False):
        mats = []
        for _, r in sub.sort_values(x).groupby(RUN_KEYS, sort=False):
            rx = r[x].to_numpy(dtype=float)
            ry = r[y].to_numpy(dtype=float)
            if "diverged" in r and r["diverged"].any():  # from divergence on, the run is at +inf
                ry = np.where(r["diverged"].to_numpy(dtype=bool) | np.isnan(ry), np.inf, ry)
            idx = np.searchsorted(rx, grid, side="right") - 1
            mats.append(np.where(idx >= 0, ry[np.clip(idx, 0, None)], np.nan))
        m = np.vstack(mats)
        with np.errstate(all="ignore"):
            n = np.sum(~np.isnan(m), axis=0)
            keep = n > 0
            q = np.full((3, grid.size), np.nan)
            if keep.any():
                q[:, keep] = np.nanquantile(m[:, keep], [0.5, 0.25, 0.75], axis=0, method="nearest")
        out.append(pd.DataFrame({group: g, x: grid, "median": q[0], "q25": q[1], "q75": q[2], "n": n}))
    return pd.concat(out, ignore_index=True)


def convergence(runs, x, y, colors, folder, name, *, xlabel, ylabel, group="variant", vlines=None,
                log_x: bool | None = None, points: int = 120) -> bool:
    """Median and IQR band of ``y`` vs ``x`` per group; ``log_x`` None = log when the records
    span more than 2 decades."""
    band = band_over_replicates(runs, x, y, group=group, points=points, log_x=log_x)
    if band.empty or not np.isfinite(band["median"]).any():
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    diverges = False
    for g, b in band.groupby(group, sort=False):
        c = colors.get(g)
        med = b["median"].to_numpy()
        ok = np.isfinite(med)
        ax.plot(b[x][ok], med[ok], color=c, label=g, lw=1.8)
        gone = np.flatnonzero(ok[:-1] & np.isposinf(med[1:]))  # the median run diverges here
        if gone.size:
            diverges = True
            ax.plot(b[x].to_numpy()[gone[0]], med[gone[0]], "x", color=c, ms=9, mew=2)
        lo, hi = b["q25"].to_numpy(), b["q75"].to_numpy()
        okb = np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(b[x][okb], lo[okb], hi[okb], color=c, alpha=0.2, lw=0)
    if _want_log(band["median"].to_numpy()):
        ax.set_yscale("log")
    if log_x if log_x is not None else _want_log(band[x].to_numpy(), 2.0, allow_zero=True):
        ax.set_xscale("log")
    for v in (vlines or [])[:60]:
        ax.axvline(v, color="0.6", lw=0.7, ls="--", zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("x: the median run diverges" if diverges else "", fontsize=8, loc="right")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best", frameon=False)
    _save(fig, folder, name)
    return True


def runtime_ecdf(ecdf: pd.DataFrame, colors, folder, name, *, n_targets: int, group="variant") -> bool:
    if ecdf.empty:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    for g, e in ecdf.groupby(group, sort=False):
        ax.step(e["budget"], e["fraction"], where="post", color=colors.get(g), label=g, lw=1.8)
    if _want_log(ecdf["budget"].to_numpy(), 1.0):
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("cost (sample-evaluations)")
    ax.set_ylabel(f"fraction of (run, target) pairs\nreached ({n_targets} targets)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", frameon=False)
    _save(fig, folder, name)
    return True


def ert_per_target(ert: pd.DataFrame, colors, folder, name, *, group="variant") -> bool:
    fin = ert[np.isfinite(ert["ert"])]
    if fin.empty:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    for g, e in ert.groupby(group, sort=False):
        ok = np.isfinite(e["ert"])
        ax.plot(e["target"][ok], e["ert"][ok], "o-", color=colors.get(g), label=g, lw=1.5, ms=5)
    ax.set_xscale("log")
    if _want_log(fin["ert"].to_numpy(), 1.0):
        ax.set_yscale("log")
    ax.invert_xaxis()  # harder targets to the right
    ax.set_xlabel("target (loss error), harder to the right")
    ax.set_ylabel("ERT (cost)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", frameon=False)
    _save(fig, folder, name)
    return True


def final_quality(finals: pd.DataFrame, colors, folder, name, *, ylabel, order, group="variant") -> bool:
    fin = finals[np.isfinite(finals["value"])]
    if fin.empty:
        return False
    div = finals.groupby(group)["diverged"].sum()
    ticks = [f"{g}\n({int(div.get(g, 0))} diverged)" if div.get(g, 0) else g for g in order]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(order) + 2), 4.3))
    pal = {g: colors[g] for g in order}
    sns.boxplot(data=fin, x=group, y="value", hue=group, order=order, palette=pal, ax=ax,
                showfliers=False, width=0.55, legend=False, boxprops=dict(alpha=0.45))
    sns.stripplot(data=fin, x=group, y="value", hue=group, order=order, palette=pal, ax=ax,
                  size=4, jitter=0.15, legend=False)
    if _want_log(fin["value"].to_numpy()):
        ax.set_yscale("log")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(ticks, rotation=20 if len(order) > 4 else 0, ha="right" if len(order) > 4 else "center", fontsize=8)
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, folder, name)
    return True


def sweep(table: pd.DataFrame, x: str, ys: list[tuple[str, str]], line: str, colors_by_label, label_of,
          folder, name, *, xlabel, overlays: dict[str, list[dict]] | None = None) -> bool:
    """One panel per (column, y label) in ``ys``: median over runs of the column vs the swept
    value, one line per ``line`` group.  ``overlays`` maps a column to predicted curves drawn on
    its panel, each a dict with ``label``, ``x``, ``y`` (and optional ``low``/``high`` band and
    ``color``): a dashed line (and a light band), in the colour of the optimizer it predicts."""
    if table.empty:
        return False
    overlays = overlays or {}
    fig, axes = plt.subplots(1, len(ys), figsize=(5.2 * len(ys), 4.0), squeeze=False)
    numeric = pd.api.types.is_numeric_dtype(table[x])
    drew = False
    for ax, (col, ylab) in zip(axes[0], ys):
        for g, t in table.groupby(line, sort=False):
            t = t.sort_values(x)
            v = t[col].to_numpy(dtype=float)
            ok = np.isfinite(v)
            if not ok.any():
                continue
            xv = t[x].to_numpy()[ok] if numeric else t[x].astype(str).to_numpy()[ok]
            ax.plot(xv, v[ok], "o-", color=colors_by_label.get(label_of.get(g, g)), label=g, lw=1.5, ms=5)
            drew = True
        predicted = []
        for ov in (overlays.get(col, []) if numeric else []):
            px, py = np.asarray(ov["x"], dtype=float), np.asarray(ov["y"], dtype=float)
            o = np.argsort(px)
            px, py = px[o], py[o]
            ok = np.isfinite(px) & np.isfinite(py)
            if not ok.any():
                continue
            ax.plot(px[ok], py[ok], "--", color=ov.get("color", "0.25"), lw=1.6, label=ov["label"],
                    marker="_" if ok.sum() < 2 else None, ms=22, mew=2)
            predicted.append(py[ok])
            if ov.get("low") is not None and ov.get("high") is not None:
                lo, hi = np.asarray(ov["low"], dtype=float)[o], np.asarray(ov["high"], dtype=float)[o]
                okb = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(px)
                if okb.any():
                    ax.fill_between(px[okb], lo[okb], hi[okb], color=ov.get("color", "0.25"), alpha=0.12, lw=0)
        if numeric and _want_log(table[x].to_numpy(dtype=float), 1.0):
            ax.set_xscale("log")
        if _want_log(np.concatenate([table[col].to_numpy(dtype=float), *predicted]), 1.0):
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylab)
        ax.grid(True, alpha=0.3)
        if predicted and ax is not axes[0][0]:
            ax.legend(fontsize=8, loc="best", frameon=False)
    axes[0][0].legend(fontsize=8, loc="best", frameon=False)
    if not drew:
        plt.close(fig)
        return False
    _save(fig, folder, name)
    return True


def staleness_hist(runs: pd.DataFrame, col: str, colors, folder, name, *, group="variant") -> bool:
    d = runs[[group, col]].dropna()
    d = d[np.isfinite(d[col])]
    if d.empty:
        return False
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for g, t in d.groupby(group, sort=False):
        ax.hist(t[col], bins=min(40, max(5, t[col].nunique())), color=colors.get(g), alpha=0.5, label=g,
                density=True, histtype="stepfilled")
    ax.set_xlabel(col[2:] if col.startswith("m_") else col)
    ax.set_ylabel("density over records")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(True, alpha=0.3)
    _save(fig, folder, name)
    return True


def analysis_quantity(comp: pd.DataFrame, folder, name, *, title: str) -> bool:
    """Measured points with CI error bars vs the predicted line (and band), per series."""
    if comp.empty:
        return False
    fig, ax = plt.subplots(figsize=(7.0, 4.3))
    series = list(dict.fromkeys(comp["series"].fillna("")))
    cols = sns.color_palette("colorblind", max(1, len(series)))
    for c, s in zip(cols, series):
        t = comp[comp["series"].fillna("") == s].sort_values("x")
        x = t["x"].to_numpy(dtype=float)
        m = t["measured"].to_numpy(dtype=float)
        lo = t["measured_low"].to_numpy(dtype=float)
        hi = t["measured_high"].to_numpy(dtype=float)
        yerr = np.vstack([np.where(np.isfinite(lo), m - lo, 0), np.where(np.isfinite(hi), hi - m, 0)])
        lab = s or "measured"
        ax.errorbar(x, m, yerr=np.abs(yerr), fmt="o", color=c, ms=5, capsize=3,
                    label=f"{lab} (measured)" if s else "measured")
        p = t["predicted"].to_numpy(dtype=float)
        if np.isfinite(p).any():
            # a lone prediction is a short horizontal bar (a one-point line would be invisible)
            ax.plot(x, p, "-", color=c, lw=1.5, marker="_" if np.isfinite(p).sum() < 2 else None, ms=22, mew=2,
                    label=f"{lab} (predicted)" if s else "predicted")
        pl, ph = t["predicted_low"].to_numpy(dtype=float), t["predicted_high"].to_numpy(dtype=float)
        okb = np.isfinite(pl) & np.isfinite(ph)
        if okb.any():
            ax.fill_between(x[okb], pl[okb], ph[okb], color=c, alpha=0.15, lw=0)
    if bool(comp["log_x"].fillna(False).astype(bool).any()):
        ax.set_xscale("log")
    if bool(comp["log_y"].fillna(False).astype(bool).any()):
        ax.set_yscale("log")
    unit = str(comp["unit"].fillna("").iloc[0])
    ax.set_xlabel(str(comp["x_name"].iloc[0]))
    ax.set_ylabel(title + (f" [{unit}]" if unit else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    _save(fig, folder, name)
    return True
