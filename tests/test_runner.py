"""Runner: the engine loop and recorder, common random numbers, determinism, executors, failure,
divergence, interruption (Ctrl-C and SIGKILL) and resume, analyses, the memory guard."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_runner_components  # noqa: F401  (registers the test-only components)

from evosgd.core.errors import DeviceError
from evosgd.run import Schedule, SerialExecutor, execute_scenario, load_store, run_one
from evosgd.run.memory import estimate_run_bytes
from evosgd.run.store import ResultsStore
from evosgd.scenario import load_scenario

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

BASE = {
    "scenario": {"name": "t", "replicates": 3, "seed": 7, "device": "cpu", "targets": [1.0, 0.01],
                 "budget": {"max_cost": 200}, "record": {"log_points": 8}},
    "landscape": {"kind": "sphere", "dim": 3},
    "optimizer": [{"label": "rs", "kind": "test_random_search"}],
}


def doc(**changes):
    d = copy.deepcopy(BASE)
    for key, value in changes.items():
        section, _, rest = key.partition("__")
        if section == "optimizer":
            d["optimizer"] = value
        elif rest:
            d[section][rest] = value
        else:
            d[section] = value
    return d


def frames_equal_ignoring_wall(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in a.columns if c != "wall_time"]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))


def store_frames(root: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted((root / "runs").glob("*.parquet"))}


# ----------------------------------------------------------------------------- engine
def test_run_one_records_rows_of_the_store_contract():
    sc = load_scenario(doc())
    out = run_one(sc.runs[0])
    f = out.frame
    R = 3
    assert out.status == "done" and out.diverged_replicates == 0
    for col in ["scenario", "run_id", "label", "kind", "config", "sweep", "replicate", "seed", "step", "cost",
                "evaluations", "gradient_evaluations", "sim_time", "wall_time", "env_time", "true_loss", "error",
                "best_so_far", "distance", "optimal_loss", "diverged", "diverged_step", "m_sigma"]:
        assert col in f.columns, col
    assert len(f) % R == 0 and set(f["replicate"]) == {0, 1, 2}
    first = f[f["step"] == 0]
    assert (first["cost"] == 0).all() and len(first) == R  # recorded at cost 0 ...
    last = f.groupby("replicate").tail(1)
    assert (last["cost"] >= 200).all()  # ... and at the end of the budget (4 per step: 200 exactly)
    assert (last["cost"] == 200).all()
    # sphere: optimal loss 0, error = true loss, distance^2 = true loss (f = ||x - s||^2)
    np.testing.assert_allclose(f["optimal_loss"], 0.0)
    np.testing.assert_allclose(f["error"], f["true_loss"])
    np.testing.assert_allclose(f["distance"] ** 2, f["true_loss"], rtol=1e-4)
    for _, g in f.groupby("replicate"):  # the best error so far never increases and is the running min
        np.testing.assert_allclose(g["best_so_far"], np.minimum.accumulate(g["error"].to_numpy()))
    assert (f["m_sigma"] == 0.5).all() and not f["diverged"].any() and (f["diverged_step"] == -1).all()
    assert json.loads(f["config"].iloc[0])["params"] == {"samples": 4, "sigma": 0.5}


def test_schedule_log_spaced_and_every():
    s = Schedule({"log_points": 5, "every": None}, {"max_cost": 10_000})
    np.testing.assert_allclose(s.points, [1, 10, 100, 1000, 10_000])
    hits = [c for c in range(0, 10_001, 7) if s.due(c)]
    # one record per crossed point; a step that jumps several points records once
    assert hits == [7, 14, 105, 1001]  # 10_000 itself is recorded by the final record of a run
    e = Schedule({"log_points": None, "every": 50.0}, {"max_steps": 1000})
    assert e.axis == "steps"
    assert [v for v in range(0, 301, 20) if e.due(v)] == [60, 100, 160, 200, 260, 300]


def test_common_random_numbers_across_optimizers_and_replicate_counts():
    """Replicate r meets the same landscape instance whatever the optimizer and however many
    replicates run: the starting loss and the optimum are identical."""
    d = doc(optimizer=[{"label": "a", "kind": "test_random_search"},
                       {"label": "b", "kind": "test_random_search", "sigma": 2.0}])
    sc = load_scenario(d)
    fa, fb = (run_one(r).frame for r in sc.runs)
    start_a = fa[fa["step"] == 0].set_index("replicate")["true_loss"]
    start_b = fb[fb["step"] == 0].set_index("replicate")["true_loss"]
    pd.testing.assert_series_equal(start_a, start_b)
    # optimizer noise differs between runs (seeded by the run id)
    assert not np.allclose(fa.groupby("replicate").tail(1)["true_loss"], fb.groupby("replicate").tail(1)["true_loss"])
    more = load_scenario(doc(scenario__replicates=5))
    f5 = run_one(more.runs[0]).frame
    start5 = f5[f5["step"] == 0].set_index("replicate")["true_loss"]
    pd.testing.assert_series_equal(start5.loc[[0, 1, 2]], start_a, check_names=False)


def test_stalling_optimizer_fails_with_a_clear_message(tmp_path):
    sc = load_scenario(doc(optimizer=[{"label": "s", "kind": "test_stalling"}]))
    execute_scenario(sc, tmp_path, progress=False, workers=1)
    entry = next(iter(json.loads((tmp_path / "t" / "manifest.json").read_text())["runs"].values()))
    assert entry["status"] == "failed"
    assert "without spending any budget" in entry["error"]


# ----------------------------------------------------------------------------- store and sweep
def test_a_sweep_where_every_run_failed_returns_an_empty_frame_with_the_store_columns(tmp_path):
    # before: run_scenario returned pd.DataFrame() without columns and frame["run_id"] raised KeyError
    from evosgd.run import run_scenario
    from evosgd.run.engine import BASE_COLUMNS

    frame = run_scenario(doc(optimizer=[{"label": "bug", "kind": "test_failing"}]), tmp_path, progress=False, workers=1)
    assert len(frame) == 0 and list(frame.columns) == BASE_COLUMNS
    assert frame["run_id"].nunique() == 0


def test_failed_and_diverged_runs_are_recorded_and_the_sweep_completes(tmp_path):
    d = doc(optimizer=[{"label": "rs", "kind": "test_random_search"},
                       {"label": "boom", "kind": "test_diverging", "replicates_diverging": 2},
                       {"label": "bug", "kind": "test_failing"},
                       {"label": "rs2", "kind": "test_random_search", "sigma": 1.0}])
    execute_scenario(load_scenario(d), tmp_path, progress=False, workers=1)
    data = load_store(tmp_path / "t")
    status = {e["label"]: e for e in data.manifest["runs"].values()}
    assert status["rs"]["status"] == "done" and status["rs2"]["status"] == "done"
    assert status["boom"]["status"] == "diverged" and status["boom"]["diverged_replicates"] == 2
    assert status["bug"]["status"] == "failed" and "deliberate failure" in status["bug"]["error"]
    assert status["bug"]["file"] is None
    boom = data.runs[data.runs["label"] == "boom"]
    fin = boom.groupby("replicate").tail(1).set_index("replicate")
    assert fin.loc[0, "diverged"] and fin.loc[1, "diverged"] and not fin.loc[2, "diverged"]
    assert fin.loc[0, "diverged_step"] >= 0 and fin.loc[2, "diverged_step"] == -1
    # the healthy replicate spent its whole budget; the diverged ones stopped being charged
    assert fin.loc[2, "cost"] == 200 and fin.loc[0, "cost"] < 200
    assert set(data.runs["label"]) == {"rs", "rs2", "boom"}


def test_rerun_skips_finished_runs_force_redoes_and_missing_files_are_redone(tmp_path):
    d = doc(sweep={"optimizer.rs.sigma": [0.1, 0.3, 1.0]})
    sc = load_scenario(d)
    execute_scenario(sc, tmp_path, progress=False, workers=1)
    files = sorted((tmp_path / "t" / "runs").glob("*.parquet"))
    assert len(files) == 3
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    execute_scenario(sc, tmp_path, progress=False, workers=1)  # nothing to do
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    files[0].unlink()
    execute_scenario(sc, tmp_path, progress=False, workers=1)
    assert files[0].exists() and files[1].stat().st_mtime_ns == mtimes[files[1]]
    execute_scenario(sc, tmp_path, progress=False, force=True, workers=1)
    assert all(p.stat().st_mtime_ns != mtimes[p] for p in files[1:])
    data = load_store(tmp_path / "t")
    assert sorted(data.runs["p_optimizer.rs.sigma"].unique()) == [0.1, 0.3, 1.0]


def test_same_seed_identical_parquet_serial_and_process_pool(tmp_path):
    d = doc(optimizer=[{"label": "a", "kind": "test_random_search"}, {"label": "b", "kind": "test_random_search",
                                                                     "samples": 2}],
            sweep={"optimizer.a.sigma": [0.2, 0.6]})
    sc = load_scenario(d)
    execute_scenario(sc, tmp_path / "one", progress=False, executor=SerialExecutor())
    execute_scenario(sc, tmp_path / "two", progress=False, executor=SerialExecutor())
    execute_scenario(sc, tmp_path / "pool", progress=False, workers=2)  # spawn workers import the plugin
    one, two, pool = (store_frames(tmp_path / x / "t") for x in ("one", "two", "pool"))
    assert len(one) == 3 and one.keys() == two.keys() == pool.keys()
    for k in one:
        frames_equal_ignoring_wall(one[k], two[k])
        frames_equal_ignoring_wall(one[k], pool[k])
    other = load_scenario(doc(scenario__seed=8, optimizer=d["optimizer"], sweep=d["sweep"]))
    assert {r.run_id for r in other.runs}.isdisjoint(one)  # the seed is part of the run id


def test_ctrl_c_keeps_finished_runs_and_resume_completes(tmp_path):
    d = doc(optimizer=[{"label": "a", "kind": "test_random_search"},
                       {"label": "stop", "kind": "test_failing", "fail_at": 3, "exception": "interrupt"},
                       {"label": "c", "kind": "test_random_search", "sigma": 1.0}])
    with pytest.raises(KeyboardInterrupt):
        execute_scenario(load_scenario(d), tmp_path, progress=False, workers=1)
    man = json.loads((tmp_path / "t" / "manifest.json").read_text())
    status = {e["label"]: e["status"] for e in man["runs"].values()}
    assert status == {"a": "done", "stop": "pending", "c": "pending"}
    assert len(load_store(tmp_path / "t").runs.groupby("run_id")) == 1
    d["optimizer"][1] = {"label": "stop", "kind": "test_random_search", "samples": 1}
    execute_scenario(load_scenario(d), tmp_path, progress=False, workers=1)
    status = {e["label"]: e["status"] for e in json.loads((tmp_path / "t" / "manifest.json").read_text())["runs"].values()}
    assert status == {"a": "done", "stop": "done", "c": "done"}


SWEEP_TOML = """
[scenario]
name = "killme"
replicates = 2
seed = 3
device = "cpu"
[scenario.budget]
max_cost = 1500
[scenario.record]
every = 300
[landscape]
kind = "sphere"
dim = 4
[[optimizer]]
label = "rs"
kind = "test_random_search"
samples = 1
[sweep]
"optimizer.rs.sigma" = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
"""


def test_sigkill_mid_sweep_then_resume_equals_uninterrupted_run(tmp_path):
    """Kill the command with SIGKILL after its first run finished; a re-run resumes and the
    store ends identical (ignoring wall times) to an uninterrupted run; a partial temporary file
    is never read as a result."""
    scen = tmp_path / "killme.toml"
    scen.write_text(SWEEP_TOML)
    killed = tmp_path / "killed"
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_runner_components; "
            "from evosgd.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", code, "run", str(scen), "--out", str(killed), "--workers", "1",
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = killed / "killme" / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if runs.is_dir() and any(runs.glob("*.parquet")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    done_before = len(list(runs.glob("*.parquet")))
    assert 1 <= done_before < 8, "the kill should land mid-sweep"
    # a half-written file of a dead process: never read, cleaned up on resume
    fake = runs / ".rs-000000000000.parquet.tmp-999999999-deadbeef"
    fake.write_bytes(b"PAR1 partial")
    partial = load_store(killed / "killme")
    assert partial.runs["run_id"].nunique() <= done_before

    from evosgd.cli import main

    assert main(["run", str(scen), "--out", str(killed), "--workers", "1", "--no-progress"]) == 0
    assert not fake.exists()
    assert main(["run", str(scen), "--out", str(tmp_path / "clean"), "--workers", "1", "--no-progress"]) == 0
    a, b = store_frames(killed / "killme"), store_frames(tmp_path / "clean" / "killme")
    assert len(a) == 8 and a.keys() == b.keys()
    for k in a:
        frames_equal_ignoring_wall(a[k], b[k])
    man = json.loads((killed / "killme" / "manifest.json").read_text())
    assert all(e["status"] == "done" for e in man["runs"].values()) and len(man["runs"]) == 8


# ----------------------------------------------------------------------------- analyses
def test_analyses_are_run_stored_and_failures_recorded(tmp_path):
    d = doc(analysis=[{"label": "tiny", "kind": "test_tiny_analysis", "samples": 50},
                      {"label": "broken", "kind": "test_tiny_analysis", "fail": True}])
    execute_scenario(load_scenario(d), tmp_path, progress=False, workers=1)
    data = load_store(tmp_path / "t")
    assert [a["label"] for a in data.analyses] == ["tiny"]
    a = data.analyses[0]
    assert a["title"] == "tiny test analysis" and a["notes"] == ["50 samples on 3 replicates"]
    assert list(a["comparison"]["x"]) == [0.0, 1.0, 2.0] and len(a["tables"]["raw"]) == 150
    assert a["params"] == {"samples": 50, "fail": False}
    failed = [e for e in data.manifest["analyses"].values() if e["label"] == "broken"]
    assert failed[0]["status"] == "failed" and "deliberate analysis failure" in failed[0]["error"]


# ----------------------------------------------------------------------------- memory guard
def test_memory_guard_refuses_a_run_that_cannot_fit(tmp_path):
    d = doc(scenario__replicates=100_000, landscape={"kind": "sphere", "dim": 100_000})
    sc = load_scenario(d)
    # 4 bytes * 1e5 replicates * (8 P D + 2 P b D) with P = b = 1, D = 1e5: exactly 4e11 bytes
    assert estimate_run_bytes(sc.runs[0]) == 4 * 100_000 * (8 * 100_000 + 2 * 100_000)
    with pytest.raises(DeviceError, match=r"(?s)would not fit.*rs \(test_random_search, replicates=100000"):
        execute_scenario(sc, tmp_path, progress=False, workers=1)
    assert not any((tmp_path / "t" / "runs").glob("*.parquet"))


def test_memory_estimate_grows_with_replicates_population_and_batch():
    sc = load_scenario(doc(sweep={"scenario.replicates": [1, 2]}))
    small, big = (estimate_run_bytes(r) for r in sc.runs)
    assert big == 2 * small
    store = ResultsStore("unused")
    assert store.run_file("x") == "runs/x.parquet"


def _pid_after_a_while(task: int) -> tuple[int, int]:
    time.sleep(0.1)
    return task, os.getpid()


def test_process_pool_runs_every_task_once_and_the_parent_helps_while_it_starts():
    """The pool starts on a background thread (the forkserver's imports take seconds); until a
    worker has finished a task the parent runs tasks from the other end of the list.  Every task
    is run exactly once, some here and some in the workers."""
    from evosgd.run.executors import ProcessPoolExecutor

    tasks = list(range(16))
    with ProcessPoolExecutor(2) as ex:
        out = list(ex.map(_pid_after_a_while, tasks))
    assert sorted(t for t, _ in out) == tasks
    assert all(t == r[0] for t, r in out)
    pids = {r[1] for _, r in out}
    assert os.getpid() in pids and len(pids - {os.getpid()}) >= 1
    parent_tasks = [t for t, r in out if r[1] == os.getpid()]
    # the workers take tasks from the front of the list, the parent from the back: they meet once
    assert min(parent_tasks) == max(t for t, r in out if r[1] != os.getpid()) + 1
