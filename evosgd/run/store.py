"""The results store (contract 4, STORE.md): ``<out>/<scenario>/`` with one Parquet file per run,
the analyses, and ``manifest.json``.

Every file is written atomically: to a temporary name in the same folder, then ``os.replace``d
into place, so a reader (or a resumed sweep) never sees half a file; a run file's presence means
the run finished.  Readers only read what the manifest lists.

One writer at a time: ``evosgd run`` holds an advisory lock (``fcntl.flock`` on ``<store>/.lock``,
released by the kernel when the process ends, however it ends) for its whole sweep; a second
writer waits for it or, asked not to wait, refuses with the first one's pid and command.  The
holder sweeps every temporary file on start (with the lock held, none can belong to a live
writer) and merges the manifest with the one on disk at every write, so runs another invocation
finished (with other options: other run ids) stay listed, under ``other_runs``.

A results folder is untrusted input to ``show`` and ``report``: :func:`load_store` accepts a
scenario name only as the scenario loader would, and a file path only inside the store.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evosgd.core.errors import ConfigError, EvosgdError

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: no advisory lock; one writer is the user's care)
    fcntl = None  # type: ignore[assignment]

#: a run or analysis id: what the runner writes (label + hash); nothing that walks out of a folder
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_+.\-]{0,200}$")
_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename tmp onto ``path`` (same folder, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:  # the data must be on disk before the name points at it
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "inf", "nan": JSON has no such numbers
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=False, default=str)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


class ResultsStore:
    """Paths and atomic writes of one scenario's results folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.analyses_dir = self.root / "analyses"
        self.manifest_path = self.root / "manifest.json"

    def prepare(self) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.analyses_dir.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temporaries()

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files left by a killed process.  With the store's lock held by this
        process every temporary is stale (no other writer can be at work); without it, only
        those whose writer's pid is gone."""
        locked = getattr(self, "lock", None) is not None and self.lock.held
        for folder in (self.root, self.runs_dir, self.analyses_dir):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                m = _TMP.match(p.name)
                if m and (locked or not _alive(int(m.group("pid")))):
                    p.unlink(missing_ok=True)

    def acquire(self, wait: bool = True, notify: Callable[[str], None] | None = None) -> StoreLock:
        """Take the store's writer lock (see the module docstring); ``notify`` hears why we wait."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = StoreLock(self.root / LOCK_NAME)
        self.lock.acquire(wait=wait, notify=notify)
        return self.lock

    def release(self) -> None:
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()

    # -- runs
    def run_file(self, run_id: str) -> str:
        return f"runs/{run_id}.parquet"

    def has_run(self, run_id: str) -> bool:
        return (self.root / self.run_file(run_id)).is_file()

    def write_run(self, run_id: str, frame: pd.DataFrame) -> str:
        rel = self.run_file(run_id)
        write_parquet(self.root / rel, frame)
        return rel

    # -- analyses
    def analysis_files(self, analysis_id: str) -> str:
        return f"analyses/{analysis_id}.parquet"

    def has_analysis(self, analysis_id: str) -> bool:
        return (self.analyses_dir / f"{analysis_id}.json").is_file()

    def write_analysis(self, analysis_id: str, result: Any, meta: dict[str, Any]) -> str:
        rel = self.analysis_files(analysis_id)
        write_parquet(self.root / rel, result.comparison)
        tables = {}
        for name, table in (result.tables or {}).items():
            safe = re.sub(r"[^A-Za-z0-9_\-]+", "_", str(name))
            write_parquet(self.analyses_dir / f"{analysis_id}.{safe}.parquet", table)
            tables[str(name)] = f"analyses/{analysis_id}.{safe}.parquet"
        info = {**meta, "title": result.title, "notes": list(result.notes), "confidence": result.confidence,
                "tables": tables}
        write_json(self.analyses_dir / f"{analysis_id}.json", info)  # written last: its presence = complete
        return rel

    # -- manifest
    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.is_file():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError, OSError):  # not JSON, not UTF-8, nested absurdly deep
            return None
        return manifest if isinstance(manifest, dict) else None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write ``manifest`` merged with the one on disk (re-read now, never a stale copy): the
        finished runs on disk that ``manifest`` does not name (another invocation's, with other
        options) are kept under ``other_runs``."""
        disk = self.read_manifest() or {}
        others = dict(manifest.get("other_runs") or {})
        for section in ("runs", "other_runs"):
            entries = disk.get(section)
            if not isinstance(entries, dict):
                continue
            for run_id, entry in entries.items():
                if (run_id in manifest.get("runs", {}) or not isinstance(entry, dict)
                        or entry.get("status") not in ("done", "diverged") or not _SAFE_ID.fullmatch(str(run_id))):
                    continue
                if (self.root / self.run_file(run_id)).is_file():
                    others.setdefault(run_id, entry)
        for run_id in list(others):
            if run_id in manifest.get("runs", {}):
                del others[run_id]
        if others:
            manifest["other_runs"] = others
        write_json(self.manifest_path, manifest)


LOCK_NAME = ".lock"


class StoreBusyError(EvosgdError):
    """Another process writes this results store."""


class StoreLock:
    """An advisory writer lock: ``fcntl.flock`` on a file that names its holder (pid, command)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fh: Any = None
        self.held = False

    def _holder(self) -> str:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return "another process"
        return text[:300] or "another process"

    def acquire(self, wait: bool = True, notify: Callable[[str], None] | None = None) -> None:
        if fcntl is None:  # pragma: no cover
            self.held = True
            return
        self.fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            if not wait:
                self.fh.close()
                self.fh = None
                raise StoreBusyError(f"{self.path.parent}: results store in use by {holder}; wait for it to finish "
                                     "or write elsewhere (--out DIR)") from None
            if notify is not None:
                notify(f"{self.path.parent}: results store in use by {holder}; waiting for it to finish "
                       "(Ctrl-C to stop)")
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX)
        self.held = True
        import sys

        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()} ({' '.join(sys.argv)[:200]})\n")
        self.fh.flush()

    def release(self) -> None:
        if self.fh is not None:
            try:
                self.fh.truncate(0)
                fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            finally:
                self.fh.close()
                self.fh = None
        self.held = False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- reader
@dataclass
class StoreData:
    """A results store loaded into memory (see STORE.md)."""

    path: Path
    manifest: dict[str, Any]
    runs: pd.DataFrame
    analyses: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"StoreData({str(self.path)!r}, scenario={self.manifest.get('scenario')!r}, "
                f"runs={len(self.manifest.get('runs', {}))}, rows={len(self.runs)}, analyses={len(self.analyses)})")


def find_store(path: str | Path) -> Path:
    """Accept a store folder, its manifest, or a results folder holding exactly one store."""
    p = Path(path)
    if p.is_file() and p.name == "manifest.json":
        return p.parent
    if (p / "manifest.json").is_file():
        return p
    if p.is_dir():
        subs = [d for d in sorted(p.iterdir()) if (d / "manifest.json").is_file()]
        if len(subs) == 1:
            return subs[0]
        if len(subs) > 1:
            raise ConfigError(f"{p} holds several results stores ({', '.join(d.name for d in subs)}); name one")
    raise ConfigError(f"{p}: not a results store (no manifest.json); run a scenario first: evosgd run SCENARIO --out DIR")


def check_manifest(manifest: dict[str, Any], where: Path) -> None:
    """Refuse a manifest whose names could lead a reader outside the store: the scenario name
    as the scenario loader accepts it, and every file named exactly where the runner writes it."""
    from evosgd.scenario.schema import NAME_PATTERN

    name = manifest.get("scenario")
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name) or len(name) > 100:
        raise ConfigError(f"{where}: scenario: {str(name)[:80]!r} is not a scenario name; allowed: letters, digits, "
                          "_ . + - (not starting with '.'), as in a scenario file")
    for section, folder in (("runs", "runs"), ("other_runs", "runs"), ("analyses", "analyses")):
        entries = manifest.get(section, {})
        if not isinstance(entries, dict):
            raise ConfigError(f"{where}: {section}: must be a table of entries")
        for key, entry in entries.items():
            if not _SAFE_ID.fullmatch(str(key)) or not isinstance(entry, dict):
                raise ConfigError(f"{where}: {section}: {str(key)[:80]!r} is not a run id of this store")
            f = entry.get("file")
            if f is not None and f != f"{folder}/{key}.parquet":
                raise ConfigError(f"{where}: {section}.{key}.file: {str(f)[:80]!r} is not where evosgd writes it "
                                  f"(allowed: {folder}/{key}.parquet)")


def _inside(root: Path, rel: Any) -> bool:
    """Whether ``rel`` is a relative path to a Parquet file inside ``root/analyses``."""
    return isinstance(rel, str) and re.fullmatch(r"analyses/[A-Za-z0-9_][A-Za-z0-9_+.\-]*\.parquet", rel) is not None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow's errors for a truncated or foreign file: the store's problem, said once
        raise ConfigError(f"{path}: unreadable Parquet file ({type(e).__name__}: {str(e)[:200]})") from None


def load_store(path: str | Path) -> StoreData:
    """Load every finished run (listed in the manifest, file present) and every analysis."""
    root = find_store(path)
    store = ResultsStore(root)
    manifest = store.read_manifest()
    if manifest is None:
        raise ConfigError(f"{root / 'manifest.json'}: unreadable manifest")
    check_manifest(manifest, root / "manifest.json")
    frames = []
    for entry in manifest.get("runs", {}).values():
        f = entry.get("file")
        if entry.get("status") in ("done", "diverged") and f and (root / f).is_file():
            frames.append(_read_parquet(root / f))
    frames = [f for f in frames if len(f)]
    if frames:
        runs = pd.concat(frames, ignore_index=True)
    else:
        # no finished run (all failed, or none yet): still the contract's columns, so that
        # ``runs["run_id"]`` is an empty column and not a KeyError
        from evosgd.run.engine import BASE_COLUMNS

        runs = pd.DataFrame(columns=BASE_COLUMNS)
    analyses = []
    for aid, entry in manifest.get("analyses", {}).items():
        meta_path = root / "analyses" / f"{aid}.json"
        if entry.get("status") != "done" or not meta_path.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError):
            raise ConfigError(f"{meta_path}: unreadable analysis record") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("tables", {}), dict):
            raise ConfigError(f"{meta_path}: unreadable analysis record")
        bad = [rel for rel in meta.get("tables", {}).values() if not _inside(root, rel)]
        if bad:
            raise ConfigError(f"{meta_path}: tables: {str(bad[0])[:80]!r} is not a file of this store's analyses/")
        comparison = _read_parquet(root / entry["file"]) if entry.get("file") and (root / entry["file"]).is_file() else pd.DataFrame()
        tables = {name: _read_parquet(root / rel) for name, rel in meta.get("tables", {}).items() if (root / rel).is_file()}
        analyses.append({"id": aid, "label": meta.get("label"), "kind": meta.get("kind"), "title": meta.get("title", ""),
                         "notes": meta.get("notes", []), "confidence": meta.get("confidence", 0.95),
                         "params": meta.get("params", {}), "comparison": comparison, "tables": tables})
    return StoreData(path=root, manifest=manifest, runs=runs, analyses=analyses)
