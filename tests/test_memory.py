"""The memory guard asks each landscape for its dimension and the bytes of its own tensors
(issue #22: the teacher-student MLP, the RNN and the contrastive landscape have no ``dim`` key,
so the guard used D = 10 for them), and an allocation failure inside a run is a recorded, explained
failed run rather than torch's raw message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evosgd.core.registry import LANDSCAPES, load_all
from evosgd.landscapes import build_landscape
from evosgd.run import execute_scenario, load_store
from evosgd.run.memory import estimate_run_bytes
from evosgd.scenario import load_scenario

load_all()

CASES = [
    ("teacher_student", {"n_examples": 64, "inputs": 5, "widths": [7, 3], "outputs": 2, "teacher_widths": [4]}),
    ("rnn", {"n_examples": 32, "sequence_length": 6, "hidden": 5, "inputs": 2}),
    ("contrastive", {"n_examples": 40, "features": 6, "embed_dim": 3, "classes": 4}),
]


@pytest.mark.parametrize("kind,params", CASES)
def test_each_data_landscape_reports_its_true_dimension_and_at_least_its_dataset(kind, params):
    model = LANDSCAPES.validate(kind, params).model_dump()
    R = 3
    dim, nbytes = LANDSCAPES.get(kind).factory.memory_estimate(model, replicates=R, itemsize=4, points=1, batch=8)
    land = build_landscape(kind, model, replicates=R, seed=0, device=torch.device("cpu"), dtype=torch.float32)
    assert dim == land.dim
    held = sum(t.numel() for t in land.data.values() if torch.is_floating_point(t)) * 4
    assert nbytes >= held  # the estimate errs on the large side, never below the dataset it holds


def _scenario(landscape: dict, replicates: int = 2) -> dict:
    return {"scenario": {"name": "mem", "replicates": replicates, "device": "cpu", "budget": {"max_steps": 3}},
            "landscape": landscape, "optimizer": [{"label": "sgd", "kind": "sgd", "lr": 0.01}]}


def test_teacher_student_width_counts_in_the_estimate_not_a_default_dimension():
    small = load_scenario(_scenario({"kind": "teacher_student", "widths": [10]}), preflight=False).runs[0]
    wide = load_scenario(_scenario({"kind": "teacher_student", "widths": [100_000]}), preflight=False).runs[0]
    # D grows 1e4-fold (8*w + w + w + 1 weights); the estimate must grow at least 1e3-fold
    assert estimate_run_bytes(wide) > 1000 * estimate_run_bytes(small)


@pytest.mark.skipif(Path("/proc/sys/vm/overcommit_memory").is_file()
                    and Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1",
                    reason="with unconditional overcommit a huge allocation succeeds and the OOM killer strikes later")
def test_an_allocation_failure_inside_a_run_is_a_recorded_explained_failure(tmp_path, monkeypatch):
    """widths of 5e5 x 5e5: 2.5e11 weights (2 TB in float64) that malloc refuses at once; the
    guard is switched off to reach the run itself (as when an estimate falls short)."""
    import evosgd.run.runner as runner

    monkeypatch.setattr(runner, "check_memory", lambda *a, **k: None)
    sc = load_scenario(_scenario({"kind": "teacher_student", "widths": [500_000, 500_000]}))
    execute_scenario(sc, tmp_path, progress=False, workers=1)
    (entry,) = load_store(tmp_path / "mem").manifest["runs"].values()
    assert entry["status"] == "failed"
    assert entry["error"].startswith("out of memory: run sgd could not allocate its tensors")
    assert "Reduce replicates" in entry["error"] and "can't allocate memory" in entry["error"]


def test_full_cma_es_counts_its_covariance_matrices_the_diagonal_variant_does_not():
    def run(kind):
        d = _scenario({"kind": "sphere", "dim": 300}, replicates=4)
        d["optimizer"] = [{"label": "c", "kind": kind}]
        return load_scenario(d, preflight=False).runs[0]

    # same population and dimension: the difference is exactly the 6 R D^2 float32 numbers of C and B
    assert estimate_run_bytes(run("cmaes")) - estimate_run_bytes(run("sep_cmaes")) == 6 * 4 * 300 * 300 * 4
