"""Reading a scenario file as untrusted input: bounded before it is parsed.

A scenario path is checked before it is opened and the text before ``tomllib`` sees it, so that
no file makes the loader hang, fill the memory or overflow the stack:

- the path must name a regular file (a FIFO would block ``open`` forever; ``/dev/zero``, or a
  symlink to it, never ends): ``stat`` first, then at most ``MAX_FILE_BYTES + 1`` bytes are read;
- at most ``MAX_FILE_BYTES`` (1 MB; the largest shipped scenario is a few kB);
- a UTF-8 byte-order mark (which some Windows editors write) is dropped;
- nesting at most ``MAX_DEPTH``: ``tomllib`` parses arrays and inline tables recursively, and the
  loader copies and validates the document recursively, so ``[[[[...`` five thousand deep gives a
  ``RecursionError`` instead of a message.  :func:`nesting_problem` counts the depth of brackets
  and braces (outside strings and comments) and the number of parts of every key and table
  header (``[a.b.c...]`` nests as deep as its dotted parts) in one linear pass;
- ``tomllib``'s "Cannot overwrite a value (at line 3, column 4)" is completed with the key's name.
"""

from __future__ import annotations

import copy
import os
import re
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evosgd.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: the largest scenario file accepted, in bytes
MAX_FILE_BYTES = 1_000_000
#: the deepest nesting accepted (arrays, inline tables, dotted key parts, all counted together)
MAX_DEPTH = 32

_BOM = "\ufeff"
_AT_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")


def read_text_bounded(path: Path, name: str, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``, refused with one message otherwise."""
    try:
        st = os.stat(path)  # follows symlinks: a link to /dev/zero is judged by its target
    except FileNotFoundError:
        raise ConfigError(f"{name}: scenario file not found") from None
    except OSError as e:
        raise ConfigError(f"{name}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{name}: is a directory, not a scenario file")
    if not stat.S_ISREG(st.st_mode):
        what = ("a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise ConfigError(f"{name}: is {what}; a scenario must be a regular file")
    if st.st_size > limit:
        raise ConfigError(f"{name}: is {st.st_size:,} bytes; a scenario file may hold at most {limit:,} bytes")
    try:
        # O_NONBLOCK: should the path have been swapped for a FIFO since the stat, open does not block
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ConfigError(f"{name}: is not a regular file; a scenario must be a regular file")
            data = fh.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"{name}: cannot read ({e.strerror})") from None
    if len(data) > limit:  # it grew since the stat
        raise ConfigError(f"{name}: holds more than {limit:,} bytes; a scenario file may hold at most {limit:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    return text[1:] if text.startswith(_BOM) else text


def nesting_problem(text: str, limit: int = MAX_DEPTH) -> str | None:
    """'line N: ...' when the TOML text nests deeper than ``limit``, else None.

    A linear scan that knows strings (basic, literal, multi-line, with escapes) and comments, so a
    bracket inside a string does not count.  Brackets and braces add one level each; a key or
    header with k dotted parts adds k levels (on top of the brackets it sits in).
    """
    depth, line, i, n = 0, 1, 0, len(text)
    parts, at_key = 1, True  # parts of the key being read; whether a key may start here
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            if depth == 0:
                parts, at_key = 1, True
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "\"'":
            triple = text.startswith(c * 3, i)
            end, i = _string_end(text, i, c, triple)
            line += text.count("\n", i, end)
            i = end
            continue
        elif c in "[{":
            depth += 1
            # a key follows: in an inline table, or in a table header ([a.b] or [[a.b]] at a line start)
            at_key = c == "{" or (at_key and depth <= 2)
            parts = 1
            if depth > limit:
                return f"line {line}: nested {depth} levels deep (arrays and inline tables); at most {limit} allowed"
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c == "=":
            at_key = False
        elif c == "," and depth > 0:
            at_key = True
            parts = 1
        elif c == "." and at_key:
            parts += 1
            if depth + parts > limit:
                return f"line {line}: a key or table header with {parts} dotted parts nests too deep; at most {limit} levels allowed"
        i += 1
    return None


def _string_end(text: str, i: int, quote: str, triple: bool) -> tuple[int, int]:
    """(index after the string starting at i, i)."""
    if triple:
        j = text.find(quote * 3, i + 3)
        if j < 0:
            return len(text), i
        j += 3
        while j < len(text) and text[j] == quote:  # """a"""" ends with the last three quotes
            j += 1
        return j, i
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch == "\\" and quote == '"':
            j += 2
            continue
        if ch == quote or ch == "\n":
            return j + 1, i
        j += 1
    return j, i


def _duplicate_key_hint(text: str, message: str) -> str:
    """tomllib names the line of an overwritten value but not its key: add the key."""
    if not message.startswith("Cannot overwrite a value"):
        return message
    m = _AT_LINE.search(message)
    if not m:
        return message + " (a key is defined twice)"
    src = text.splitlines()[int(m.group(1)) - 1] if int(m.group(1)) <= len(text.splitlines()) else ""
    key = src.split("=", 1)[0].strip() if "=" in src else src.strip()
    return f"key {key!r} is defined twice (at line {m.group(1)}); each key may appear once per table"


def parse_toml(text: str, name: str) -> dict[str, Any]:
    """``tomllib.loads`` with every failure turned into one ConfigError naming ``name``."""
    problem = nesting_problem(text)
    if problem:
        raise ConfigError(f"{name}: {problem}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: invalid TOML: {_duplicate_key_hint(text, str(e))}") from None
    except RecursionError:  # a nesting the scan did not foresee
        raise ConfigError(f"{name}: nested too deeply; at most {MAX_DEPTH} levels allowed") from None


def document_depth_problem(obj: Any, limit: int = MAX_DEPTH) -> str | None:
    """For documents given as dicts (not text): the first path nested deeper than ``limit``."""
    stack = [(obj, 0)]
    while stack:
        node, d = stack.pop()
        if d > limit:
            return f"nested {d} levels deep; at most {limit} allowed"
        if isinstance(node, Mapping):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, d + 1) for v in node)
    return None


def read_document(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str | None, str]:
    """(document, TOML text or None, display name of the source)."""
    if isinstance(source, Mapping):
        problem = document_depth_problem(source)
        if problem:
            raise ConfigError(f"<scenario dict>: {problem}")
        return copy.deepcopy(dict(source)), None, "<scenario dict>"
    name = str(source)
    text = read_text_bounded(Path(source), name)
    return parse_toml(text, name), text, name
