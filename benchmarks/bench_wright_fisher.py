"""Benchmark 4: Wright-Fisher populations — generations per second and how time grows with N x D.

A continuous-genotype Wright-Fisher population (evosgd's ``wright_fisher``: fitness-proportional
multinomial reproduction, mutation rate 0.01 per offspring, effect 0.1) on the sphere landscape,
float32, one replicate.  There is no library anchor doing the same vectorized work, so the
reference is the model itself: one generation reads and writes the N x D genotype matrix a fixed
number of times, so time per generation should be ``a + b N + c N D`` (linear in N x D once the fixed
per-generation overhead ``a`` of ~40 torch calls and the per-individual work ``b N`` (parent
sampling, fitness reductions, mutation coin flips) are amortised).  The table reports, per (N, D),
seconds per generation and nanoseconds per gene per generation; flat ns/gene means linear scaling.

Headline: N = 10,000, D = 100.  A second row runs the same population with free recombination
(rate 0.5: a second parent draw and a per-gene mix) to show its price.

    python benchmarks/bench_wright_fisher.py [--device cuda] [--smoke]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from evosgd.core.budget import Budget  # noqa: E402
from evosgd.core.registry import OPTIMIZERS, load_all  # noqa: E402
from evosgd.core.seeding import make_generator  # noqa: E402
from evosgd.landscapes import build_landscape  # noqa: E402


def make_wf(N: int, D: int, device: torch.device, R: int = 1, recombination: float = 0.0):
    load_all()
    ls = build_landscape("sphere", {"dim": D}, replicates=R, seed=0, device=device, dtype=torch.float32)
    params = {"population_size": N, "beta": 1.0, "mutation_rate": 0.01, "mutation_effect": 0.1, "init_std": 0.1,
              "recombination_rate": recombination}
    return OPTIMIZERS.build("wright_fisher", params, landscape=ls, budget=Budget(R), generator=make_generator(0, device))


def seconds_per_generation(ctx: harness.Context, N: int, D: int, gens: int, recombination: float = 0.0) -> float:
    opt = make_wf(N, D, ctx.device, recombination=recombination)

    def run():
        for _ in range(gens):
            opt.step()

    return harness.measure(run, ctx=ctx, warmup=1, repeats=5).per(gens)


def main(argv=None) -> None:
    args = harness.parser(__doc__.splitlines()[0]).parse_args(argv)
    ctx = harness.setup(args)
    N0, D0 = ctx.pick(10_000, 50), ctx.pick(100, 4)
    for rec in (0.0, 0.5):
        t = seconds_per_generation(ctx, N0, D0, ctx.pick(20, 2), rec)
        ctx.add({"N": N0, "D": D0, "recombination": rec, "s_per_gen": t, "gens_per_s": 1 / t,
                         "ns_per_gene": t / (N0 * D0) * 1e9})
    grid = ctx.pick([(1_000, 100), (3_000, 100), (10_000, 100), (30_000, 100), (10_000, 10), (10_000, 30), (10_000, 300)],
                    [(20, 4), (40, 4)])
    ns, xs, ys = [], [], []
    for N, D in grid:
        gens = max(2, int(ctx.pick(2e7, 50) // (N * D)) + 1)
        t = seconds_per_generation(ctx, N, D, min(gens, 200))
        ns.append(N)
        xs.append(N * D)
        ys.append(t)
        ctx.add({"N": N, "D": D, "recombination": 0.0, "s_per_gen": t, "gens_per_s": 1 / t,
                         "ns_per_gene": t / (N * D) * 1e9})
    # least-squares fit t = a + b N + c (N D): fixed overhead a, per-individual cost b (parent
    # sampling, fitness reductions, mutation coin flips), per-gene cost c; relative errors are
    # weighted equally (the times span two decades)
    y = np.asarray(ys)
    A = np.stack([np.ones(len(xs)), np.asarray(ns, dtype=float), np.asarray(xs, dtype=float)], axis=1)
    (a, b, c), *_ = np.linalg.lstsq(A / y[:, None], np.ones(len(y)), rcond=None)
    worst = float(np.max(np.abs(A @ np.array([a, b, c]) - y) / y))
    harness.finish(ctx, "Wright-Fisher: seconds per generation against N x D (one replicate)",
                   ["N", "D", "recombination", "s_per_gen", "gens_per_s", "ns_per_gene"],
                   notes=[f"fit t = a + b N + c N D: a = {a * 1e3:.3g} ms, b = {b * 1e9:.3g} ns per individual, "
                          f"c = {c * 1e9:.3g} ns per gene; "
                          f"largest relative deviation of the grid from the fit: {worst:.0%}"])


if __name__ == "__main__":
    main()
