"""Memory guard: estimate a run's tensor footprint before it starts and refuse one that cannot fit.

The estimate is deliberately simple and errs on the large side.  With R replicates, a population
(or 1 for SGD) of P points in D dimensions, mini-batches of b examples (or M Monte-Carlo samples
of a smoothed true loss), a dataset of N examples and an itemsize of s bytes, the working set is
about

    s * R * ( 8 P D          # population, offspring, noise, gradients, optimizer state
            + 2 P max(b, M) D # per-example evaluation broadcasts theta [R,P,1,D] - x [R,1,b,D]
            + N (D + 1)       # the dataset (features and targets)
            + D^2 )           # a rotation matrix per replicate (rotate = true)

Every component is asked for its own part first.  A landscape class with a classmethod
``memory_estimate(params, *, replicates, itemsize, points, batch) -> (D, bytes)`` gives its
dimension and the bytes of its own tensors (dataset, activations of ``points`` parameter vectors
on ``batch`` examples); these replace the dimension read from a ``dim`` key and the dataset and
broadcast terms above (the MLP, RNN and contrastive landscapes have one: their D is not a key).
An optimizer class may define ``memory_estimate(params, *, replicates, itemsize, dim) -> int``
(bytes), which is added.
Available memory: ``torch.cuda.mem_get_info`` on a GPU; ``MemAvailable`` of /proc/meminfo (or
``os.sysconf``) on the CPU, shared by the worker processes.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from evosgd.core.errors import DeviceError
from evosgd.core.registry import LANDSCAPES, OPTIMIZERS
from evosgd.scenario.loader import RunSpec

_POP_KEYS = ("population_size", "popsize", "pop_size", "population", "lambda_", "lam", "offspring",
             "n_offspring", "mu", "workers", "n_workers", "particles")
_DIM_KEYS = ("dim", "n_features", "input_dim", "features", "n_params")
_DATA_KEYS = ("n_examples", "n_samples", "dataset_size", "n_data", "n")


def _int_values(params: dict[str, Any], keys: tuple[str, ...]) -> list[int]:
    return [int(v) for k, v in params.items() if k in keys and isinstance(v, (int, float)) and not isinstance(v, bool)]


def estimate_run_bytes(run: RunSpec) -> int:
    itemsize = 8 if run.dtype == "float64" else 4
    lp, op = run.landscape.params, run.params
    R = run.replicates
    P = max(_int_values(op, _POP_KEYS) or [1])
    b = max(_int_values(op, ("batch_size", "micro_batch", "batch")) or [1])
    M = int(lp.get("smoothing_samples", 0)) if float(lp.get("noise_std", 0) or 0) > 0 else 0
    land = LANDSCAPES.get(run.landscape.kind).factory if run.landscape.kind in LANDSCAPES else None
    own = getattr(land, "memory_estimate", None)
    if callable(own):
        D, landscape_bytes = own(lp, replicates=R, itemsize=itemsize, points=P, batch=max(b, M, 1))
        total = itemsize * R * 8 * P * int(D) + int(landscape_bytes)
    else:
        D = max(_int_values(lp, _DIM_KEYS) or [10])
        N = max(_int_values(lp, _DATA_KEYS) or [0])
        rotation = D * D if lp.get("rotate") else 0
        total = itemsize * R * (8 * P * D + 2 * P * max(b, M) * D + N * (D + 1) + rotation)
    opt = OPTIMIZERS.get(run.kind).factory if run.kind in OPTIMIZERS else None
    hook = getattr(opt, "memory_estimate", None)
    if callable(hook):
        total += int(hook(op, replicates=R, itemsize=itemsize, dim=int(D)))
    return int(total)


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` in bytes (None when it cannot be told)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(runs: list[RunSpec], device: torch.device, concurrent: int = 1, fraction: float = 0.8) -> None:
    """Raise DeviceError naming every run whose estimated footprint exceeds its share of memory."""
    free = available_bytes(device)
    if free is None or not runs:
        return
    share = free * fraction / (max(1, concurrent) if device.type == "cpu" else 1)
    too_big = [(r, estimate_run_bytes(r)) for r in runs]
    too_big = [(r, n) for r, n in too_big if n > share]
    if too_big:
        lines = [f"  {r.label} ({r.kind}, replicates={r.replicates}{', ' + str(r.sweep) if r.sweep else ''}): "
                 f"needs about {_fmt(n)}" for r, n in too_big[:10]]
        more = f"\n  ... and {len(too_big) - 10} more" if len(too_big) > 10 else ""
        per = f" per worker ({concurrent} workers)" if device.type == "cpu" and concurrent > 1 else ""
        raise DeviceError(
            f"{len(too_big)} run(s) would not fit in the memory of {device}: about {_fmt(share)} is available{per}.\n"
            + "\n".join(lines) + more
            + "\nReduce replicates (--replicates N), the population, batch or dimension, or use fewer workers.")
