"""Load a scenario file: parse the TOML, apply ``[quick]``/command-line overrides, validate every
section (collecting every problem), and expand ``[sweep]`` into runs.

A run is one optimizer entry at one sweep point: its resolved configuration (landscape, optimizer
kind and validated parameters, budget, seeds) is hashed into the run id, so a re-run recognises the
runs it already finished.  Replicate r of every run meets the landscape instance drawn from
``(seed, r)`` alone (common random numbers).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from evosgd.core.device import device_kind
from evosgd.core.errors import ConfigError
from evosgd.core.registry import (
    ANALYSES,
    LANDSCAPES,
    OPTIMIZERS,
    Registry,
    load_all,
    suggest,
)
from evosgd.scenario.problems import MISSING, Problems
from evosgd.scenario.reading import read_document
from evosgd.scenario.runspec import (  # noqa: F401  (part of this module's API)
    RUN_FORMAT,
    ComponentSpec,
    LandscapeSpec,
    RunSpec,
    canonical_json,
    config_hash,
    plugins_of,
    run_config,
)
from evosgd.scenario.schema import ScenarioSpec, check_label
from evosgd.scenario.strict import report_strict, section_keys
from evosgd.scenario.sweep import SWEEPABLE, SweepMixin  # noqa: F401  (SWEEPABLE: part of this module's API)

SECTIONS = ("scenario", "landscape", "optimizer", "sweep", "analysis", "quick")
REQUIRED_SECTIONS = ("scenario", "landscape", "optimizer")


def drift_registry() -> Registry | None:
    """The DRIFTS registry of ``evosgd.landscapes`` where it exists."""
    import evosgd.core.registry as reg

    if hasattr(reg, "DRIFTS"):
        return reg.DRIFTS
    try:
        import evosgd.landscapes as ls
    except ImportError:  # pragma: no cover
        return None
    found = getattr(ls, "DRIFTS", None)
    if found is None:
        try:
            from evosgd.landscapes.drift import DRIFTS as found  # type: ignore[no-redef]
        except ImportError:
            return None
    return found


@dataclass
class Scenario:
    """A validated scenario with its sweep expanded into runs."""

    name: str
    description: str
    settings: ScenarioSpec
    landscape: LandscapeSpec
    optimizers: list[ComponentSpec]
    analyses: list[ComponentSpec]
    sweep_mode: str
    sweep: dict[str, list[Any]]
    runs: list[RunSpec]
    source: str | None = None
    quick: bool = False
    document: dict[str, Any] = field(default_factory=dict)  # the raw document, before overrides
    overrides: dict[str, Any] = field(default_factory=dict)  # command-line overrides applied

    def resolved(self) -> dict[str, Any]:
        """The whole resolved scenario as plain data (stored in the manifest)."""
        return {
            "scenario": self.settings.model_dump(),
            "landscape": asdict(self.landscape),
            "optimizer": [asdict(o) for o in self.optimizers],
            "sweep": {"mode": self.sweep_mode, **self.sweep},
            "analysis": [asdict(a) for a in self.analyses],
            "quick": self.quick,
            "overrides": self.overrides,
        }

    def with_options(self, *, quick: bool | None = None, replicates: int | None = None,
                     device: str | None = None, overrides: Mapping[str, Any] | None = None) -> Scenario:
        """The same file resolved again with other options (quick mode, overrides)."""
        ov = dict(self.overrides)
        ov.update(overrides or {})
        return load_scenario(self.document, quick=self.quick if quick is None else quick, replicates=replicates,
                             device=device, overrides=ov, source=self.source)

    def __repr__(self) -> str:
        return (f"Scenario({self.name!r}, landscape={self.landscape.kind!r}, optimizers="
                f"{[o.label for o in self.optimizers]}, runs={len(self.runs)}, replicates={self.settings.replicates}, "
                f"quick={self.quick})")


# ----------------------------------------------------------------------------- reading
#: the most runs a scenario may expand to unless the caller raises it (``evosgd run --max-runs N``)
DEFAULT_MAX_RUNS = 10_000


def load_scenario(
    path_or_dict: str | Path | Mapping[str, Any], *, quick: bool = False, replicates: int | None = None,
    device: str | None = None, overrides: Mapping[str, Any] | None = None, source: str | None = None,
    preflight: bool = True, max_runs: int | None = DEFAULT_MAX_RUNS,
) -> Scenario:
    """Load and validate a scenario from a TOML file path or a dict of the same shape.

    ``quick`` applies the file's ``[quick]`` overrides; ``replicates``/``device`` and ``overrides``
    (dotted keys, e.g. ``{"optimizer.sgd.lr": 0.1}``) are applied after them.  Every problem is
    reported at once in a :class:`ConfigError`.  ``preflight`` also builds each run's landscape and
    optimizer once (one replicate, CPU) to report the checks their constructors make
    (:mod:`evosgd.scenario.preflight`).  ``max_runs``: a sweep is counted before it is expanded
    and refused above this many runs (None: no limit).

    The ``[quick]`` overrides are validated in both modes: a file whose quick variant is broken is
    reported when it is loaded without ``quick`` too (each such problem marked ``with [quick]``).
    """
    doc, text, name = read_document(path_or_dict)
    if source is None and not isinstance(path_or_dict, Mapping):
        source = str(path_or_dict)
    display = source or name
    # the analyses (and scipy.stats, pandas behind them) only for a file that names some
    load_all(analyses=bool(doc.get("analysis")) or "analysis" in (doc.get("quick") or {}))

    def resolve(with_quick: bool, run_preflight: bool) -> Scenario:
        problems = Problems(display, text)
        resolver = _Resolver(copy.deepcopy(doc), problems, with_quick, replicates, device, dict(overrides or {}),
                             source, copy.deepcopy(doc), max_runs)
        resolver.preflight = run_preflight
        return resolver.resolve()

    if quick or not isinstance(doc.get("quick"), dict) or not doc["quick"]:
        return resolve(quick, preflight)
    found: list[str] = []
    scenario = None
    try:
        scenario = resolve(False, preflight)
    except ConfigError as e:
        found = list(e.problems)
    try:
        resolve(True, preflight)
    except ConfigError as e:
        found += [f"with [quick]: {p}" for p in e.problems if p not in found]
    if found:
        n = len(found)
        raise ConfigError(f"{n} problem{'s' if n > 1 else ''} in {display}:\n  " + "\n  ".join(found), found)
    assert scenario is not None
    return scenario


class _Resolver(SweepMixin):
    def __init__(self, doc: dict[str, Any], problems: Problems, quick: bool, replicates: int | None,
                 device: str | None, overrides: dict[str, Any], source: str | None, original: dict[str, Any],
                 max_runs: int | None = DEFAULT_MAX_RUNS) -> None:
        self.doc, self.p, self.quick = doc, problems, quick
        self.max_runs = max_runs
        self.cli = dict(overrides)
        if replicates is not None:
            self.cli["scenario.replicates"] = replicates
        if device is not None:
            self.cli["scenario.device"] = device
        self.overrides_record = dict(overrides or {})
        self.source, self.original = source, original

    # -------------------------------------------------------------- structure
    def resolve(self) -> Scenario:
        doc, p = self.doc, self.p
        for key in doc:
            if key not in SECTIONS:
                p.add((key,), f"unknown section {key!r}{suggest(key, SECTIONS) if not p.full else ''}",
                      allowed=", ".join(SECTIONS))
        for key in REQUIRED_SECTIONS:
            if key not in doc:
                header = "[[optimizer]]" if key == "optimizer" else f"[{key}]"
                p.add((key,), f"required section {header} is missing", allowed=section_keys(key))
        self._label_entries("optimizer")
        self._label_entries("analysis")
        if self.quick:
            quick = doc.get("quick", {})
            if not isinstance(quick, dict):
                p.add(("quick",), "must be a table of dotted-key overrides", given=quick)
            else:
                for key, value in quick.items():
                    self._apply_override(key, value, ("quick", key))
        elif "quick" in doc and not isinstance(doc["quick"], dict):
            p.add(("quick",), "must be a table of dotted-key overrides", given=doc["quick"])
        for key, value in self.cli.items():
            self._apply_override(key, value, None, origin="command-line override")
        # a missing section is reported once above, not again as "must be a table"
        settings = self._validate_settings(doc["scenario"], ("scenario",)) if "scenario" in doc else None
        landscape = self._validate_landscape(doc["landscape"], ("landscape",)) if "landscape" in doc else None
        optimizers = self._validate_entries("optimizer", OPTIMIZERS, required=True)
        analyses = self._validate_entries("analysis", ANALYSES, required=False)
        mode, sweep = self._validate_sweep(optimizers)
        p.raise_if_any()
        n_runs = self.count_runs(optimizers, mode, sweep)
        if self.max_runs is not None and n_runs > self.max_runs:
            sizes = " x ".join(f"{len(v)}" for v in sweep.values())
            p.add(("sweep",), f"the sweep ({mode}, {sizes} values) with {len(optimizers)} optimizer(s) expands to "
                  f"{n_runs:,} runs; at most {self.max_runs:,} are allowed (raise the limit with --max-runs N)")
            p.raise_if_any()
        assert settings is not None and landscape is not None  # else a problem was reported
        runs = self._expand(settings, landscape, optimizers, mode, sweep)
        p.raise_if_any()
        if getattr(self, "preflight", True):
            from evosgd.scenario.preflight import preflight

            index = {e.get("label"): i for i, e in enumerate(doc["optimizer"]) if isinstance(e, dict)}
            preflight(runs, p, index)
            p.raise_if_any()
        return Scenario(
            name=settings.name, description=settings.description, settings=settings, landscape=landscape,
            optimizers=optimizers, analyses=analyses, sweep_mode=mode, sweep=sweep, runs=runs, source=self.source,
            quick=self.quick, document=self.original, overrides=self.overrides_record,
        )

    def _label_entries(self, section: str) -> None:
        entries = self.doc.get(section)
        if isinstance(entries, list):
            for i, e in enumerate(entries):
                if isinstance(e, dict) and check_label(e.get("label")) is None:
                    self.p.name_element((section, i), e["label"])

    def declared_plugins(self) -> list[str]:
        """``[scenario] plugins``, paths resolved against the scenario file's folder (for hints)."""
        raw = self.doc.get("scenario", {}).get("plugins") if isinstance(self.doc.get("scenario"), dict) else None
        if not isinstance(raw, list):
            return []
        base = Path(self.source).parent if self.source else Path(".")
        out = []
        for p in raw:
            if isinstance(p, str) and p.endswith(".py") and not Path(p).is_absolute():
                p = str(base / p)
            if isinstance(p, str):
                out.append(p)
        return out

    # -------------------------------------------------------------- dotted keys
    def _dotted_path(self, key: str, allow: tuple[str, ...]) -> tuple[tuple[Any, ...] | None, str | None]:
        """The document path a dotted key names, or (None, reason)."""
        if not isinstance(key, str) or not key:
            return None, "a dotted key must be a non-empty string"
        parts = key.split(".")
        section = parts[0]
        if section not in allow:
            return None, f"unknown section {section!r}{suggest(section, allow)}; a dotted key starts with one of: {', '.join(allow)}"
        if section in ("optimizer", "analysis"):
            if len(parts) < 3:
                return None, f"write {section}.<label>.<parameter>"
            entries = self.doc.get(section)
            labels = [e.get("label") for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
            if parts[1] not in labels:
                known = [str(lb) for lb in labels if isinstance(lb, str)]
                return None, (f"no {section} labelled {parts[1]!r}{suggest(parts[1], known)}; "
                              f"labels: {', '.join(known) or 'none'}")
            return (section, labels.index(parts[1]), *parts[2:]), None
        if section == "sweep":
            if len(parts) < 2:
                return None, "write sweep.mode or sweep.<dotted key>"
            rest = ".".join(parts[1:])
            return ("sweep", rest), None
        if len(parts) < 2:
            return None, f"write {section}.<parameter>"
        return (section, *parts[1:]), None

    def _apply_override(self, key: str, value: Any, line_path: tuple | None, origin: str = "[quick]") -> None:
        path, reason = self._dotted_path(key, ("scenario", "landscape", "optimizer", "analysis", "sweep"))
        disp = ("quick", key) if line_path else ("override", key)
        if path is None:
            self.p.add(disp, f"bad {origin} key: {reason}", line_path=line_path)
            return
        node: Any = self.doc
        for part in path[:-1]:
            if isinstance(part, int):
                node = node[part]
                continue
            if not isinstance(node, dict):
                self.p.add(disp, f"bad {origin} key: {part!r} is not inside a table", line_path=line_path)
                return
            node = node.setdefault(part, {})
        if not isinstance(node, dict):
            self.p.add(disp, f"bad {origin} key: it does not name a key inside a table", line_path=line_path)
            return
        node[path[-1]] = value

    # -------------------------------------------------------------- sections
    def _validate_model(self, model: type[BaseModel], raw: Any, path: tuple, prefix: str = "",
                        line_base: tuple | None = None) -> BaseModel | None:
        if not isinstance(raw, dict):
            self.p.add(path, f"{prefix}must be a table", given=raw)
            return None
        if not self._strict(model, raw, path, prefix, line_base):
            return None
        try:
            return model.model_validate(raw)
        except ValidationError as err:
            self.p.add_validation_error(path, err, model, line_base=line_base, prefix=prefix)
            return None

    def _strict(self, model: type[BaseModel], raw: dict[str, Any], path: tuple, prefix: str,
                line_base: tuple | None) -> bool:
        return report_strict(self.p, model, raw, path, prefix, line_base)

    def _validate_settings(self, raw: Any, path: tuple, prefix: str = "", line_base: tuple | None = None) -> ScenarioSpec | None:
        return self._validate_model(ScenarioSpec, raw, path, prefix, line_base)  # type: ignore[return-value]

    def _validate_component(self, registry: Registry, raw: Any, path: tuple, what: str, fixed: tuple[str, ...],
                            prefix: str = "", line_base: tuple | None = None) -> tuple[str, dict[str, Any]] | None:
        """Validate ``{kind = ..., **params}`` against a registry; returns (kind, params dump)."""
        if not isinstance(raw, dict):
            self.p.add(path, f"{prefix}must be a table", given=raw)
            return None
        kind = raw.get("kind", MISSING)
        lb = line_base if line_base is not None else path
        if kind is MISSING:
            self.p.add(path + ("kind",), f"{prefix}required key is missing", allowed=", ".join(registry.names()),
                       line_path=lb)
            return None
        if not isinstance(kind, str) or kind not in registry:
            from evosgd.core.plugins import plugin_hint

            hint = suggest(kind, registry.names()) if isinstance(kind, str) else ""
            plugin_names = sorted(set(registry.names()) - set(registry.builtin_names()))
            allowed = "(built-in) " + (", ".join(registry.builtin_names()) or "none")
            if plugin_names:
                allowed += "; (from plugins) " + ", ".join(plugin_names)
            if isinstance(kind, str):
                self.p.add(path + ("kind",), f"{prefix}unknown {what} kind {kind!r}{hint}: "
                           f"{plugin_hint(what, self.declared_plugins())}", allowed=allowed, line_path=lb + ("kind",))
            else:
                self.p.add(path + ("kind",), f"{prefix}{what} kind must be a string", given=kind, allowed=allowed,
                           line_path=lb + ("kind",))
            return None
        params = {k: v for k, v in raw.items() if k not in fixed}
        entry = registry.get(kind)
        if not self._strict(entry.params, params, path, prefix, line_base):
            return None
        try:
            model = entry.params.model_validate(params)
        except ValidationError as err:
            self.p.add_validation_error(path, err, entry.params, line_base=line_base, prefix=prefix)
            return None
        return kind, model.model_dump()

    def _validate_landscape(self, raw: Any, path: tuple, prefix: str = "", line_base: tuple | None = None) -> LandscapeSpec | None:
        res = self._validate_component(LANDSCAPES, raw, path, "landscape", ("kind", "drift"), prefix, line_base)
        drift = None
        if isinstance(raw, dict) and "drift" in raw:
            dpath = path + ("drift",)
            dline = (line_base + ("drift",)) if line_base is not None else None
            reg = drift_registry()
            if reg is None:
                if not isinstance(raw["drift"], dict) or not isinstance(raw["drift"].get("kind"), str):
                    self.p.add(dpath, f"{prefix}must be a table with a 'kind'", given=raw["drift"], line_path=dline)
                else:
                    drift = dict(raw["drift"])
            else:
                d = self._validate_component(reg, raw["drift"], dpath, "drift", ("kind",), prefix, dline)
                if d is not None:
                    drift = {"kind": d[0], **d[1]}
        if res is None:
            return None
        return LandscapeSpec(kind=res[0], params=res[1], drift=drift)

    def _validate_entries(self, section: str, registry: Registry, required: bool) -> list[ComponentSpec]:
        raw = self.doc.get(section)
        if raw is None:
            return []
        header = f"[[{section}]]"
        if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
            self.p.add((section,), f"must be one or more {header} tables", given=raw)
            return []
        if required and not raw:
            self.p.add((section,), f"at least one {header} is required")
        out, seen = [], set()
        for i, e in enumerate(raw):
            path = (section, i)
            label = e.get("label", MISSING)
            if label is MISSING:
                self.p.add(path + ("label",), "required key is missing", allowed="a unique label, e.g. 'sgd-momentum'")
            elif (why := check_label(label)) is not None:
                self.p.add(path + ("label",), f"label {why}", given=label)
            elif label in seen:
                self.p.add(path + ("label",), f"duplicate label {label!r}; labels must be unique", given=label)
            else:
                seen.add(label)
            res = self._validate_component(registry, e, path, section, ("label", "kind"))
            if res is not None and isinstance(label, str):
                out.append(ComponentSpec(label=label, kind=res[0], params=res[1]))
        return out

    # -------------------------------------------------------------- expansion
    def _expand(self, settings: ScenarioSpec, landscape: LandscapeSpec, optimizers: list[ComponentSpec], mode: str,
                sweep: dict[str, list[Any]]) -> list[RunSpec]:
        runs: list[RunSpec] = []
        ids: set[str] = set()
        opt_raw = {e.get("label"): (i, e) for i, e in enumerate(self.doc.get("optimizer", [])) if isinstance(e, dict)}
        for opt in optimizers:
            seen: set[str] = set()
            index, raw_entry = opt_raw[opt.label]
            for sub in self._points(mode, sweep, self._relevant(sweep, opt.label)):
                sig = canonical_json(sub)
                if sig in seen:
                    continue
                seen.add(sig)
                run = self._run_at(settings, landscape, opt, index, raw_entry, sub)
                if run is not None and run.run_id not in ids:
                    ids.add(run.run_id)
                    runs.append(run)
        return runs

    def _run_at(self, settings: ScenarioSpec, landscape: LandscapeSpec, opt: ComponentSpec, index: int,
                raw_entry: dict[str, Any], sub: dict[str, Any]) -> RunSpec | None:
        s, land, kind, params = settings, landscape, opt.kind, opt.params
        if sub:
            prefix = "at sweep point " + ", ".join(f"{k} = {v!r}" for k, v in sub.items()) + ": "
            raw = {"scenario": copy.deepcopy(self.doc["scenario"]), "landscape": copy.deepcopy(self.doc["landscape"]),
                   "optimizer": copy.deepcopy(raw_entry)}
            for key, value in sub.items():
                parts = key.split(".")
                path = ("optimizer", *parts[2:]) if parts[0] == "optimizer" else tuple(parts)
                node = raw
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = value
            line = ("sweep", next(iter(sub)))
            if any(k.startswith("scenario.") for k in sub):
                s = self._validate_settings(raw["scenario"], ("scenario",), prefix, line_base=line)
            if any(k.startswith("landscape.") for k in sub):
                land = self._validate_landscape(raw["landscape"], ("landscape",), prefix, line_base=line)
            if any(k.startswith("optimizer.") for k in sub):
                res = self._validate_component(OPTIMIZERS, raw["optimizer"], ("optimizer", index), "optimizer",
                                               ("label", "kind"), prefix, line_base=line)
                if res is None:
                    return None
                kind, params = res
            if s is None or land is None:
                return None
        budget = s.budget.model_dump()
        record = s.record.model_dump()
        plugins = plugins_of([(OPTIMIZERS, kind), (LANDSCAPES, land.kind),
                              (drift_registry(), (land.drift or {}).get("kind"))])
        config = run_config(opt.label, kind, params, land, s.replicates, s.seed, s.dtype, s.grad_cost, s.clock,
                            budget, record, plugins, device_kind(s.device))
        return RunSpec(
            run_id=f"{opt.label}-{config_hash(config)}", scenario=s.name, label=opt.label, kind=kind, params=params,
            sweep=dict(sub), landscape=land, replicates=s.replicates, seed=s.seed, dtype=s.dtype, device=s.device,
            grad_cost=s.grad_cost, clock=s.clock, budget=budget, record=record, targets=list(s.targets),
            plugins=plugins,
        )


def validate_file(path: str | Path, quick: bool = False) -> Scenario:
    """Validate a scenario file (raises ConfigError with every problem)."""
    return load_scenario(path, quick=quick)
