"""The gradient-side research scenarios load and validate, full and quick (the runner's own test
runs every scenario in --quick mode; this one is the cheap schema check)."""

from pathlib import Path

import pytest

from evosgd.core.registry import ANALYSES
from evosgd.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
EXPECTED = {
    "grad_minibatch": {"minibatch_concentration"},
    "grad_normality": {"minibatch_normality"},
    "grad_accumulation": {"gradient_accumulation"},
    "grad_stationary": {"sgd_stationary"},
    "grad_batchnorm": {"batchnorm_gradient"},
    "grad_hardware": {"hardware_batch_scaling"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("quick", [False, True])
def test_scenario_validates(name, quick):
    sc = load_scenario(SCENARIOS / f"{name}.toml", quick=quick, preflight=False)
    assert sc.name == name
    assert {a.kind for a in sc.analyses} == EXPECTED[name]
    for a in sc.analyses:
        ANALYSES.validate(a.kind, a.params)  # raises ConfigError on a bad key or value
    if quick:
        assert sc.settings.replicates <= 2  # quick mode is meant for CI
