"""What a run is: the specs a scenario resolves into, and the run id.

A run is one optimizer entry at one sweep point.  Its resolved configuration (landscape, optimizer
kind and validated parameters, budget, seeds; the plugins and the device type where they apply) is
hashed into the run id, so a re-run recognises the runs it already finished.  These are plain,
picklable records: a worker process needs nothing else to execute a run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from evosgd.core.device import device_kind
from evosgd.core.registry import Registry

#: bump when the meaning of a stored run changes, so old results are not mistaken for new ones
RUN_FORMAT = 1


@dataclass
class LandscapeSpec:
    kind: str
    params: dict[str, Any]
    drift: dict[str, Any] | None = None


@dataclass
class ComponentSpec:
    """An ``[[optimizer]]`` or ``[[analysis]]`` entry: label, kind and validated params."""

    label: str
    kind: str
    params: dict[str, Any]


@dataclass
class RunSpec:
    """Everything a worker needs to execute one run (plain, picklable data)."""

    run_id: str
    scenario: str
    label: str
    kind: str
    params: dict[str, Any]
    sweep: dict[str, Any]
    landscape: LandscapeSpec
    replicates: int
    seed: int
    dtype: str
    device: str
    grad_cost: float
    clock: str
    budget: dict[str, Any]
    record: dict[str, Any]
    targets: list[float] = field(default_factory=list)
    #: refs of the plugins that provide this run's components (``evosgd.core.plugins``); a
    #: worker process loads them before it builds the run
    plugins: list[dict[str, Any]] = field(default_factory=list)

    def config(self) -> dict[str, Any]:
        """The resolved configuration that defines the run's results (hashed into its id).

        The device *type* is part of it (``device_kind``: "cpu" or "cuda", not the card): torch's
        CPU and CUDA generators are different random streams, so the same seed gives another
        sample on a GPU, and a store resumed on another device must not mix the two.  It is
        written only when it is not "cpu", so CPU run ids are those of earlier versions."""
        return run_config(self.label, self.kind, self.params, self.landscape, self.replicates, self.seed,
                          self.dtype, self.grad_cost, self.clock, self.budget, self.record, self.plugins,
                          device_kind(self.device))


def run_config(label: str, kind: str, params: dict, landscape: LandscapeSpec, replicates: int, seed: int, dtype: str,
               grad_cost: float, clock: str, budget: dict, record: dict,
               plugins: list[dict[str, Any]] | None = None, device: str = "cpu") -> dict[str, Any]:
    config = {
        "format": RUN_FORMAT, "label": label, "kind": kind, "params": params,
        "landscape": asdict(landscape), "replicates": replicates, "seed": seed, "dtype": dtype,
        "grad_cost": grad_cost, "clock": clock, "budget": budget, "record": record,
    }
    if plugins:  # only then: the ids of runs made of built-in components do not change
        from evosgd.core.plugins import identity

        config["plugins"] = [identity(r) for r in plugins]
    if device != "cpu":  # the random stream of another device (see RunSpec.config)
        config["device"] = device
    return config


def plugins_of(kinds: list[tuple[Registry | None, str | None]]) -> list[dict[str, Any]]:
    """The refs of the plugins that registered these (registry, kind) pairs, without repeats."""
    refs: dict[str, dict[str, Any]] = {}
    for reg, kind in kinds:
        if reg is not None and isinstance(kind, str) and kind in reg:
            origin = reg.get(kind).origin
            if origin is not None:
                refs.setdefault(canonical_json(origin), origin)
    return list(refs.values())


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    return hashlib.blake2b(canonical_json(config).encode(), digest_size=16).hexdigest()[:length]
