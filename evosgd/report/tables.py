"""Display forms of the report's tables (numbers formatted with ``fmt``, rows in the scenario's
optimizer order)."""

from __future__ import annotations

import pandas as pd

from evosgd.report.document import fmt, fmt_p
from evosgd.report.problems import G, P


def in_order(df: pd.DataFrame, order: list[str], first: str | None = None) -> pd.DataFrame:
    """Rows in the scenario's optimizer order (after ``first`` descending, e.g. easy targets first)."""
    key = df[G].map({v: i for i, v in enumerate(order)})
    cols = ([first] if first else []) + ["_order"]
    return (df.assign(_order=key).sort_values(cols, ascending=[False] * bool(first) + [True], kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def with_problem(raw: pd.DataFrame, display: pd.DataFrame) -> pd.DataFrame:
    """The problem as the first column when the table spans problems."""
    if P in raw.columns:
        display = display.copy()
        display.insert(0, "problem", raw[P].to_numpy())
    return display


def display_quality(summary: pd.DataFrame) -> pd.DataFrame:
    return with_problem(summary, pd.DataFrame({
        "optimizer": summary[G],
        "runs": summary["runs"].astype(int),
        "diverged": summary["diverged"].astype(int),
        "median": summary["median"].map(fmt),
        "IQR": [f"[{fmt(a)}, {fmt(b)}]" for a, b in zip(summary["q25"], summary["q75"])],
        "best": summary["best"].map(fmt),
        "worst": summary["worst"].map(fmt),
    }))


def display_ert(ert: pd.DataFrame) -> pd.DataFrame:
    return with_problem(ert, pd.DataFrame({
        "optimizer": ert[G],
        "target": ert["target"].map(fmt),
        "successes": [f"{int(s)}/{int(n)}" for s, n in zip(ert["successes"], ert["runs"])],
        "success rate": ert["success_rate"].map(lambda v: fmt(100 * v) + "%"),
        "median runtime of the successful runs": ert["median_runtime"].map(fmt),
        "ERT": ert["ert"].map(fmt),
    }))


def display_tests(t: pd.DataFrame, failures: str = "") -> pd.DataFrame:
    """``failures``: how the medians count a failed run, e.g. ``"failures = inf"``."""
    m = f" ({failures})" if failures else ""
    d = pd.DataFrame({
        "optimizer 1": t["a"], "optimizer 2": t["b"], "test": t["test"], "n": t["n"].astype(int),
        f"median 1{m}": t["median_a"].map(fmt), f"median 2{m}": t["median_b"].map(fmt),
        "p": t["p"].map(fmt_p), "p (Holm)": t["p_holm"].map(fmt_p),
        "better": t["better"], "effect A": t["A"].map(fmt),
    })
    if "target" in t.columns:
        d.insert(0, "target", t["target"].map(fmt))
    return with_problem(t, d)


def display_rank(rank: pd.DataFrame) -> pd.DataFrame:
    return with_problem(rank, pd.DataFrame({"rank": rank["rank"], "optimizer": rank[G],
                                            "mean rank": rank["mean_rank"].map(fmt),
                                            "median": rank["median"].map(fmt), "runs": rank["runs"]}))


def display_generic(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(lambda col: col.map(fmt) if col.dtype != object else col.astype(str))


def slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(s)).strip("_")[:60] or "x"




def display_problems(pt: pd.DataFrame) -> pd.DataFrame:
    """One row per problem: its landscape fields, and per optimizer the settings it uses there."""
    rows = []
    land = [c for c in pt.columns if c.startswith("l_") and c != "l_kind"]
    sets = [c for c in pt.columns if c.startswith("p_")]
    for p, g in pt.groupby(P, sort=False):
        r0 = g.iloc[0]
        per = []
        for _, r in g.iterrows():
            kv = [f"{c[2:].split('.')[-1]}={fmt(r[c])}" for c in sets if pd.notna(r[c])]
            if kv:
                per.append(f"{r[G]}: {', '.join(kv)}")
        rows.append({"problem": p, "landscape": ", ".join(f"{c[2:]}={fmt(r0[c])}" for c in land if pd.notna(r0[c]))
                     or str(r0.get("l_kind", p)), "settings on this problem": "; ".join(per) or "none"})
    return pd.DataFrame(rows)
