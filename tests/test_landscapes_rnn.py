"""The vanilla RNN landscape: exact gradients (autograd vs finite differences), batched evaluation
against a per-network reference loop, finite-sum contract, exponential growth of the gradient
with the sequence length in the expanding regime (and its spectral-norm bound), seeding, errors."""

import math

import numpy as np
import pytest
import torch

from evosgd.analysis import clipping
from evosgd.core.errors import ConfigError, ParameterError
from evosgd.core.registry import LANDSCAPES
from evosgd.landscapes import build_landscape, per_example_grads
from evosgd.landscapes.rnn import rnn_dim, rnn_forward, spectral_radius

F64 = torch.float64
SMALL = {"n_examples": 6, "sequence_length": 4, "hidden": 3, "inputs": 2, "init_spectral_radius": 2.0}


def make(replicates=2, seed=0, **over):
    return build_landscape("rnn", {**SMALL, **over}, replicates=replicates, seed=seed, dtype=F64)


def test_registered_as_a_data_landscape():
    assert LANDSCAPES.get("rnn").family == "data"
    assert all(f[3] for f in LANDSCAPES.get("rnn").fields())  # every parameter is described
    L = make()
    assert L.kind == "rnn" and L.finite_sum and L.n_examples == 6 and L.full_cost == 6
    assert L.dim == rnn_dim(3, 2) == 9 + 6 + 3 + 3


def reference_losses(L, theta, batch):
    """Loop over replicates, points and examples with matrix-vector products: h = tanh(W h + U x_t + c)."""
    H, I = L.hidden, L.inputs
    R, P, _ = theta.shape
    n, T = batch["x"].shape[1], batch["x"].shape[2]
    out = torch.empty(R, P, n, dtype=theta.dtype)
    for r in range(R):
        for p in range(P):
            th = theta[r, p]
            W = th[:H * H].reshape(H, H)
            U = th[H * H:H * H + H * I].reshape(H, I)
            c = th[H * H + H * I:H * H + H * I + H]
            v = th[H * H + H * I + H:]
            for i in range(n):
                h = torch.zeros(H, dtype=theta.dtype)
                for t in range(T):
                    h = torch.tanh(W @ h + U @ batch["x"][r, i, t] + c)
                out[r, p, i] = 0.5 * (v @ h - batch["y"][r, i]) ** 2
    return out


def test_population_evaluation_equals_a_loop_over_points():
    L = make()
    g = torch.Generator().manual_seed(1)
    theta = L.initial_point.unsqueeze(1) + 0.3 * torch.randn(2, 5, L.dim, generator=g, dtype=F64)
    batch = L.sample(4, torch.Generator().manual_seed(2))
    pop = L.example_losses(theta, batch)
    assert pop.shape == (2, 5, 4)
    for p in range(5):  # [R, P, D] is the same as P separate [R, D] evaluations
        torch.testing.assert_close(pop[:, p], L.example_losses(theta[:, p], batch), rtol=0, atol=1e-14)
    torch.testing.assert_close(pop, reference_losses(L, theta, batch), rtol=1e-12, atol=1e-14)


def test_full_loss_is_the_mean_of_per_example_losses_and_teacher_is_optimal():
    L = make()
    theta = L.initial_point.unsqueeze(1) + 0.1 * torch.randn(2, 3, L.dim, generator=torch.Generator().manual_seed(0), dtype=F64)
    everything = L.take(torch.arange(6).expand(2, 6))
    torch.testing.assert_close(L.true_loss(theta), L.example_losses(theta, everything).mean(-1))
    # noise-free teacher task: the teacher's weights reproduce every label
    assert L.optimum() is not None and float(L.true_loss(L.optimum()).abs().max()) < 1e-25
    assert torch.equal(L.optimal_loss(), torch.zeros(2, dtype=F64))
    assert make(noise_std=0.1).optimum() is None


def test_memory_task_labels_are_the_first_input():
    L = make(task="memory", noise_std=0.0)
    b = L.take(torch.arange(6).expand(2, 6))
    torch.testing.assert_close(b["y"], L.data["x"][:, :, 0, 0], rtol=0, atol=0)
    assert L.optimum() is None


def test_autograd_matches_central_finite_differences():
    # float64, step h = 1e-6: truncation error ~ h^2 |f'''| ~ 1e-12, rounding ~ 1e-16 / h = 1e-10,
    # so 1e-7 relative (+1e-9 absolute) leaves three orders of magnitude of margin.
    L = make(replicates=1, init_spectral_radius=2.5)
    theta = L.initial_point + 0.2 * torch.randn(1, L.dim, generator=torch.Generator().manual_seed(3), dtype=F64)
    th = theta.clone().requires_grad_(True)
    L.true_loss(th).sum().backward()
    h = 1e-6
    eye = torch.eye(L.dim, dtype=F64)
    plus = L.true_loss(theta.unsqueeze(1) + h * eye.unsqueeze(0))  # [1, D]: one point per coordinate
    minus = L.true_loss(theta.unsqueeze(1) - h * eye.unsqueeze(0))
    fd = (plus - minus) / (2 * h)
    torch.testing.assert_close(th.grad, fd, rtol=1e-7, atol=1e-9)


def test_per_example_gradients_average_to_the_full_gradient():
    L = make()
    theta = L.initial_point + 0.1
    th = theta.clone().requires_grad_(True)
    L.true_loss(th).sum().backward()
    pe = per_example_grads(L, theta, L.take(torch.arange(6).expand(2, 6)))
    assert pe.shape == (2, 6, L.dim)
    torch.testing.assert_close(pe.mean(1), th.grad)


GROWTH = {"n_examples": 64, "hidden": 16, "inputs": 1, "input_std": 0.5}
LENGTHS = np.arange(8, 33, 4)


def grad_norms(radius, replicates=4):
    """log ||grad L|| at the initial point [len(LENGTHS), R] and the initial W [R, H, H]."""
    rows, W0 = [], None
    for T in LENGTHS:
        L = build_landscape("rnn", {**GROWTH, "sequence_length": int(T), "init_spectral_radius": radius},
                            replicates=replicates, seed=0, dtype=F64)
        W = L.unflatten(L.initial_point)["W"]
        if W0 is None:
            W0 = W
        assert torch.equal(W, W0)  # the starting point does not depend on T: only T changes
        th = L.initial_point.clone().requires_grad_(True)
        L.true_loss(th).sum().backward()
        rows.append(th.grad.norm(dim=-1).log().numpy())
    return np.array(rows), W0


def test_gradient_grows_exponentially_with_sequence_length_when_expanding():
    """Spectral radius 3 (chaotic tanh RNN): the fitted slope of log ||grad L|| against T is positive
    and at most log sigma_max(W), the per-step bound of the Jacobian product (|tanh'| <= 1).

    Tolerances: measured slopes at this seed are 0.2-0.3 per step against log sigma_max ~ 1.6-1.8;
    the test asks for > 0.1 (a gradient 10x larger every 23 steps at least) and <= the bound
    exactly.  Contracting (radius 0.5): the back-propagated products shrink like 0.5^k so the
    gradient saturates at a T-independent value: |slope| < 0.02 (measured ~1e-3)."""
    logs, W = grad_norms(3.0)
    slope = np.polyfit(LENGTHS, logs, 1)[0]
    bound = torch.linalg.matrix_norm(W, ord=2).log().numpy()
    assert (slope > 0.1).all(), slope
    assert (slope <= bound).all(), (slope, bound)
    assert (logs[-1] - logs[0] > 2.0).all()  # > 7x larger at T = 32 than at T = 8
    logs_c, _ = grad_norms(0.5)
    slope_c = np.polyfit(LENGTHS, logs_c, 1)[0]
    assert (np.abs(slope_c) < 0.02).all(), slope_c


def test_jacobian_products_obey_the_spectral_norm_bound():
    """||dh_T/dh_0|| = ||prod_t diag(1 - h_t^2) W|| <= sigma_max(W)^T, exactly, for every T (checked
    up to 1e-9 relative rounding), on the states of the forward pass."""
    L = build_landscape("rnn", {**GROWTH, "n_examples": 4, "sequence_length": 25, "init_spectral_radius": 2.5},
                        replicates=2, seed=1, dtype=F64)
    _, states = rnn_forward(L.initial_point.unsqueeze(1), L.data["x"], L.hidden, L.inputs, return_states=True)
    W = L.unflatten(L.initial_point)["W"]  # [R, H, H]
    smax = torch.linalg.matrix_norm(W, ord=2)
    prod = torch.eye(L.hidden, dtype=F64).expand(2, 4, L.hidden, L.hidden)
    for t in range(25):
        J = (1 - states[:, 0, :, t] ** 2).unsqueeze(-1) * W.unsqueeze(1)  # diag(1 - h^2) W, [R, n, H, H]
        prod = J @ prod
        norm = torch.linalg.matrix_norm(prod, ord=2)
        assert (norm <= smax.unsqueeze(1) ** (t + 1) * (1 + 1e-9)).all()


def test_initial_recurrence_has_the_requested_spectral_radius():
    for rho in (0.0, 1.5, 3.0):
        L = make(init_spectral_radius=rho)
        torch.testing.assert_close(spectral_radius(L.unflatten(L.initial_point)["W"]), torch.full((2,), rho, dtype=F64))
    L = make(teacher_spectral_radius=0.7)
    torch.testing.assert_close(spectral_radius(L.unflatten(L.concept)["W"]), torch.full((2,), 0.7, dtype=F64))


def test_same_seed_is_bit_identical_and_replicates_differ():
    a, b, c = make(seed=4), make(seed=4), make(seed=5)
    for k in ("x", "noise"):
        assert torch.equal(a.data[k], b.data[k])
    assert torch.equal(a.initial_point, b.initial_point) and torch.equal(a.concept, b.concept)
    assert not torch.equal(a.data["x"], c.data["x"])
    assert not torch.equal(a.initial_point[0], a.initial_point[1])  # replicate instances are independent
    # replicate r's instance depends on (seed, r) alone: a larger batch of replicates starts with the same ones
    big = make(replicates=3, seed=4)
    assert torch.equal(big.data["x"][:2], a.data["x"]) and torch.equal(big.initial_point[:2], a.initial_point)


def test_float32_follows_the_requested_dtype():
    L = build_landscape("rnn", SMALL, replicates=2, seed=0)
    assert L.initial_point.dtype == torch.float32 and L.data["x"].dtype == torch.float32
    assert L.true_loss(L.initial_point).dtype == torch.float32


@pytest.mark.parametrize("bad, match", [
    ({"hidden": 0}, r"hidden.*greater than or equal to 1"),
    ({"sequence_length": 0}, r"sequence_length.*greater than or equal to 1"),
    ({"init_spectral_radius": -1.0}, r"init_spectral_radius.*greater than or equal to 0"),
    ({"task": "copy"}, r"task"),
    ({"input_std": 0.0}, r"input_std.*greater than 0"),
    ({"width": 3}, r"width"),
])
def test_bad_parameters_are_refused_clearly(bad, match):
    with pytest.raises(ConfigError, match=match):
        build_landscape("rnn", {**SMALL, **bad})


def test_oversized_dataset_is_refused_before_allocation():
    with pytest.raises(ParameterError, match=r"'n_examples'.*2e\+?0?8"):
        build_landscape("rnn", {"n_examples": 10_000_000, "sequence_length": 100, "hidden": 8}, replicates=2)


def test_theta_layout_is_w_u_c_v():
    L = make(replicates=1)
    parts = L.unflatten(torch.arange(L.dim, dtype=F64).unsqueeze(0))
    assert parts["W"][0, 1, 0] == 3 and parts["U"][0, 0, 1] == 10 and parts["c"][0, 0] == 15 and parts["v"][0, 2] == 20
    assert math.prod(parts["W"].shape[1:]) == 9


# ----------------------------------------------------------------------------- clipping on the RNN
TINY_CLIP = {"steps": 40, "check_every": 10, "replicates": 4, "n_examples": 64}


def test_clipped_sgd_steps_are_bounded_and_train_where_unclipped_sgd_is_thrown():
    """Seeded facts of the quick configuration (spectral radius 3, T = 30, lr 0.2): every clipped
    step is at most lr c (float32 rounding: 1e-5 relative); clipped at c = 1 every replicate lowers
    its loss and none blows up; unclipped, the exploding gradient throws steps > 1000 lr (measured
    ~1e9) and at least half the replicates blow up (loss > 10x initial or non-finite)."""
    p = clipping.ClippingRNNParams(**TINY_CLIP)
    out = clipping.run_clipped_rnn(p, 1.0, seed=9)
    assert (out["largest_step"] <= p.lr * 1.0 * (1 + 1e-5)).all()
    assert (out["final"] < out["initial"]).all() and not out["blew_up"].any()
    free = clipping.run_clipped_rnn(p, None, seed=9)
    assert free["largest_step"].max() > 1000 * p.lr
    assert free["blew_up"].sum() >= 2


def test_readout_curvature_is_the_hessian_in_v():
    """The loss is quadratic in the readout v with Hessian E[h_T h_T^T]: its largest eigenvalue from
    autograd's Hessian (float64) equals readout_curvature to rounding."""
    p = clipping.ClippingRNNParams(replicates=2, n_examples=16, sequence_length=6, hidden=4, dtype="float64")
    land = clipping.rnn_landscape(p, seed=1)
    H, I = land.hidden, land.inputs
    k = H * H + H * I + H  # v is the last block
    theta = land.initial_point

    def loss_in_v(v, r):
        th = torch.cat([theta[r:r + 1, :k], v.unsqueeze(0)], dim=-1)
        full = torch.cat([th, theta[1 - r:2 - r]]) if r == 0 else torch.cat([theta[0:1], th])
        return land.true_loss(full)[r]

    curv = clipping.readout_curvature(land)
    for r in range(2):
        hess = torch.autograd.functional.hessian(lambda v, r=r: loss_in_v(v, r), theta[r, k:].clone())
        assert abs(float(torch.linalg.eigvalsh(hess)[-1]) - curv[r]) < 1e-12


def test_median_interval_is_the_binomial_order_statistic_interval():
    # n = 16 at 95%: l = F^-1(0.025; 16, 1/2) = 4, interval [x_(4), x_(13)], coverage
    # 1 - 2 P(Bin(16, 1/2) <= 3) = 0.9787 >= 0.95.
    from scipy import stats

    x = np.arange(1.0, 17.0)[::-1].copy()
    m, lo, hi = clipping.median_ci(x, 0.95)
    assert (m, lo, hi) == (8.5, 4.0, 13.0)
    assert 1 - 2 * stats.binom.cdf(3, 16, 0.5) >= 0.95
    x[:10] = np.nan  # diverged runs count as +inf
    assert clipping.median_ci(x, 0.95)[0] == math.inf
    assert clipping.median_ci(np.array([1.0, 2.0, 3.0]), 0.95)[1:] == (-math.inf, math.inf)  # n too small for 95%


def test_clipping_rnn_analysis_rows_and_validation():
    from evosgd.core.registry import ANALYSES

    res = clipping.measure_clipping_rnn(clipping.ClippingRNNParams(**{**TINY_CLIP, "thresholds": [1.0], "steps": 10}), seed=2)
    t = res.tables["clipping_rnn"]
    assert list(t.clipped) == [True, False] and (t.runs == 4).all()
    steps = res.comparison[res.comparison.quantity.str.startswith("largest update norm")]
    assert steps.predicted.iloc[0] == pytest.approx(0.2) and math.isnan(steps.predicted.iloc[1])
    with pytest.raises(ConfigError, match="lr"):
        ANALYSES.validate("clipping_rnn", {"lr": -1.0})
    with pytest.raises(ConfigError, match="task"):
        ANALYSES.validate("clipping_rnn", {"task": "copy"})


def test_rnn_clipping_scenario_validates_full_and_quick():
    from pathlib import Path

    from evosgd.scenario import load_scenario

    path = Path(__file__).resolve().parent.parent / "scenarios" / "grad_clipping_rnn.toml"
    full, quick = load_scenario(path, preflight=False), load_scenario(path, quick=True, preflight=False)
    assert {a.kind for a in full.analyses} == {"clipping_rnn"}
    assert len(full.runs) == 6 and len(quick.runs) == 3 and quick.settings.replicates <= 3
