"""Benchmark: evosgd's CMA-ES against pycma (``cma``) on BBOB f1, f2, f8, f10 in D = 10.

Protocol (COCO's, one run per instance): instances 1..15 of each function; the objective on
pycma's side is ioh's BBOB problem (``ioh.get_problem(fid, instance, 10, ProblemClass.BBOB)``),
on evosgd's the ``bbob`` landscape (replicate r = instance 1 + r, all 15 in one vectorized run),
float64 on both sides.  Both start from the landscape's starting point of the instance (uniform
in [-4, 4]^D) with sigma0 = 2 and their default population size 4 + floor(3 ln D) = 10; pycma runs
with its default options (its own termination criteria on, ``ftarget = f_opt + 1e-8``), evosgd's
CMA-ES with its defaults (no restarts).  A run's count is the number of evaluations after the
generation in which its best evaluated f - f_opt first fell to 1e-8 or below; runs that stop (or
exhaust 1e5 evaluations) first are failures.  evosgd's CMA-ES without restarts does not stop by
itself: a failed run is charged the whole 1e5 in its ERT, where pycma's stops at its termination
criteria (the ERTs of functions with failures favour pycma; the medians are the comparison).  Reported per function: the median count over the
successful runs (goal: evosgd / pycma within 0.9 .. 1.1), the successes, and COCO's expected
running time ERT = (evaluations of all runs) / successes.

    python benchmarks/bench_bbob_cmaes.py [--smoke] [--functions 1,2,8,10] [--instances 15]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
import numpy as np
import torch

from evosgd.core.budget import Budget
from evosgd.core.registry import OPTIMIZERS, load_all
from evosgd.core.seeding import make_generator
from evosgd.landscapes import build_landscape

TARGET = 1e-8
SIGMA0 = 2.0
DIM = 10
MAX_EVALS = 100_000


def evosgd_runs(fid: int, instances: int, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(evaluations to target or NaN, evaluations spent, starting points) of the R = instances runs."""
    load_all()
    ls = build_landscape("bbob", {"function": fid, "dim": DIM, "instance": 1}, replicates=instances, seed=0,
                         device=device, dtype=torch.float64)
    opt = OPTIMIZERS.build("cmaes", {"sigma0": SIGMA0}, landscape=ls, budget=Budget(instances),
                           generator=make_generator(fid, device))
    lam = int(opt.constants.popsize[0])
    fopt = ls.optimal_loss()
    history = []
    for g in range(MAX_EVALS // lam):
        opt.step()
        history.append(opt.best_f - fopt)
        if g % 50 == 49 and bool(((opt.best_f - fopt) <= TARGET).all()):
            break
    err = torch.stack(history).cpu().numpy()  # [G, R]
    hit = err <= TARGET
    gens = np.where(hit.any(axis=0), hit.argmax(axis=0) + 1, np.nan)
    spent = np.where(np.isfinite(gens), gens, len(history)) * lam
    return gens * lam, spent, ls.initial_point.cpu().numpy()


def pycma_runs(fid: int, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import cma
    import ioh

    hits, spent = np.full(len(x0), np.nan), np.zeros(len(x0))
    for r, x in enumerate(x0):
        problem = ioh.get_problem(fid, r + 1, DIM, ioh.ProblemClass.BBOB)
        fopt = problem.optimum.y
        es = cma.CMAEvolutionStrategy(x.tolist(), SIGMA0, {"seed": 1000 * fid + r + 1, "verbose": -9,
                                                           "ftarget": fopt + TARGET, "maxfevals": MAX_EVALS})
        while not es.stop():
            X = es.ask()
            f = np.asarray(problem(np.asarray(X)))
            es.tell(X, f.tolist())
            if f.min() - fopt <= TARGET:
                hits[r] = es.countevals
                break
        spent[r] = es.countevals
    return hits, spent


def main(argv=None) -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--functions", default="1,2,8,10", help="comma-separated BBOB function numbers")
    p.add_argument("--instances", type=int, default=15, help="instances 1..N (one run each)")
    args = p.parse_args(argv)
    ctx = harness.setup(args)
    from importlib.metadata import version

    print(f"cma (pycma) {version('cma')}, ioh {version('ioh')}")
    fids = ctx.pick([int(f) for f in args.functions.split(",")], [1])
    n = ctx.pick(args.instances, 2)
    for fid in fids:
        evo, evo_spent, x0 = evosgd_runs(fid, n, ctx.device)
        ref, ref_spent = pycma_runs(fid, x0)
        ok_e, ok_r = np.isfinite(evo), np.isfinite(ref)
        m_e = float(np.median(evo[ok_e])) if ok_e.any() else np.nan
        m_r = float(np.median(ref[ok_r])) if ok_r.any() else np.nan
        ert_e = evo_spent.sum() / max(ok_e.sum(), 1) if ok_e.any() else np.inf
        ert_r = ref_spent.sum() / max(ok_r.sum(), 1) if ok_r.any() else np.inf
        ratio = m_e / m_r
        ctx.add({"comparison": f"CMA-ES BBOB f{fid} D={DIM}: median evals to 1e-8 ({n} instances, lambda=10)",
                 "evosgd": m_e, "pycma": m_r, "ratio": ratio, "goal": "0.9 .. 1.1",
                 "verdict": ("met" if 0.9 <= ratio <= 1.1 else "NOT met")
                 + f" (reached {int(ok_e.sum())}/{n} vs {int(ok_r.sum())}/{n}; ERT {ert_e:.0f} vs {ert_r:.0f},"
                 f" ratio {ert_e / ert_r:.3f})"})
    harness.finish(ctx, "CMA-ES vs pycma on BBOB (evaluations to f - f_opt <= 1e-8; ratio = evosgd / pycma)",
                   ["comparison", "evosgd", "pycma", "ratio", "goal", "verdict"])


if __name__ == "__main__":
    main()
