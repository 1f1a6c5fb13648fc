"""The ``[sweep]`` table: its keys checked against the schemas they name, and the sweep counted
and walked lazily (a grid is never materialised: ``count_runs`` refuses a 9-million-run sweep
from its list lengths alone before any point is built).

A mixin of the scenario resolver (:class:`evosgd.scenario.loader._Resolver`): it reads the
resolver's document (``self.doc``), problems (``self.p``) and dotted-key parser.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from evosgd.core.registry import LANDSCAPES, OPTIMIZERS, suggest
from evosgd.scenario.schema import BudgetSpec, RecordSpec, ScenarioSpec, SweepSpec

if TYPE_CHECKING:
    from evosgd.scenario.loader import ComponentSpec

SWEEPABLE = ("optimizer", "landscape", "scenario")


class SweepMixin:
    doc: dict[str, Any]
    p: Any

    def _validate_sweep(self, optimizers: list[ComponentSpec]) -> tuple[str, dict[str, list[Any]]]:
        raw = self.doc.get("sweep")
        if raw is None:
            return "grid", {}
        if not isinstance(raw, dict):
            self.p.add(("sweep",), "must be a table", given=raw)
            return "grid", {}
        spec = self._validate_model(SweepSpec, {"mode": raw["mode"]} if "mode" in raw else {}, ("sweep",))
        mode = spec.mode if spec is not None else "grid"  # type: ignore[union-attr]
        keys: dict[str, list[Any]] = {}
        for key, values in raw.items():
            if key == "mode":
                continue
            path = ("sweep", key)
            if isinstance(values, dict):  # written as nested tables: [sweep.optimizer.sgd] lr = [...]
                self.p.add(path, "write swept keys as quoted dotted keys, e.g. \"optimizer.sgd.lr\" = [0.1, 0.01]")
                continue
            if not isinstance(values, list) or not values:
                self.p.add(path, "must be a non-empty list of values", given=values)
                continue
            reason = self._check_sweep_key(key)
            if reason:
                self.p.add(path, reason)
                continue
            keys[key] = values
        if mode == "zip" and keys:
            lengths = {k: len(v) for k, v in keys.items()}
            if len(set(lengths.values())) > 1:
                self.p.add(("sweep", "mode"), "zip mode needs lists of equal length", given=lengths)
        return mode, keys

    def _check_sweep_key(self, key: str) -> str | None:
        path, reason = self._dotted_path(key, SWEEPABLE)
        if path is None:
            return reason
        section = path[0]
        if section == "optimizer":
            entry = self.doc["optimizer"][path[1]]
            kind = entry.get("kind")
            if isinstance(kind, str) and kind in OPTIMIZERS:
                fields = list(OPTIMIZERS.get(kind).params.model_fields)
                if path[2] == "kind" or path[2] == "label":
                    return f"cannot sweep the {path[2]} of an optimizer; add another [[optimizer]] instead"
                if path[2] not in fields:
                    return (f"optimizer {entry.get('label')!r} ({kind}) has no parameter {path[2]!r}"
                            f"{suggest(path[2], fields)}; parameters: {', '.join(fields)}")
            return None
        if section == "landscape":
            land = self.doc.get("landscape") or {}
            kind = land.get("kind") if isinstance(land, dict) else None
            if path[1] == "drift":
                return None
            if isinstance(kind, str) and kind in LANDSCAPES:
                fields = list(LANDSCAPES.get(kind).params.model_fields)
                if path[1] not in fields and path[1] != "kind":
                    return (f"landscape {kind!r} has no parameter {path[1]!r}{suggest(path[1], fields)}; "
                            f"parameters: {', '.join(fields)}")
            return None
        fields = list(ScenarioSpec.model_fields)
        if path[1] == "name":
            return "cannot sweep the scenario name"
        if path[1] not in fields:
            return f"[scenario] has no key {path[1]!r}{suggest(path[1], fields)}; keys: {', '.join(fields)}"
        if path[1] in ("budget", "record"):
            sub = (BudgetSpec if path[1] == "budget" else RecordSpec).model_fields
            if len(path) < 3 or path[2] not in sub:
                got = path[2] if len(path) > 2 else ""
                return f"[scenario.{path[1]}] has no key {got!r}{suggest(got, list(sub))}; keys: {', '.join(sub)}"
        return None

    @staticmethod
    def _relevant(sweep: dict[str, list[Any]], label: str) -> list[str]:
        """The swept keys that change the runs of optimizer ``label``."""
        own = f"optimizer.{label}."
        return [k for k in sweep if k.startswith(own) or k.startswith(("landscape.", "scenario."))]

    def _points(self, mode: str, sweep: dict[str, list[Any]], keys: list[str]) -> Iterator[dict[str, Any]]:
        """The sweep points projected on ``keys``, lazily (a grid is never materialised)."""
        if not keys:
            yield {}
            return
        if mode == "zip":
            rows: Iterable[tuple] = zip(*(sweep[k] for k in keys))
        else:
            rows = itertools.product(*(sweep[k] for k in keys))
        for vals in rows:
            yield dict(zip(keys, vals))

    def count_runs(self, optimizers: list[ComponentSpec], mode: str, sweep: dict[str, list[Any]]) -> int:
        """How many runs the sweep expands to (at most: equal points are counted once later),
        computed from the list lengths alone."""
        total = 0
        for opt in optimizers:
            lengths = [len(sweep[k]) for k in self._relevant(sweep, opt.label)]
            total += (min(lengths) if mode == "zip" else math.prod(lengths)) if lengths else 1
        return total
