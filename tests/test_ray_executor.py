"""Ray executor (issue #10): a sweep run as Ray tasks on a local Ray instance (2 CPUs) writes the
same results store as the local executor (ignoring wall times), in both result modes (the driver
writes the returned table / the worker writes to the shared folder); a sweep interrupted mid-way
resumes with the missing runs only; without Ray the executor is a clear error.

One local Ray instance serves every Ray test of this module: starting it costs ~10 s, and its
worker processes (which import torch and evosgd once) are reused across tests."""

from __future__ import annotations

import builtins
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from evosgd.core.errors import EvosgdError
from evosgd.run import execute_scenario, load_store
from evosgd.scenario import load_scenario

SWEEP = {
    "scenario": {"name": "raysweep", "replicates": 2, "seed": 11, "device": "cpu", "dtype": "float64",
                 "budget": {"max_cost": 1500}, "record": {"log_points": 6}},
    "landscape": {"kind": "ellipsoid", "dim": 4, "condition": 10.0, "noise_std": 0.1},
    "optimizer": [{"label": "sgd", "kind": "sgd", "batch_size": 4, "lr": 0.02},
                  {"label": "adam", "kind": "adam", "batch_size": 4, "lr": 0.05}],
    "sweep": {"optimizer.sgd.lr": [0.01, 0.02, 0.04, 0.08]},
}
N_RUNS = 5  # 4 swept SGD runs + the Adam run
TOML = """
[scenario]
name = "raysweep"
replicates = 2
seed = 11
device = "cpu"
dtype = "float64"
[scenario.budget]
max_cost = 1500
[scenario.record]
log_points = 6
[landscape]
kind = "ellipsoid"
dim = 4
condition = 10.0
noise_std = 0.1
[[optimizer]]
label = "sgd"
kind = "sgd"
batch_size = 4
lr = 0.02
[[optimizer]]
label = "adam"
kind = "adam"
batch_size = 4
lr = 0.05
[sweep]
"optimizer.sgd.lr" = [0.01, 0.02, 0.04, 0.08]
"""  # SWEEP as a file
ROOT = Path(__file__).resolve().parent.parent


def run_frames(root: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p).drop(columns="wall_time") for p in sorted((root / "runs").glob("*.parquet"))}


def assert_same_store(a: Path, b: Path) -> None:
    fa, fb = run_frames(a), run_frames(b)
    assert len(fa) == N_RUNS and fa.keys() == fb.keys()
    for k in fa:
        pd.testing.assert_frame_equal(fa[k], fb[k])
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert ma["runs"].keys() == mb["runs"].keys()
    for k, ea in ma["runs"].items():
        diff = {f: (v, mb["runs"][k].get(f)) for f, v in ea.items() if f != "wall_time" and mb["runs"][k].get(f) != v}
        assert not diff, (k, diff)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class InterruptAfter:
    """Wraps an executor: Ctrl-C in the driver after ``n`` finished runs (the runs in flight are
    cancelled); counts the tasks it was asked to run."""

    def __init__(self, inner, n: int | None = None) -> None:
        self.inner, self.n, self.submitted = inner, n, 0
        self.in_process, self.workers = inner.in_process, inner.workers

    def map(self, fn, tasks):
        tasks = list(tasks)
        self.submitted += len(tasks)
        for i, item in enumerate(self.inner.map(fn, tasks), start=1):
            yield item
            if self.n is not None and i >= self.n:
                raise KeyboardInterrupt

    def shutdown(self, cancel=False):
        self.inner.shutdown(cancel=cancel)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown(cancel=exc[0] is not None)


def test_ray_sweep_equals_local_store_and_resumes_only_missing_runs(ray_session, tmp_path):
    """(One test, so that one Ray instance serves it all under pytest-xdist too.)"""
    from evosgd.run.ray_executor import RayExecutor

    # A driver killed with SIGKILL mid-sweep (another process, joined to this Ray instance as a
    # second driver): its finished runs are kept, a re-run completes only the missing ones.
    # (First: this job's own worker processes start after the other job's are gone.)
    slow_doc = {**SWEEP, "scenario": {**SWEEP["scenario"], "budget": {"max_cost": 8000}}}  # ~0.3 s a run
    slow = load_scenario(slow_doc)
    execute_scenario(slow, tmp_path / "local_slow", workers=1, progress=False)
    killed = tmp_path / "killed" / "raysweep"
    code = ("import sys; from evosgd.run import execute_scenario; from evosgd.scenario import load_scenario; "
            "from evosgd.run.ray_executor import RayExecutor; import json; "
            "execute_scenario(load_scenario(json.loads(sys.argv[1])), sys.argv[2], progress=False, "
            "executor=RayExecutor(address=sys.argv[3]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(slow_doc), str(tmp_path / "killed"), address], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (killed / "runs").is_dir() and any((killed / "runs").glob("*.parquet")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    kept = {p.stem for p in (killed / "runs").glob("*.parquet")}
    assert 1 <= len(kept) < N_RUNS, "the kill should land mid-sweep"
    resume = InterruptAfter(RayExecutor())
    execute_scenario(slow, tmp_path / "killed", executor=resume, progress=False)
    assert resume.submitted == N_RUNS - len(kept)
    assert_same_store(tmp_path / "local_slow" / "raysweep", killed)

    sc = load_scenario(SWEEP)
    assert len(sc.runs) == N_RUNS
    execute_scenario(sc, tmp_path / "local", workers=1, progress=False)

    # The driver writes the table each task returns (workers need no shared folder); the runs in
    # flight report their progress to the driver's bar, as in the local process pool.
    ex = RayExecutor(progress=True)
    execute_scenario(sc, tmp_path / "driver", executor=ex, progress=True)
    assert ex.progress_messages >= N_RUNS  # every run reports at least once
    assert ray_session.is_initialized()  # a session the caller started is left running
    assert_same_store(tmp_path / "local" / "raysweep", tmp_path / "driver" / "raysweep")

    # The command line: `evosgd run ... --executor ray` (this process's Ray session is reused).
    from evosgd.cli import main

    scen = tmp_path / "sweep.toml"
    scen.write_text(TOML)
    assert main(["run", str(scen), "--executor", "ray", "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    assert_same_store(tmp_path / "local" / "raysweep", tmp_path / "cli" / "raysweep")

    # The workers write into the (shared) store themselves.
    execute_scenario(sc, tmp_path / "shared", executor=RayExecutor(results="shared"), progress=False)
    assert_same_store(tmp_path / "local" / "raysweep", tmp_path / "shared" / "raysweep")

    # Interrupted after 2 finished runs: those are kept, the runs in flight are lost...
    cut = InterruptAfter(RayExecutor(), n=2)
    with pytest.raises(KeyboardInterrupt):
        execute_scenario(sc, tmp_path / "cut", executor=cut, progress=False)
    store = tmp_path / "cut" / "raysweep"
    kept = {p.stem for p in (store / "runs").glob("*.parquet")}
    assert 2 <= len(kept) < N_RUNS  # (a run finishing as the interrupt lands may be kept too)
    assert not list((store / "runs").glob(".*tmp*"))
    status = {k: e["status"] for k, e in json.loads((store / "manifest.json").read_text())["runs"].items()}
    assert sum(s == "done" for s in status.values()) >= 2 and "pending" in status.values()

    # ... and the same command runs only the missing ones, ending with the uninterrupted store.
    resume = InterruptAfter(RayExecutor())
    execute_scenario(sc, tmp_path / "cut", executor=resume, progress=False)
    assert resume.submitted == N_RUNS - len(kept)
    assert_same_store(tmp_path / "local" / "raysweep", store)
    assert load_store(store).runs["run_id"].nunique() == N_RUNS


def test_ray_executor_without_ray_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from evosgd.run.ray_executor import RayExecutor

    with pytest.raises(EvosgdError, match=r'pip install "evosgd\[ray\]"'):
        RayExecutor()


def test_ray_executor_refuses_an_unknown_result_mode():
    pytest.importorskip("ray")
    from evosgd.run.ray_executor import RayExecutor

    with pytest.raises(EvosgdError, match="results"):
        RayExecutor(results="nfs")


def test_each_run_asks_ray_for_its_own_resources():
    pytest.importorskip("ray")
    from evosgd.run.ray_executor import RayExecutor
    from evosgd.run.runner import Task

    doc = {**SWEEP, "optimizer": [{"label": "ddp", "kind": "sgd_ddp", "workers": 4, "batch_size": 8},
                                  {"label": "sgd", "kind": "sgd"}]}
    doc.pop("sweep")
    ddp, sgd = load_scenario(doc).runs
    ex = RayExecutor()  # constructing it starts nothing
    assert ex._options(Task(sgd, "/r", "cpu")) == {"num_cpus": 1.0, "max_retries": 2}
    assert ex._options(Task(sgd, "/r", "cpu", threads=3))["num_cpus"] == 3.0
    assert ex._options(Task(sgd, "/r", "cuda:0")) == {"num_cpus": 1.0, "max_retries": 2, "num_gpus": 1.0}
    assert ex._options(Task(ddp, "/r", "cpu"))["num_cpus"] == 4.0  # its 4 processes
    ex._cpu_cap = 2.0  # (as found on connecting) no node has 4 CPUs: a whole node, not a task that never starts
    assert ex._options(Task(ddp, "/r", "cpu"))["num_cpus"] == 2.0


def test_a_run_file_whose_manifest_entry_was_not_written_counts_as_finished(tmp_path):
    """A driver killed between writing a run's file and the manifest (the window the SIGKILL
    test above often hits) leaves the run 'pending' in the manifest: the re-run must take the file
    as finished, not skip it while keeping it 'pending' (then the reader would drop its rows)."""
    sc = load_scenario(SWEEP)
    execute_scenario(sc, tmp_path, workers=1, progress=False)
    path = tmp_path / "raysweep" / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["runs"].values():
        entry["status"] = "pending"
    path.write_text(json.dumps(manifest))
    execute_scenario(sc, tmp_path, workers=1, progress=False)
    statuses = [e["status"] for e in json.loads(path.read_text())["runs"].values()]
    assert statuses == ["done"] * N_RUNS
    assert load_store(tmp_path / "raysweep").runs["run_id"].nunique() == N_RUNS
