"""Every shipped scenario validates and runs in --quick mode (one test per file, so that
pytest-xdist spreads them over the workers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evosgd.run import execute_scenario, load_store
from evosgd.scenario import load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.toml"))


def test_there_are_scenarios():
    assert any(p.name == "quickstart.toml" for p in SCENARIOS)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_validates_and_runs_quick(path, tmp_path):
    full = load_scenario(path)  # the full file validates too
    sc = load_scenario(path, quick=True)
    assert sc.runs and len(sc.runs) <= len(full.runs) * 4
    execute_scenario(sc, tmp_path, workers=1, progress=False, device="cpu")
    data = load_store(tmp_path / sc.name)
    failed = {e["label"]: e["error"] for e in data.manifest["runs"].values() if e["status"] not in ("done", "diverged")}
    assert not failed, failed
    bad_analyses = {e["label"]: e["error"] for e in data.manifest["analyses"].values() if e["status"] != "done"}
    assert not bad_analyses, bad_analyses
    assert len(data.analyses) == len(sc.analyses)
    assert data.runs["run_id"].nunique() == len(sc.runs)
