"""Reports built from small results stores: real sphere landscapes driven by plain gradient
descent (a hand-written loop, so the test does not depend on the runner), plus synthetic rows
for drift, sweeps, distributed metrics and an analysis."""

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evosgd.analysis.runtime import expected_running_time, final_values, quality_summary, runtimes
from evosgd.landscapes import build_landscape
from evosgd.report import build_report
from evosgd.report.build import add_variants, pairing
from evosgd.report.document import fmt

TARGETS = [1e-1, 1e-3, 1e-6]


def gd_runs(label, lr, *, replicates, steps=40, seed=3, scenario="toy", extra=None):
    """Full-gradient descent on the sphere (gradient 2(x - x*)): error_k = (1 - 2 lr)^(2k) error_0,
    so lr = 0.25 converges fast, lr = 0.05 slowly, lr = 1.2 diverges (|1 - 2 lr| > 1)."""
    land = build_landscape("sphere", {"dim": 5}, replicates=replicates, seed=seed, dtype=torch.float64)
    theta = land.initial_point.clone()
    opt, fstar = land.optimum(), land.optimal_loss()
    rows, diverged_at = [], [-1] * replicates
    cost_per_step = 3.0 * land.full_cost  # one full gradient at grad_cost 3
    for k in range(steps + 1):
        tl = land.true_loss(theta)
        for r in range(replicates):
            err = float(tl[r] - fstar[r])
            if diverged_at[r] < 0 and err > 1e6:
                diverged_at[r] = k
            rows.append(dict(scenario=scenario, run_id=f"id-{label}", label=label, kind="gd", config="{}", sweep="{}",
                             replicate=r, seed=100 + r, step=k, cost=k * cost_per_step, evaluations=0.0,
                             gradient_evaluations=float(k), sim_time=float(k), wall_time=0.0,
                             env_time=k * cost_per_step, true_loss=float(tl[r]), error=err,
                             best_so_far=np.nan, distance=float((theta[r] - opt[r]).norm()),
                             optimal_loss=float(fstar[r]), diverged=diverged_at[r] >= 0,
                             diverged_step=diverged_at[r], m_lr=lr, **(extra or {})))
        theta = theta - lr * 2 * (theta - opt)
    df = pd.DataFrame(rows)
    df["best_so_far"] = df.groupby("replicate")["error"].cummin()
    df["diverged_step"] = df.groupby("replicate")["diverged_step"].transform("max")
    return df


def manifest(runs, name="toy", drift=None, replicates=None):
    return {"scenario": name, "description": "a test store", "seed": 3,
            "replicates": replicates or int(runs["replicate"].nunique()), "targets": TARGETS, "grad_cost": 3.0,
            "clock": "cost", "source_file": "scenarios/toy.toml", "quick": True,
            "landscape": {"kind": "sphere", "params": {"dim": 5}, "drift": drift},
            "provenance": {"evosgd": "0.1.0", "torch": torch.__version__, "device": "cpu (2 threads)",
                           "created": "2026-11-29T10:00:00Z", "command": "evosgd run scenarios/toy.toml"},
            "runs": {rid: {"label": g["label"].iloc[0], "status": "diverged" if g["diverged"].any() else "done"}
                     for rid, g in runs.groupby("run_id")}}


class _Parser(HTMLParser):
    """Checks that every opened element is closed in order (void elements excepted)."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.imgs, self.svgs, self.hrefs, self.text = [], [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "svg":
            self.svgs.append(a.get("aria-label", ""))
        if tag == "a":
            self.hrefs.append(a.get("href", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}>, open: {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> _Parser:
    p = _Parser()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    return p


def check_files_referenced(out: Path, parser: _Parser):
    figs = sorted((out / "figures").iterdir())
    tabs = sorted((out / "tables").iterdir())
    assert figs and tabs
    for f in figs + tabs:
        assert f.stat().st_size > 0, f
    for f in figs:
        assert f"figures/{f.name}" in parser.hrefs, f"{f.name} not referenced"
    for f in tabs:
        assert f"tables/{f.name}" in " ".join(parser.hrefs + parser.text), f"{f.name} not referenced"
    # every figure is stored once, as an SVG file, and inlined: the HTML stands alone
    assert {f.suffix for f in figs} == {".svg"}
    assert len(parser.svgs) == len(figs) and not parser.imgs


@pytest.fixture(scope="module")
def real_store():
    runs = pd.concat([gd_runs("fast", 0.25, replicates=5), gd_runs("slow", 0.05, replicates=5),
                      gd_runs("wild", 1.2, replicates=5)], ignore_index=True)
    return {"runs": runs, "manifest": manifest(runs), "analyses": []}


@pytest.fixture(scope="module")
def real_report(real_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    return build_report(real_store, out), real_store


def test_report_files_valid_and_referenced(real_report):
    index, _ = real_report
    out = index.parent
    p = parse(index)
    check_files_referenced(out, p)
    for stem in ("final_quality", "convergence_cost", "convergence_sim_time", "runtime_ecdf", "ert"):
        assert (out / "figures" / f"{stem}.svg").exists() and not (out / "figures" / f"{stem}.png").exists()
    md = (out / "report.md").read_text()
    for f in (out / "figures").glob("*.svg"):
        assert f"(figures/{f.name})" in md
    text = " ".join(p.text)
    assert "Provenance" in text and "evosgd run scenarios/toy.toml" in text


def test_findings_match_tables(real_report):
    index, store = real_report
    out = index.parent
    runs, _ = add_variants(store["runs"])
    # the measures recomputed independently from the store
    ert = expected_running_time(runtimes(runs, TARGETS, by=("variant",)), by=("variant",)).set_index(["variant", "target"])
    summ = quality_summary(final_values(runs, by=("variant",)), by=("variant",)).set_index("variant")
    csv = pd.read_csv(out / "tables" / "runtime.csv").set_index(["variant", "target"])
    assert np.allclose(csv["ert"].to_numpy(), ert.loc[csv.index, "ert"].to_numpy())
    md = (out / "report.md").read_text()
    findings = md.split("## Findings")[1].split("## ")[0]
    # fast: error_k = 0.25^k error_0 -> reaches 1e-6 first; its ERT and success are quoted
    e = ert.loc[("fast", 1e-6)]
    assert f"fast reached the target {fmt(1e-6)} in all 5 runs" in findings
    assert f"(ERT {fmt(e['ert'])})" in findings
    assert f"{fmt(e['ert'])} |" in md.split("## Runtime to target")[1]  # the same number in the table
    slow = ert.loc[("slow", 1e-6)]
    if np.isfinite(slow["ert"]):
        assert f"{fmt(slow['ert'] / e['ert'])} times lower ERT than slow" in findings
    # the lowest final error and its IQR as in the final-quality table
    m = summ.loc["fast"]
    assert f"Lowest final loss error: fast, median {fmt(m['median'])} [IQR {fmt(m['q25'])}, {fmt(m['q75'])}]" in findings
    row = md.split("## Final quality")[1].split("\n| fast |")[1].split("\n")[0]
    assert f" {fmt(m['median'])} | [{fmt(m['q25'])}, {fmt(m['q75'])}]" in row
    # p-value of the runner-up comparison as in the tests table (5 paired replicates, all better:
    # exact two-sided Wilcoxon p = 2 / 2^5 = 0.0625, times 3 comparisons by Holm at most)
    tests = pd.read_csv(out / "tables" / "tests_final.csv")
    fs = tests[(tests.a == "fast") & (tests.b == "slow")].iloc[0]
    assert fs["p"] == pytest.approx(0.0625) and fs["A"] == 1.0
    assert f"A = {fmt(fs['A'])}" in findings
    # 5 paired replicates, 3 comparisons: the smallest Holm p is 3 * 2 / 2^5 = 0.1875 > 0.05: said so
    assert "With 5 replicates the smallest possible p-value (Holm, 3 comparisons) is 0.188" in findings


def test_power_findings_threshold():
    from evosgd.report.findings import power_findings

    assert power_findings(6, 1, paired=True) == []  # 2 / 64 = 0.031 <= 0.05
    assert power_findings(5, 1, paired=True)  # 2 / 32 = 0.0625
    assert power_findings(4, 1, paired=False) == []  # 2 / C(8, 4) = 0.029
    assert power_findings(3, 1, paired=False)  # 2 / 20 = 0.1


def test_diverged_runs_are_reported(real_report):
    index, _ = real_report
    text = " ".join(parse(index).text)
    assert "wild diverged in 5 of 5 runs" in text
    q = pd.read_csv(index.parent / "tables" / "final_quality.csv").set_index("variant")
    assert q.loc["wild", "diverged"] == 5 and math.isinf(q.loc["wild", "median"])


def test_single_replicate_report_says_statistics_unavailable(tmp_path):
    runs = pd.concat([gd_runs("fast", 0.25, replicates=1), gd_runs("wild", 1.2, replicates=1)], ignore_index=True)
    index = build_report({"runs": runs, "manifest": manifest(runs), "analyses": []}, tmp_path)
    p = parse(index)
    text = " ".join(p.text)
    assert "Only one replicate per optimizer: pairwise tests, effect sizes and ranks are unavailable" in text
    assert "Statistics unavailable: only one replicate per optimizer." in text
    assert "wild diverged in 1 of 1 runs" in text
    assert not (tmp_path / "tables" / "tests_final.csv").exists()
    check_files_referenced(tmp_path, p)


def test_drift_sweep_distributed_and_analysis_sections(tmp_path):
    """Synthetic rows per STORE.md: an abrupt drift every 100 cost, a batch-size sweep, staleness
    metrics and one analysis with a prediction."""
    rng = np.random.default_rng(0)
    rows = []
    for b in (1, 8, 64):
        for r in range(3):
            for k in range(30):
                t = 10.0 * k
                phase = t % 100
                err = (1.0 / b) * np.exp(-phase / 20) + 1e-3 * (r + 1)
                rows.append(dict(scenario="drifty", run_id=f"sgd-{b}", label="sgd", kind="sgd", config="{}",
                                 sweep=json.dumps({"optimizer.sgd.batch_size": b}), replicate=r, seed=r, step=k,
                                 cost=t, evaluations=t, gradient_evaluations=0.0, sim_time=t, wall_time=0.0,
                                 env_time=t, true_loss=err, error=err, best_so_far=np.nan,
                                 distance=np.sqrt(err), optimal_loss=0.0, diverged=False, diverged_step=-1,
                                 m_staleness=float(rng.integers(0, 4)), m_idle_fraction=0.1,
                                 **{"p_optimizer.sgd.batch_size": float(b)}))
    runs = pd.DataFrame(rows)
    comp = pd.DataFrame({"quantity": "gradient variance", "series": "", "x_name": "batch size", "x": [1.0, 8.0, 64.0],
                         "measured": [1.0, 0.13, 0.015], "measured_low": [0.9, 0.11, 0.013],
                         "measured_high": [1.1, 0.15, 0.017], "predicted": [1.0, 0.125, 1 / 64],
                         "predicted_low": np.nan, "predicted_high": np.nan, "unit": "", "log_x": True, "log_y": True})
    analyses = [{"id": "conc", "label": "conc", "kind": "minibatch_concentration", "title": "Mini-batch variance",
                 "notes": ["measured within CI at 3 of 3 batch sizes"], "confidence": 0.95, "params": {},
                 "comparison": comp, "tables": {"raw": pd.DataFrame({"b": [1, 8], "v": [1.0, 0.13]})}}]
    store = {"runs": runs, "manifest": manifest(runs, "drifty", drift={"kind": "switch", "period": 100.0}),
             "analyses": analyses}
    index = build_report(store, tmp_path)
    p = parse(index)
    check_files_referenced(tmp_path, p)
    figs = {f.stem for f in (tmp_path / "figures").glob("*.svg")}
    assert {"drift_error", "drift_distance", "sweep_batch_size", "hist_staleness", "analysis_conc_0"} <= figs
    text = " ".join(p.text)
    assert "measured within CI at 3 of 3 batch sizes" in text
    dist = pd.read_csv(tmp_path / "tables" / "distributed.csv").set_index("variant")
    assert dist.loc["sgd [batch_size=8]", "idle_fraction mean"] == pytest.approx(0.1)
    tr = pd.read_csv(tmp_path / "tables" / "tracking.csv").set_index("variant")
    # offline error is lowest at the largest batch (error scales with 1/b) and is named in a finding
    assert tr["offline_error"].idxmin() == "sgd [batch_size=64]"
    assert f"sgd [batch_size=64] tracked the moving optimum best: median offline error {fmt(tr['offline_error'].min())}" in text
    assert "sgd: median final quality was lowest at batch_size = 64" in text
    # a burn-in ([scenario] offline_error_from) changes the offline error and says so in the caption
    store["manifest"]["offline_error_from"] = 150.0
    build_report(store, tmp_path / "burn_in")
    late = pd.read_csv(tmp_path / "burn_in" / "tables" / "tracking.csv").set_index("variant")
    assert (late["offline_error"] != tr["offline_error"]).all()
    assert "from env-time 150 on" in (tmp_path / "burn_in" / "report.md").read_text()


def test_report_from_store_on_disk(tmp_path, monkeypatch):
    """A store written file by file per STORE.md, read back through the runner's load_store."""
    pytest.importorskip("evosgd.run.store")
    from evosgd.report import report_from_store

    root = tmp_path / "results" / "toy"
    (root / "runs").mkdir(parents=True)
    runs = pd.concat([gd_runs("fast", 0.25, replicates=3, steps=15), gd_runs("slow", 0.05, replicates=3, steps=15)],
                     ignore_index=True)
    man = manifest(runs)
    for rid, g in runs.groupby("run_id"):
        g.to_parquet(root / "runs" / f"{rid}.parquet")
        man["runs"][rid]["file"] = f"runs/{rid}.parquet"
    man["runs"]["id-broken"] = {"label": "broken", "status": "failed", "error": "ValueError: lr must be > 0",
                                "file": None}
    (root / "manifest.json").write_text(json.dumps(man))
    monkeypatch.chdir(tmp_path)
    index = report_from_store(root)
    assert index.resolve() == (tmp_path / "reports" / "toy" / "index.html").resolve()
    p = parse(index)
    check_files_referenced(index.parent, p)
    text = " ".join(p.text)
    assert "Run id-broken (broken) failed: ValueError: lr must be > 0" in text
    assert "Lowest final loss error: fast" in text


def test_variants_and_pairing():
    a = gd_runs("g", 0.25, replicates=2, steps=2)
    runs = pd.concat([a.assign(run_id="r1", **{"p_optimizer.g.lr": 0.25}),
                      a.assign(run_id="r2", **{"p_optimizer.g.lr": 0.5}),
                      a.assign(run_id="r3", label="h", **{"p_optimizer.g.lr": np.nan})], ignore_index=True)
    named, variants = add_variants(runs)
    assert list(dict.fromkeys(named["variant"])) == ["g [lr=0.25]", "g [lr=0.5]", "h"]
    assert pairing(runs) == "replicate"  # an optimizer sweep keeps the landscape instances: paired
    assert pairing(runs.rename(columns={"p_optimizer.g.lr": "p_landscape.dim"})) is None
