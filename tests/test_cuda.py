"""The device: the run id holds it, host transfers go through one helper, and the engines on CUDA.

The first half runs everywhere (it is about the CPU side of the contract: the device type in the
run id, a resumed store refused on another device, the host-transfer helpers).  The second half
needs a GPU and skips cleanly without one: the engine loop, every optimizer family (steps taken
under ``torch.cuda.set_sync_debug_mode("error")``, so a hidden host synchronisation inside a step
fails the test) and the report, all on CUDA.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from evosgd.core import device as dev_mod
from evosgd.core.budget import Budget
from evosgd.core.device import device_kind, host_bool, host_list, to_device, to_host
from evosgd.core.errors import DeviceError, EvosgdError
from evosgd.core.registry import OPTIMIZERS, load_all
from evosgd.core.seeding import make_generator
from evosgd.landscapes import build_landscape
from evosgd.run import execute_scenario, run_one
from evosgd.scenario import load_scenario

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

BASE = {
    "scenario": {"name": "dev", "replicates": 3, "seed": 7, "device": "cpu", "budget": {"max_cost": 300},
                 "record": {"log_points": 6}},
    "landscape": {"kind": "sphere", "dim": 4},
    "optimizer": [{"label": "ga", "kind": "ga", "population_size": 8},
                  {"label": "sgd", "kind": "sgd", "lr": 0.1, "batch_size": 4}],
}


def scenario_doc(device: str = "cpu") -> dict:
    d = copy.deepcopy(BASE)
    d["scenario"]["device"] = device
    return d


# ----------------------------------------------------------------------------- everywhere
def test_device_kind_is_the_type_not_the_card():
    assert device_kind("cpu") == "cpu"
    assert device_kind("cuda") == device_kind("cuda:1") == device_kind(torch.device("cuda", 0)) == "cuda"
    assert device_kind("auto") == ("cuda" if CUDA else "cpu")


def test_run_id_holds_the_device_type_and_cpu_ids_are_unchanged():
    cpu = load_scenario(scenario_doc("cpu"))
    gpu = load_scenario(scenario_doc("cuda:0"))  # loading never needs the device itself
    ids_cpu, ids_gpu = [r.run_id for r in cpu.runs], [r.run_id for r in gpu.runs]
    assert len(set(ids_cpu) | set(ids_gpu)) == 4  # every CUDA run has an id of its own
    assert all(r.config()["device"] == "cuda" for r in gpu.runs)
    assert all("device" not in r.config() for r in cpu.runs)  # CPU ids are those of earlier versions
    assert [r.run_id for r in load_scenario(scenario_doc("cuda:1")).runs] == ids_gpu  # the card does not matter


def test_a_store_resumed_on_another_device_is_refused_with_a_clear_message(tmp_path):
    sc = load_scenario(scenario_doc("cpu"))
    execute_scenario(sc, tmp_path, progress=False, workers=1)
    manifest_path = tmp_path / "dev" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # the same store as if it had been made on a GPU
    manifest["provenance"]["device"] = "cuda:0 (NVIDIA H100 80GB HBM3)"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DeviceError) as e:
        execute_scenario(sc, tmp_path, progress=False, workers=1)
    msg = str(e.value)
    assert "made on cuda" in msg and "runs on cpu" in msg and "--force" in msg and "--device cuda" in msg
    assert isinstance(e.value, EvosgdError)  # the command line turns it into a message and exit 2
    execute_scenario(sc, tmp_path, progress=False, workers=1, force=True)  # --force redoes it here
    assert json.loads(manifest_path.read_text())["provenance"]["device"].startswith("cpu")
    execute_scenario(sc, tmp_path, progress=False, workers=1)  # and a same-device resume goes on


def test_host_transfer_helpers_return_host_values_and_count_themselves():
    before = dict(dev_mod.TRANSFERS)
    t = torch.tensor([1.5, -2.0, 3.0])
    a = to_host(t)
    assert isinstance(a, np.ndarray) and a.tolist() == [1.5, -2.0, 3.0]
    assert to_host(t, np.float64).dtype == np.float64
    assert host_bool(torch.tensor(True)) is True and host_bool(torch.tensor([0.0])) is False
    assert host_list(torch.tensor([3, 1])) == [3, 1]
    assert to_host(torch.tensor([1.0], dtype=torch.bfloat16)).dtype == np.float32
    assert dev_mod.TRANSFERS["reads"] - before["reads"] == 6
    up = to_device(np.array([True, False]), torch.device("cpu"))
    assert up.dtype == torch.bool and up.tolist() == [True, False]


def test_engine_records_are_copies_not_views_of_live_state():
    """The record helper copies: a tensor changed in place after a record point must not change
    the rows already recorded (on the CPU ``.numpy()`` is a view of the tensor's memory)."""
    from evosgd.run.engine import _host

    t = torch.zeros(3, dtype=torch.float64)
    rec = _host(t, 3)
    t += 1.0
    assert rec.tolist() == [0.0, 0.0, 0.0]


# ----------------------------------------------------------------------------- on a GPU
#: parameters that make each optimizer run on a small sphere (the rest take their defaults)
PARAMS = {
    "ga": {"population_size": 16}, "ga_deap": {"population_size": 16},
    "wright_fisher": {"population_size": 16, "init_std": 0.1},
    "sgd": {"batch_size": 8, "lr": 0.01, "momentum": 0.9}, "adam": {"batch_size": 8},
}
load_all()
# the built-in optimizers (components that other test modules register in this process are not ours to check)
KINDS = sorted(n for n in OPTIMIZERS.names() if OPTIMIZERS.get(n).origin is None)
#: backends that run on the host by design: the reference libraries' per-individual Python code (DEAP)
#: and data-parallel SGD across processes (gloo all-reduce of host buffers)
HOST_BACKENDS = ("ga_deap", "cmaes_deap", "sgd_ddp")


def _build(kind: str, device: torch.device, R: int = 3):
    lp = {"dim": 8, "noise_std": 0.1}
    ls = build_landscape("sphere", lp, replicates=R, seed=3, device=device, dtype=torch.float32)
    budget = Budget(R)
    opt = OPTIMIZERS.build(kind, PARAMS.get(kind, {}), landscape=ls, budget=budget, generator=make_generator(7, device))
    return ls, budget, opt


class forbid_host_reads:
    """On the CPU, what ``set_sync_debug_mode("error")`` is on a GPU: every way a tensor's value
    reaches the host (``bool``, ``int``, ``float``, ``.item``, ``.tolist``, ``.numpy``, ``.cpu``,
    ``nonzero``, ``unique``) raises unless it is made through the helpers of ``core.device``."""

    NAMES = ("__bool__", "__int__", "__float__", "item", "tolist", "numpy", "cpu", "nonzero", "unique")

    def __enter__(self):
        self.saved = {n: getattr(torch.Tensor, n) for n in self.NAMES}
        self.saved_nonzero = torch.nonzero
        for n, f in self.saved.items():
            setattr(torch.Tensor, n, self._guard(n, f))
        torch.nonzero = self._guard("torch.nonzero", torch.nonzero)
        return self

    @staticmethod
    def _guard(name, f):
        def guarded(*a, **k):
            if dev_mod._inside == 0:
                raise AssertionError(f"hidden host read: {name} outside evosgd.core.device")
            return f(*a, **k)
        return guarded

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(torch.Tensor, n, f)
        torch.nonzero = self.saved_nonzero


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in HOST_BACKENDS])
def test_every_optimizer_step_reads_the_host_only_through_the_helpers_cpu(kind):
    """The CPU stand-in of the CUDA sync test below: it runs here, so a hidden host read is found
    before any GPU is lent."""
    try:
        _, budget, opt = _build(kind, torch.device("cpu"))
    except EvosgdError as e:
        pytest.skip(f"{kind} refuses this landscape: {e}")
    for _ in range(2):
        opt.step()
    before = dev_mod.TRANSFERS["reads"] + dev_mod.TRANSFERS["writes"]
    with forbid_host_reads():
        for _ in range(3):
            opt.step()
    per_step = (dev_mod.TRANSFERS["reads"] + dev_mod.TRANSFERS["writes"] - before) / 3
    assert per_step <= 8, f"{kind}: {per_step} deliberate host transfers per step"
    assert (budget.steps >= 3).all()


@needs_cuda
@pytest.mark.parametrize("kind", KINDS)
def test_every_optimizer_steps_on_cuda_without_hidden_host_synchronisation(kind):
    device = torch.device("cuda")
    try:
        _, budget, opt = _build(kind, device)
    except EvosgdError as e:  # an optimizer that needs another landscape refuses it clearly
        pytest.skip(f"{kind} refuses this landscape: {e}")
    for _ in range(2):  # the first steps may set up (generation 0, lazily built constants)
        opt.step()
    torch.cuda.synchronize()
    reads = dev_mod.TRANSFERS["reads"] + dev_mod.TRANSFERS["writes"]
    if kind in HOST_BACKENDS:
        for _ in range(3):
            opt.step()
    else:
        torch.cuda.set_sync_debug_mode("error")  # any synchronisation not made through core.device raises
        try:
            for _ in range(3):
                opt.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    per_step = (dev_mod.TRANSFERS["reads"] + dev_mod.TRANSFERS["writes"] - reads) / 3
    if kind not in HOST_BACKENDS:
        assert per_step <= 8, f"{kind}: {per_step} deliberate host transfers per step"
    x = opt.recommend()
    assert x.device.type == "cuda" and bool(torch.isfinite(x).all())
    for name, v in (opt.metrics() or {}).items():
        if isinstance(v, torch.Tensor):
            assert v.device.type == "cuda", f"metric {name} on {v.device}"
    assert (budget.steps >= 1).all()


@needs_cuda
def test_engine_loop_on_cuda_records_the_same_budget_as_on_the_cpu():
    """run_one on CUDA: rows on the host, finite, and the same budget ledger as the CPU run (the
    accounting does not depend on the device; the random streams do, so losses are not compared)."""
    frames = {}
    for device in ("cpu", "cuda"):
        sc = load_scenario(scenario_doc(device))
        frames[device] = {r.label: run_one(r).frame for r in sc.runs}
    for label, gpu in frames["cuda"].items():
        cpu = frames["cpu"][label]
        assert np.isfinite(gpu["true_loss"]).all()
        for col in ("step", "cost", "evaluations", "gradient_evaluations"):
            np.testing.assert_array_equal(gpu[col].to_numpy(), cpu[col].to_numpy())
        assert gpu["run_id"].iloc[0] != cpu["run_id"].iloc[0]  # another stream, another id


@needs_cuda
def test_quickstart_and_its_report_on_cuda(tmp_path):
    from pathlib import Path

    from evosgd.cli import main

    root = Path(__file__).resolve().parents[1]
    rc = main(["run", str(root / "scenarios" / "quickstart.toml"), "--quick", "--device", "cuda", "--workers", "1",
               "--out", str(tmp_path / "results"), "--report", "--report-dir", str(tmp_path / "reports"), "--no-progress"])
    assert rc == 0
    manifest = json.loads(next((tmp_path / "results").glob("*/manifest.json")).read_text())
    assert manifest["provenance"]["device"].startswith("cuda")
    assert any(p.suffix in (".md", ".html") for p in (tmp_path / "reports").rglob("*"))
