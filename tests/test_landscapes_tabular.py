"""Real data: bundled scikit-learn sets and CSV/Parquet/.npy files, seeded paired splits,
standardization on the training split only, feature-shift drift, held-out columns in a run's
Parquet, and bad input refused with exit 2 and a message naming the file, the key and what is
allowed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evosgd.cli import main
from evosgd.core.errors import ConfigError
from evosgd.landscapes import build_landscape
from evosgd.landscapes.tabular import TabularParams, load_table, split_table

ROOT = Path(__file__).resolve().parent.parent


def _table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, -3.0]
    y = (x[:, 0] + 0.2 * x[:, 1] > 2.0).astype(int) + (x[:, 2] > -3.0).astype(int)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": y})


@pytest.mark.parametrize("name,shape,classes,task", [
    ("digits", (1797, 64), 10, "classification"), ("breast_cancer", (569, 30), 2, "classification"),
    ("wine", (178, 13), 3, "classification"), ("iris", (150, 4), 3, "classification"),
    ("diabetes", (442, 10), 0, "regression")])
def test_bundled_sets_load_with_their_shapes(name, shape, classes, task):
    t = load_table(TabularParams(dataset=name))
    assert t.x.shape == shape and t.task == task and t.n_classes == classes
    if classes:
        assert sorted(set(t.y.tolist())) == list(range(classes))


def test_csv_parquet_and_npy_give_the_same_splits(tmp_path):
    df = _table()
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    np.save(tmp_path / "t.npy", df.to_numpy(dtype=np.float64))
    got = []
    for f, target in (("t.csv", "label"), ("t.parquet", "label"), ("t.npy", 3)):
        p = TabularParams(dataset=str(tmp_path / f), target=target, task="classification")
        table = load_table(p)
        assert table.sha256 and table.x.shape == (60, 3)
        got.append(split_table(table, replicates=2, seed=4))
    for s in got[1:]:
        for split in ("train", "validation", "test"):
            assert torch.equal(getattr(s, split)["x"], getattr(got[0], split)["x"])
            assert torch.equal(getattr(s, split)["y"], getattr(got[0], split)["y"])
    # a scenario names the file alone: the model kind gives the task
    ls = build_landscape("mlp_classifier", {"dataset": str(tmp_path / "t.csv"), "target": "label", "hidden": [4]},
                         replicates=2, seed=4, dtype=torch.float64)
    assert ls.n_classes == 3 and torch.equal(ls.splits.test["y"], got[0].test["y"])
    # a feature subset by name
    t = load_table(TabularParams(dataset=str(tmp_path / "t.csv"), target="label", features=["c", "a"], task="classification"))
    assert np.allclose(t.x, df[["c", "a"]].to_numpy())


def test_splits_are_paired_partition_the_rows_and_are_stratified():
    table = load_table(TabularParams(dataset="wine"))
    raw = split_table(table, replicates=3, seed=9, standardize=False)
    again = split_table(table, replicates=2, seed=9, standardize=False)  # replicate r: (seed, r) alone
    other = split_table(table, replicates=1, seed=10, standardize=False)
    assert torch.equal(raw.test["x"][:2], again.test["x"])
    assert not torch.equal(raw.test["x"][0], raw.test["x"][1])
    assert not torch.equal(raw.test["x"][0], other.test["x"][0])
    rows = {tuple(r) for r in table.x.tolist()}
    for r in range(3):
        parts = [tuple(v) for s in (raw.train, raw.validation, raw.test) for v in s["x"][r].tolist()]
        assert len(parts) == len(table.x) and set(parts) == rows  # disjoint and complete
        # stratified: each class' test count is its share of 36 test rows, rounded (within 1)
        counts = np.bincount(raw.test["y"][r].numpy(), minlength=3)
        share = np.bincount(table.y, minlength=3) * 36 / len(table.y)
        assert np.all(np.abs(counts - share) <= 1.0)


def test_standardization_uses_the_training_split_only():
    table = load_table(TabularParams(dataset="breast_cancer"))
    raw = split_table(table, replicates=2, seed=1, standardize=False)
    std = split_table(table, replicates=2, seed=1)
    for r in range(2):
        xtr = raw.train["x"][r]
        mu, sd = xtr.mean(0), xtr.std(0, unbiased=False)
        torch.testing.assert_close(std.train["x"][r].mean(0), torch.zeros(30, dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(std.test["x"][r], (raw.test["x"][r] - mu) / sd)
        # the test split's own mean is not removed (no leakage of held-out statistics)
        assert std.test["x"][r].mean(0).abs().max() > 1e-3


def test_regression_target_is_standardized_on_train_and_mlp_regressor_runs():
    ls = build_landscape("mlp_regressor", {"dataset": "diabetes", "hidden": []}, replicates=2, seed=0,
                         dtype=torch.float64)
    y = ls.splits.train["y"]
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 1, dtype=torch.float64), atol=1e-12, rtol=0)
    # hidden = [] is least squares: at the lstsq solution the full-batch gradient vanishes
    x, yy = ls.splits.train["x"][0], y[0, :, 0]
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    w = torch.linalg.lstsq(a, yy.unsqueeze(1)).solution.squeeze(1)
    theta = torch.cat([w[:-1], w[-1:]]).unsqueeze(0).expand(2, -1).contiguous()
    _, g = ls.loss_and_grad(theta, ls.full_batch())
    assert float(g[0].abs().max()) < 1e-10
    h = ls.heldout_metrics(theta)
    assert set(h) == {"validation_loss", "test_loss"} and bool(torch.isfinite(h["test_loss"]).all())


def test_feature_shift_drift_moves_training_and_heldout_inputs():
    kw = {"replicates": 2, "seed": 3, "dtype": torch.float64}
    static = build_landscape("softmax_regression", {"dataset": "iris"}, **kw)
    drifting = build_landscape("softmax_regression", {"dataset": "iris"}, drift={"kind": "linear", "speed": 0.01}, **kw)
    theta = static.initial_point
    torch.testing.assert_close(drifting.true_loss(theta, 0.0), static.true_loss(theta))
    shift = drifting.concept_at(100.0)  # speed * t * u: a unit direction of length 1 at t = 100
    torch.testing.assert_close(shift.norm(dim=-1), torch.ones(2, dtype=torch.float64))
    moved = {"x": static.splits.train["x"] + shift.unsqueeze(1), "y": static.splits.train["y"]}
    torch.testing.assert_close(drifting.true_loss(theta, 100.0), static.loss(theta, moved))
    h_static, h_moved = static.heldout_metrics(theta), drifting.heldout_metrics(theta, 100.0)
    test_moved = {"x": static.splits.test["x"] + shift.unsqueeze(1), "y": static.splits.test["y"]}
    torch.testing.assert_close(h_moved["test_loss"], static.loss(theta, test_moved))
    assert not torch.allclose(h_moved["test_loss"], h_static["test_loss"])
    with pytest.raises(ConfigError, match="rotation"):  # it would leave the zero shift at zero: refused
        build_landscape("softmax_regression", {"dataset": "iris"}, drift={"kind": "rotation"}, **kw)


def test_synthetic_heldout_loss_at_the_true_weights_is_the_noise_level():
    # linear regression: at w_true each held-out loss is 0.5 noise^2 eps^2, mean 0.5 s^2 and sd
    # 0.5 s^2 sqrt(2) per example; over m = 1024 examples a 5-sigma band is 0.5 s^2 (1 +- 5 sqrt(2/m))
    ls = build_landscape("linear_regression", {"n_examples": 2000, "features": 5, "noise_std": 0.5}, replicates=3, seed=2)
    before = {k: v.clone() for k, v in ls.data.items()}
    h = ls.heldout_metrics(ls.concept.double().to(ls.dtype))
    assert all(torch.equal(before[k], ls.data[k]) for k in before)  # training data untouched
    band = 0.125 * 5 * (2 / 1024) ** 0.5
    for split in ("validation_loss", "test_loss"):
        assert torch.all((h[split] - 0.125).abs() < band), h[split]
    assert not torch.equal(h["validation_loss"], h["test_loss"])


def test_quick_run_records_heldout_loss_and_accuracy(tmp_path):
    from evosgd.run import execute_scenario, load_store
    from evosgd.scenario import load_scenario

    sc = load_scenario(ROOT / "scenarios" / "data_digits.toml", quick=True,
                       overrides={"scenario.budget.max_cost": 4000, "scenario.replicates": 2})
    execute_scenario(sc, tmp_path, workers=1, progress=False, device="cpu")
    runs = load_store(tmp_path / sc.name).runs
    for col in ("validation_loss", "test_loss", "train_accuracy", "validation_accuracy", "test_accuracy"):
        assert col in runs and runs[col].notna().all(), col
    assert runs["test_accuracy"].between(0, 1).all()
    # the held-out measures are not charged: an SGD step of b = 32 costs 32 per-example gradients x 3
    sgd = runs[runs["label"] == "sgd"]
    assert np.array_equal(sgd["cost"].to_numpy(), sgd["step"].to_numpy() * 32 * 3.0)
    start = runs[runs["cost"] == 0]
    assert np.allclose(start.groupby("replicate")["test_loss"].nunique(), 1)  # every optimizer starts at the same point


BAD = """\
[scenario]
name = "bad"
replicates = 1
seed = 0
device = "cpu"
[scenario.budget]
max_cost = 100
[landscape]
kind = "mlp_classifier"
{landscape}
[[optimizer]]
label = "sgd"
kind = "sgd"
"""


@pytest.mark.parametrize("case,landscape,key,needle", [
    ("missing file", 'dataset = "{tmp}/nothing.csv"', "landscape.dataset", "file not found"),
    ("non-numeric column", 'dataset = "{tmp}/words.csv"\ntarget = "label"', "landscape.features", "not numeric"),
    ("no such target", 'dataset = "{tmp}/ok.csv"\ntarget = "klass"', "landscape.target", "no such column"),
    ("NaN", 'dataset = "{tmp}/nan.csv"\ntarget = "label"', "landscape.dataset", "NaN"),
    ("single-example class", 'dataset = "{tmp}/lonely.csv"\ntarget = "label"', "landscape.target", "single example"),
])
def test_bad_data_input_exits_2_naming_file_key_and_allowed(case, landscape, key, needle, tmp_path, capsys):
    df = _table()
    df.to_csv(tmp_path / "ok.csv", index=False)
    df.assign(b=[f"x{i}" for i in range(len(df))]).to_csv(tmp_path / "words.csv", index=False)
    df.assign(a=df["a"].where(df.index != 7)).to_csv(tmp_path / "nan.csv", index=False)
    df.assign(label=np.where(df.index == 3, 9, df["label"])).to_csv(tmp_path / "lonely.csv", index=False)
    scen = tmp_path / "bad.toml"
    scen.write_text(BAD.format(landscape=landscape.format(tmp=tmp_path)))
    assert main(["validate", str(scen)]) == 2
    err = capsys.readouterr()
    msg = err.err + err.out
    assert "Traceback" not in msg
    assert str(scen) in msg and key in msg and needle in msg and "allowed" in msg, msg


def test_data_file_digest_enters_the_resolved_parameters_and_the_run_id(tmp_path):
    from evosgd.scenario import load_scenario

    _table().to_csv(tmp_path / "ok.csv", index=False)
    scen = tmp_path / "s.toml"
    scen.write_text(BAD.format(landscape=f'dataset = "{tmp_path}/ok.csv"\ntarget = "label"'))
    first = load_scenario(scen)
    assert first.runs[0].landscape.params["dataset_sha256"] == load_table(
        TabularParams(dataset=str(tmp_path / "ok.csv"), target="label", task="classification")).sha256
    _table(seed=1).to_csv(tmp_path / "ok.csv", index=False)  # the data change: so does the run id
    assert load_scenario(scen).runs[0].run_id != first.runs[0].run_id


def test_teacher_student_batch_norm_heldout_uses_training_statistics():
    # with the held-out inputs equal to the training inputs, eval mode (training statistics) gives
    # exactly the full-batch training loss; on fresh inputs it differs from normalising them by
    # their own statistics
    ls = build_landscape("teacher_student", {"n_examples": 300, "batch_norm": True}, replicates=2, seed=1,
                         dtype=torch.float64)
    from evosgd.landscapes.mlp import mlp_forward, mlp_forward_eval

    th = ls.initial_point.unsqueeze(1)
    x = ls.data["x"]
    torch.testing.assert_close(mlp_forward_eval(th, x, x, ls.sizes, "tanh"), mlp_forward(th, x, ls.sizes, "tanh", True))
    h = ls.heldout_metrics(ls.initial_point)
    val = ls.labelled(ls.heldout_sets()["validation"], ls.concept)
    own_stats = ls.loss(ls.initial_point, val)
    assert not torch.allclose(h["validation_loss"], own_stats)


def test_landscapes_without_heldout_data_get_nan_columns():
    from evosgd.run.engine import HELDOUT_COLUMNS, run_one
    from evosgd.scenario import load_scenario

    sc = load_scenario({"scenario": {"name": "nan", "replicates": 2, "seed": 0, "device": "cpu",
                                     "budget": {"max_cost": 200}},
                        "landscape": {"kind": "sphere", "dim": 3},
                        "optimizer": [{"label": "sgd", "kind": "sgd", "lr": 0.1, "batch_size": 2}]})
    frame = run_one(sc.runs[0], device="cpu").frame
    assert all(c in frame and frame[c].isna().all() for c in HELDOUT_COLUMNS)
