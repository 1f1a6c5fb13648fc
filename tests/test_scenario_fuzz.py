"""Property-based: whatever a scenario document or file holds, loading it either succeeds or
raises one ConfigError (the CLI prints it, exit 2) — never any other exception (a traceback)."""

from __future__ import annotations

import copy
import datetime as dt

import test_runner_components  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evosgd.cli import main
from evosgd.core.errors import ConfigError
from evosgd.scenario import Scenario, load_scenario

VALID = {
    "scenario": {"name": "fuzz", "replicates": 2, "seed": 1, "targets": [0.1], "budget": {"max_cost": 50},
                 "record": {"log_points": 4}},
    "landscape": {"kind": "sphere", "dim": 3, "drift": {"kind": "linear", "speed": 0.1}},
    "optimizer": [{"label": "a", "kind": "test_random_search", "sigma": 0.2},
                  {"label": "b", "kind": "sgd", "lr": 0.1}],
    "sweep": {"optimizer.a.samples": [1, 2], "landscape.dim": [2, 3]},
    "analysis": [{"label": "t", "kind": "test_tiny_analysis", "samples": 5}],
    "quick": {"scenario.replicates": 1},
}

KEYS = st.sampled_from(["scenario", "landscape", "optimizer", "sweep", "analysis", "quick", "name", "kind", "label",
                        "budget", "max_cost", "dim", "lr", "mode", "drift", "replicates", "seed", "device",
                        "optimizer.a.sigma", "landscape.dim", "scenario.budget.max_cost", "optimizer.x.y", "x"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=8), st.sampled_from(["sphere", "sgd", "grid", "zip", "cpu", "cuda:7", "float64", "a", "b"]),
    st.just(dt.datetime(2020, 1, 1)), st.just(dt.date(2020, 1, 1)),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(KEYS | st.text(max_size=6), inner, max_size=4)),
                      max_leaves=12)


def load_ok_or_config_error(source, **kw) -> None:
    try:
        sc = load_scenario(source, **kw)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
        return
    assert isinstance(sc, Scenario) and sc.runs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, VALUES, max_size=7), st.booleans())
def test_random_documents_never_raise_anything_but_config_error(doc, quick):
    load_ok_or_config_error(doc, quick=quick)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(VALID) if p]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["set", "delete", "add"]), VALUES, KEYS),
                min_size=1, max_size=3), st.booleans())
def test_near_valid_documents_never_raise_anything_but_config_error(edits, quick):
    """Small edits of a valid document (a value replaced, a key deleted or added) hit the
    validation paths a real user's typo hits."""
    doc = copy.deepcopy(VALID)
    for path, op, value, key in edits:
        node = doc
        try:
            for part in path[:-1]:
                node = node[part]
            last = path[-1]
            if op == "set":
                node[last] = value
            elif op == "delete":
                del node[last]
            elif isinstance(node[last], dict):
                node[last][key] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed this path
    load_ok_or_config_error(doc, quick=quick)


VALID_TEXT = """\
[scenario]
name = "fuzz"
replicates = 2
[scenario.budget]
max_cost = 50
[landscape]
kind = "sphere"
dim = 3
[[optimizer]]
label = "a"
kind = "test_random_search"
[sweep]
"optimizer.a.sigma" = [0.1, 0.2]
[quick]
"scenario.replicates" = 1
"""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(VALID_TEXT)), st.integers(0, 3),
                          st.sampled_from(list("[]=\"'.,#\n x1-{}") + ["\\u", "\"\"\"", "[[", "true", "1e999"])),
                min_size=1, max_size=4), st.booleans())
def test_mutated_toml_text_never_raises_anything_but_config_error(tmp_path_factory, edits, quick):
    text = VALID_TEXT
    for pos, cut, insert in edits:
        pos = min(pos, len(text))
        text = text[:pos] + insert + text[pos + cut:]
    p = tmp_path_factory.mktemp("fuzz") / "s.toml"
    p.write_text(text, encoding="utf-8")
    load_ok_or_config_error(p, quick=quick)


def test_cli_validate_reports_problems_without_traceback(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text(VALID_TEXT.replace("max_cost = 50", "max_cost = 'lots'").replace("dim = 3", "dim = -3"))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{p}:5: scenario.budget.max_cost" in err and f"{p}:8: landscape.dim" in err
    good = tmp_path / "good.toml"
    good.write_text(VALID_TEXT)
    assert main(["validate", str(good)]) == 0
    assert "ok" in capsys.readouterr().out


# ----------------------------------------------------------------------------- hostile nesting (#22)
NEST = st.lists(st.sampled_from(["[", "{a = ", "{b.c = "]), min_size=1, max_size=400)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(NEST, st.integers(0, 3000), st.booleans())
def test_any_nesting_depth_is_one_config_error_never_a_recursion_error(tmp_path_factory, openers, header_parts, closed):
    """Arrays and inline tables nested to any depth, and table headers with thousands of dotted
    parts: tomllib and the loader recurse on these, so depth is refused before they see it."""
    closers = "".join("]" if o == "[" else "}" for o in reversed(openers))
    value = "".join(openers) + "1" + (closers if closed else "")
    header = "[" + ".".join(["t"] * max(1, header_parts)) + "]\n"
    p = tmp_path_factory.mktemp("nest") / "s.toml"
    p.write_text(VALID_TEXT + header + "x = " + value + "\n", encoding="utf-8")
    load_ok_or_config_error(p)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes_are_one_config_error(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("bytes") / "s.toml"
    p.write_bytes(data)
    load_ok_or_config_error(p)


# ----------------------------------------------------------------------------- strict values, every component
def _numeric_fields():
    """(registry name, kind, field, base type) for every int or float parameter of every
    registered landscape and optimizer whose annotation does not also allow bool."""
    import typing

    from evosgd.core.registry import LANDSCAPES, OPTIMIZERS, load_all
    from evosgd.scenario.strict import _alternatives

    load_all()
    out = []
    for reg_name, reg in (("landscape", LANDSCAPES), ("optimizer", OPTIMIZERS)):
        for entry in reg.entries():
            if entry.name.startswith("test_"):
                continue
            for name, f in entry.params.model_fields.items():
                alts = _alternatives(f.annotation)
                if bool in alts or typing.Any in alts:
                    continue
                for base in (float, int):
                    if base in alts:
                        out.append((reg_name, entry.name, name, base))
                        break
    return out


def test_every_numeric_parameter_of_every_component_refuses_true_and_inf():
    """No field-by-field declarations: the rule holds for every registered component's params
    (batch_size = true ran as 1, lr = inf validated).  A bool for an int or float field, and inf
    for a float field, are refused with the parameter named."""
    fields = _numeric_fields()
    assert len(fields) > 50  # the registry is really walked
    for reg_name, kind, name, base in fields:
        for bad, says in ((True, "not true/false"), (float("inf"), "finite number")):
            if base is int and isinstance(bad, float):
                continue  # pydantic refuses inf for an int already
            d = copy.deepcopy(VALID)
            d.pop("sweep"), d.pop("analysis"), d.pop("quick")
            if reg_name == "landscape":
                d["landscape"] = {"kind": kind, name: bad}
            else:
                d["optimizer"] = [{"label": "o", "kind": kind, name: bad}]
            try:
                load_scenario(d, preflight=False)
            except ConfigError as e:
                assert any(name in p and says in p for p in e.problems), (kind, name, bad, e.problems)
            else:
                raise AssertionError(f"{reg_name} {kind}: {name} = {bad!r} was accepted")
