"""Plugins: a user's Python file or module that registers landscapes, optimizers, analyses or
drift models through the public registration API (``evosgd.register_landscape`` etc., the same
decorators the built-in components use).

Three ways in, all explicit (a scenario file is data and never names code that gets run):

* ``--plugin path/to/file.py`` (or :func:`load_plugin` with a path): the file is executed as a
  module of its own (its folder is appended to ``sys.path``, so it can import modules beside it;
  the hash covers the file itself: a plugin of several files is better made a package);
* ``--plugin package.module``: the module is imported from ``sys.path``;
* an installed distribution declaring the ``evosgd.plugins`` entry-point group, e.g. in its
  ``pyproject.toml``: ``[project.entry-points."evosgd.plugins"] mine = "mine.evosgd_plugin"``;
  every command loads these (:func:`load_entry_point_plugins`).  A value ``module:function``
  imports the module and calls the function.

Provenance.  Each plugin is described by a plain dict, its *ref*: what was named (``plugin``),
how (``type``: file, module or entry_point), the module ``name``, the resolved ``path`` and the
``sha256`` of its source (a package: of every ``.py`` file under it, in path order).  A component
registered while a plugin loads carries that ref as its ``origin``; one registered by a module
outside ``evosgd`` imported in the ordinary way (``import my_plugin`` in a notebook) gets the
ref of that module.  The runs that use a plugin's component carry its ref into the manifest and
(name and sha256: where the file lies does not change what it computes) into the run id, so an
edited plugin is never mistaken for the one that produced stored results.

Failures are one :class:`PluginError` naming the plugin (the command line prints it, exit 2): a
missing file or module, an exception raised on import (with the plugin's line that raised), or a
component the registry refuses (see :meth:`Registry._check`).  A failed plugin leaves nothing
registered.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evosgd.core.errors import EvosgdError

ENTRY_POINT_GROUP = "evosgd.plugins"

#: refs of the plugins loaded in this process, by key (resolved path, or module name)
_LOADED: dict[str, dict[str, Any]] = {}
#: the ref of the plugin being loaded now (innermost last)
_LOADING: list[dict[str, Any]] = []
_ENTRY_POINTS_DONE = False
_MODULE_REFS: dict[str, dict[str, Any] | None] = {}


class PluginError(EvosgdError):
    """A plugin that cannot be loaded, or that registers a broken component."""


# ----------------------------------------------------------------------------- hashing
def sha256_of(path: Path) -> str:
    """sha256 of a file; of a package folder: of each ``.py`` file's relative path and bytes."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(path.rglob("*.py")):
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
            h.update(f.read_bytes())
        return h.hexdigest()
    h.update(path.read_bytes())
    return h.hexdigest()


def _module_source(module: Any) -> Path | None:
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    return path.parent if path.name == "__init__.py" else path


# ----------------------------------------------------------------------------- origins
def origin_of(factory: Callable[..., Any]) -> dict[str, Any] | None:
    """The ref of the plugin a component comes from; None for a built-in (module ``evosgd.*``)."""
    if _LOADING:
        return _LOADING[-1]
    module = getattr(factory, "__module__", "") or ""
    if module == "evosgd" or module.startswith("evosgd."):
        return None
    if module not in _MODULE_REFS:
        mod = sys.modules.get(module)
        src = _module_source(mod) if mod is not None else None
        if module == "__main__":  # a script: workers load its file (guarded by if __name__ == "__main__")
            _MODULE_REFS[module] = ({"plugin": str(src), "type": "file", "name": src.stem, "path": str(src),
                                     "sha256": sha256_of(src)} if src is not None and src.is_file()
                                    else {"plugin": "__main__", "type": "interactive", "name": "__main__",
                                          "path": None, "sha256": None})
        else:
            _MODULE_REFS[module] = {"plugin": module, "type": "module", "name": module,
                                    "path": str(src) if src else None, "sha256": sha256_of(src) if src else None}
    return _MODULE_REFS[module]


def identity(ref: dict[str, Any]) -> dict[str, Any]:
    """What of a ref enters a run id: the plugin's name and the hash of its source."""
    return {"name": ref.get("name"), "sha256": ref.get("sha256")}


def loaded_plugins() -> list[dict[str, Any]]:
    """Refs of every plugin loaded in this process (for the manifest)."""
    return [dict(r) for r in _LOADED.values()]


# ----------------------------------------------------------------------------- loading
@contextmanager
def _loading(ref: dict[str, Any]) -> Iterator[None]:
    """Register under ``ref``; on failure remove what the plugin registered and say why."""
    from evosgd.core.registry import RegistrationError, all_registries

    before = {reg.kind: set(reg.names()) for reg in all_registries()}
    _LOADING.append(ref)
    try:
        yield
    except BaseException as e:
        for reg in all_registries():
            for name in set(reg.names()) - before[reg.kind]:
                reg.unregister(name)
        if isinstance(e, KeyboardInterrupt):
            raise
        what = f"plugin {ref['plugin']!r}"
        if isinstance(e, RegistrationError):
            raise PluginError(f"{what}: {e}") from None
        if isinstance(e, PluginError):
            raise
        raise PluginError(f"{what}: raised {type(e).__name__} on import: {e}{_where(e, ref)}") from None
    finally:
        _LOADING.pop()


def _where(e: BaseException, ref: dict[str, Any]) -> str:
    """' (at file.py:12)': the last line of the plugin's own code in the traceback."""
    frames = traceback.extract_tb(e.__traceback__)
    root = ref.get("path")
    own = [f for f in frames if root and (f.filename == root or f.filename.startswith(str(root).rstrip("/") + "/"))]
    f = (own or frames or [None])[-1]
    return f" (at {Path(f.filename).name}:{f.lineno})" if f is not None else ""


def load_plugin(plugin: str | Path) -> dict[str, Any]:
    """Load a plugin named by a path to a ``.py`` file or by an importable module name; returns
    its ref.  Loading the same plugin again does nothing."""
    text = str(plugin)
    looks_like_file = text.endswith(".py") or "/" in text or "\\" in text or Path(text).is_file()
    return _load_file(text) if looks_like_file else _load_module(text)


def load_plugins(plugins: Iterable[str | Path] | None) -> list[dict[str, Any]]:
    return [load_plugin(p) for p in plugins or ()]


def _load_file(text: str) -> dict[str, Any]:
    path = Path(text).expanduser()
    if not path.is_file():
        why = "is a directory, not a .py file" if path.is_dir() else "file not found"
        raise PluginError(f"plugin {text!r}: {why}")
    if path.suffix != ".py":
        raise PluginError(f"plugin {text!r}: a plugin file must be Python source ending in .py")
    path = path.resolve()
    key = str(path)
    sha = sha256_of(path)
    if key in _LOADED:
        if _LOADED[key]["sha256"] == sha:
            return _LOADED[key]
        _forget(key)  # the file was edited (a notebook loading it again): its new version replaces it
    stem = re.sub(r"\W", "_", path.stem)
    name = f"evosgd_plugin_{stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) != key:
        name = f"{name}_{sha[:8]}"  # another file of the same name
    ref = {"plugin": text, "type": "file", "name": path.stem, "path": key, "sha256": sha}
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise PluginError(f"plugin {text!r}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic and dataclasses look classes up through sys.modules
    if str(path.parent) not in sys.path:  # its sibling modules import as they would for a script
        sys.path.append(str(path.parent))  # (appended: never shadows an installed module)
    try:
        with _loading(ref):
            spec.loader.exec_module(module)
    except PluginError:
        sys.modules.pop(name, None)
        raise
    _LOADED[key] = ref
    return ref


def _forget(key: str) -> None:
    """Unregister the components of the loaded plugin ``key``."""
    from evosgd.core.registry import all_registries

    ref = _LOADED.pop(key)
    for reg in all_registries():
        for entry in reg.entries():
            if entry.origin is ref:
                reg.unregister(entry.name)


def _load_module(name: str) -> dict[str, Any]:
    if name in _LOADED:
        return _LOADED[name]
    if not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$", name):
        raise PluginError(f"plugin {name!r}: neither a .py file nor a module name (package.module)")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise PluginError(f"plugin {name!r}: no such file, and no module of that name can be imported "
                          f"(is it installed, or its folder on PYTHONPATH?)")
    src = Path(spec.origin).resolve() if spec.origin and spec.origin not in ("built-in", "frozen") else None
    if src is not None and src.name == "__init__.py":
        src = src.parent
    ref = {"plugin": name, "type": "module", "name": name, "path": str(src) if src else None,
           "sha256": sha256_of(src) if src else None}
    with _loading(ref):  # imported before (import my_plugin): its components already carry this ref
        module = importlib.import_module(name)
    _MODULE_REFS.setdefault(module.__name__, ref)
    _LOADED[name] = ref
    return ref


def load_entry_point_plugins(force: bool = False) -> list[dict[str, Any]]:
    """Load every installed ``evosgd.plugins`` entry point (once per process)."""
    global _ENTRY_POINTS_DONE
    if _ENTRY_POINTS_DONE and not force:
        return []
    _ENTRY_POINTS_DONE = True
    from importlib import metadata

    refs = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        refs.append(_load_entry_point(ep))
    return refs


def _load_entry_point(ep: Any) -> dict[str, Any]:
    key = f"entry_point:{ep.name}={ep.value}"
    if key in _LOADED:
        return _LOADED[key]
    module_name = ep.value.split(":", 1)[0].strip()
    dist = getattr(ep, "dist", None)
    label = f"{ep.name} = {ep.value}" + (f" (from {dist.name} {dist.version})" if dist is not None else "")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    src = Path(spec.origin).resolve() if spec is not None and spec.origin not in (None, "built-in", "frozen") else None
    if src is not None and src.name == "__init__.py":
        src = src.parent
    ref = {"plugin": f"entry point {label}", "type": "entry_point", "name": module_name, "entry_point": ep.name,
           "value": ep.value, "path": str(src) if src else None, "sha256": sha256_of(src) if src else None}
    if spec is None:
        raise PluginError(f"plugin {ref['plugin']!r} ({ENTRY_POINT_GROUP} entry point): module {module_name!r} "
                          f"cannot be imported; reinstall or uninstall that package")
    with _loading(ref):
        obj = ep.load()
        if ":" in ep.value and callable(obj):  # module:function registers when called
            obj()
    _LOADED[key] = ref
    return ref


def ensure_plugins(refs: Iterable[dict[str, Any]]) -> None:
    """In a worker process: load the plugins a run needs (as the parent did), and check that each
    source is still the one whose hash is in the run id."""
    refs = list(refs)
    if refs:  # built-ins first, as in the parent: a plugin may not take a built-in's name
        from evosgd.core.registry import load_all

        load_all(analyses=False)
    for ref in refs:
        kind = ref.get("type")
        if kind == "file":
            path = Path(ref["path"])
            if not path.is_file():
                raise PluginError(f"plugin {ref['plugin']!r}: {path} is not there in this process (a worker on another "
                                  f"machine needs the same file at the same path)")
            if sha256_of(path) != ref.get("sha256"):
                raise PluginError(f"plugin {ref['plugin']!r} changed since the scenario was loaded (its sha256 is in "
                                  f"the run id); run the command again")
            got = load_plugin(ref["path"])
        elif kind == "module":
            got = load_plugin(ref["name"])
        elif kind == "entry_point":
            from importlib import metadata

            eps = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == ref.get("entry_point")]
            if not eps:
                raise PluginError(f"plugin {ref['plugin']!r}: entry point not installed on this worker")
            got = _load_entry_point(eps[0])
        else:
            raise PluginError(f"a run uses a component defined in an interactive session ({ref.get('plugin')}); "
                              f"other processes cannot load it: put it in a file and load it with --plugin "
                              f"FILE.py (or evosgd.load_plugin), or run with workers=1")
        if ref.get("sha256") and got.get("sha256") != ref.get("sha256"):
            raise PluginError(f"plugin {ref['plugin']!r} changed since the scenario was loaded (sha256 "
                              f"{str(got.get('sha256'))[:12]}, expected {str(ref['sha256'])[:12]}); run again")


def plugin_hint(kind: str, declared: list[str] | None = None) -> str:
    """What to tell a user whose scenario names a ``kind`` (landscape, optimizer, ...) that is not
    registered."""
    loaded = [r["plugin"] for r in _LOADED.values()]
    missing = [p for p in declared or () if not _is_loaded(p)]
    if missing:
        flags = " ".join(f"--plugin {p}" for p in missing)
        return (f"it comes from the plugin {', '.join(missing)} ([scenario] plugins), which is not loaded: "
                f"run with {flags} (a scenario file never loads code by itself)")
    have = f"; loaded plugins: {', '.join(loaded)}" if loaded else ""
    return (f"neither built in nor registered by a loaded plugin; if a plugin provides it, load it with --plugin "
            f"FILE.py or --plugin package.module, or install a package with an '{ENTRY_POINT_GROUP}' entry point{have}")


def _is_loaded(plugin: str) -> bool:
    p = Path(plugin)
    for ref in _LOADED.values():
        if ref.get("plugin") == plugin or ref.get("name") == plugin:
            return True
        if ref.get("path") and p.suffix == ".py" and p.name == Path(ref["path"]).name:
            try:
                if p.resolve() == Path(ref["path"]) or not p.exists():
                    return True
            except OSError:
                pass
    return False
