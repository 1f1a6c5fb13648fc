"""Core conventions: budget arithmetic, seeding, device and dtype policy, registry errors."""

import numpy as np
import pytest
import torch

from evosgd.core import Budget, ConfigError, ParameterError, derive_seed, make_generator, resolve_device, resolve_dtype
from evosgd.core.budget import BudgetLimits
from evosgd.core.errors import DeviceError
from evosgd.core.registry import LANDSCAPES


def test_budget_counts_cost_in_sample_evaluations():
    b = Budget(3, grad_cost=3.0, limits=BudgetLimits(max_cost=100))
    b.charge(evaluations=10)  # e.g. a population of 10 on a batch of 1
    b.charge(gradient_evaluations=4, mask=np.array([True, False, True]))  # a batch of 4 gradients
    b.step()
    np.testing.assert_array_equal(b.cost, [22.0, 10.0, 22.0])
    np.testing.assert_array_equal(b.steps, [1, 1, 1])
    b.charge(evaluations=np.array([0.0, 90.0, 0.0]))
    np.testing.assert_array_equal(b.exhausted(), [False, True, False])
    assert not b.done()


def test_budget_clock_units_and_sim_time():
    b = Budget(2, grad_cost=2.0, clock="sim_time", limits=BudgetLimits(max_sim_time=1.0))
    b.advance_time(torch.tensor([0.5, 1.5]))
    np.testing.assert_allclose(b.clock(), [0.5, 1.5])
    assert b.exhausted().tolist() == [False, True]
    b2 = Budget(1, clock="steps")
    b2.step()
    b2.step()
    assert b2.clock().tolist() == [2.0]


@pytest.mark.parametrize("kw", [dict(replicates=0), dict(replicates=1, grad_cost=-1), dict(replicates=1, clock="epochs")])
def test_budget_rejects_bad_parameters(kw):
    with pytest.raises(ParameterError):
        Budget(**kw)


def test_limits_must_be_positive():
    with pytest.raises(ParameterError, match="max_cost"):
        BudgetLimits(max_cost=-5)


def test_derive_seed_is_stable_and_key_sensitive():
    a = derive_seed(42, "landscape", 0)
    assert a == derive_seed(42, "landscape", 0)
    assert len({a, derive_seed(42, "landscape", 1), derive_seed(43, "landscape", 0), derive_seed(42, "optimizer", 0)}) == 4
    assert 0 <= a < 2**63
    x = torch.rand(4, generator=make_generator(a))
    y = torch.rand(4, generator=make_generator(a))
    assert torch.equal(x, y)


def test_device_policy():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ParameterError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_dtype_policy():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("float64") is torch.float64
    with pytest.raises(ParameterError, match="float32"):
        resolve_dtype("float16")


def test_registry_unknown_name_suggests():
    import evosgd.landscapes  # noqa: F401

    with pytest.raises(ConfigError, match="did you mean 'sphere'"):
        LANDSCAPES.get("spehre")
    with pytest.raises(ConfigError, match="dim"):
        LANDSCAPES.validate("sphere", {"dim": -3})
    with pytest.raises(ConfigError, match="unknown key.*did you mean 'noise_std'"):
        LANDSCAPES.validate("sphere", {"noise_sd": 1.0})


def test_check_divergence_is_exactly_the_elementwise_test():
    """The screen (one total while nothing has diverged, then row sums) must flag exactly the rows
    holding a NaN or an infinity: not a row whose sum merely overflows, and each row once, at the
    step it happened."""
    from evosgd.core.optimizer import Optimizer

    class Stub(Optimizer):
        def step(self):
            pass

        def recommend(self):
            return torch.zeros(3, 2)

    class L:
        device, dtype, replicates = torch.device("cpu"), torch.float32, 3

    budget = Budget(3)
    opt = Stub(None, landscape=L(), budget=budget, generator=torch.Generator())
    big = torch.tensor([[3e38, 3e38], [1.0, 2.0], [-3e38, -3e38]])  # finite, but the sums overflow
    loss = torch.tensor([1.0, 2.0, 3.0])
    assert opt.check_divergence(loss, big).tolist() == [False, False, False]
    budget.step()
    bad = big.clone()
    bad[1, 0] = float("nan")
    assert opt.check_divergence(loss, bad).tolist() == [False, True, False]
    assert opt.diverged_step.tolist() == [-1, 1, -1]
    budget.step()
    worse = bad.clone()
    worse[2, 1] = -float("inf")  # row path now (one replicate has diverged); row 1 is not re-flagged
    assert opt.check_divergence(loss, worse).tolist() == [False, True, True]
    assert opt.diverged_step.tolist() == [-1, 1, 2]
    assert opt.check_divergence(torch.tensor([float("inf"), 0.0, 0.0]), big).tolist() == [True, True, True]
    assert opt.diverged_step.tolist() == [2, 1, 2]
