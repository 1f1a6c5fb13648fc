"""Registries: name -> component, with a one-line description and a parameter schema.

A component registers itself with a pydantic model of its parameters (``extra="forbid"``, every
field with a description and, where it has one, a default with a reason).  The scenario layer
validates a user's table against that model, and ``evosgd list`` prints names, descriptions and
fields from the same place, so documentation cannot drift from code.

    @LANDSCAPES.register("sphere", SphereParams, "f(x) = sum (x - x*)^2", family="analytic")
    class Sphere(AnalyticLandscape): ...

Build with ``LANDSCAPES.build("sphere", {"dim": 10}, replicates=4, seed=0, ...)``; the factory
receives the *validated* params model as its first argument.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from evosgd.core.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    params: type[BaseModel]
    description: str
    family: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def fields(self) -> list[tuple[str, str, Any, str]]:
        """(name, type, default or 'required', description) of each parameter."""
        rows = []
        for name, f in self.params.model_fields.items():
            default = "required" if f.is_required() else f.get_default(call_default_factory=True)
            ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
            rows.append((name, ann, default, f.description or ""))
        return rows


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_validation_error(err: ValidationError, where: str) -> list[str]:
    """One line per pydantic problem: '<where>.<key>: <message> (given: <input>)'."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        key = f"{where}.{loc}" if loc else where
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        given = e.get("input")
        given_s = "" if e["type"] in ("missing",) else f" (given: {given!r})"
        if e["type"] == "extra_forbidden":
            given_s = ""
        lines.append(f"{key}: {msg}{given_s}")
    return lines


class Registry:
    """A named collection of components (landscapes, optimizers, analyses)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        params: type[BaseModel],
        description: str,
        family: str = "",
        tags: tuple[str, ...] = (),
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name].factory is not factory:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = Entry(name, factory, params, description, family, tuple(tags))
            return factory

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            allowed = ", ".join(self.names())
            raise ConfigError(f"unknown {self.kind} {name!r}{suggest(name, self.names())}; allowed: {allowed}") from None

    def validate(self, name: str, params: dict[str, Any] | BaseModel | None, where: str | None = None) -> BaseModel:
        """Validate ``params`` against the component's schema; all problems in one ConfigError."""
        entry = self.get(name)
        if isinstance(params, entry.params):
            return params
        try:
            return entry.params.model_validate(dict(params or {}))
        except ValidationError as err:
            problems = format_validation_error(err, where or f"{self.kind} {name!r}")
            fields = list(entry.params.model_fields)
            problems = [
                p + (suggest(p.split(":")[0].rsplit(".", 1)[-1], fields) if p.endswith("unknown key") else "")
                for p in problems
            ]
            raise ConfigError("; ".join(problems), problems) from None

    def build(self, name: str, params: dict[str, Any] | BaseModel | None = None, /, **kwargs: Any) -> Any:
        model = self.validate(name, params)
        return self.get(name).factory(model, **kwargs)


LANDSCAPES = Registry("landscape")
OPTIMIZERS = Registry("optimizer")
ANALYSES = Registry("analysis")


def load_all(analyses: bool = True) -> None:
    """Import the packages that register components (keeps ``core`` free of upward imports).

    ``analyses=False`` loads what a run needs (landscapes and optimizers) without the analyses
    and what they import (scipy.stats: about 0.8 s of a worker's start-up)."""
    import importlib

    layers = ("evosgd.landscapes", "evosgd.gradient", "evosgd.evolution") + (("evosgd.analysis",) if analyses else ())
    for mod in layers:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a layer not built yet must not break the others
            if e.name != mod:
                raise
