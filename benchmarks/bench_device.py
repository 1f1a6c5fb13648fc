"""Benchmark: the evolution engines on an accelerator against the same engines on the CPU.

Same process, same code, same sizes; the CPU side uses ``--cpu-threads`` torch and BLAS threads
(default: every core, the CPU at its best), the device side is ``--device``.  Each row is timed
alternately (CPU block, device block, ...) with blocks of about equal length, and the ratio is
CPU time / device time per generation (> 1: the device is faster).  Sizes are the researcher
sizes of issues 21 and 24:

* GA: D = 1000, population 10,000 (tournament, BLX-0.5, Gaussian mutation), one run;
* OpenAI-ES: D = 1000, population 10,000, one run;
* CMA-ES: D = 1000, the default population (4 + floor(3 ln D) = 24), one run (its O(D^3) eigh);
  and 256 runs vectorized at D = 100;
* Wright-Fisher: N = 100,000 individuals, D = 100, one run.

Goal (issue 24): GA and CMA-ES >= 10x their CPU time per generation on one GPU.  On a machine
without a GPU, ``--device cpu`` runs the script (both sides on the CPU: ratio about 1).

    python benchmarks/bench_device.py --device cuda
    python benchmarks/bench_device.py --device cpu --quick      # checks the script runs
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import torch  # noqa: E402

from evosgd.core.budget import Budget  # noqa: E402
from evosgd.core.registry import OPTIMIZERS, load_all  # noqa: E402
from evosgd.core.seeding import make_generator  # noqa: E402
from evosgd.landscapes import build_landscape  # noqa: E402

GA = {"elitism": 1, "selection": {"kind": "tournament", "k": 3}, "crossover": {"kind": "blend", "alpha": 0.5, "prob": 0.9},
      "mutation": {"kind": "gaussian", "sigma": 0.1, "prob": 1.0}}


def cases(ctx: harness.Context) -> list[tuple[str, str, str, dict, int, int, str]]:
    """(name, landscape, optimizer kind, params, D, R, goal)."""
    if ctx.smoke:
        return [("GA D=10 pop=32", "rastrigin", "ga", {**GA, "population_size": 32}, 10, 1, ">= 10"),
                ("CMA-ES D=8", "rosenbrock", "cmaes", {"sigma0": 1.0}, 8, 1, ">= 10"),
                ("Wright-Fisher N=64 D=4", "sphere", "wright_fisher", {"population_size": 64, "init_std": 0.1}, 4, 1, "(info)")]
    return [
        ("GA D=1000 pop=10,000", "rastrigin", "ga", {**GA, "population_size": 10_000}, 1000, 1, ">= 10"),
        ("OpenAI-ES D=1000 pop=10,000", "rastrigin", "openai_es", {"popsize": 10_000}, 1000, 1, "(info)"),
        ("CMA-ES D=1000 (lambda 24)", "rosenbrock", "cmaes", {"sigma0": 1.0}, 1000, 1, ">= 10"),
        ("CMA-ES D=100, 256 runs vectorized", "rosenbrock", "cmaes", {"sigma0": 1.0}, 100, 256, ">= 10"),
        ("Wright-Fisher N=100,000 D=100", "sphere", "wright_fisher",
         {"population_size": 100_000, "init_std": 0.1, "mutation_rate": 0.01, "mutation_effect": 0.1}, 100, 1, "(info)"),
    ]


def build(kind: str, land: str, params: dict, D: int, R: int, device: torch.device):
    ls = build_landscape(land, {"dim": D}, replicates=R, seed=0, device=device, dtype=torch.float32)
    return OPTIMIZERS.build(kind, params, landscape=ls, budget=Budget(R), generator=make_generator(0, device))


def main(argv=None) -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1,
                   help="torch and BLAS threads of the CPU side (default: every core)")
    args = p.parse_args(argv)
    args.threads = args.cpu_threads
    ctx = harness.setup(args)
    load_all()
    cpu = torch.device("cpu")
    clock = harness.clock_of(ctx)
    for name, land, kind, params, D, R, goal in cases(ctx):
        opts = {}
        for side, dev in (("cpu", cpu), ("device", ctx.device)):
            opts[side] = build(kind, land, params, D, R, dev)
            for _ in range(2):  # generation 0 and lazily built state
                opts[side].step()
        ctx.sync()
        per = {}
        for side in opts:  # a rough time per generation, to size blocks of equal length
            t0 = clock()
            opts[side].step()
            ctx.sync()
            per[side] = max(clock() - t0, 1e-6)
        n_cpu = 1 if ctx.smoke else max(1, int(0.5 / per["cpu"]))
        n_dev = max(1, int(round(n_cpu * per["cpu"] / per["device"])))

        def block(opt, n):
            def run():
                for _ in range(n):
                    opt.step()
            return run

        tc, td = harness.measure_pair(block(opts["cpu"], n_cpu), block(opts["device"], n_dev), ctx=ctx, warmup=1,
                                      repeats=ctx.pick(3, 1))
        t_cpu, t_dev = tc.per(n_cpu), td.per(n_dev)
        threshold = float(goal.split()[-1]) if goal.startswith(">=") else None
        ctx.add({"comparison": f"{name}: time/generation", "device_s": t_dev, "device_gens_s": 1 / t_dev,
                 "cpu_s": t_cpu, "cpu_gens_s": 1 / t_cpu, "ratio": t_cpu / t_dev, "goal": goal,
                 "verdict": harness.verdict(t_cpu / t_dev, threshold) if threshold else ""})
        del opts
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    harness.finish(ctx, f"evolution engines: {ctx.device} against the CPU ({args.cpu_threads} threads); ratio = CPU time / "
                        "device time per generation",
                   ["comparison", "device_s", "device_gens_s", "cpu_s", "cpu_gens_s", "ratio", "goal", "verdict", "load1"])


if __name__ == "__main__":
    main()
