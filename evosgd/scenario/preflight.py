"""Preflight: build each run's landscape and optimizer once, with a single replicate on the CPU,
so that the checks a component makes in its constructor (a batch larger than the dataset when
sampling without replacement, mu > popsize, ...) are reported by ``evosgd validate`` together
with the schema problems, instead of as failed runs after the sweep started.

Only :class:`EvosgdError` counts as a problem of the file; any other exception is left for the
run itself to report.  Landscapes with large datasets are skipped (building them would cost
memory and time that validation should not), and so are optimizers whose class sets
``preflight = False`` (construction with side effects, e.g. starting helper processes).
"""

from __future__ import annotations

from typing import Any

from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.dtype import resolve_dtype
from evosgd.core.errors import EvosgdError
from evosgd.core.registry import OPTIMIZERS
from evosgd.core.seeding import make_generator
from evosgd.scenario.problems import Problems
from evosgd.scenario.runspec import RunSpec, canonical_json

#: skip landscapes whose dataset holds more elements than this (about 100 MB in float32)
MAX_ELEMENTS = 25_000_000
_DIM_KEYS = ("dim", "n_features", "input_dim", "features")
_DATA_KEYS = ("n_examples", "n_samples", "dataset_size", "n_data", "n")


def _too_big(params: dict[str, Any]) -> bool:
    def biggest(keys: tuple[str, ...]) -> int:
        vals = [v for k, v in params.items() if k in keys and isinstance(v, (int, float)) and not isinstance(v, bool)]
        return int(max(vals)) if vals else 1

    return biggest(_DATA_KEYS) * (biggest(_DIM_KEYS) + 1) > MAX_ELEMENTS


def preflight(runs: list[RunSpec], problems: Problems, optimizer_index: dict[str, int]) -> None:
    """Build every distinct (landscape, optimizer) pair once; add a problem for each refusal."""
    import torch

    from evosgd.landscapes import build_landscape

    landscapes: dict[str, Any] = {}
    seen: set[str] = set()
    for run in runs:
        prefix = ("at sweep point " + ", ".join(f"{k} = {v!r}" for k, v in run.sweep.items()) + ": ") if run.sweep else ""
        lkey = canonical_json([run.landscape.kind, run.landscape.params, run.landscape.drift, run.dtype, run.seed])
        if lkey not in landscapes:
            landscapes[lkey] = None
            if _too_big(run.landscape.params):
                continue
            try:
                kw = {"drift": dict(run.landscape.drift)} if run.landscape.drift else {}
                landscapes[lkey] = build_landscape(run.landscape.kind, dict(run.landscape.params), replicates=1,
                                                   seed=run.seed, device=torch.device("cpu"),
                                                   dtype=resolve_dtype(run.dtype), **kw)
            except EvosgdError as e:
                problems.add(("landscape",), f"{prefix}{e}")
                continue
            except Exception:  # not the file's fault as far as we can tell: the run will report it
                continue
        land = landscapes[lkey]
        okey = canonical_json([lkey, run.kind, run.params, run.grad_cost, run.clock, run.budget])
        if land is None or okey in seen:
            continue
        seen.add(okey)
        if getattr(OPTIMIZERS.get(run.kind).factory, "preflight", True) is False:
            continue
        try:
            budget = Budget(1, grad_cost=run.grad_cost, limits=BudgetLimits(**run.budget), clock=run.clock)
            OPTIMIZERS.build(run.kind, run.params, landscape=land, budget=budget, generator=make_generator(0))
        except EvosgdError as e:
            problems.add(("optimizer", optimizer_index[run.label]), f"{prefix}{e}")
        except Exception:
            continue
