"""Smoke tests of the benchmark scripts: each runs end to end at tiny sizes (``--quick``).

No timing is asserted (performance is measured by the benchmarks themselves, never by tests);
what is checked is that every script runs, produces its table rows with finite figures, and
writes its JSON, so that the scripts cannot rot while the engines change under them.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

# script -> extra command-line arguments (the runner benchmark runs serial only: starting worker
# processes costs seconds and is the runner's own tests' business)
SCRIPTS = {
    "bench_ga": [],
    "bench_cmaes": [],
    "bench_bbob_cmaes": [],
    "bench_sgd": [],
    "bench_wright_fisher": [],
    "bench_scaling": ["--engines", "ga,cmaes,wright_fisher,sgd"],
    "bench_runner": ["--workers", "1"],
    "bench_replicates": [],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
# EvoTorch (an anchor of bench_ga) calls torch.jit.script, which torch 2.13 deprecates: not our code path
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_benchmark_script_runs_in_smoke_mode(script, tmp_path, capsys):
    if script == "bench_ga":
        pytest.importorskip("deap")
    if script in ("bench_cmaes", "bench_bbob_cmaes"):
        pytest.importorskip("cma")
    if script == "bench_bbob_cmaes":
        pytest.importorskip("ioh")
    module = importlib.import_module(script)
    out = tmp_path / f"{script}.json"
    argv = ["--quick", "--threads", "1", "--json", str(out), *SCRIPTS[script]]
    if script == "bench_scaling":
        argv += ["--png", str(tmp_path / "scaling.png")]
    module.main(argv)
    printed = capsys.readouterr().out
    assert "machine: cpu=" in printed and "| " in printed
    payload = json.loads(out.read_text())
    assert payload["machine"]["torch_threads"] == 1
    rows = payload["rows"]
    assert rows, "the benchmark produced no rows"
    assert all("load1" in r for r in rows)  # every row says how loaded the machine was
    # both sides on the same threads: torch and every native pool (BLAS, OpenMP) limited to 1
    pools = payload["machine"]["native_threads"]
    assert "threadpoolctl not installed" in pools or all(p.endswith("=1") for p in pools.split(", ")), pools
    numbers = [v for r in rows for v in r.values() if isinstance(v, float)]
    assert numbers and all(not math.isinf(v) for v in numbers)
    if script == "bench_scaling":
        assert (tmp_path / "scaling.png").stat().st_size > 1000


def test_harness_measure_and_table():
    import harness

    calls = []
    t = harness.measure(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and t.repeats == 3 and t.low <= t.median <= t.high
    text = harness.table([{"a": 1, "b": 0.5}, {"a": 2, "c": "x"}])
    lines = text.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:4]] == ["a", "b", "c"] and len(lines) == 4
    assert harness.verdict(50.0, 50) == "met" and harness.verdict(49.9, 50) == "NOT met"


def test_host_allocator_tuning_is_idempotent_and_can_be_refused():
    """evosgd.core.hostmem (a finding of the scaling benchmark): on glibc the thresholds are raised
    once per process; EVOSGD_MALLOC=default refuses it (checked in a fresh process, since the
    setting is process-wide and remembered)."""
    import subprocess
    import sysconfig

    from evosgd.core.hostmem import tune_host_allocator

    first = tune_host_allocator()
    assert tune_host_allocator() is first  # remembered, not applied twice
    code = "from evosgd.core.hostmem import tune_host_allocator as t; print(t())"
    env = {"EVOSGD_MALLOC": "default", "PYTHONPATH": str(BENCH.parent), "PATH": sysconfig.get_config_var("BINDIR") or ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
