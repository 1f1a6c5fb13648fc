"""The results store (contract 4, STORE.md): ``<out>/<scenario>/`` with one Parquet file per run,
the analyses, and ``manifest.json``.

Every file is written atomically: to a temporary name in the same folder, then ``os.replace``d
into place, so a reader (or a resumed sweep) never sees half a file; a run file's presence means
the run finished.  Readers only read what the manifest lists.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from evosgd.core.errors import ConfigError

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
        """Delete temporary files left by a killed process (never those of a live one)."""
        for folder in (self.root, self.runs_dir, self.analyses_dir):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                m = _TMP.match(p.name)
                if m and not _alive(int(m.group("pid"))):
                    p.unlink(missing_ok=True)

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
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.manifest_path, manifest)


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


def load_store(path: str | Path) -> StoreData:
    """Load every finished run (listed in the manifest, file present) and every analysis."""
    root = find_store(path)
    store = ResultsStore(root)
    manifest = store.read_manifest()
    if manifest is None:
        raise ConfigError(f"{root / 'manifest.json'}: unreadable manifest")
    frames = []
    for run_id, entry in manifest.get("runs", {}).items():
        f = entry.get("file")
        if entry.get("status") in ("done", "diverged") and f and (root / f).is_file():
            frames.append(pd.read_parquet(root / f))
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
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        comparison = pd.read_parquet(root / entry["file"]) if (root / entry.get("file", "")).is_file() else pd.DataFrame()
        tables = {name: pd.read_parquet(root / rel) for name, rel in meta.get("tables", {}).items() if (root / rel).is_file()}
        analyses.append({"id": aid, "label": meta.get("label"), "kind": meta.get("kind"), "title": meta.get("title", ""),
                         "notes": meta.get("notes", []), "confidence": meta.get("confidence", 0.95),
                         "params": meta.get("params", {}), "comparison": comparison, "tables": tables})
    return StoreData(path=root, manifest=manifest, runs=runs, analyses=analyses)
