"""Benchmark 5: time per step against replicates R, population P and dimension D, for each engine.

One axis varies at a time around a base point (R = 16, P = 64, D = 100; float32, sphere landscape;
for SGD, P is the mini-batch size b on a sphere with per-example noise, so that a batch is real
work).  Engines: ga, cmaes, sep_cmaes, csa_es, openai_es, one_plus_one_es (no population: P axis
skipped), wright_fisher, sgd.  Full CMA-ES at D = 1000 is skipped (an O(D^3) eigendecomposition
per replicate and generation; use sep_cmaes there).

Output: a table of milliseconds per step and ``benchmarks/scaling.png`` (log-log, one panel per
axis).  Reading it: a flat line in R up to some R is the fixed per-step cost of ~50-100 torch
calls (Python and dispatch overhead) being amortised — that is where vectorizing replicates pays;
once the tensors are large enough that memory bandwidth or arithmetic dominates, time grows
linearly (slope 1 on the log-log plot).

    python benchmarks/bench_scaling.py [--device cuda] [--smoke] [--png PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import torch  # noqa: E402

from evosgd.core.budget import Budget  # noqa: E402
from evosgd.core.registry import OPTIMIZERS, load_all  # noqa: E402
from evosgd.core.seeding import make_generator  # noqa: E402
from evosgd.landscapes import build_landscape  # noqa: E402

ENGINES = ["ga", "cmaes", "sep_cmaes", "csa_es", "openai_es", "one_plus_one_es", "wright_fisher", "sgd"]


def engine_params(kind: str, P: int) -> dict | None:
    """Parameters giving population (or batch) size P; None when the engine has no such axis."""
    return {
        "ga": {"population_size": P},
        "cmaes": {"popsize": P, "sigma0": 1.0},
        "sep_cmaes": {"popsize": P, "sigma0": 1.0},
        "csa_es": {"popsize": P, "sigma0": 1.0},
        "openai_es": {"popsize": P},
        "one_plus_one_es": {"sigma0": 1.0},
        "wright_fisher": {"population_size": P, "mutation_rate": 0.1, "init_std": 0.1},
        "sgd": {"batch_size": P, "lr": 0.01, "momentum": 0.9},
    }[kind]


def time_per_step(ctx: harness.Context, kind: str, R: int, P: int, D: int) -> float:
    load_all()
    params = {"dim": D, "noise_std": 0.1} if kind == "sgd" else {"dim": D}
    ls = build_landscape("sphere", params, replicates=R, seed=0, device=ctx.device, dtype=torch.float32)
    opt = OPTIMIZERS.build(kind, engine_params(kind, P), landscape=ls, budget=Budget(R),
                           generator=make_generator(0, ctx.device))
    steps = ctx.pick(10, 2)

    def run():
        for _ in range(steps):
            opt.step()

    return harness.measure(run, ctx=ctx, warmup=1, repeats=3).per(steps)


def main(argv=None) -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--png", default=str(Path(__file__).resolve().parent / "scaling.png"), help="where to save the plot")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines")
    args = p.parse_args(argv)
    ctx = harness.setup(args)
    base = ctx.pick({"R": 16, "P": 64, "D": 100}, {"R": 2, "P": 8, "D": 4})
    axes = ctx.pick({"R": [1, 4, 16, 64, 256], "P": [8, 64, 512, 4096], "D": [10, 100, 1000]},
                    {"R": [1, 2], "P": [8], "D": [4]})
    engines = [e for e in args.engines.split(",") if e]
    for kind in engines:
        for axis, values in axes.items():
            if axis == "P" and kind == "one_plus_one_es":
                continue
            for v in values:
                point = dict(base, **{axis: v})
                if kind == "cmaes" and point["D"] >= 1000:
                    continue
                if kind == "cmaes" and point["P"] * point["R"] * point["D"] > 5e6:
                    continue
                t = time_per_step(ctx, kind, point["R"], point["P"], point["D"])
                ctx.add({"engine": kind, "axis": axis, "R": point["R"], "P": point["P"], "D": point["D"],
                                 "ms_per_step": t * 1e3, "us_per_replicate_step": t * 1e6 / point["R"]})
    harness.finish(ctx, "Scaling: milliseconds per step (base R=16, P=64, D=100 unless varied)",
                   ["engine", "axis", "R", "P", "D", "ms_per_step", "us_per_replicate_step"])
    plot(ctx, Path(args.png), axes)


def plot(ctx: harness.Context, path: Path, axes: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, panels = plt.subplots(1, len(axes), figsize=(5 * len(axes), 4.2), sharey=True)
    kinds = list(dict.fromkeys(r["engine"] for r in ctx.rows))
    colors = {k: f"C{i % 10}" for i, k in enumerate(kinds)}  # one colour per engine in every panel
    for ax, axis in zip(panels, axes):
        for kind in kinds:
            pts = [(r[axis], r["ms_per_step"]) for r in ctx.rows if r["engine"] == kind and r["axis"] == axis]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=kind, color=colors[kind])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel({"R": "replicates R", "P": "population P (SGD: batch b)", "D": "dimension D"}[axis])
        ax.grid(True, which="both", alpha=0.3)
    panels[0].set_ylabel("ms per step")
    handles = [plt.Line2D([], [], color=colors[k], marker="o", label=k) for k in kinds]
    panels[-1].legend(handles=handles, fontsize=8)
    info = harness.machine_info(ctx.device)
    fig.suptitle(f"evosgd time per step ({info['device']}, {info['torch_threads']} threads, torch {info['torch']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"(wrote {path})")


if __name__ == "__main__":
    main()
