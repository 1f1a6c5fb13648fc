"""Benchmark 6: the runner — a sweep of 64 short runs on 2 worker processes against serial.

The sweep: SGD with momentum on a 10-D ellipsoid with per-example noise, 4 replicates per run,
a grid of 8 learning rates x 8 batch sizes = 64 runs of 1500 steps each (about half a second each
on one core), 20 records per run, results written to a fresh results store.  Serial
(``workers = 1``: every run in this process) against ``workers = 2`` (a spawn process pool, one
torch thread per worker), both through ``run_scenario``, so the figures include process start-up,
pickling of the tasks and results, and writing the Parquet files; serial and parallel sweeps
alternate (``--repeats`` pairs) and their medians are compared.  Goal: >= 1.7x on 2 cores.

    python benchmarks/bench_runner.py [--device cuda] [--smoke] [--workers 2]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def sweep_scenario(ctx: harness.Context, device: str) -> dict:
    lrs = ctx.pick([1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 3e-3, 4e-3, 5e-3], [1e-3, 2e-3])
    batches = ctx.pick([1, 2, 4, 8, 16, 32, 64, 128], [4])
    return {
        "scenario": {"name": "bench_runner", "replicates": ctx.pick(4, 2), "seed": 1, "device": device, "dtype": "float32",
                     "budget": {"max_steps": ctx.pick(1500, 20)}, "record": {"log_points": 20}},
        "landscape": {"kind": "ellipsoid", "dim": 10, "condition": 100.0, "noise_std": 0.1},
        "optimizer": [{"label": "sgd", "kind": "sgd", "lr": 1e-3, "batch_size": 8, "momentum": 0.9}],
        "sweep": {"mode": "grid", "optimizer.sgd.lr": lrs, "optimizer.sgd.batch_size": batches},
    }


def run_sweep(doc: dict, workers: int, threads: int) -> tuple[float, int]:
    from evosgd.run.runner import run_scenario

    with tempfile.TemporaryDirectory(prefix="evosgd-bench-") as out:
        t0 = time.perf_counter()
        frame = run_scenario(doc, out, workers=workers, progress=False, force=True, threads=threads)
        elapsed = time.perf_counter() - t0
        failed = {e["label"]: e["error"] for e in json.loads((Path(out) / "bench_runner" / "manifest.json").read_text())["runs"].values()
                  if e["status"] not in ("done", "diverged")}
    if failed:  # a sweep of failed runs is fast and meaningless: say why instead of timing it
        raise SystemExit(f"bench_runner: {len(failed)} runs did not finish (workers={workers}): {next(iter(failed.values()))}")
    return elapsed, int(frame["run_id"].nunique())


def main(argv=None) -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="worker processes of the parallel run (default 2)")
    args = p.parse_args(argv)
    ctx = harness.setup(args)
    doc = sweep_scenario(ctx, str(ctx.device))
    # The serial run uses one torch thread, like each worker, so the comparison is one core against two.
    torch.set_num_threads(1)
    run_sweep(sweep_scenario(harness.Context(args, ctx.device, True), str(ctx.device)), 1, 1)  # warm-up: imports, caches
    # Alternated repeats (serial, parallel, serial, ...), medians: one sweep is ~8-14 s, and on a
    # shared 2-core machine a single pair moved the ratio by +-5%.
    serial, parallel = [], []
    for _ in range(ctx.pick(args.repeats or 3, 1)):  # --repeats: alternated pairs (default 3)
        t, n = run_sweep(doc, 1, 1)
        serial.append(t)
        t, n2 = run_sweep(doc, args.workers, 1)
        parallel.append(t)
    t_serial, t_par = float(np.median(serial)), float(np.median(parallel))
    ratio = t_serial / t_par
    goal = 1.7 if args.workers == 2 else 0.85 * args.workers
    ctx.add({"comparison": f"runner: sweep of {n} runs, {args.workers} workers vs serial (median of {len(serial)})",
             "serial_s": t_serial,
                     "parallel_s": t_par, "ratio": ratio, "goal": f">= {goal:g}", "verdict": harness.verdict(ratio, goal),
                     "runs_done": f"{n}/{n2}"})
    harness.finish(ctx, "runner: process pool against serial (seconds for the whole sweep; ratio = serial / parallel)",
                   ["comparison", "serial_s", "parallel_s", "ratio", "goal", "verdict", "runs_done"])


if __name__ == "__main__":
    main()
