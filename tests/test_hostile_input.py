"""Hostile input, end to end through the command line (issue #22): every case exits 2 with one
clear message and no traceback, within 15 s and 1 GB.

The corpus is ``tests/hostile_scenarios/*.toml`` (first line ``# expect: <text of the message>``)
plus cases that cannot live in a repository as plain files: a FIFO, a symlink to /dev/zero, a file
over the size limit, results stores with hostile manifests, a scenario too big for memory.  All
cases run in ONE subprocess (one torch import, a few seconds in all): it guards each case with
``signal.alarm(15)`` (a hang fails that case instead of the suite), and reports its peak RSS
(``ru_maxrss``), which must stay under 1 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "hostile_scenarios"

SMALL = """\
[scenario]
name = "hostile"
replicates = 2
[scenario.budget]
max_cost = 40
[landscape]
kind = "sphere"
dim = 2
[[optimizer]]
label = "sgd"
kind = "sgd"
lr = 0.1
"""

RUNNER = r'''
import contextlib, io, json, resource, signal, sys, time
from evosgd.cli import main
from evosgd.core.registry import load_all
load_all()  # imports first: the per-case bound is about the case, not about importing torch
baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

class Hang(Exception):
    pass

def alarm(*_):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
out = []
for name, args in json.loads(sys.argv[1]):
    err, std = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    signal.alarm(15)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            try:
                rc = main(args)
            except SystemExit as e:
                rc = e.code
    except Hang:
        rc = "hang"
    except BaseException as e:  # a traceback: the test shows it
        import traceback
        rc = "raised"
        err.write("Traceback: " + "".join(traceback.format_exception(e)))
    finally:
        signal.alarm(0)
    out.append({"name": name, "rc": rc, "stderr": err.getvalue(), "stdout": std.getvalue(),
                "seconds": time.perf_counter() - t0})
print(json.dumps({"cases": out, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "baseline_kb": baseline_kb}))
'''


def _store(root: Path, name: str, manifest: dict) -> Path:
    d = root / name
    (d / "runs").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def _cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(name, command line, a text the message must hold)."""
    cases = []
    for f in sorted(CORPUS.glob("*.toml")):
        expect = f.read_bytes().split(b"\n", 1)[0].decode().removeprefix("# expect: ")
        cases.append((f.name, ["validate", str(f)], expect))
    fifo = tmp / "fifo.toml"
    os.mkfifo(fifo)
    cases.append(("fifo", ["validate", str(fifo)], "is a named pipe (FIFO); a scenario must be a regular file"))
    zero = tmp / "zero.toml"
    zero.symlink_to("/dev/zero")
    cases.append(("dev_zero", ["run", str(zero), "--out", str(tmp / "r")], "is a device; a scenario must be a regular file"))
    big = tmp / "big.toml"
    big.write_text(SMALL + "# " + "x" * 1_000_100 + "\n")
    cases.append(("over_1MB", ["validate", str(big)], "a scenario file may hold at most 1,000,000 bytes"))
    many = tmp / "many_keys.toml"  # just under 1 MB of unknown parameters: ~67k problems, 50 shown
    lines, size, i = [], len(SMALL), 0
    while size < 990_000:
        lines.append(f"k{i} = {i}\n")
        size, i = size + len(lines[-1]), i + 1
    many.write_text(SMALL + "".join(lines))
    cases.append(("many_unknown_keys", ["validate", str(many)], "unknown key 'k0'"))
    widths = tmp / "widths.toml"
    widths.write_text(SMALL.replace('kind = "sphere"\ndim = 2', 'kind = "teacher_student"\nwidths = [100000, 100000]'))
    cases.append(("teacher_student_widths_1e5", ["run", str(widths), "--out", str(tmp / "r"), "--no-progress"],
                  "would not fit in the memory"))
    sweep = tmp / "sweep.toml"
    sweep.write_text(SMALL + '[sweep]\n"optimizer.sgd.lr" = [0.1, 0.2, 0.3]\n')
    cases.append(("max_runs", ["run", str(sweep), "--max-runs", "2", "--out", str(tmp / "r")],
                  "expands to 3 runs; at most 2 are allowed (raise the limit with --max-runs N)"))
    base = {"runs": {}, "analyses": {}}
    esc = _store(tmp / "res1", "s", {**base, "scenario": "../../../escaped"})
    cases.append(("report_escape", ["report", str(esc)], "'../../../escaped' is not a scenario name"))
    cases.append(("show_escape", ["show", str(esc)], "'../../../escaped' is not a scenario name"))
    walk = _store(tmp / "res2", "s", {**base, "scenario": "s",
                                      "runs": {"a-1": {"status": "done", "file": "../../../etc/passwd"}}})
    cases.append(("run_file_outside", ["show", str(walk)], "is not where evosgd writes it (allowed: runs/a-1.parquet)"))
    deep = tmp / "res3" / "s"
    deep.mkdir(parents=True)
    (deep / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    cases.append(("manifest_deep_json", ["report", str(deep)], "unreadable manifest"))
    junk = _store(tmp / "res4", "s", {**base, "scenario": "s", "runs": {"a-1": {"status": "done", "file": "runs/a-1.parquet"}}})
    (junk / "runs" / "a-1.parquet").write_bytes(b"PAR1 not really")
    cases.append(("run_file_not_parquet", ["show", str(junk)], "unreadable Parquet file"))
    return cases


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX")
def test_every_hostile_case_exits_2_with_one_message_within_15s_and_1GB(tmp_path):
    cases = _cases(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps([(n, a) for n, a, _ in cases])], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60 + 15 * len(cases), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {n: e for n, _, e in cases}
    for case in report["cases"]:
        name, err = case["name"], case["stderr"]
        assert case["rc"] == 2, (name, case)
        assert "Traceback" not in err, (name, err)
        assert expected[name] in err, (name, err)
        # one message: one "evosgd: error:" (run, show, report) or one problem list (validate)
        assert err.count("evosgd: error:") <= 1 and err.count(" problem in ") + err.count(" problems in ") <= 1, err
        assert len(err.splitlines()) <= 52, (name, len(err.splitlines()))  # 50 problems shown at most, then a count
    # ru_maxrss is in kB on Linux; the bound is on what the cases add to the imported package (torch,
    # scikit-learn, ...), which is the process' peak minus its peak right after the imports
    assert report["maxrss_kb"] - report["baseline_kb"] < 1024 * 1024, report
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


def test_a_byte_order_mark_is_accepted(tmp_path):
    from evosgd.scenario import load_scenario

    p = tmp_path / "bom.toml"
    p.write_bytes(b"\xef\xbb\xbf" + SMALL.encode())
    sc = load_scenario(p)
    assert sc.name == "hostile" and len(sc.runs) == 1
