"""Results store: atomic writes, what a reader reads (only finished runs the manifest lists,
never a temporary file), stale temporaries, the manifest's provenance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import test_runner_components  # noqa: F401

from evosgd.core.errors import ConfigError
from evosgd.run import execute_scenario, load_store
from evosgd.run.store import ResultsStore, atomic_write, find_store, write_json
from evosgd.scenario import load_scenario

DOC = {
    "scenario": {"name": "st", "replicates": 2, "seed": 5, "device": "cpu", "targets": [0.5],
                 "budget": {"max_cost": 40}, "record": {"every": 10}},
    "landscape": {"kind": "sphere", "dim": 2},
    "optimizer": [{"label": "rs", "kind": "test_random_search"}],
    "sweep": {"optimizer.rs.sigma": [0.1, 1.0]},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store")
    execute_scenario(load_scenario(DOC), out, progress=False, workers=1, command="evosgd run st.toml")
    return out / "st"


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "f.parquet"

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["f.parquet"]


def test_manifest_has_the_store_contract_fields(finished):
    m = json.loads((finished / "manifest.json").read_text())
    for key in ("scenario", "description", "resolved", "source_file", "quick", "seed", "replicates", "targets",
                "grad_cost", "clock", "landscape", "provenance", "runs", "analyses"):
        assert key in m, key
    prov = m["provenance"]
    for key in ("evosgd", "python", "torch", "numpy", "deap", "platform", "device", "git_revision", "created",
                "command"):
        assert key in prov, key
    assert prov["command"] == "evosgd run st.toml" and prov["device"].startswith("cpu")
    assert m["landscape"] == {"kind": "sphere", "params": m["resolved"]["landscape"]["params"], "drift": None}
    assert len(m["runs"]) == 2
    for run_id, e in m["runs"].items():
        assert e["status"] == "done" and e["error"] is None and e["file"] == f"runs/{run_id}.parquet"
        assert e["label"] == "rs" and e["kind"] == "test_random_search" and set(e["sweep"]) == {"optimizer.rs.sigma"}
        assert e["config"]["seed"] == 5 and e["wall_time"] > 0


def test_reader_reads_only_finished_runs_listed_in_the_manifest(finished, tmp_path):
    import shutil

    copy = tmp_path / "st"
    shutil.copytree(finished, copy)
    data = load_store(copy)
    assert len(data.runs) == 2 * 2 * 5  # 2 runs x 2 replicates x records at cost 0, 10, 20, 30, 40
    assert sorted(data.runs.groupby("run_id")["cost"].max()) == [40.0, 40.0]
    # a stray finished-looking file and a partial temporary file are both ignored
    frame = pd.read_parquet(next((copy / "runs").glob("*.parquet")))
    frame.assign(run_id="stray").to_parquet(copy / "runs" / "stray.parquet")
    (copy / "runs" / ".x.parquet.tmp-1-abc").write_bytes(b"PAR1 half")
    assert len(load_store(copy).runs) == 20
    # a run marked failed (or pending) is not read even if a file exists
    m = json.loads((copy / "manifest.json").read_text())
    first = next(iter(m["runs"]))
    m["runs"][first]["status"] = "pending"
    write_json(copy / "manifest.json", m)
    assert load_store(copy).runs["run_id"].nunique() == 1


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    store = ResultsStore(tmp_path / "s")
    store.prepare()
    dead = store.runs_dir / ".a.parquet.tmp-999999999-0a1b2c3d"
    live = store.runs_dir / f".b.parquet.tmp-{os.getpid()}-0a1b2c3d"
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    store.prepare()
    assert not dead.exists() and live.exists()


def test_find_store_accepts_the_folder_its_parent_or_the_manifest(finished, tmp_path):
    assert find_store(finished) == finished
    assert find_store(finished.parent) == finished
    assert find_store(finished / "manifest.json") == finished
    with pytest.raises(ConfigError, match="not a results store"):
        find_store(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="several results stores"):
        find_store(tmp_path)


def test_json_safe_manifest_values(tmp_path):
    write_json(tmp_path / "m.json", {"x": float("inf"), "y": [float("nan"), 1.0]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": "inf", "y": ["nan", 1.0]}


# ----------------------------------------------------------------------------- one writer at a time (#22)
def test_a_second_writer_is_refused_with_the_holder_named_or_waits(tmp_path):
    from evosgd.run.store import StoreBusyError, StoreLock

    first = ResultsStore(tmp_path / "s")
    first.acquire()
    # flock locks conflict between two open files of one process too: the second opener is refused
    with pytest.raises(StoreBusyError, match=rf"in use by pid {os.getpid()}"):
        ResultsStore(tmp_path / "s").acquire(wait=False)
    heard = []
    import threading

    second = ResultsStore(tmp_path / "s")
    t = threading.Thread(target=second.acquire, kwargs={"notify": heard.append})
    t.start()
    t.join(0.5)
    assert t.is_alive() and heard and "waiting for it to finish" in heard[0]
    first.release()
    t.join(10)
    assert not t.is_alive() and second.lock.held
    second.release()
    assert not StoreLock(tmp_path / "s" / ".lock").held


def test_with_the_lock_held_every_temporary_is_swept_even_of_a_live_pid(tmp_path):
    store = ResultsStore(tmp_path / "s")
    store.acquire()
    try:
        store.prepare()
        live = store.runs_dir / f".b.parquet.tmp-{os.getpid()}-0a1b2c3d"  # e.g. a reused pid
        live.write_bytes(b"x")
        store.prepare()
        assert not live.exists()
    finally:
        store.release()


def test_manifest_is_merged_with_the_disk_never_overwritten_from_a_stale_copy(tmp_path):
    store = ResultsStore(tmp_path / "s")
    store.prepare()
    for rid in ("a-1", "b-2", "c-3"):
        (store.runs_dir / f"{rid}.parquet").write_bytes(b"x")
    store.write_manifest({"scenario": "s", "runs": {"a-1": {"status": "done", "file": "runs/a-1.parquet"},
                                                    "b-2": {"status": "failed", "file": None}}})
    # a stale copy that knows nothing of a-1 (another invocation's run): a-1 stays listed
    store.write_manifest({"scenario": "s", "runs": {"c-3": {"status": "done", "file": "runs/c-3.parquet"}}})
    m = store.read_manifest()
    assert set(m["runs"]) == {"c-3"} and set(m["other_runs"]) == {"a-1"}  # a failed run has no file to keep
    # once this invocation lists a-1 itself, it is no longer an other run
    store.write_manifest({"scenario": "s", "runs": {"a-1": {"status": "done", "file": "runs/a-1.parquet"}}})
    m = store.read_manifest()
    assert set(m["runs"]) == {"a-1"} and set(m["other_runs"]) == {"c-3"}


SMALL_TOML = """\
[scenario]
name = "two"
seed = 4
device = "cpu"
[scenario.budget]
max_cost = 300
[scenario.record]
log_points = 4
[landscape]
kind = "sphere"
dim = 3
[[optimizer]]
label = "sgd"
kind = "sgd"
lr = 0.1
[sweep]
"optimizer.sgd.lr" = [0.05, 0.1, 0.2]
"""


def test_two_concurrent_writers_with_different_options_end_with_every_finished_run_listed(tmp_path, capsys):
    """Two `evosgd run` into one folder at once, with other replicates (other run ids).  To make
    them truly concurrent the test holds the store's lock until both have said they wait, then
    lets go: they race for it, and at the end the manifest lists all six finished runs."""
    import subprocess
    import sys
    import time

    from evosgd.cli import main

    scenario = tmp_path / "two.toml"
    scenario.write_text(SMALL_TOML)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    gate = ResultsStore(tmp_path / "out" / "two")
    gate.acquire()
    logs = [tmp_path / f"err{r}.txt" for r in (2, 3)]
    procs = [subprocess.Popen([sys.executable, "-m", "evosgd", "run", str(scenario), "--out", str(tmp_path / "out"),
                               "--replicates", str(r), "--workers", "1", "--no-progress"], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(log, "w")) for r, log in zip((2, 3), logs)]
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not all("waiting for it to finish" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.05)
    finally:
        gate.release()
    assert [p.wait(timeout=300) for p in procs] == [0, 0], [log.read_text() for log in logs]
    expected = {r.run_id for reps in (2, 3) for r in load_scenario(scenario, replicates=reps).runs}
    m = json.loads((tmp_path / "out" / "two" / "manifest.json").read_text())
    listed = {k: v for section in ("runs", "other_runs") for k, v in m.get(section, {}).items()}
    assert len(expected) == 6 and set(listed) == expected
    assert all(v["status"] == "done" and (tmp_path / "out" / "two" / v["file"]).is_file() for v in listed.values())
    capsys.readouterr()
    assert main(["show", str(tmp_path / "out" / "two")]) == 0
    assert "also in this store: 3 finished run(s) of other options (sgd)" in capsys.readouterr().out
