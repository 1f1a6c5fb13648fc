"""Scenario files: validation (every problem at once, with file, line, key, given and allowed),
overrides ([quick], command line) and sweep expansion into runs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import test_runner_components  # noqa: F401  (registers test-only optimizers)

from evosgd.core.errors import ConfigError
from evosgd.scenario import load_scenario
from evosgd.scenario.problems import locate_keys

GOOD = """\
[scenario]
name = "demo"
replicates = 4
seed = 3
targets = [1e-1, 1e-3]

[scenario.budget]
max_cost = 1000

[landscape]
kind = "sphere"
dim = 5

[[optimizer]]
label = "a"
kind = "test_random_search"
sigma = 0.3

[[optimizer]]
label = "b"
kind = "test_random_search"
samples = 2

[sweep]
"optimizer.a.sigma" = [0.1, 0.2, 0.4]
"optimizer.b.samples" = [1, 2]
"landscape.dim" = [2, 3]

[quick]
"scenario.replicates" = 2
"scenario.budget.max_cost" = 100
"sweep.landscape.dim" = [2]
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems_of(src) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_scenario(src)
    return info.value.problems


# ----------------------------------------------------------------------------- resolution
def test_grid_sweep_expands_each_optimizer_over_its_own_keys_only(tmp_path):
    sc = load_scenario(write(tmp_path, GOOD))
    by_label = {}
    for r in sc.runs:
        by_label.setdefault(r.label, []).append(r)
    # a: 3 sigmas x 2 dims; b: 2 samples x 2 dims (a's keys do not multiply b's runs)
    assert len(by_label["a"]) == 6 and len(by_label["b"]) == 4
    assert {tuple(sorted(r.sweep)) for r in by_label["a"]} == {("landscape.dim", "optimizer.a.sigma")}
    sigmas = sorted((r.params["sigma"], r.landscape.params["dim"]) for r in by_label["a"])
    assert sigmas == [(0.1, 2), (0.1, 3), (0.2, 2), (0.2, 3), (0.4, 2), (0.4, 3)]
    assert all(r.params["samples"] == 4 for r in by_label["a"])  # default filled in
    assert len({r.run_id for r in sc.runs}) == 10
    assert sc.settings.targets == [1e-1, 1e-3] and sc.runs[0].budget["max_cost"] == 1000


def test_run_ids_are_stable_and_depend_on_the_resolved_config(tmp_path):
    a = load_scenario(write(tmp_path, GOOD))
    b = load_scenario(write(tmp_path, GOOD.replace('description', 'description'), "t.toml"))
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs]
    # writing a default explicitly does not change the id; changing a value does
    c = load_scenario(write(tmp_path, GOOD.replace("samples = 2\n", "samples = 2\nsigma = 0.5\n"), "c.toml"))
    assert {r.run_id for r in c.runs} == {r.run_id for r in a.runs}
    d = load_scenario(write(tmp_path, GOOD.replace("seed = 3", "seed = 4"), "d.toml"))
    assert {r.run_id for r in d.runs}.isdisjoint(r.run_id for r in a.runs)


def test_zip_mode_pairs_values(tmp_path):
    text = GOOD.split("[sweep]")[0] + '[sweep]\nmode = "zip"\n"optimizer.a.sigma" = [0.1, 0.2]\n"landscape.dim" = [2, 3]\n'
    sc = load_scenario(write(tmp_path, text))
    a = sorted((r.params["sigma"], r.landscape.params["dim"]) for r in sc.runs if r.label == "a")
    assert a == [(0.1, 2), (0.2, 3)]
    assert sorted(r.landscape.params["dim"] for r in sc.runs if r.label == "b") == [2, 3]


def test_quick_and_command_line_overrides(tmp_path):
    p = write(tmp_path, GOOD)
    q = load_scenario(p, quick=True)
    assert q.quick and q.settings.replicates == 2 and q.settings.budget.max_cost == 100
    assert len(q.runs) == 3 + 2  # the quick table shrank the dim sweep to one value
    o = load_scenario(p, quick=True, replicates=7, device="cpu", overrides={"optimizer.b.sigma": 2.0})
    assert o.settings.replicates == 7 and o.settings.device == "cpu"
    assert all(r.params["sigma"] == 2.0 for r in o.runs if r.label == "b")
    assert load_scenario(p).settings.replicates == 4  # the file itself is unchanged
    again = q.with_options(quick=False)
    assert again.settings.replicates == 4 and len(again.runs) == 10


def test_dict_source_and_scenario_sweep(tmp_path):
    d = {"scenario": {"name": "x", "budget": {"max_steps": 10}, "seed": 1},
         "landscape": {"kind": "sphere", "drift": {"kind": "linear", "speed": 0.01}},
         "optimizer": [{"label": "rs", "kind": "test_random_search"}],
         "sweep": {"scenario.budget.max_steps": [5, 10], "scenario.grad_cost": [1.0, 2.0]}}
    sc = load_scenario(copy.deepcopy(d))
    assert sorted((r.budget["max_steps"], r.grad_cost) for r in sc.runs) == [(5, 1.0), (5, 2.0), (10, 1.0), (10, 2.0)]
    assert sc.landscape.drift["kind"] == "linear" and sc.landscape.drift["speed"] == 0.01
    assert sc.settings.record.log_points == 40  # the default schedule


# ----------------------------------------------------------------------------- errors
def test_every_problem_reported_at_once_with_file_line_key_given_allowed(tmp_path):
    text = """\
[scenario]
name = "demo"
replicates = 0
seeed = 3
dtype = "float16"

[scenario.budget]
max_cost = -5

[landscape]
kind = "sphere"
dimm = 4

[[optimizer]]
label = "a"
kind = "test_random_search"
sigma = "big"

[[optimizer]]
label = "a"
kind = "sgdd"
"""
    p = write(tmp_path, text)
    probs = problems_of(p)
    joined = "\n".join(probs)
    expect = [
        (3, "scenario.replicates", "given: 0", "allowed: an integer >= 1"),
        (4, "scenario.seeed", "unknown key 'seeed' (did you mean 'seed'?)", "allowed: name, description"),
        (5, "scenario.dtype", "given: 'float16'", "'float32', 'float64'"),
        (8, "scenario.budget.max_cost", "given: -5", "allowed: a number > 0"),
        (12, "landscape.dimm", "unknown key 'dimm' (did you mean 'dim'?)", "allowed: dim"),
        (17, "optimizer.a.sigma", "given: 'big'", "allowed: a number > 0"),
        (20, "optimizer.a.label", "duplicate label 'a'", ""),
        (21, "optimizer.a.kind", "unknown optimizer kind", "allowed: "),
    ]
    assert len(probs) == len(expect), joined
    for line, key, what, allowed in expect:
        hit = [x for x in probs if x.startswith(f"{p}:{line}: {key}: ")]
        assert hit, f"no problem at line {line} for {key} in:\n{joined}"
        assert what in hit[0] and allowed in hit[0], hit[0]
    assert probs == sorted(probs, key=lambda x: int(x.split(":")[1]))  # in file order


@pytest.mark.parametrize("text, line, fragment", [
    ("[scenario\nname = 'x'\n", 1, "invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 10)"),
    ("[scenario]\nname = 'x'\nname = 'y'\n", 3, "invalid TOML"),
    ("[scenario]\nname = \n", 2, "invalid TOML"),
])
def test_broken_toml_names_line_and_column(tmp_path, text, line, fragment):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_scenario(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: invalid TOML") and fragment in msg and f"line {line}" in msg


@pytest.mark.parametrize("mutate, fragment", [
    (lambda t: t.replace("[landscape]\nkind", "[landscape]\nkinds"), "landscape.kind: required key is missing"),
    (lambda t: t.split("[[optimizer]]")[0], "required section [[optimizer]] is missing"),
    (lambda t: t.replace("[scenario.budget]\nmax_cost = 1000\n", ""), "scenario.budget: required key is missing"),
    (lambda t: t.replace("max_cost = 1000", "max_cost = 1000\nmax_steps = 0"), "scenario.budget.max_steps"),
    (lambda t: t.replace("[scenario.budget]\nmax_cost = 1000", "[scenario.budget]"),
     "set at least one of max_cost, max_steps, max_sim_time"),
    (lambda t: t + "\n[extra]\nx = 1\n", "unknown section 'extra'"),
    (lambda t: t.replace('"optimizer.a.sigma"', '"optimizer.c.sigma"'), "no optimizer labelled 'c'"),
    (lambda t: t.replace('"optimizer.a.sigma"', '"optimizer.a.sigmaa"'),
     "has no parameter 'sigmaa' (did you mean 'sigma'?)"),
    (lambda t: t.replace('"landscape.dim" = [2, 3]', '"landscape.dims" = [2, 3]'), "did you mean 'dim'?"),
    (lambda t: t.replace('"landscape.dim" = [2, 3]', '"landscpe.dim" = [2, 3]'), "unknown section 'landscpe'"),
    (lambda t: t.replace('"optimizer.a.sigma" = [0.1, 0.2, 0.4]', '"optimizer.a.sigma" = [0.1, -1.0]'),
     "at sweep point optimizer.a.sigma = -1.0"),
    (lambda t: t.replace('"optimizer.a.sigma" = [0.1, 0.2, 0.4]', '"optimizer.a.sigma" = []'),
     "must be a non-empty list"),
    (lambda t: t.replace("[sweep]", '[sweep]\nmode = "zip"'), "zip mode needs lists of equal length"),
    (lambda t: t.replace('label = "a"', 'label = "a b"'), "label must be letters"),
    (lambda t: t.replace('name = "demo"', 'name = "../etc"'), "scenario.name"),
    (lambda t: t.replace("targets = [1e-1, 1e-3]", "targets = [0.1, -2]"), "targets must be finite numbers > 0"),
    (lambda t: t.replace("targets = [1e-1, 1e-3]", "offline_error_from = -1.0"), "scenario.offline_error_from"),
    (lambda t: t.replace("replicates = 4", 'replicates = "four"'), "given: 'four'"),
    (lambda t: t.replace("seed = 3", 'device = "gpu"'), "scenario.device"),
])
def test_malformed_files_give_one_clean_error(tmp_path, mutate, fragment):
    p = write(tmp_path, mutate(GOOD))
    probs = problems_of(p)
    assert any(fragment in x for x in probs), "\n".join(probs)
    assert all(x.startswith(str(p)) for x in probs)


def test_bad_quick_key_reported_in_both_modes(tmp_path):
    """[quick] is validated with or without --quick (issue #22: a broken quick variant passed
    `validate`); without it each such problem is marked 'with [quick]'."""
    p = write(tmp_path, GOOD + '"optimizer.zz.sigma" = 1\n')
    pattern = r":\d+: quick\.'optimizer\.zz\.sigma': bad \[quick\] key: no optimizer labelled 'zz'"
    probs = problems_of_quick(p)
    assert any(re.search(pattern, x) for x in probs), probs
    with pytest.raises(ConfigError) as info:
        load_scenario(p)
    assert any(x.startswith("with [quick]: ") and re.search(pattern, x) for x in info.value.problems), info.value.problems


def problems_of_quick(p):
    with pytest.raises(ConfigError) as info:
        load_scenario(p, quick=True)
    return info.value.problems


def test_missing_file_and_not_utf8(tmp_path):
    with pytest.raises(ConfigError, match="scenario file not found"):
        load_scenario(tmp_path / "nope.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_scenario(bad)


def test_locate_keys_handles_arrays_of_tables_and_quoted_dotted_keys():
    text = '[a]\nx = 1\n[[o]]\nlabel = "p"\n"q.r" = 2  # c\n[[o]]\ny.z = 3\n[o.sub]\nw = 4\n'
    lines = locate_keys(text)
    assert lines[("a", "x")] == 2 and lines[("o", 0, "label")] == 4 and lines[("o", 0, "q.r")] == 5
    assert lines[("o", 1, "y", "z")] == 7 and lines[("o", 1, "sub", "w")] == 9


def test_preflight_reports_constructor_checks_with_the_optimizer_line(tmp_path):
    """A check made in a constructor (here against the landscape's dimension) is reported by
    validation, at the entry's line, with the sweep point that causes it."""
    text = GOOD.split("[sweep]")[0] + '[[optimizer]]\nlabel = "p"\nkind = "test_picky"\n' \
        + '[sweep]\n"optimizer.p.at_most_dim" = [2, 8]\n'
    p = write(tmp_path, text)
    probs = problems_of(p)
    assert len(probs) == 1, probs
    line = text.splitlines().index('label = "p"')  # 0-based index of the label = 1-based line of the header
    assert probs[0] == (f"{p}:{line}: optimizer.p: at sweep point optimizer.p.at_most_dim = 8: optimizer 'test_picky': "
                        "parameter 'at_most_dim' = 8 is not allowed; allowed: an integer <= dim = 5")
    assert len(load_scenario(p, preflight=False).runs) == 1 + 1 + 2  # the schema alone accepts it
