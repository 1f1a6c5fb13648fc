"""Plugins: a user's file or module registers components that scenario files then name like
built-in kinds (``--plugin``, ``import``, ``evosgd.plugins`` entry points); what is refused and
how; plugin provenance in the manifest and the run id; plugins in worker processes.

The example plugin (``examples/michaelis_menten.py``) is checked against the published fit of
its data (R's ``nls`` on ``Puromycin``, treated cells: Vm = 212.7, K = 0.06412, residual sum of
squares 1195; Bates & Watts 1988, section 2.1)."""

from __future__ import annotations

import concurrent.futures as cf
import importlib.metadata
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import evosgd
from evosgd.cli import main
from evosgd.core import plugins as plugin_mod
from evosgd.core.errors import ConfigError
from evosgd.core.plugins import (
    PluginError,
    ensure_plugins,
    load_entry_point_plugins,
    load_plugin,
)
from evosgd.core.registry import LANDSCAPES, OPTIMIZERS, all_registries, load_all

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PLUGIN = EXAMPLES / "michaelis_menten.py"
SCENARIO = EXAMPLES / "michaelis_menten.toml"

load_all()


@pytest.fixture(autouse=True)
def clean_plugins():
    """Each test starts and ends with only the components registered before it (plugins
    register into the process-wide registries)."""
    entries = {id(r): dict(r._entries) for r in all_registries()}
    state = (dict(plugin_mod._LOADED), dict(plugin_mod._MODULE_REFS), plugin_mod._ENTRY_POINTS_DONE)
    modules = set(sys.modules)
    yield
    for r in all_registries():
        r._entries.clear()
        r._entries.update(entries.get(id(r), {}))
    plugin_mod._LOADED.clear()
    plugin_mod._LOADED.update(state[0])
    plugin_mod._MODULE_REFS.clear()
    plugin_mod._MODULE_REFS.update(state[1])
    plugin_mod._ENTRY_POINTS_DONE = state[2]
    for name in set(sys.modules) - modules:
        if name.startswith("evosgd_plugin_") or name in ("michaelis_menten", "ep_plugin_mod", "userpkg",
                                                          "userpkg.components"):
            del sys.modules[name]


OPTIMIZER_PLUGIN = '''
import torch
from pydantic import BaseModel, ConfigDict, Field

import evosgd
from evosgd.core.optimizer import Optimizer


class HillParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sigma: float = Field(0.3, gt=0, description="radius of the Gaussian step")


@evosgd.register_optimizer("user_hill_climber", HillParams, "(1+1) hill climber without step-size control")
class HillClimber(Optimizer):
    def __init__(self, params, *, landscape, budget, generator):
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        self.x = landscape.initial_point.clone()
        self.fx = landscape.true_loss(self.x)

    @torch.no_grad()
    def step(self):
        active = self.active
        y = self.x + self.params.sigma * torch.randn(self.x.shape, generator=self.generator, dtype=self.dtype)
        fy = self.landscape.true_loss(y)
        better = active & (fy < self.fx)
        self.x = torch.where(better.unsqueeze(1), y, self.x)
        self.fx = torch.where(better, fy, self.fx)
        self.budget.charge(evaluations=self.landscape.full_cost, mask=active)
        self.budget.step(active)

    def recommend(self):
        return self.x
'''

HILL_SCENARIO = '''
[scenario]
name = "hill"
replicates = 3
seed = 4
device = "cpu"
[scenario.budget]
max_cost = 200
[landscape]
kind = "sphere"
dim = 3
[[optimizer]]
label = "hill"
kind = "user_hill_climber"
sigma = 0.2
'''


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


# ----------------------------------------------------------------------------- the example
def test_example_fits_the_published_michaelis_menten_estimates():
    load_plugin(PLUGIN)
    land = LANDSCAPES.build("michaelis_menten", {"cells": "treated"}, replicates=2, seed=0, device="cpu",
                            dtype=torch.float64)
    opt = land.optimum()
    assert 100 * opt[0, 0].item() == pytest.approx(212.68, abs=0.01)
    assert math.exp(opt[0, 1].item()) == pytest.approx(0.06412, abs=1e-5)
    # loss = mean of 0.5 r_i^2 in (100 counts/min/min)^2: RSS = 2 n 1e4 loss
    assert 2 * 12 * 1e4 * land.optimal_loss()[0].item() == pytest.approx(1195.45, abs=0.01)
    # the optimum is a stationary point of the landscape's own (autograd) gradient
    _, g = land.loss_and_grad(opt, land.full_batch())
    assert g.abs().max().item() < 1e-8
    # replicates start from different guesses, drawn from (seed, r) alone
    again = LANDSCAPES.build("michaelis_menten", {}, replicates=3, seed=0, device="cpu", dtype=torch.float64)
    assert torch.equal(again.initial_point[:2], land.initial_point)
    assert not torch.equal(land.initial_point[0], land.initial_point[1])


def test_example_without_plugin_fails_with_the_flag_to_add(capsys):
    assert main(["validate", str(SCENARIO)]) == 2
    err = capsys.readouterr().err
    assert "unknown landscape kind 'michaelis_menten'" in err
    assert f"--plugin {EXAMPLES / 'michaelis_menten.py'}" in err or "--plugin examples/michaelis_menten.py" in err
    assert "sphere" in err  # the built-in kinds are listed
    assert "Traceback" not in err


def test_example_runs_from_cli_and_from_python_with_the_same_run_ids(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli"
    assert main(["run", str(SCENARIO), "--plugin", str(PLUGIN), "--quick", "--out", str(out), "--no-progress"]) == 0
    cli_manifest = _manifest(out / "example_michaelis_menten")
    assert "plugin:" not in capsys.readouterr().err

    # Python: import the plugin as a module, then the public API (a fresh registry state)
    for r in all_registries():
        if "michaelis_menten" in r:
            r.unregister("michaelis_menten")
    plugin_mod._LOADED.clear()
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import michaelis_menten  # noqa: F401

    sc = evosgd.load_scenario(SCENARIO, quick=True)
    frame = evosgd.run_scenario(sc, tmp_path / "py", progress=False)
    py_manifest = _manifest(tmp_path / "py" / "example_michaelis_menten")
    assert set(py_manifest["runs"]) == set(cli_manifest["runs"])  # same plugin name and sha256 -> same ids
    # (other test modules' components, registered in this process, may be listed beside it)
    py_refs = {p["name"]: p for p in py_manifest["plugins"]}
    cli_refs = {p["name"]: p for p in cli_manifest["plugins"]}
    assert py_refs["michaelis_menten"]["type"] == "module"
    assert cli_refs["michaelis_menten"]["type"] == "file", cli_manifest["plugins"]
    assert sorted(frame["label"].unique()) == ["adam", "cmaes", "ga", "sgd"]
    # every method gets below the loosest target on this quick budget (the full run: see the README)
    final = frame.sort_values("cost").groupby(["label", "replicate"])["error"].last()
    assert (final < 0.1).all()


def test_module_form_plugin_and_a_package(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    assert main(["validate", str(SCENARIO), "--plugin", "michaelis_menten"]) == 0
    assert "ok" in capsys.readouterr().out
    _write(tmp_path / "userpkg" / "__init__.py", "")
    _write(tmp_path / "userpkg" / "components.py", OPTIMIZER_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    scenario = _write(tmp_path / "hill.toml", HILL_SCENARIO)
    assert main(["run", str(scenario), "--plugin", "userpkg.components", "--out", str(tmp_path / "res"),
                 "--no-progress", "--workers", "1"]) == 0
    m = _manifest(tmp_path / "res" / "hill")
    (run,) = m["runs"].values()
    assert run["status"] == "done"
    ref = next(p for p in m["plugins"] if p["name"] == "userpkg.components")
    assert ref["type"] == "module" and ref["used_by"] == ["hill"]
    assert run["config"]["plugins"] == [{"name": "userpkg.components", "sha256": ref["sha256"]}]


def test_list_shows_plugin_components(capsys):
    assert main(["list", "landscapes", "--brief", "--plugin", str(PLUGIN)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("michaelis_menten"))
    assert "[plugin: " in line and "michaelis_menten.py" in line


# ----------------------------------------------------------------------------- entry points
@pytest.mark.parametrize("value", ["ep_plugin_mod", "ep_plugin_mod:setup"])
def test_entry_point_plugins_load_through_importlib_metadata(tmp_path, monkeypatch, value):
    body = OPTIMIZER_PLUGIN
    if value.endswith(":setup"):  # module:function registers when called
        body = body.replace('@evosgd.register_optimizer("user_hill_climber", HillParams, "(1+1) hill climber without '
                            'step-size control")\n', "")
        body += ('\n\ndef setup():\n    evosgd.register_optimizer("user_hill_climber", HillParams, '
                 '"(1+1) hill climber")(HillClimber)\n')
    _write(tmp_path / "ep_plugin_mod.py", body)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [importlib.metadata.EntryPoint(name="hill", value=value, group="evosgd.plugins")]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: eps if kw.get("group") == "evosgd.plugins" else real(**kw))
    assert "user_hill_climber" not in OPTIMIZERS
    (ref,) = load_entry_point_plugins(force=True)
    assert ref["type"] == "entry_point" and ref["entry_point"] == "hill"
    assert OPTIMIZERS.get("user_hill_climber").origin == ref
    sc = evosgd.load_scenario(_write(tmp_path / "hill.toml", HILL_SCENARIO))
    assert sc.runs[0].plugins == [ref]
    frame = evosgd.run_scenario(sc, tmp_path / "res", progress=False, workers=1)
    first, last = frame.sort_values("cost").groupby("replicate")["true_loss"].agg(["first", "last"]).T.values
    assert (last < first).all()  # an elitist climber never gets worse, and 200 tries improve it


# ----------------------------------------------------------------------------- refused plugins
BROKEN = {
    "raises": ("x = 1\nraise ZeroDivisionError('oops')\n", "raised ZeroDivisionError on import: oops (at broken.py:2)"),
    "params_not_pydantic": (
        ("import dataclasses, evosgd\n@dataclasses.dataclass\nclass P:\n    a: int = 1\n"
         "evosgd.register_landscape('user_thing', P, 'x')(lambda p, **k: None)\n"),
        "params must be a pydantic model class"),
    "name_clash": (
        ("import evosgd\nfrom pydantic import BaseModel, ConfigDict\nclass P(BaseModel):\n"
         "    model_config = ConfigDict(extra='forbid')\n"
         "evosgd.register_landscape('sphere', P, 'my sphere')(lambda p, **k: None)\n"),
        "landscape 'sphere' is already registered by evosgd (built-in)"),
    "not_callable": (
        ("import evosgd\nfrom pydantic import BaseModel, ConfigDict\nclass P(BaseModel):\n"
         "    model_config = ConfigDict(extra='forbid')\n"
         "evosgd.register_optimizer('user_opt', P, 'an optimizer')(42)\n"),
        "the registered factory must be callable"),
    "extra_allowed": (
        ("import evosgd\nfrom pydantic import BaseModel\nclass P(BaseModel):\n    a: int = 1\n"
         "evosgd.register_landscape('user_thing', P, 'x')(lambda p, **k: None)\n"),
        "extra='forbid'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_plugin_is_one_clear_error_naming_it(case, tmp_path, capsys):
    source, expected = BROKEN[case]
    # a good component first: a failed plugin must leave nothing of itself registered
    good = ("import evosgd\nfrom pydantic import BaseModel, ConfigDict\nclass G(BaseModel):\n"
            "    model_config = ConfigDict(extra='forbid')\n"
            "evosgd.register_landscape('user_good_one', G, 'fine')(lambda p, **k: None)\n")
    plugin = _write(tmp_path / "broken.py", good + source if case != "raises" else source)
    assert main(["validate", str(SCENARIO), "--plugin", str(plugin)]) == 2
    err = capsys.readouterr().err
    assert f"plugin {str(plugin)!r}" in err and expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "user_good_one" not in LANDSCAPES
    with pytest.raises(PluginError):
        load_plugin(plugin)


@pytest.mark.parametrize("plugin, expected", [
    ("no/such/file.py", "file not found"),
    ("no_such_module_xyz.sub", "no module of that name can be imported"),
    ("not a module!", "neither a .py file nor a module name"),
])
def test_missing_plugin_is_one_clear_error(plugin, expected, capsys):
    assert main(["list", "landscapes", "--plugin", plugin]) == 2
    err = capsys.readouterr().err
    assert f"plugin {plugin!r}" in err and expected in err and "Traceback" not in err


def test_plugin_component_gets_the_built_in_schema_validation(tmp_path):
    load_plugin(PLUGIN)
    text = SCENARIO.read_text().replace('cells = "treated"', 'cels = "mutant"')
    with pytest.raises(ConfigError) as e:
        evosgd.load_scenario(_write(tmp_path / "s.toml", text))
    assert "unknown key 'cels' (did you mean 'cells'?)" in str(e.value)
    text = SCENARIO.read_text().replace('cells = "treated"', 'cells = "mutant"')
    with pytest.raises(ConfigError) as e:
        evosgd.load_scenario(_write(tmp_path / "s.toml", text))
    assert "landscape.cells" in str(e.value) and "'treated'" in str(e.value) and "'untreated'" in str(e.value)


# ----------------------------------------------------------------------------- provenance
def test_run_id_follows_the_plugin_source_not_its_location(tmp_path):
    def ids(plugin: Path) -> set[str]:
        for r in all_registries():
            r.unregister("michaelis_menten")
        plugin_mod._LOADED.clear()
        load_plugin(plugin)
        return {r.run_id for r in evosgd.load_scenario(SCENARIO, quick=True).runs}

    original = ids(PLUGIN)
    moved = shutil.copy(PLUGIN, _write(tmp_path / "elsewhere" / "michaelis_menten.py", ""))
    assert ids(Path(moved)) == original  # same name and bytes: the same runs
    edited = _write(tmp_path / "edited" / "michaelis_menten.py", PLUGIN.read_text() + "\n# tuned\n")
    changed = ids(edited)
    assert changed.isdisjoint(original)  # an edited plugin never reuses stored results
    run = evosgd.load_scenario(SCENARIO, quick=True).runs[0]
    assert run.config()["plugins"] == [{"name": "michaelis_menten", "sha256": plugin_mod.sha256_of(edited)}]


def test_built_in_run_ids_do_not_change_when_plugins_are_loaded():
    quickstart = ROOT / "scenarios" / "quickstart.toml"
    before = evosgd.load_scenario(quickstart, quick=True)
    load_plugin(PLUGIN)
    after = evosgd.load_scenario(quickstart, quick=True)
    assert [r.run_id for r in after.runs] == [r.run_id for r in before.runs]
    assert all("plugins" not in r.config() and r.plugins == [] for r in after.runs)


@pytest.mark.slow  # starts a process that imports torch (several seconds on a busy machine)
def test_worker_process_loads_the_plugin_and_checks_its_hash(tmp_path):
    """A spawned process (nothing inherited) executes a plugin run: ``execute_run`` loads the
    plugin from the run spec, and its rows equal those of the same run in this process."""
    from evosgd.run.runner import Task, execute_run

    plugin = shutil.copy(PLUGIN, tmp_path / "michaelis_menten.py")
    load_plugin(plugin)
    sc = evosgd.load_scenario(SCENARIO, quick=True, replicates=2)
    run = next(r for r in sc.runs if r.label == "cmaes")
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        res = pool.submit(execute_run, Task(run, str(tmp_path / "w"), "cpu")).result(timeout=300)
    assert res.status == "done", res.error
    local = execute_run(Task(run, str(tmp_path / "l"), "cpu"))
    import pandas as pd

    a = pd.read_parquet(tmp_path / "w" / res.file)
    b = pd.read_parquet(tmp_path / "l" / local.file)
    assert a["true_loss"].tolist() == b["true_loss"].tolist()
    # an edited plugin file is refused, not silently run under the old id
    Path(plugin).write_text(Path(plugin).read_text() + "\n# edited\n")
    with pytest.raises(PluginError, match="changed since the scenario was loaded"):
        ensure_plugins(run.plugins)


@pytest.mark.slow  # starts the local process pool
def test_workers_2_run_with_a_plugin(tmp_path):
    load_plugin(PLUGIN)
    sc = evosgd.load_scenario(SCENARIO, quick=True, replicates=2)
    serial = evosgd.run_scenario(sc, tmp_path / "serial", workers=1, progress=False)
    pooled = evosgd.run_scenario(sc, tmp_path / "pool", workers=2, progress=False)
    m = _manifest(tmp_path / "pool" / "example_michaelis_menten")
    assert all(r["status"] == "done" for r in m["runs"].values()), m["runs"]
    key = ["run_id", "replicate", "step"]
    assert (serial.sort_values(key)["true_loss"].tolist() == pooled.sort_values(key)["true_loss"].tolist())


def test_analysis_plugin_runs_and_its_id_carries_the_plugin(tmp_path):
    plugin = _write(tmp_path / "user_analysis.py", '''
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
import evosgd
from evosgd.core.analysis_api import AnalysisResult, comparison_rows


class P(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, description="multiplies the measured value")


@evosgd.register_analysis("user_start_loss", P, "true loss at the common starting point")
def start_loss(params, *, context):
    land = context.make_landscape()
    values = land.true_loss(land.initial_point)
    rows = [{"quantity": "start loss", "x_name": "replicate", "x": float(r), "measured": params.scale * float(v),
             "predicted": float("nan")} for r, v in enumerate(values)]
    return AnalysisResult(comparison_rows(rows), title="start loss")
''')
    scenario = _write(tmp_path / "a.toml", HILL_SCENARIO.replace('kind = "user_hill_climber"\nsigma = 0.2',
                                                                  'kind = "cmaes"')
                      + '[[analysis]]\nlabel = "start"\nkind = "user_start_loss"\nscale = 2.0\n')
    assert main(["run", str(scenario), "--plugin", str(plugin), "--out", str(tmp_path / "res"), "--no-progress",
                 "--workers", "1"]) == 0
    m = _manifest(tmp_path / "res" / "hill")
    (entry,) = m["analyses"].values()
    assert entry["status"] == "done", entry
    assert next(p for p in m["plugins"] if p["name"] == "user_analysis")["used_by"] == ["start"]
    run = next(iter(m["runs"].values()))
    assert "plugins" not in run["config"]  # the runs use built-ins only


def test_import_evosgd_and_the_cli_parser_do_not_import_torch():
    code = "import sys, evosgd, evosgd.cli; evosgd.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_drift_plugin_moves_the_optimum_and_enters_the_run_id(tmp_path):
    plugin = _write(tmp_path / "user_drift.py", '''
from pydantic import BaseModel, ConfigDict, Field
import evosgd
from evosgd.landscapes.drift import Drift


class StepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jump: float = Field(1.0, description="distance the optimum moves at t = at, along the first axis")
    at: float = Field(50.0, gt=0, description="time of the jump")


@evosgd.register_drift("user_step", StepParams, "the optimum jumps once, along the first axis")
class StepDrift(Drift):
    def offset(self, t):
        d = (self.times(t) >= self.params.at).to(self.dtype) * self.params.jump  # [R]
        out = d.new_zeros(self.replicates, self.dim)
        out[:, 0] = d
        return out
''')
    load_plugin(plugin)
    text = HILL_SCENARIO.replace('kind = "user_hill_climber"\nsigma = 0.2', 'kind = "cmaes"').replace(
        'dim = 3\n', 'dim = 3\n[landscape.drift]\nkind = "user_step"\njump = 2.0\n')
    sc = evosgd.load_scenario(_write(tmp_path / "d.toml", text))
    (run,) = sc.runs
    assert [p["name"] for p in run.plugins] == ["user_drift"]
    from evosgd.run.engine import build_run_landscape

    land = build_run_landscape(run.landscape, replicates=2, seed=0, device=torch.device("cpu"), dtype=torch.float64)
    moved = land.optimum(60.0) - land.optimum(0.0)
    assert torch.allclose(moved, torch.tensor([[2.0, 0.0, 0.0]] * 2, dtype=torch.float64))


def test_unknown_kind_hint_without_and_with_a_declared_module_plugin(tmp_path):
    text = HILL_SCENARIO
    with pytest.raises(ConfigError) as e:
        evosgd.load_scenario(_write(tmp_path / "h.toml", text))
    msg = str(e.value)
    assert "unknown optimizer kind 'user_hill_climber'" in msg
    assert "--plugin FILE.py or --plugin package.module" in msg and "'evosgd.plugins' entry point" in msg
    assert "(built-in) " in msg and "cmaes" in msg
    declared = text.replace('seed = 4\n', 'seed = 4\nplugins = ["userpkg.components"]\n')
    with pytest.raises(ConfigError) as e:
        evosgd.load_scenario(_write(tmp_path / "h2.toml", declared))
    assert "run with --plugin userpkg.components" in str(e.value)
