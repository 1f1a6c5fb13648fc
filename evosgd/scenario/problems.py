"""Collecting every problem of a scenario file, each with its file, line, key path, what was given
and what is allowed, so that the user fixes them all in one pass.

Line numbers come from :func:`locate_keys`, a small scanner of the TOML text that maps key paths
(``("optimizer", 1, "lr")``) to the line that defines them.  ``tomllib`` gives no positions, and
a full position-tracking TOML parser is not worth its weight: the scanner understands table
headers, arrays of tables and (dotted, quoted) keys, which is where users put their mistakes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from evosgd.core.errors import ConfigError
from evosgd.core.registry import suggest

Path = tuple[Any, ...]

_KEY_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_\-]+)\s*')
MISSING = object()
#: problems printed at most (all are kept in ConfigError.problems): the first ones are the ones to fix
MAX_SHOWN = 50


def _split_key(text: str) -> tuple[str, ...] | None:
    """``a."b.c".d`` -> ("a", "b.c", "d"); None if the text is not a TOML key."""
    parts, pos = [], 0
    while True:
        m = _KEY_TOKEN.match(text, pos)
        if not m:
            return None
        tok = m.group(1)
        parts.append(tok[1:-1] if tok[0] in "\"'" else tok)
        pos = m.end()
        if pos == len(text):
            return tuple(parts)
        if text[pos] != ".":
            return None
        pos += 1


def _key_before_equals(line: str) -> str | None:
    """The key part of ``key = value`` (an '=' inside a quoted key does not count)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "=":
            return line[:i]
        elif ch == "#":
            return None
    return None


def locate_keys(text: str) -> dict[Path, int]:
    """Map key paths to 1-based line numbers (array-of-tables elements are indexed)."""
    lines: dict[Path, int] = {}
    table: Path = ()
    counts: dict[tuple[str, ...], int] = {}
    in_multiline: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if in_multiline:  # skip the body of a multi-line string
            if in_multiline in line:
                in_multiline = None
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            end = line.find("]]")
            key = _split_key(line[2:end]) if end > 0 else None
            if key is None:
                continue
            counts[key] = counts.get(key, -1) + 1
            table = _with_indices(key, counts)
            lines.setdefault(table, lineno)
            continue
        if line.startswith("["):
            end = line.find("]")
            key = _split_key(line[1:end]) if end > 0 else None
            if key is None:
                continue
            table = _with_indices(key, counts)
            lines.setdefault(table, lineno)
            continue
        kpart = _key_before_equals(line)
        if kpart is None:
            continue
        key = _split_key(kpart)
        if key is None:
            continue
        for i in range(1, len(key) + 1):
            lines.setdefault(table + key[:i], lineno)
        rest = line[len(kpart) + 1:].strip()
        for q in ('"""', "'''"):
            if rest.startswith(q) and rest.count(q) == 1:
                in_multiline = q
    return lines


def _with_indices(key: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> Path:
    """Insert the current element index after every prefix that is an array of tables."""
    out: list[Any] = []
    for i, part in enumerate(key):
        out.append(part)
        prefix = key[: i + 1]
        if prefix in counts:
            out.append(counts[prefix])
    return tuple(out)


def _short(value: Any, limit: int = 60) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


class Problems:
    """Accumulates problems of one file; :meth:`raise_if_any` raises one ConfigError with all."""

    def __init__(self, source: str, text: str | None = None) -> None:
        self.source = source
        self.lines = locate_keys(text) if text else {}
        self.items: list[str] = []
        self._lines: list[int] = []
        self._labels: dict[Path, str] = {}
        self._seen: set[str] = set()

    def name_element(self, path: Path, label: str) -> None:
        """Show ``optimizer.<label>`` instead of ``optimizer[1]`` in messages."""
        self._labels[tuple(path)] = label

    def display(self, path: Path) -> str:
        out = ""
        for i, p in enumerate(path):
            if isinstance(p, int):
                label = self._labels.get(tuple(path[: i + 1]))
                out += f".{label}" if label else f"#{p + 1}"
            else:
                p = str(p)
                piece = p if re.fullmatch(r"[A-Za-z0-9_\-]+", p) else repr(p)
                out += f".{piece}" if out else piece
        return out or "(top level)"

    def line_of(self, path: Path) -> int | None:
        path = tuple(path)
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None

    def add(self, path: Path, message: str, given: Any = MISSING, allowed: str | None = None,
            line_path: Path | None = None) -> None:
        line = self.line_of(line_path if line_path is not None else path)
        where = f"{self.source}:{line}" if line else self.source
        text = f"{where}: {self.display(path)}: {message}"
        if given is not MISSING:
            text += f" (given: {_short(given)})"
        if allowed:
            text += f"; allowed: {allowed}"
        if text not in self._seen:  # a set: a hostile file may hold 100k bad keys
            self._seen.add(text)
            self.items.append(text)
            self._lines.append(line or 0)

    def add_validation_error(self, base: Path, err: ValidationError, model: type[BaseModel],
                             line_base: Path | None = None, prefix: str = "") -> None:
        """One problem per pydantic error, with line numbers and allowed values."""
        for e in err.errors():
            loc = tuple(e["loc"])
            path = tuple(base) + loc
            lpath = (tuple(line_base) + loc) if line_base is not None else None
            kind = e["type"]
            if kind == "extra_forbidden":
                fields = _fields_at(model, loc[:-1])
                hint = suggest(str(loc[-1]), fields) if not self.full else ""  # difflib: not for 100k keys
                self.add(path, f"{prefix}unknown key {str(loc[-1])!r}{hint}",
                         allowed=", ".join(fields) or "no keys", line_path=lpath)
            elif kind == "missing":
                self.add(path, f"{prefix}required key is missing", allowed=describe_field(model, loc), line_path=lpath)
            else:
                msg = e["msg"]
                if kind.startswith("value_error") and msg.startswith("Value error, "):
                    msg = msg[len("Value error, "):]
                self.add(path, prefix + msg, given=e.get("input", MISSING), allowed=describe_field(model, loc),
                         line_path=lpath)

    @property
    def full(self) -> bool:
        """Whether more problems than are shown have been found (then spare the costly hints)."""
        return len(self.items) >= MAX_SHOWN

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            # in file order (problems without a line, e.g. from overrides, first)
            self.items = [t for _, _, t in sorted(zip(self._lines, range(len(self.items)), self.items))]
            self._lines = sorted(self._lines)
            n = len(self.items)
            head = f"{n} problem{'s' if n > 1 else ''} in {self.source}:"
            shown = self.items[:MAX_SHOWN] + ([f"... and {n - MAX_SHOWN} more"] if n > MAX_SHOWN else [])
            raise ConfigError(head + "\n  " + "\n  ".join(shown), list(self.items))


def _fields_at(model: type[BaseModel], loc: Iterable[Any]) -> list[str]:
    m = _model_at(model, tuple(loc))
    return list(m.model_fields) if m is not None else []


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    m: Any = model
    for part in loc:
        if not (isinstance(m, type) and issubclass(m, BaseModel)) or part not in m.model_fields:
            return None
        m = _unwrap_model(m.model_fields[part].annotation)
    return m if isinstance(m, type) and issubclass(m, BaseModel) else None


def _unwrap_model(ann: Any) -> Any:
    for a in (ann, *getattr(ann, "__args__", ())):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return ann


def describe_field(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """'int >= 1', "one of 'cost', 'steps'", ... for the field at ``loc`` (None if unknown)."""
    if not loc:
        return None
    parent = _model_at(model, tuple(loc[:-1]))
    name = loc[-1]
    if parent is None or name not in parent.model_fields:
        return None
    f = parent.model_fields[name]
    return describe_annotation(f.annotation, f.metadata)


def describe_annotation(ann: Any, metadata: Iterable[Any] = ()) -> str:
    import typing

    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        text = "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        text = " or ".join(describe_annotation(a) for a in args)
        optional = len(args) < len(typing.get_args(ann))
        bounds = _bounds(metadata)
        return text + (" " + " and ".join(bounds) if bounds else "") + (" (or unset)" if optional else "")
    elif origin in (list, tuple):
        args = typing.get_args(ann)
        text = f"a list of {describe_annotation(args[0])}" if args else "a list"
    elif isinstance(ann, type) and issubclass(ann, BaseModel):  # a sub-table: its keys, not the class name
        text = "a table with keys " + ", ".join(ann.model_fields)
    elif isinstance(ann, type):
        text = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}.get(
            ann.__name__, ann.__name__)
    else:
        text = str(ann).replace("typing.", "")
    bounds = _bounds(metadata)
    return text + (" " + " and ".join(bounds) if bounds else "")


def _bounds(metadata: Iterable[Any]) -> list[str]:
    bounds = []
    for m in metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                bounds.append(f"{sym} {v}")
        pat = getattr(m, "pattern", None)
        if pat:
            bounds.append(f"matching {pat}")
    return bounds
