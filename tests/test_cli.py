"""The command line: run / show / validate / list / report wiring, exit statuses, and an
end-to-end run of the quickstart scenario in a temporary directory (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_runner_components  # noqa: F401

from evosgd.cli import main

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = """\
[scenario]
name = "clitest"
description = "a tiny scenario for the CLI tests"
replicates = 2
seed = 2
device = "cpu"
targets = [1.0, 1e-9]
[scenario.budget]
max_cost = 60
[landscape]
kind = "sphere"
dim = 2
[[optimizer]]
label = "rs"
kind = "test_random_search"
[[optimizer]]
label = "wild"
kind = "test_diverging"
[quick]
"scenario.budget.max_cost" = 20
"""


@pytest.fixture
def scenario(tmp_path) -> Path:
    p = tmp_path / "clitest.toml"
    p.write_text(SCENARIO)
    return p


def test_run_then_show_prints_a_summary_per_label(scenario, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["run", str(scenario), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "clitest: 2 runs in" in text
    assert main(["show", str(out / "clitest")]) == 0
    shown = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split() for ln in shown.splitlines() if ln.split() and ln.split()[0] in ("rs", "wild")}
    header = next(ln for ln in shown.splitlines() if "reps" in ln)
    assert "hit 1" in header and "hit 1e-09" in header and "diverged" in header
    assert lines["rs"][1] == "2" and lines["wild"][1] == "2"  # replicates
    assert "runs: 1 diverged, 1 done" in shown
    # show also accepts the scenario file (results under --out)
    assert main(["show", str(scenario), "--out", str(out)]) == 0
    assert "clitest" in capsys.readouterr().out


def test_quick_replicates_and_failed_runs_exit_status(tmp_path, capsys):
    p = tmp_path / "f.toml"
    p.write_text(SCENARIO.replace('kind = "test_diverging"', 'kind = "test_failing"'))
    out = tmp_path / "res"
    assert main(["run", str(p), "--out", str(out), "--quick", "--replicates", "3", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "1 run(s) failed" in err
    m = json.loads((out / "clitest" / "manifest.json").read_text())
    assert m["quick"] is True and m["replicates"] == 3 and m["budget"]["max_cost"] == 20
    assert "failed: wild" in (main(["show", str(out / "clitest")]) == 0 and capsys.readouterr().out)


def test_errors_exit_2_with_a_message_and_no_traceback(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evosgd: error:") and "scenario file not found" in err and "Traceback" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text(SCENARIO.replace("dim = 2", "dim = 0").replace("[quick]", "[quik]"))
    assert main(["run", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:12: landscape.dim" in err and "unknown section 'quik' (did you mean 'quick'?)" in err
    assert main(["show", str(tmp_path / "nothing")]) == 2
    assert "not a results store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # argparse errors: status 2 as well
        main(["run", str(bad), "--workers", "0"])
    assert info.value.code == 2
    good = tmp_path / "good.toml"
    good.write_text(SCENARIO)
    assert main(["run", str(good), "--address", "auto"]) == 2  # --address without --executor ray
    assert "--address is for --executor ray" in capsys.readouterr().err


def test_list_prints_registry_entries_with_parameters(capsys):
    assert main(["list", "optimizers"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("test_random_search "))
    assert line.split(None, 1)[1] == "test-only: local random search"
    assert "samples (int) = 4: candidates per step" in out
    assert main(["list", "landscapes", "--brief"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[0] and "sphere" in out and "dim (int)" not in out
    assert main(["list", "analyses"]) == 0 and "test_tiny_analysis" in capsys.readouterr().out
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        assert main(["list", "scenarios"]) == 0
        assert "scenarios/quickstart.toml" in capsys.readouterr().out
    finally:
        os.chdir(cwd)


def test_report_commands_call_the_report_builder(scenario, tmp_path, monkeypatch, capsys):
    import evosgd.report as report

    calls = []

    def fake_report(results_dir, out_dir=None):
        calls.append((Path(results_dir), out_dir))
        return Path(out_dir or "reports/x")

    monkeypatch.setattr(report, "report_from_store", fake_report, raising=False)
    out = tmp_path / "res"
    assert main(["run", str(scenario), "--out", str(out), "--workers", "1", "--no-progress", "--report",
                 "--report-dir", str(tmp_path / "rep")]) == 0
    assert calls == [(out / "clitest", tmp_path / "rep" / "clitest")]
    assert main(["report", str(out / "clitest"), "-o", str(tmp_path / "r2")]) == 0
    assert calls[-1] == (out / "clitest", tmp_path / "r2")
    assert "report:" in capsys.readouterr().out


def test_end_to_end_quickstart_run_then_show_in_a_temporary_directory(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    scen = ROOT / "scenarios" / "quickstart.toml"
    run = subprocess.run([sys.executable, "-m", "evosgd", "run", str(scen), "--quick", "--no-progress"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "results" / "quickstart" / "manifest.json").is_file()
    show = subprocess.run([sys.executable, "-m", "evosgd", "show", "results/quickstart"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert show.returncode == 0 and "Traceback" not in show.stderr
    for label in ("sgd", "sgd-momentum", "cmaes", "ga"):
        assert any(ln.split()[:1] == [label] for ln in show.stdout.splitlines()), show.stdout
    assert "runs: 4 done" in show.stdout
