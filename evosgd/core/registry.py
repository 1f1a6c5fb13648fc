"""Registries: name -> component, with a one-line description and a parameter schema.

A component registers itself with a pydantic model of its parameters (``extra="forbid"``, every
field with a description and, where it has one, a default with a reason).  The scenario layer
validates a user's table against that model, and ``evosgd list`` prints names, descriptions and
fields from the same place, so documentation cannot drift from code.

    @LANDSCAPES.register("sphere", SphereParams, "f(x) = sum (x - x*)^2", family="analytic")
    class Sphere(AnalyticLandscape): ...

Build with ``LANDSCAPES.build("sphere", {"dim": 10}, replicates=4, seed=0, ...)``; the factory
receives the *validated* params model as its first argument.

The same decorators are the public plugin API (``evosgd.register_landscape`` etc. are
``LANDSCAPES.register`` etc.): a user's component registers exactly like a built-in one and is
checked the same way at registration (a pydantic params model with ``extra="forbid"`` and a
description on every field, a callable factory, a one-line description, a name that no other
component holds).  A component registered from outside the ``evosgd`` package carries its
``origin`` (which plugin file or module, and its sha256; see :mod:`evosgd.core.plugins`), which
goes into the provenance and the run id of every run that uses it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from evosgd.core.errors import ConfigError, EvosgdError

#: what a component name may look like (it is written as ``kind = "..."`` in scenario files)
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class RegistrationError(EvosgdError):
    """A component that cannot be registered (bad name, params or factory, or a name clash)."""


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    params: type[BaseModel]
    description: str
    family: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: None for a built-in; else the plugin that registered it (see ``evosgd.core.plugins``)
    origin: dict[str, Any] | None = None

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
    """A named collection of components (landscapes, optimizers, analyses, drift models)."""

    #: every registry made (the plugin loader rolls back a failed plugin in all of them)
    instances: ClassVar[list[Registry]] = []

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        Registry.instances.append(self)

    def register(
        self,
        name: str,
        params: type[BaseModel],
        description: str,
        family: str = "",
        tags: tuple[str, ...] = (),
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``factory(params_model, **build_kwargs)`` under ``name``."""
        self._check(name, params, description)

        def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(factory):
                raise RegistrationError(f"{self.kind} {name!r}: the registered factory must be callable (a class or a "
                                        f"function), got {type(factory).__name__}")
            from evosgd.core.plugins import origin_of

            origin = origin_of(factory)
            old = self._entries.get(name)
            if old is not None and old.factory is not factory and not _same_code(old.origin, origin):
                raise RegistrationError(f"{self.kind} {name!r} is already registered by {describe_origin(old.origin)}; "
                                        f"a component from {describe_origin(origin)} cannot take its name: choose another")
            self._entries[name] = Entry(name, factory, params, description, family, tuple(tags), origin)
            return factory

        return deco

    def _check(self, name: str, params: Any, description: str) -> None:
        """The checks every component passes, built-in or plugin (all problems at once)."""
        where = f"{self.kind} {name!r}"
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise RegistrationError(f"{self.kind} name {name!r} is not allowed; allowed: a letter, then letters, digits "
                                    f"and '_' (it is written as kind = \"...\" in scenario files)")
        if not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise RegistrationError(f"{where}: params must be a pydantic model class (class P(BaseModel) with "
                                    f"model_config = ConfigDict(extra='forbid')), got {params!r}")
        problems = []
        if params.model_config.get("extra") != "forbid":
            problems.append("its params model must set model_config = ConfigDict(extra='forbid') (a misspelt key "
                            "in a scenario file must be an error, not ignored)")
        bare = [f for f, info in params.model_fields.items() if not info.description]
        if bare:
            problems.append(f"params field(s) {', '.join(bare)} need a description (Field(..., description=...)): "
                            f"'evosgd list' prints it")
        if not isinstance(description, str) or not description.strip():
            problems.append("it needs a one-line description")
        if problems:
            raise RegistrationError(f"{where}: " + "; ".join(problems))

    def unregister(self, name: str) -> None:
        """Remove a component (a plugin whose import failed half-way; tests)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def builtin_names(self) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.origin is None)

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


def all_registries() -> list[Registry]:
    return list(Registry.instances)


def describe_origin(origin: dict[str, Any] | None) -> str:
    """'evosgd (built-in)' or 'plugin <what was named>'."""
    if origin is None:
        return "evosgd (built-in)"
    return f"plugin {origin.get('plugin')!r}"


def _same_code(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """The same plugin source loaded again (an ``import`` and a ``--plugin`` of one file)."""
    return a is not None and b is not None and bool(a.get("sha256")) and a.get("sha256") == b.get("sha256")


LANDSCAPES = Registry("landscape")
OPTIMIZERS = Registry("optimizer")
ANALYSES = Registry("analysis")
#: drift models of ``[landscape.drift]`` (registered by ``evosgd.landscapes.drift``)
DRIFTS = Registry("drift")


# ----------------------------------------------------------------------------- public API
def register_landscape(name: str, params: type[BaseModel], description: str, *, family: str = "",
                       tags: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a landscape: ``factory(params, *, replicates, seed, device, dtype) -> Landscape``
    (usually a subclass of ``evosgd.landscapes.base.Landscape`` or, for a finite sum over a
    dataset, ``evosgd.landscapes.data.DataLandscape``).  ``family``: "analytic", "data", ... ."""
    return LANDSCAPES.register(name, params, description, family=family, tags=tags)


def register_optimizer(name: str, params: type[BaseModel], description: str, *, family: str = "",
                       tags: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an optimizer: ``cls(params, *, landscape, budget, generator)``, a subclass of
    ``evosgd.core.optimizer.Optimizer`` (``step``, ``recommend``, ``metrics``; contract 3)."""
    return OPTIMIZERS.register(name, params, description, family=family, tags=tags)


def register_analysis(name: str, params: type[BaseModel], description: str, *, family: str = "",
                      tags: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an analysis: ``fn(params, *, context: AnalysisContext) -> AnalysisResult``
    (``evosgd.core.analysis_api``)."""
    return ANALYSES.register(name, params, description, family=family, tags=tags)


def register_drift(name: str, params: type[BaseModel], description: str, *, family: str = "",
                   tags: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a drift model: ``cls(params, *, replicates, seed, dim, center, device, dtype)``, a
    subclass of ``evosgd.landscapes.drift.Drift``."""
    return DRIFTS.register(name, params, description, family=family, tags=tags)


def load_all(analyses: bool = True, entry_points: bool = True) -> None:
    """Import the packages that register components (keeps ``core`` free of upward imports),
    then the installed plugins of the ``evosgd.plugins`` entry-point group (once per process).

    ``analyses=False`` loads what a run needs (landscapes and optimizers) without the analyses
    and what they import (scipy.stats: about 0.8 s of a worker's start-up)."""
    import importlib

    from evosgd.core.plugins import load_entry_point_plugins

    layers = ("evosgd.landscapes", "evosgd.gradient", "evosgd.evolution") + (("evosgd.analysis",) if analyses else ())
    for mod in layers:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a layer not built yet must not break the others
            if e.name != mod:
                raise
    if entry_points:
        load_entry_point_plugins()
