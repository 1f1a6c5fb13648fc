"""The local process pool's workers die with the evosgd process that started them (issue #22):
SIGKILL of ``evosgd run --workers 2`` mid-sweep leaves no live process of that invocation within
5 s, and running the same command again gives exactly the rows of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from evosgd.run.runner import run_scenario
from evosgd.run.store import load_store

ROOT = Path(__file__).resolve().parent.parent

#: 10 runs of about half a second each: long enough to kill the sweep in the middle
SCENARIO = """\
[scenario]
name = "killed"
replicates = 2
seed = 7
device = "cpu"
[scenario.budget]
max_steps = 2000
[scenario.record]
log_points = 5
[landscape]
kind = "sphere"
dim = 4
[[optimizer]]
label = "sgd"
kind = "sgd"
lr = 0.001
[sweep]
"optimizer.sgd.lr" = [0.0001, 0.0002, 0.0003, 0.0004, 0.0005, 0.0006, 0.0007, 0.0008, 0.0009, 0.001]
"""


def _tagged_processes(tag: str) -> list[int]:
    """Live (not zombie) processes whose environment holds ``EVOSGD_TEST_TAG=tag``."""
    found = []
    needle = f"EVOSGD_TEST_TAG={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != b"Z":
            found.append(int(entry))
    return found


def _rows(out: Path) -> pd.DataFrame:
    runs = load_store(out / "killed").runs
    keep = [c for c in runs.columns if c not in ("wall_time",)]
    return runs[keep].sort_values(["run_id", "replicate", "step"]).reset_index(drop=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the invocation's processes")
def test_sigkill_mid_sweep_leaves_no_live_worker_and_a_resume_gives_the_uninterrupted_result(tmp_path):
    scenario = tmp_path / "killed.toml"
    scenario.write_text(SCENARIO)
    tag = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "EVOSGD_TEST_TAG": tag}
    cmd = [sys.executable, "-m", "evosgd", "run", str(scenario), "--out", str(tmp_path / "out"), "--workers", "2",
           "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs_dir = tmp_path / "out" / "killed" / "runs"
    deadline = time.monotonic() + 120
    try:
        # kill once the pool is up (a worker process exists) and the sweep is under way
        while time.monotonic() < deadline and proc.poll() is None:
            done = len(list(runs_dir.glob("*.parquet"))) if runs_dir.is_dir() else 0
            if done >= 1 and len(_tagged_processes(tag)) >= 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        assert len(list(runs_dir.glob("*.parquet"))) < 10
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        t_kill = time.monotonic()
        alive = _tagged_processes(tag)
        while alive and time.monotonic() - t_kill < 5:
            time.sleep(0.1)
            alive = _tagged_processes(tag)
        assert not alive, f"processes of the killed invocation still alive 5 s after the kill: {alive}"
    finally:
        for pid in _tagged_processes(tag):  # do not leave anything behind should the test fail
            os.kill(pid, signal.SIGKILL)
    # the same command resumes; an uninterrupted serial run of the scenario (in this process) is the
    # reference: equal rows also show that one or two workers compute the same thing
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run_scenario(scenario, tmp_path / "ref", workers=1, progress=False)
    got, want = _rows(tmp_path / "out"), _rows(tmp_path / "ref")
    assert got["run_id"].nunique() == 10
    pd.testing.assert_frame_equal(got, want)
    leftovers = [p.name for p in (tmp_path / "out" / "killed").rglob(".*tmp-*")]
    assert not leftovers, leftovers
