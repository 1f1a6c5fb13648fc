"""Writing a report into a folder that may hold other files: build aside, swap in, remove only
what an earlier report wrote.

The report is built in a temporary folder ``.<name>.tmp-<pid>-<hex>`` beside the target (same
file system, so renames are atomic).  When the target does not exist the whole folder is renamed
into place; otherwise each new file is ``os.replace``d over its old version, and then the files
that the previous report listed and this one did not write are removed.  The list of a report's
own files is ``.evosgd-report.json`` in its folder.  A folder written before that list existed is
recognised by its ``index.html`` (an evosgd report): its PNG/SVG figures and CSV tables directly
in ``figures/`` and ``tables/`` are taken as that report's.  Nothing else is ever deleted: a
user's notes, a README, a subfolder of their own stay.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

LISTING = ".evosgd-report.json"
_LEGACY = {"figures": (".png", ".svg"), "tables": (".csv",)}


@contextlib.contextmanager
def building(out_dir: Path) -> Iterator[Path]:
    """A fresh temporary folder to build the report of ``out_dir`` in; swapped in on success,
    removed (it is ours alone) either way."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def previous_files(out_dir: Path) -> set[str]:
    """The files the report already in ``out_dir`` wrote (see the module docstring)."""
    listing = out_dir / LISTING
    if listing.is_file():
        try:
            names = json.loads(listing.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            names = []
        return {n for n in names if isinstance(n, str) and _is_plain_relative(n)}
    index = out_dir / "index.html"
    try:
        is_report = index.is_file() and "evosgd report" in index.read_text(encoding="utf-8", errors="replace")[:4000]
    except OSError:
        is_report = False
    if not is_report:
        return set()
    found = {"index.html", "report.md"}
    for folder, suffixes in _LEGACY.items():
        d = out_dir / folder
        if d.is_dir() and not d.is_symlink():
            found |= {f"{folder}/{p.name}" for p in d.iterdir() if p.is_file() and p.suffix in suffixes}
    return found


def _is_plain_relative(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def swap_in(tmp: Path, out_dir: Path) -> None:
    """Move the report built in ``tmp`` to ``out_dir`` (see the module docstring)."""
    written = _files(tmp)
    (tmp / LISTING).write_text(json.dumps(written, indent=0) + "\n", encoding="utf-8")
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = previous_files(out_dir)
    home = out_dir.resolve()

    def inside(target: Path) -> bool:  # a symlinked figures/ must not lead a write or delete elsewhere
        return target.parent.resolve() == home or home in target.parent.resolve().parents

    for rel in written:
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not inside(target):
            raise OSError(f"{target.parent}: leads outside the report folder {out_dir} (a symbolic link?)")
        if target.is_dir() and not target.is_symlink():
            raise OSError(f"{target}: a folder is in the way of the report's file")
        os.replace(tmp / rel, target)
    for rel in sorted(old - set(written)):
        target = out_dir / rel
        if inside(target) and (target.is_file() or target.is_symlink()):
            target.unlink()
    for folder in ("figures", "tables"):
        d = out_dir / folder
        with contextlib.suppress(OSError):  # only when empty: a user's file keeps it
            if d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
                d.rmdir()
    os.replace(tmp / LISTING, out_dir / LISTING)
