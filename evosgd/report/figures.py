"""Report figures (matplotlib Agg + seaborn).  Every function draws one figure from tidy tables,
writes ``<name>.svg`` under the figures folder (stored once: the HTML report inlines it, the
Markdown report links it) and returns True when it drew something.

Conventions of every figure: one palette and one order of the optimizer variants per report
(scenario order), so a method looks the same everywhere and legends list it at the same place;
one legend entry per variant, outside the axes (a legend never covers data); small multiples
(a seaborn ``FacetGrid``, one facet per problem) when a study spans several problems, each facet
with its own y scale, logarithmic where its values span decades."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

# text stays text in SVG (smaller files, and about twice as fast to write as glyph paths); a fixed
# hash salt makes the ids of clip paths, and so the files, the same at every build
#: applied at every save, so whatever else changed matplotlib's global settings (a notebook, another
#: library, a test in the same process) the files come out the same
SVG_SETTINGS = {"svg.fonttype": "none", "svg.hashsalt": "evosgd"}
RUN_KEYS = ["run_id", "replicate"]


def palette(variants: Sequence[str]) -> dict[str, tuple]:
    """One colour per variant: seaborn's colour-blind palette, husl beyond 10."""
    n = len(variants)
    cols = sns.color_palette("colorblind", n) if n <= 10 else sns.color_palette("husl", n)
    return dict(zip(variants, cols))


def _save(fig, folder: Path, name: str) -> None:
    # bbox "tight" keeps a legend placed outside the axes inside the file
    buf = io.StringIO()
    with matplotlib.rc_context(SVG_SETTINGS):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    (folder / f"{name}.svg").write_text(compact_svg(buf.getvalue()), encoding="utf-8")


_NUMBER = re.compile(r"(-?\d+\.\d)\d+")
_GEOMETRY = re.compile(r'(\s(?:d|transform|x|y|x1|x2|y1|y2|points|style)=")([^"]*)"')


def compact_svg(text: str) -> str:
    """matplotlib's SVG, about half the size: coordinates to 0.1 pt (a 1/30 mm; matplotlib writes
    6 decimals), one line per path, no metadata block.  Only geometry attributes are touched:
    text (labels, legends) stays exactly as drawn."""
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)

    def attr(m: re.Match) -> str:
        v = _NUMBER.sub(lambda n: n.group(1).rstrip("0").rstrip(".") if n.group(1).endswith("0") else n.group(1),
                        m.group(2))
        return m.group(1) + re.sub(r"\s*\n\s*", " ", v).strip() + '"'

    text = _GEOMETRY.sub(attr, text)
    return re.sub(r">\n\s+<", ">\n<", text)


def legend_outside(ax_or_fig, handles=None, labels=None, title: str | None = None) -> None:
    """The legend to the right of the axes (or of the whole figure), never over the data."""
    kw = dict(fontsize=8, frameon=False, title=title, title_fontsize=8)
    if hasattr(ax_or_fig, "get_axes"):  # a figure: one legend shared by all facets
        ax_or_fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), **kw)
    elif handles is not None:
        ax_or_fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)
    else:
        ax_or_fig.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


def _line_handles(order: Sequence[str], colors: dict, present: set, marker: str | None = None):
    names = [g for g in order if g in present]
    return [Line2D([], [], color=colors.get(g), lw=1.8, marker=marker) for g in names], names


def facet_grid(data: pd.DataFrame, facet: str | None, *, height: float = 3.3, aspect: float = 1.45,
               sharex: bool = True, col_order: Sequence[str] | None = None, wrap: int = 3) -> sns.FacetGrid:
    """A seaborn FacetGrid with one facet per value of ``facet`` (a single panel when None or one
    value), independent y axes."""
    if facet is None or data[facet].nunique() <= 1:
        return sns.FacetGrid(data, height=height * 1.3, aspect=aspect, sharey=False, sharex=sharex)
    order = list(col_order) if col_order is not None else list(dict.fromkeys(data[facet]))
    return sns.FacetGrid(data, col=facet, col_order=order, col_wrap=min(wrap, len(order)), height=height,
                         aspect=aspect, sharey=False, sharex=sharex, despine=False)


def _facets(g: sns.FacetGrid, data: pd.DataFrame, facet: str | None):
    """(axis, sub-table) per facet of ``g``."""
    if facet is None or not g.col_names:
        yield g.axes.flat[0], data
        return
    for ax, name in zip(g.axes.flat, g.col_names):
        yield ax, data[data[facet] == name]


def _titles(g: sns.FacetGrid, facet: str | None) -> None:
    if facet is not None and g.col_names:
        g.set_titles("{col_name}", size=9)


#: values beyond this are not drawn (a float overflow of a diverging run, ~1.8e308, makes matplotlib's
#: axis-limit arithmetic overflow): they are treated like +inf, i.e. listed, not plotted
HUGE = 1e300


def plottable(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return np.isfinite(v) & (np.abs(v) < HUGE)


def _positive(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v[plottable(v) & (v > 0)]


def _want_log(v: np.ndarray, decades: float = 1.5, allow_zero: bool = False) -> bool:
    """Log axis when all finite values are positive and span ``decades``; with ``allow_zero``
    (a cost/time axis starting at 0) zeros are left off the axis rather than forbidding it."""
    p = _positive(v)
    fin = np.asarray(v, dtype=float)
    fin = fin[plottable(fin)]
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
            ry = np.where(np.abs(ry) >= HUGE, np.inf, ry)  # an overflowed value is off the scale
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


def _band_axes(ax, band, x, group, colors, order) -> tuple[set, bool]:
    present, diverges = set(), False
    for gname in [o for o in order if o in set(band[group])]:
        b = band[band[group] == gname]
        c = colors.get(gname)
        med = b["median"].to_numpy()
        ok = np.isfinite(med)
        if not ok.any():
            continue
        present.add(gname)
        ax.plot(b[x].to_numpy()[ok], med[ok], color=c, lw=1.8)
        gone = np.flatnonzero(ok[:-1] & np.isposinf(med[1:]))  # the median run diverges here
        if gone.size:
            diverges = True
            ax.plot(b[x].to_numpy()[gone[0]], med[gone[0]], "x", color=c, ms=9, mew=2)
        lo, hi = b["q25"].to_numpy(), b["q75"].to_numpy()
        okb = np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(b[x].to_numpy()[okb], lo[okb], hi[okb], color=c, alpha=0.2, lw=0)
    return present, diverges


def convergence(runs, x, y, colors, folder, name, *, xlabel, ylabel, group="variant", vlines=None,
                log_x: bool | None = None, points: int = 120, facet: str | None = None,
                order: Sequence[str] | None = None, facet_order: Sequence[str] | None = None) -> bool:
    """Median and IQR band of ``y`` vs ``x`` per group, one facet per value of ``facet``;
    ``log_x`` None = log when the records span more than 2 decades.  Groups without a finite
    value of ``y`` are left out (of the axes and of the legend)."""
    order = list(order) if order is not None else list(dict.fromkeys(runs[group]))
    d = runs[np.isfinite(runs[y].to_numpy(dtype=float)) | runs.get("diverged", pd.Series(False, index=runs.index)).astype(bool)]
    if d.empty:
        return False
    g = facet_grid(d, facet, col_order=facet_order)
    present, diverges = set(), False
    for ax, sub in _facets(g, d, facet):
        band = band_over_replicates(sub, x, y, group=group, points=points, log_x=log_x)
        if band.empty:
            continue
        p, dv = _band_axes(ax, band, x, group, colors, order)
        present |= p
        diverges |= dv
        if _want_log(band["median"].to_numpy()):
            ax.set_yscale("log")
        if log_x if log_x is not None else _want_log(band[x].to_numpy(), 2.0, allow_zero=True):
            ax.set_xscale("log")
        for v in (vlines or [])[:60]:
            ax.axvline(v, color="0.6", lw=0.7, ls="--", zorder=0)
        ax.grid(True, which="major", alpha=0.3)
    if not present:
        plt.close(g.figure)
        return False
    _titles(g, facet)
    g.set_axis_labels(xlabel, ylabel)
    if diverges:
        g.figure.suptitle("x: the median run diverges", fontsize=8, x=0.98, ha="right")
    legend_outside(g.figure, *_line_handles(order, colors, present))
    _save(g.figure, folder, name)
    return True


def runtime_ecdf(ecdf: pd.DataFrame, colors, folder, name, *, n_targets: int, group="variant",
                 order: Sequence[str] | None = None, facet: str | None = None,
                 xlabel: str = "cost (sample-evaluations)", facet_order: Sequence[str] | None = None) -> bool:
    """Step curves of the runtime ECDF per group (the legend in ``order``, the scenario's)."""
    if ecdf.empty:
        return False
    order = list(order) if order is not None else list(dict.fromkeys(ecdf[group]))
    g = facet_grid(ecdf, facet, col_order=facet_order)
    present = set()
    for ax, sub in _facets(g, ecdf, facet):
        for gname in [o for o in order if o in set(sub[group])]:
            e = sub[sub[group] == gname]
            ax.step(e["budget"], e["fraction"], where="post", color=colors.get(gname), lw=1.8)
            present.add(gname)
        if _want_log(ecdf["budget"].to_numpy(), 1.0):
            ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    _titles(g, facet)
    g.set_axis_labels(xlabel, f"fraction of (run, target) pairs\nreached ({n_targets} targets)")
    legend_outside(g.figure, *_line_handles(order, colors, present))
    _save(g.figure, folder, name)
    return True


def ert_per_target(ert: pd.DataFrame, colors, folder, name, *, group="variant", order: Sequence[str] | None = None,
                   facet: str | None = None, facet_order: Sequence[str] | None = None) -> bool:
    fin = ert[np.isfinite(ert["ert"])]
    if fin.empty:
        return False
    order = list(order) if order is not None else list(dict.fromkeys(ert[group]))
    g = facet_grid(ert, facet, col_order=facet_order)
    present = set()
    for ax, sub in _facets(g, ert, facet):
        for gname in [o for o in order if o in set(sub[group])]:
            e = sub[sub[group] == gname]
            ok = plottable(e["ert"].to_numpy(dtype=float))
            if ok.any():
                ax.plot(e["target"][ok], e["ert"][ok], "o-", color=colors.get(gname), lw=1.5, ms=5)
                present.add(gname)
        ax.set_xscale("log")
        f = sub[np.isfinite(sub["ert"])]
        if _want_log(f["ert"].to_numpy(), 1.0):
            ax.set_yscale("log")
        if not ax.xaxis_inverted():
            ax.invert_xaxis()  # harder targets to the right
        ax.grid(True, alpha=0.3)
    _titles(g, facet)
    g.set_axis_labels("target (loss error), harder to the right", "ERT (cost)")
    legend_outside(g.figure, *_line_handles(order, colors, present, marker="o"))
    _save(g.figure, folder, name)
    return True


def _boxes(ax, d: pd.DataFrame, order: Sequence[str], colors, group: str, value: str, seed: int = 0) -> None:
    """Box (quartiles, whiskers to 1.5 IQR, no fliers) and the points of every group, at
    positions 0..n-1 in ``order`` (matplotlib's own boxplot: seaborn's box path uses an argument
    that matplotlib 3.13 removes)."""
    rng = np.random.default_rng(seed)  # the jitter of the points is the same at every build
    for i, gname in enumerate(order):
        v = d.loc[d[group] == gname, value].to_numpy(dtype=float)
        v = v[plottable(v)]
        if v.size == 0:
            continue
        c = colors.get(gname)
        bp = ax.boxplot([v], positions=[i], widths=0.55, showfliers=False, patch_artist=True,
                        orientation="vertical", manage_ticks=False)
        for patch in bp["boxes"]:
            patch.set(facecolor=c, alpha=0.45, edgecolor="0.25")
        for part in ("medians", "whiskers", "caps"):
            for ln in bp[part]:
                ln.set(color="0.25")
        ax.scatter(i + rng.uniform(-0.15, 0.15, v.size), v, s=14, color=c, zorder=3, lw=0)


def final_quality(finals: pd.DataFrame, colors, folder, name, *, ylabel, order, group="variant",
                  facet: str | None = None, facet_order: Sequence[str] | None = None) -> bool:
    fin = finals[np.isfinite(finals["value"])]
    if fin.empty:
        return False
    order = [o for o in order if o in set(finals[group])]
    width = max(5.0, 0.55 * len(order) + 2) / (1.3 if facet is None or finals[facet].nunique() <= 1 else 1.0)
    g = facet_grid(finals, facet, aspect=width / 3.3, col_order=facet_order)
    for ax, sub in _facets(g, finals, facet):
        f = sub[np.isfinite(sub["value"])]
        _boxes(ax, f, order, colors, group, "value")
        if _want_log(f["value"].to_numpy()):
            ax.set_yscale("log")
        div = sub.groupby(group)["diverged"].sum()
        ticks = [f"{o}\n({int(div.get(o, 0))} diverged)" if div.get(o, 0) else o for o in order]
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(ticks, rotation=30 if len(order) > 4 else 0, ha="right" if len(order) > 4 else "center",
                           fontsize=8)
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.grid(True, axis="y", alpha=0.3)
    _titles(g, facet)
    g.set_axis_labels("", ylabel)
    _save(g.figure, folder, name)
    return True


def fixed_budget(values: pd.DataFrame, colors, folder, name, *, ylabel, order, group="variant",
                 facet: str | None = None, facet_order: Sequence[str] | None = None) -> bool:
    """Distribution of the quality reached at each budget (columns: group, ``budget``,
    ``value``): one panel per budget (and problem), a box per variant."""
    fin = values[np.isfinite(values["value"])]
    if fin.empty:
        return False
    order = [o for o in order if o in set(values[group])]
    d = values.copy()
    if facet is not None and facet_order is not None:
        d = d.sort_values(facet, key=lambda c: c.map({p: i for i, p in enumerate(facet_order)}), kind="stable")
    d = d.sort_values("budget", kind="stable") if facet is None else d
    d["at"] = ["budget " + _num(b) for b in d["budget"]]
    if facet is not None and d[facet].nunique() > 1:
        d["at"] = d[facet].astype(str) + ", " + d["at"]
    cols = list(dict.fromkeys(d["at"]))
    wrap = d["budget"].nunique()
    g = sns.FacetGrid(d, col="at", col_order=cols, col_wrap=min(wrap, len(cols)), height=3.0,
                      aspect=max(1.0, 0.35 * len(order) + 0.5), sharey=False, despine=False)
    for ax, colname in zip(g.axes.flat, g.col_names):
        sub = d[d["at"] == colname]
        f = sub[np.isfinite(sub["value"])]
        _boxes(ax, f, order, colors, group, "value")
        if _want_log(f["value"].to_numpy()):
            ax.set_yscale("log")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(order, rotation=30 if len(order) > 2 else 0, ha="right" if len(order) > 2 else "center",
                           fontsize=8)
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.grid(True, axis="y", alpha=0.3)
    g.set_titles("{col_name}", size=9)
    g.set_axis_labels("", ylabel)
    _save(g.figure, folder, name)
    return True


def _num(v: float) -> str:
    from evosgd.report.document import fmt

    return fmt(float(v))


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
            ok = plottable(v)
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
            ok = plottable(px) & plottable(py)
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
    seen: dict[str, object] = {}  # one shared legend outside the panels: every entry once
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    legend_outside(fig, list(seen.values()), list(seen.keys()))
    if not drew:
        plt.close(fig)
        return False
    _save(fig, folder, name)
    return True


def staleness_hist(runs: pd.DataFrame, col: str, colors, folder, name, *, group="variant", xlabel: str | None = None) -> bool:
    d = runs[[group, col]].dropna()
    d = d[np.isfinite(d[col])]
    if d.empty:
        return False
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for g, t in d.groupby(group, sort=False):
        ax.hist(t[col], bins=min(40, max(5, t[col].nunique())), color=colors.get(g), alpha=0.5, label=g,
                density=True, histtype="stepfilled")
    ax.set_xlabel(xlabel or col.removeprefix("m_"))
    ax.set_ylabel("density over records")
    legend_outside(ax)
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
        m = np.where(plottable(m), m, np.nan)
        lo = t["measured_low"].to_numpy(dtype=float)
        hi = t["measured_high"].to_numpy(dtype=float)
        yerr = np.vstack([np.where(plottable(lo), m - lo, 0), np.where(plottable(hi), hi - m, 0)])
        lab = s or "measured"
        ax.errorbar(x, m, yerr=np.abs(yerr), fmt="o", color=c, ms=5, capsize=3,
                    label=f"{lab} (measured)" if s else "measured")
        p = t["predicted"].to_numpy(dtype=float)
        p = np.where(plottable(p), p, np.nan)
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
    legend_outside(ax)
    _save(fig, folder, name)
    return True
