"""The evolution-side scenarios of issue #8 questions 5-8 load and validate, full and quick, and
ask the question they claim to (the runner's own test runs each in --quick mode)."""

from pathlib import Path

import pytest

from evosgd.core.registry import ANALYSES
from evosgd.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
TRACKING = ["linear", "periodic", "random_walk", "switch", "rotation", "moving_peaks"]
EXPECTED = {
    "evo_multimodal": set(),
    "evo_recombination": set(),
    "evo_minibatch_fitness": {"minibatch_fitness"},
    **{f"evo_tracking_{k}": ({"tracking_lag"} if k == "linear" else set()) for k in TRACKING},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("quick", [False, True])
def test_scenario_validates(name, quick):
    sc = load_scenario(SCENARIOS / f"{name}.toml", quick=quick, preflight=False)
    assert sc.name == name
    assert {a.kind for a in sc.analyses} == EXPECTED[name]
    for a in sc.analyses:
        ANALYSES.validate(a.kind, a.params)
    if quick:
        assert sc.settings.replicates <= 2


def _swept(sc, key):
    return {r.sweep.get(key) for r in sc.runs if key in r.sweep}


def test_multimodal_compares_every_method_on_every_function():
    sc = load_scenario(SCENARIOS / "evo_multimodal.toml", preflight=False)
    kinds = {"ga", "csa_es", "cmaes", "wright_fisher", "openai_es", "sgd"}
    assert {r.kind for r in sc.runs} == kinds
    assert any(r.params.get("restarts") == "ipop" for r in sc.runs)
    for kind in kinds:
        assert {r.landscape.kind for r in sc.runs if r.kind == kind} == {"rastrigin", "ackley", "schwefel"}


def test_recombination_is_on_and_off_on_separable_and_rotated():
    sc = load_scenario(SCENARIOS / "evo_recombination.toml", preflight=False)
    assert _swept(sc, "landscape.rotate") == {False, True}
    assert _swept(sc, "optimizer.wright-fisher.recombination_rate") >= {0.0, 1.0}
    crossovers = {r.label: r.params["crossover"]["kind"] for r in sc.runs if r.kind == "ga"}
    assert crossovers["ga-crossover"] != "none" and crossovers["ga-mutation-only"] == "none"


@pytest.mark.parametrize("kind", TRACKING)
def test_tracking_scenarios_drift_as_named_over_several_speeds(kind):
    sc = load_scenario(SCENARIOS / f"evo_tracking_{kind}.toml", preflight=False)
    land = sc.runs[0].landscape
    if kind == "moving_peaks":
        assert land.kind == "moving_peaks"
    else:
        assert land.drift["kind"] == kind
    assert {r.kind for r in sc.runs} >= {"sgd", "cmaes", "csa_es", "wright_fisher", "ga", "openai_es"}
    strengths = {tuple(sorted((k, v) for k, v in r.sweep.items() if k.startswith("landscape."))) for r in sc.runs}
    assert len(strengths) >= 3 and all(strengths)  # at least three drift strengths, every run at one of them


def test_minibatch_fitness_sweeps_the_same_batch_sizes_for_both_worlds():
    sc = load_scenario(SCENARIOS / "evo_minibatch_fitness.toml", preflight=False)
    per_label = {}
    for r in sc.runs:
        per_label.setdefault(r.label, set()).add(r.params.get("batch_size"))
    assert per_label["sgd"] == per_label["cmaes"] == per_label["wright-fisher"] == per_label["openai-es"]
    assert len(per_label["sgd"]) >= 3
    assert per_label["cmaes-full"] == {None} and per_label["wright-fisher-full"] == {None}
