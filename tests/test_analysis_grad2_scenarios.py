"""The scenarios of issue #7 items 3 and 6-10 validate (full and quick) with their analyses, and a
quick run's report section shows the prediction beside the measurement.  (The runner's own test
runs every scenario in --quick mode.)"""

from pathlib import Path

import pytest

from evosgd.core.registry import ANALYSES
from evosgd.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
EXPECTED = {
    "grad_confidence_lr": {"confidence_step"},
    "grad_stragglers": {"straggler_step_time"},
    "grad_staleness": {"staleness"},
    "grad_momentum": {"momentum_rate"},
    "grad_clipping": {"clipping_cliff"},
    "grad_pairwise": {"pairwise_batch"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("quick", [False, True])
def test_scenario_validates(name, quick):
    sc = load_scenario(SCENARIOS / f"{name}.toml", quick=quick, preflight=False)
    assert sc.name == name
    assert {a.kind for a in sc.analyses} == EXPECTED[name]
    for a in sc.analyses:
        ANALYSES.validate(a.kind, a.params)
    assert sc.runs
    if quick:
        assert sc.settings.replicates <= 3


TINY = """
[scenario]
name = "tiny_stragglers"
replicates = 2
seed = 1
device = "cpu"
[scenario.budget]
max_sim_time = 5.0
[scenario.record]
log_points = 4
[landscape]
kind = "sphere"
dim = 2
noise_std = 0.1
[[optimizer]]
label = "sync"
kind = "sgd_sync"
lr = 0.1
batch_size = 4
workers = 4
compute_time = { kind = "exponential", mean_time = 1.0 }
[[analysis]]
label = "step-time"
kind = "straggler_step_time"
workers = [1, 4]
backup_workers = [0]
compute_times = [{ kind = "exponential", mean_time = 1.0 }]
replicates = 4
steps = 5
target_replicates = 4
max_steps = 30
"""


def test_report_section_shows_prediction_and_measurement(tmp_path):
    """A one-run scenario with the straggler analysis: its report section carries the notes and a
    table with both the measured and the predicted column."""
    import torch

    from evosgd.report import build_report
    from evosgd.run import execute_scenario, load_store

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sc = load_scenario(path)
        execute_scenario(sc, tmp_path / "results", workers=1, progress=False, device="cpu")
        html = build_report(load_store(tmp_path / "results" / sc.name), tmp_path / "report")
    finally:
        torch.set_num_threads(threads)
    md = (html.parent / "report.md").read_text()
    section = md[md.index("## Analysis: Synchronous step time against order statistics"):]
    header = next(line for line in section.splitlines() if line.startswith("| quantity"))
    assert "| measured |" in header and "| predicted |" in header
    assert "order-statistic prediction lies inside the measured 95% CI" in section
