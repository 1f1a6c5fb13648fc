"""Launch a scenario's data-parallel runs (``sgd_ddp``) on processes started by ``torchrun``.

    torchrun --nproc-per-node K -m evosgd.run.ddp SCENARIO [--out DIR] [--quick] [--force]
    torchrun --nnodes N --node-rank i --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
             --nproc-per-node K -m evosgd.run.ddp SCENARIO --out DIR          # a cluster

Rank 0 runs the whole scenario with the runner (serially, in its own process) and writes the
results store, exactly as ``evosgd run`` would, except for the ``sgd_ddp`` runs whose ``workers``
differ from the number of processes (WORLD_SIZE): those are left out (``evosgd run`` completes
them later with spawned processes, resuming the same store).  The other ranks run the
scenario's ``sgd_ddp`` runs that rank 0 is going to run (rank 0 broadcasts the list: finished runs are skipped on every
rank), in the same order, as its data-parallel partners: each run's optimizer finds the process
group already initialized and works in lockstep with the others (see
:mod:`evosgd.gradient.ddp`).  Other optimizers of the scenario run on rank 0 alone.  Backend:
nccl when the scenario's device is CUDA (rank k on ``cuda:LOCAL_RANK``), gloo otherwise.  Only
rank 0 needs to see the results folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import traceback
from collections.abc import Sequence

import torch

from evosgd.core.errors import EvosgdError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchrun ... -m evosgd.run.ddp",
                                     description="run a scenario with its sgd_ddp runs on the processes started by torchrun")
    parser.add_argument("scenario", help="scenario TOML file")
    parser.add_argument("--out", default="results", help="results folder (rank 0 writes DIR/<name>/)")
    parser.add_argument("--quick", action="store_true", help="apply the file's [quick] overrides")
    parser.add_argument("--force", action="store_true", help="redo finished runs")
    parser.add_argument("--replicates", type=int, default=None, help="override the replicates")
    parser.add_argument("--device", default=None, help="override the device (cuda: rank k uses cuda:LOCAL_RANK)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        print("evosgd.run.ddp: error: start it with torchrun (RANK and WORLD_SIZE are not set), e.g.\n"
              "  torchrun --nproc-per-node 2 -m evosgd.run.ddp scenarios/grad_ddp.toml", file=sys.stderr)
        return 2
    import torch.distributed as dist

    from evosgd.core.device import resolve_device
    from evosgd.core.registry import load_all
    from evosgd.run.engine import run_one
    from evosgd.run.executors import SerialExecutor
    from evosgd.run.runner import execute_scenario
    from evosgd.run.store import ResultsStore
    from evosgd.scenario import load_scenario

    load_all()
    torch.set_num_threads(1)
    try:
        sc = load_scenario(args.scenario, quick=args.quick, replicates=args.replicates, device=args.device)
        dev = resolve_device(sc.settings.device)
    except EvosgdError as e:
        print(f"evosgd: error: {e}", file=sys.stderr)
        return 2
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
        sc = load_scenario(args.scenario, quick=args.quick, replicates=args.replicates, device=str(dev))
    world = int(os.environ["WORLD_SIZE"])
    # sgd_ddp runs of another size than this group are left for `evosgd run` (which spawns them).
    skipped = {r.run_id for r in sc.runs if r.kind == "sgd_ddp" and int(r.params.get("workers", 2)) != world}
    sc = dataclasses.replace(sc, runs=[r for r in sc.runs if r.run_id not in skipped])
    ddp_runs = [r for r in sc.runs if r.kind == "sgd_ddp"]
    timeout = max((float(r.params.get("timeout_s", 600.0)) for r in ddp_runs), default=600.0)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout))
    rank = dist.get_rank()
    try:
        store = ResultsStore(os.path.join(args.out, sc.name))
        todo = [[r.run_id for r in ddp_runs if args.force or not store.has_run(r.run_id)]] if rank == 0 else [None]
        dist.broadcast_object_list(todo, src=0)  # the partners follow rank 0's view of the store
        pending = set(todo[0])
        if rank == 0:
            if skipped:
                print(f"evosgd: {len(skipped)} sgd_ddp run(s) with workers != {world} (the number of processes) "
                      "left out; `evosgd run` runs them with spawned processes", file=sys.stderr)
            if not ddp_runs:
                print(f"evosgd: {args.scenario} has no sgd_ddp run with workers = {world}; rank 0 runs the rest alone",
                      file=sys.stderr)
            execute_scenario(sc, args.out, force=args.force, executor=SerialExecutor(), progress=False,
                             command="torchrun -m evosgd.run.ddp " + " ".join(sys.argv[1:]))
            print(f"{sc.name}: results in {store.root}")
        else:
            for run in ddp_runs:
                if run.run_id in pending:
                    try:
                        run_one(run, device=dev)
                    except Exception:  # rank 0 records the failure of the run; go on with the next one
                        traceback.print_exc()
        return 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
