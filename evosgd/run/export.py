"""Export a results store in the field's formats: IOHprofiler (IOHanalyzer, ``iohinspector``) and
COCO (``cocopp``).

    evosgd export RESULTS --format ioh|coco [-o DIR] [--x-axis evaluations|cost]

A *trial* is one replicate of one run: an algorithm (the optimizer's label, plus its swept
settings, e.g. ``sgd lr=0.1``) on one problem (function, dimension, instance).  For a ``bbob``
landscape the problem is BBOB's own (function id, instance ``instance + r`` of replicate r);
other landscapes are numbered in the IOHprofiler export (function ids 1, 2, ... in the order met,
instance = replicate + 1) and refused by the COCO export, whose post-processing (targets,
reference algorithms) only means something on the BBOB suite.

The x-axis is the budget ledger (contract 2): ``evaluations`` (default) counts every call of the
objective or of its gradient on one example, ``evaluations + gradient_evaluations`` of the
ledger, so a gradient step of batch b counts b (BBOB's "f-evaluations" for a method that is given
its gradient); ``cost`` is the ledger's cost, where a gradient counts ``grad_cost`` (default 3)
forward evaluations.  Either is rounded up to a whole number, at least 1.

The y-axis is the error ``f - f_opt`` of the recommended point (``best_so_far`` of the store):
the precision both analyzers expect; where the optimum is unknown it is the best loss itself.
Runtimes are resolved to the run's record points (``[scenario.record]``; log-spaced by default), so
a target hit between two record points is dated at the later one: record densely
(``log_points`` of 50-100) for a faithful runtime distribution.

Layouts (one folder per algorithm, so ``cocopp DIR/*`` compares them all):

* ``ioh``: ``<alg>/IOHprofiler_f<id>_<name>.json`` with a ``data_f<id>_<name>/IOHprofiler_f<id>_DIM<D>.dat``
  per dimension: per trial a header ``evaluations raw_y``, then one line per improvement (and the
  last record), as ``ioh.logger.Analyzer`` writes them;
* ``coco``: ``<alg>/bbobexp_f<id>.info`` with ``data_f<id>/bbobexp_f<id>_DIM<D>.dat`` (a line per
  improvement) and ``.tdat`` (every record point), the columns of COCO's ``bbob`` logger
  (``f evaluations | g evaluations | best noise-free fitness - Fopt | measured fitness | best measured fitness``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evosgd.core.errors import ConfigError

FORMATS = ("ioh", "coco")
X_AXES = ("evaluations", "cost")
#: COCO's final precision: the smallest target f_opt + 1e-8
COCO_PRECISION = 1e-8


@dataclass
class Trial:
    algorithm: str
    function_id: int
    function_name: str
    dim: int
    instance: int
    fopt: float
    x: np.ndarray          # budget at each record point (whole numbers >= 1, increasing)
    best: np.ndarray       # best error so far at that point
    current: np.ndarray    # error of the recommendation at that point
    extra: dict[str, Any] = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "algorithm"


def _algorithm_name(label: str, sweep: dict[str, Any]) -> str:
    own = [f"{k.split('.', 2)[-1]}={v}" for k, v in sorted(sweep.items()) if k.startswith("optimizer.")]
    return " ".join([label, *own])


def _problem(landscape: dict[str, Any], numbering: dict[str, int]) -> tuple[int, str, int, dict[str, Any]]:
    """(function id, name, dimension, landscape params) of a run's landscape."""
    kind, params = landscape.get("kind"), dict(landscape.get("params") or {})
    if kind == "bbob":
        from evosgd.landscapes.bbob import FUNCTION_NAMES, BBOBParams

        p = BBOBParams(**params)
        name = FUNCTION_NAMES[p.function].replace(" ", "_").replace("(", "").replace(")", "")
        if p.noise != "none":
            name += f"_{p.noise}_{p.noise_severity}_noise"
        return p.function, name, p.dim, p.model_dump()
    if "dim" not in params:
        raise ConfigError(f"landscape {kind!r}: the export needs its dimension, and its parameters give no 'dim'")
    key = json.dumps({"kind": kind, "params": {k: v for k, v in params.items() if k != "dim"},
                      "drift": landscape.get("drift")}, sort_keys=True, default=str)
    numbering.setdefault(key, len(numbering) + 1)
    return numbering[key], _slug(f"{kind}_{numbering[key]}"), int(params["dim"]), params


def collect_trials(runs: pd.DataFrame, x_axis: str = "evaluations") -> list[Trial]:
    """One :class:`Trial` per (run, replicate) of a store's tidy ``runs`` table."""
    if x_axis not in X_AXES:
        raise ConfigError(f"--x-axis {x_axis!r}: allowed are {', '.join(X_AXES)}")
    if runs.empty:
        raise ConfigError("the results store holds no finished run: nothing to export")
    numbering: dict[str, int] = {}
    trials: list[Trial] = []
    for run_id, rows in runs.groupby("run_id", sort=True):
        first = rows.iloc[0]
        config = json.loads(first["config"])
        sweep = json.loads(first["sweep"]) if isinstance(first["sweep"], str) else {}
        fid, name, dim, params = _problem(config["landscape"], numbering)
        algorithm = _algorithm_name(str(first["label"]), sweep)
        for rep, g in rows.groupby("replicate", sort=True):
            g = g.sort_values(["cost", "step"], kind="stable")
            raw = (g["evaluations"] + g["gradient_evaluations"]) if x_axis == "evaluations" else g["cost"]
            x = np.maximum(np.ceil(raw.to_numpy(dtype=np.float64) - 1e-9), 1.0).astype(np.int64)
            best = g["best_so_far"].to_numpy(dtype=np.float64)
            opt = g["optimal_loss"].to_numpy(dtype=np.float64)
            current = g["error"].to_numpy(dtype=np.float64)
            if not np.isfinite(opt).all():
                current = g["true_loss"].to_numpy(dtype=np.float64)
            keep = np.isfinite(best)
            if not keep.any():
                continue
            x, best, current = x[keep], best[keep], current[keep]
            # several records at one budget value: the last one holds
            last = np.r_[x[1:] != x[:-1], True]
            x, best, current = x[last], np.minimum.accumulate(best[last]), current[last]
            if config["landscape"].get("kind") == "bbob":
                instance = params["instance"] + (int(rep) if params["replicate_instances"] else 0)
            else:
                instance = int(rep) + 1
            fopt = float(opt[0]) if np.isfinite(opt[0]) else 0.0
            if np.isfinite(opt).all():  # float rounding can put an error a hair below 0: the optimum is reached
                best, current = np.maximum(best, 0.0), np.maximum(current, 0.0)
            trials.append(Trial(algorithm, fid, name, dim, instance, fopt, x, best, current,
                                {"run_id": run_id, "replicate": int(rep)}))
    if not trials:
        raise ConfigError("the results store holds no finite measurement: nothing to export")
    return trials


def _improvements(t: Trial) -> np.ndarray:
    """Indices of the records where the best error improved, plus the first and the last."""
    idx = [0] + [i for i in range(1, len(t.best)) if t.best[i] < t.best[i - 1]]
    if idx[-1] != len(t.best) - 1:
        idx.append(len(t.best) - 1)
    return np.asarray(idx)


def _groups(trials: list[Trial]) -> dict[str, dict[int, dict[int, list[Trial]]]]:
    out: dict[str, dict[int, dict[int, list[Trial]]]] = {}
    for t in trials:
        out.setdefault(t.algorithm, {}).setdefault(t.function_id, {}).setdefault(t.dim, []).append(t)
    return out


def write_ioh(trials: list[Trial], out: Path, suite: str) -> list[Path]:
    folders = []
    for alg, by_fid in _groups(trials).items():
        folder = out / _slug(alg)
        for fid, by_dim in sorted(by_fid.items()):
            fname = next(iter(by_dim.values()))[0].function_name
            data_dir = f"data_f{fid}_{fname}"
            (folder / data_dir).mkdir(parents=True, exist_ok=True)
            scenarios = []
            for dim, ts in sorted(by_dim.items()):
                rel = f"{data_dir}/IOHprofiler_f{fid}_DIM{dim}.dat"
                lines, runs = [], []
                for t in ts:
                    lines.append("evaluations raw_y")
                    lines += [f"{int(t.x[i])} {t.best[i]:.10g}" for i in _improvements(t)]
                    hit = int(np.argmax(t.best <= t.best[-1]))
                    runs.append({"instance": int(t.instance), "evals": int(t.x[-1]),
                                 "best": {"evals": int(t.x[hit]), "y": float(t.best[-1]), "x": []}})
                (folder / rel).write_text("\n".join(lines) + "\n", encoding="utf-8")
                scenarios.append({"dimension": int(dim), "path": rel, "runs": runs})
            meta = {"version": "0.3.3", "suite": suite, "function_id": int(fid), "function_name": fname,
                    "maximization": False, "algorithm": {"name": alg, "info": "exported by evosgd"},
                    "attributes": ["evaluations", "raw_y"], "scenarios": scenarios}
            (folder / f"IOHprofiler_f{fid}_{fname}.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        folders.append(folder)
    return folders


def _coco_row(t: Trial, i: int) -> str:
    return (f"{int(t.x[i])} 0 {t.best[i]:+.9e} {t.fopt + t.current[i]:+.9e} {t.fopt + t.best[i]:+.9e}")


def write_coco(trials: list[Trial], out: Path) -> list[Path]:
    folders = []
    header = ("% f evaluations | g evaluations | best noise-free fitness - Fopt ({fopt:.12e}) + sum g_i+ | "
              "measured fitness | best measured fitness or single-digit g-values")
    for alg, by_fid in _groups(trials).items():
        folder = out / _slug(alg)
        alg_id = alg.replace("'", "")
        for fid, by_dim in sorted(by_fid.items()):
            info = []
            (folder / f"data_f{fid}").mkdir(parents=True, exist_ok=True)
            for dim, ts in sorted(by_dim.items()):
                rel = f"data_f{fid}/bbobexp_f{fid}_DIM{dim}"
                dat, tdat = [], []
                for t in ts:
                    h = header.format(fopt=t.fopt)
                    dat.append(h)
                    dat += [_coco_row(t, i) for i in _improvements(t)]
                    tdat.append(h)
                    tdat += [_coco_row(t, i) for i in range(len(t.x))]
                (folder / f"{rel}.dat").write_text("\n".join(dat) + "\n", encoding="utf-8")
                (folder / f"{rel}.tdat").write_text("\n".join(tdat) + "\n", encoding="utf-8")
                info.append(f"suite = 'bbob', funcId = {fid}, DIM = {dim}, Precision = {COCO_PRECISION:.3e}, "
                            f"algId = '{alg_id}', coco_version = 'evosgd-export', logger = 'bbob', data_format = 'bbob-new2'")
                info.append(f"% exported by evosgd from {len(ts)} trials")
                info.append(f"{rel}.dat, " + ", ".join(
                    f"{t.instance}:{int(t.x[-1])}|{t.best[-1] - COCO_PRECISION:.1e}" for t in ts))
            (folder / f"bbobexp_f{fid}.info").write_text("\n".join(info) + "\n", encoding="utf-8")
        folders.append(folder)
    return folders


def export_store(results: str | Path, fmt: str, out: str | Path | None = None, x_axis: str = "evaluations") -> list[Path]:
    """Write the store at ``results`` in format ``fmt`` under ``out`` (default ``<results>-<fmt>``);
    returns the algorithm folders written."""
    from evosgd.run.store import load_store

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: allowed are {', '.join(FORMATS)}")
    store = load_store(results)
    trials = collect_trials(store.runs, x_axis)
    target = Path(out) if out is not None else store.path.parent / f"{store.path.name}-{fmt}"
    if target.exists() and not target.is_dir():
        raise ConfigError(f"-o {target}: exists and is not a folder")
    if fmt == "coco":
        kinds = {json.loads(c)["landscape"]["kind"] for c in store.runs["config"].unique()}
        noisy = {json.loads(c)["landscape"]["params"].get("noise", "none") for c in store.runs["config"].unique()} - {"none"}
        if kinds != {"bbob"} or noisy:
            what = ", ".join(sorted(kinds - {"bbob"})) if kinds != {"bbob"} else "bbob with per-example noise"
            raise ConfigError(f"--format coco: cocopp post-processes the noiseless BBOB suite only, and this store holds "
                              f"{what}; use --format ioh (IOHanalyzer and iohinspector read any problem)")
        return write_coco(trials, target)
    kinds = {json.loads(c)["landscape"]["kind"] for c in store.runs["config"].unique()}
    return write_ioh(trials, target, "BBOB" if kinds == {"bbob"} else "evosgd")



__all__ = ["FORMATS", "X_AXES", "Trial", "collect_trials", "export_store", "write_coco", "write_ioh"]
