"""Strict values, checked once for every schema (the fixed sections and every registered
component's params model), before pydantic's lax coercion sees them.

pydantic in lax mode accepts ``true`` for an ``int`` (as 1) and ``inf``/``nan`` for a ``float``;
a scenario where ``batch_size = true`` runs with batch 1 and ``lr = inf`` diverges silently.  The
rule here: a bool only where the annotation allows ``bool``; a float only finite (no scenario
parameter means infinity: an unset limit is ``None``).  It walks the raw table along the model's
annotations (nested models, ``list[...]``, ``dict[str, ...]``, ``X | None``), so a component gets
it without declaring anything.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

_NUMBER = (int, float)


def _alternatives(ann: Any) -> list[Any]:
    """The union members of ``ann`` (``Annotated`` unwrapped), or [ann]."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _alternatives(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(ann) for a in _alternatives(arg)]
    return [ann]


def _allows(alts: list[Any], kind: type) -> bool:
    return any(a is kind or a is Any for a in alts)


def strict_problems(ann: Any, value: Any, loc: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """(location, message) for every bool or non-finite float that ``ann`` does not mean."""
    alts = _alternatives(ann)
    if any(a is Any for a in alts):
        return
    if isinstance(value, bool):
        if not _allows(alts, bool) and any(a in _NUMBER for a in alts):
            yield loc, "must be a number, not true/false"
        return
    if isinstance(value, float) and not math.isfinite(value):
        if any(a in _NUMBER for a in alts):
            yield loc, f"must be a finite number (given: {value})"
        return
    for a in alts:
        origin = typing.get_origin(a)
        if isinstance(a, type) and issubclass(a, BaseModel) and isinstance(value, dict):
            yield from model_strict_problems(a, value, loc)
            return
        if origin in (list, tuple, set, frozenset) and isinstance(value, list):
            args = typing.get_args(a)
            if origin is tuple and args and args[-1] is not Ellipsis:
                for i, (sub, v) in enumerate(zip(args, value)):
                    yield from strict_problems(sub, v, loc + (i,))
            elif args:
                for i, v in enumerate(value):
                    yield from strict_problems(args[0], v, loc + (i,))
            return
        if origin is dict and isinstance(value, dict):
            args = typing.get_args(a)
            if len(args) == 2:
                for k, v in value.items():
                    yield from strict_problems(args[1], v, loc + (k,))
            return


def model_strict_problems(model: type[BaseModel], raw: dict[str, Any], loc: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """Strictness problems of the table ``raw`` for ``model`` (unknown keys are pydantic's to report)."""
    for name, f in model.model_fields.items():
        key = f.alias or name
        if key in raw:
            yield from strict_problems(f.annotation, raw[key], loc + (key,))


def report_strict(problems: Any, model: type[BaseModel], raw: dict[str, Any], path: tuple, prefix: str = "",
                  line_base: tuple | None = None) -> bool:
    """Add each strictness problem of ``raw`` to ``problems`` (a :class:`Problems`); True if none."""
    from evosgd.scenario.problems import describe_field

    ok = True
    for loc, message in model_strict_problems(model, raw):
        ok = False
        lpath = (tuple(line_base) + loc) if line_base is not None else None
        problems.add(path + loc, prefix + message, allowed=describe_field(model, loc), line_path=lpath)
    return ok


def section_keys(section: str) -> str:
    """What a missing required section holds (for its message; no internal class names)."""
    from evosgd.core.registry import LANDSCAPES, OPTIMIZERS
    from evosgd.scenario.schema import BudgetSpec, ScenarioSpec

    if section == "scenario":
        required = [n for n, f in ScenarioSpec.model_fields.items() if f.is_required()]
        return (f"a table with keys {', '.join(ScenarioSpec.model_fields)} (required: {', '.join(required)}; "
                f"[scenario.budget] takes {', '.join(BudgetSpec.model_fields)})")
    if section == "landscape":
        return f"a table with kind = one of {', '.join(LANDSCAPES.names())} and that landscape's parameters"
    return f"one or more tables with label, kind = one of {', '.join(OPTIMIZERS.names())} and that optimizer's parameters"
