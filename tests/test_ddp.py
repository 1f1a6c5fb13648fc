"""Real data-parallel SGD (``sgd_ddp``, issue #10): 2 gloo processes on localhost give the same
iterates as the simulated synchronous engine (``sgd_sync``) with the same shards and as
single-process SGD on the union of the shards; the same through torchrun and the engine loop;
the measured times are consistent and the straggler fit recovers known parameters."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evosgd.core.budget import Budget, BudgetLimits
from evosgd.core.errors import ConfigError, ParameterError
from evosgd.core.registry import OPTIMIZERS, load_all
from evosgd.gradient.ddp import fit_worker_times, straggler_check
from evosgd.landscapes import build_landscape
from evosgd.run import load_store, run_one
from evosgd.scenario import load_scenario

load_all()
ROOT = Path(__file__).resolve().parent.parent
STEPS = 12
COMMON = {"lr": 0.05, "momentum": 0.5, "batch_size": 8, "sampling": "without_replacement"}
# float64: the K-shard average and the one-batch mean differ by a few ulp per step (|theta| ~ 1,
# eps = 2.2e-16); over 12 contracting steps (lr * L < 1) that stays far below 1e-12.
TOL = 1e-12


def trajectory(kind: str, extra: dict, steps: int = STEPS):
    landscape = build_landscape("linear_regression", {"n_examples": 40, "features": 5}, replicates=2, seed=3,
                                device="cpu", dtype=torch.float64)
    budget = Budget(2, limits=BudgetLimits(max_steps=steps))
    generator = torch.Generator().manual_seed(17)  # the same seed: the same global batches and shards
    opt = OPTIMIZERS.build(kind, {**COMMON, **extra}, landscape=landscape, budget=budget, generator=generator)
    thetas = []
    while not budget.exhausted().all():
        opt.step()
        thetas.append(opt.recommend().clone())
    return torch.stack(thetas), opt, budget


def test_two_gloo_processes_match_sgd_sync_and_sgd_on_the_union_of_the_shards():
    # 40 examples, batches of 8 without replacement: 5 batches per epoch, so 12 steps cross epochs
    sgd, _, b_sgd = trajectory("sgd", {})
    sync, _, _ = trajectory("sgd_sync", {"workers": 2})
    ddp, opt, b_ddp = trajectory("sgd_ddp", {"workers": 2})
    try:
        assert opt.session.world == 2 and len(opt.session.helpers) == 1
        assert ddp.shape == (STEPS, 2, 5)
        torch.testing.assert_close(ddp, sync, rtol=0, atol=TOL)
        torch.testing.assert_close(ddp, sgd, rtol=0, atol=TOL)
        np.testing.assert_array_equal(b_ddp.cost, b_sgd.cost)  # the same ledger: b per-example gradients a step
        # measured times: every worker's compute time, and step times that include the slowest
        times = opt.worker_times()
        assert times.shape == (STEPS, 2) and (times > 0).all()
        m = opt.metrics()
        assert float(m["step_time"][0]) >= times[-1].max()
        assert b_ddp.sim_time[0] >= times.max(axis=1).sum()  # sim_time = sum of measured step times
        assert np.isclose(m["worker_time_mean"][0], times.mean()) and np.isclose(m["worker_time_min"][0], times.min())
        assert 0 <= m["idle_fraction"][0] < 1
        check = straggler_check(times)  # the measured times feed the straggler model
        assert check["workers"] == 2 and check["measured"] >= check["mean_worker"] > 0
    finally:
        opt.close()
    helper = opt.session.helpers[0]
    assert helper.exitcode == 0  # the helper process was told to stop and exited cleanly


def test_one_worker_is_plain_sgd_without_processes():
    sgd, _, _ = trajectory("sgd", {})
    ddp, opt, _ = trajectory("sgd_ddp", {"workers": 1})
    assert opt.session.helpers == []
    torch.testing.assert_close(ddp, sgd, rtol=0, atol=0)


def test_parameters_are_validated():
    for bad in ({"workers": 3, "batch_size": 8}, {"gradient_noise": True}, {"confidence": "snr"}, {"workers": 0}):
        with pytest.raises((ConfigError, ParameterError, ValueError)):
            OPTIMIZERS.validate("sgd_ddp", bad)


def test_fit_worker_times_recovers_known_distributions():
    rng = np.random.default_rng(5)
    n = 20000
    shifted = 0.5 + rng.exponential(0.25, n)
    fit = fit_worker_times(shifted)["shifted_exponential"]
    # shift = min: biased up by mean/n = 1.25e-5; mean - min has sd 0.25 / sqrt(n) = 0.0018 -> 5 sd
    assert abs(fit["shift"] - 0.5) < 1e-3 and abs(fit["mean_time"] - 0.25) < 0.009
    logn = np.exp(rng.normal(-1.0, 0.5, n))
    fit = fit_worker_times(logn)["lognormal"]
    # sd of mu-hat = sigma / sqrt(n) = 0.0035, of sigma-hat = sigma / sqrt(2n) = 0.0025 -> 5 sd
    assert abs(fit["mu"] + 1.0) < 0.018 and abs(fit["sigma"] - 0.5) < 0.013
    with pytest.raises(ParameterError):
        fit_worker_times([1.0])


def test_straggler_check_predicts_the_slowest_of_k_shifted_exponential_workers():
    rng = np.random.default_rng(8)
    steps, K = 4000, 4
    times = 0.5 + rng.exponential(0.25, size=(steps, K))
    out = straggler_check(times)
    # E[max of 4] = 0.5 + 0.25 H_4 = 1.0208; sd of the max = 0.25 sqrt(sum_{i<=4} 1/i^2) = 0.355, so the mean
    # over 4000 steps has sd 0.0056 (plus the fit's error, smaller): 5 sd = 0.028
    assert abs(out["measured"] - (0.5 + 0.25 * (1 + 1 / 2 + 1 / 3 + 1 / 4))) < 0.028
    assert abs(out["predicted_shifted_exponential"] - out["measured"]) < 0.028
    # the unshifted exponential model of the same mean overstates the wait: 0.75 H_4 = 1.5625
    assert out["predicted_exponential"] > out["measured"] + 0.4


SCENARIO = """
[scenario]
name = "ddp_torchrun"
replicates = 2
seed = 4
device = "cpu"
dtype = "float64"
[scenario.budget]
max_cost = 1200
[scenario.record]
log_points = 6
[landscape]
kind = "linear_regression"
n_examples = 64
features = 4
[[optimizer]]
label = "ddp"
kind = "sgd_ddp"
workers = 2
batch_size = 8
lr = 0.05
momentum = 0.3
[[optimizer]]
label = "ddp4"
kind = "sgd_ddp"
workers = 4
batch_size = 8
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_launch_runs_in_lockstep_and_matches_sgd_sync_through_the_engine(tmp_path, monkeypatch):
    """Two ranks with the environment torchrun gives its processes (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT): rank 1 a fresh process, rank 0 this one (the launcher itself and a
    second fresh interpreter would only add start-up seconds)."""
    from evosgd.run.ddp import main

    scen = tmp_path / "ddp.toml"
    scen.write_text(SCENARIO)
    dist_env = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env = {**os.environ, **dist_env, "RANK": "1", "LOCAL_RANK": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rank1 = subprocess.Popen([sys.executable, "-m", "evosgd.run.ddp", str(scen), "--out", str(tmp_path / "out1")],
                             env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for k, v in {**dist_env, "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    try:
        assert main([str(scen), "--out", str(tmp_path / "out")]) == 0
    finally:
        _, err = rank1.communicate(timeout=300)
    assert rank1.returncode == 0, err[-3000:]
    assert not (tmp_path / "out1").exists()  # only rank 0 writes the store
    data = load_store(tmp_path / "out" / "ddp_torchrun")
    # the 4-worker run does not fit a group of 2: left for `evosgd run`
    assert [(e["label"], e["status"]) for e in data.manifest["runs"].values()] == [("ddp", "done")]
    got = data.runs.sort_values(["step", "replicate"]).reset_index(drop=True)
    # The same run (same id, hence the same generator) as simulated synchronous SGD, in-process.
    run = load_scenario(scen).runs[0]
    params = {k: v for k, v in run.params.items() if k not in ("timeout_s", "sim_time")}
    sim = run_one(dataclasses.replace(run, kind="sgd_sync", params=params)).frame
    sim = sim.sort_values(["step", "replicate"]).reset_index(drop=True)
    assert len(got) == len(sim) and got["step"].max() == 1200 // (3 * 8)
    for col in ("step", "cost", "gradient_evaluations"):
        pd.testing.assert_series_equal(got[col], sim[col])
    np.testing.assert_allclose(got["true_loss"], sim["true_loss"], rtol=1e-10, atol=1e-12)
    assert (got["m_worker_time_mean"].iloc[-1] > 0) and (got["sim_time"].iloc[-1] > 0)
