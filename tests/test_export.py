"""``evosgd export``: the IOHprofiler export is read back by ``iohinspector`` and the COCO export
by ``cocopp`` (its reader, and its whole post-processing in a slow test), with the runtimes and
final errors of the store."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from evosgd.cli import main
from evosgd.run import execute_scenario, load_store
from evosgd.run.export import collect_trials, export_store
from evosgd.scenario import load_scenario

iohinspector = pytest.importorskip("iohinspector")
cocopp_pproc = pytest.importorskip("cocopp.pproc")

DOC = {
    "scenario": {"name": "ex", "replicates": 2, "seed": 3, "device": "cpu", "dtype": "float64",
                 "budget": {"max_cost": 300}, "record": {"log_points": 15}},
    "landscape": {"kind": "bbob", "function": 1, "dim": 2, "instance": 4},
    "optimizer": [{"label": "cmaes", "kind": "cmaes"},
                  {"label": "sgd", "kind": "sgd", "batch_size": 1, "lr": 0.05}],
    "sweep": {"landscape.function": [1, 8]},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    execute_scenario(load_scenario(DOC), out, progress=False, workers=1, command="evosgd run ex.toml")
    return out / "ex"


def _expected(store: Path) -> dict[tuple[str, int, int], tuple[float, np.ndarray, np.ndarray]]:
    """(algorithm, function, instance) -> (final best error, x-axis, best error) from the store."""
    runs = load_store(store).runs
    out = {}
    for (_, rep), g in runs.groupby(["run_id", "replicate"]):
        fid = json.loads(g["config"].iloc[0])["landscape"]["params"]["function"]
        x = np.maximum(np.ceil(g["evaluations"] + g["gradient_evaluations"]), 1).to_numpy()
        out[(g["label"].iloc[0], fid, 4 + int(rep))] = (float(g["best_so_far"].min()), x, g["best_so_far"].to_numpy())
    return out


def test_ioh_export_read_back_by_iohinspector(store, tmp_path):
    folders = export_store(store, "ioh", tmp_path / "ioh")
    assert sorted(f.name for f in folders) == ["cmaes", "sgd"]
    dm = iohinspector.DataManager()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.add_folder(str(tmp_path / "ioh"))
        df = dm.load(monotonic=True, include_meta_data=True)
    expected = _expected(store)
    assert set(df["instance"].unique().to_list()) == {4, 5}  # replicate r on instance 4 + r
    assert set(df["function_id"].unique().to_list()) == {1, 8} and set(df["dimension"].unique().to_list()) == {2}
    for (alg, fid, inst), (final, x, _best) in expected.items():
        rows = df.filter((df["algorithm_name"] == alg) & (df["function_id"] == fid) & (df["instance"] == inst))
        assert rows.height > 0
        assert rows["raw_y"].min() == pytest.approx(max(final, 0.0), rel=1e-9, abs=1e-300)
        ov = dm.overview.filter((dm.overview["algorithm_name"] == alg) & (dm.overview["function_id"] == fid)
                                & (dm.overview["instance"] == inst))
        assert ov["evals"].to_list() == [x.max()]  # the run's length, from the json
        assert ov["best_y"].to_list()[0] == pytest.approx(max(final, 0.0), rel=1e-9, abs=1e-300)


def test_coco_export_read_by_cocopp_with_the_stores_runtimes(store, tmp_path):
    export_store(store, "coco", tmp_path / "coco")
    expected = _expected(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dsl = cocopp_pproc.DataSetList(str(tmp_path / "coco" / "cmaes"))
    assert sorted((ds.funcId, ds.dim) for ds in dsl) == [(1, 2), (8, 2)]
    for ds in dsl:
        assert list(ds.instancenumbers) == [4, 5]
        for target in (1.0, 1e-2):
            got = ds.detEvals([target])[0]
            for k, inst in enumerate(ds.instancenumbers):
                _, x, best = expected[("cmaes", ds.funcId, inst)]
                hit = np.flatnonzero(best <= target)
                want = x[hit[0]] if len(hit) else np.nan
                assert (np.isnan(got[k]) and np.isnan(want)) or got[k] == want, (ds.funcId, inst, target)


def test_cost_axis_and_trials(store):
    runs = load_store(store).runs
    ev, cost = collect_trials(runs, "evaluations"), collect_trials(runs, "cost")
    assert len(ev) == len(cost) == 2 * 2 * 2  # algorithms x functions x replicates
    sgd_ev = next(t for t in ev if t.algorithm == "sgd")
    sgd_cost = next(t for t in cost if t.algorithm == "sgd")
    assert sgd_cost.x[-1] == pytest.approx(3 * sgd_ev.x[-1], abs=3)  # a gradient costs grad_cost = 3


@pytest.mark.slow
def test_cocopp_postprocesses_the_export(store, tmp_path):
    """cocopp's whole pipeline (one algorithm, non-interactive) writes its HTML pages."""
    import matplotlib

    matplotlib.use("Agg")
    import cocopp

    export_store(store, "coco", tmp_path / "coco")
    (tmp_path / "coco" / "cmaes" / "bbobexp_f8.info").unlink()  # one function: cocopp's figures take seconds each
    cocopp.genericsettings.interactive_mode = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cocopp.main(f"-o {tmp_path / 'pp'} {tmp_path / 'coco' / 'cmaes'}")
    pages = list((tmp_path / "pp").rglob("*.html"))
    assert any(p.name == "index.html" for p in pages) and len(pages) > 2


def test_cli_export_and_its_errors(store, tmp_path, capsys):
    assert main(["export", str(store), "--format", "ioh", "-o", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "cmaes" / "IOHprofiler_f1_sphere.json").is_file()
    assert main(["export", str(tmp_path / "missing"), "--format", "coco"]) == 2
    assert "not a results store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["export", str(store), "--format", "xml"])
    assert e.value.code == 2


def test_coco_refuses_non_bbob_landscapes(tmp_path, capsys):
    doc = {**DOC, "landscape": {"kind": "sphere", "dim": 2}, "sweep": {}}
    doc["scenario"] = {**DOC["scenario"], "name": "sph"}
    execute_scenario(load_scenario(doc), tmp_path, progress=False, workers=1, command="x")
    assert main(["export", str(tmp_path / "sph"), "--format", "coco"]) == 2
    err = capsys.readouterr().err
    assert "--format coco" in err and "sphere" in err and "--format ioh" in err
    assert main(["export", str(tmp_path / "sph"), "--format", "ioh", "-o", str(tmp_path / "i")]) == 0
