"""Finite-sum data landscapes: full loss = mean of example losses, unbiased mini-batch gradients,
exact optima (least squares, Newton), batched MLP/contrastive evaluation against references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from evosgd.core.errors import ConfigError, ParameterError
from evosgd.landscapes import build_landscape, per_example_grads, unflatten
from evosgd.landscapes.base import Landscape
from evosgd.landscapes.contrastive import info_nce

F64 = torch.float64

SMALL = {
    "linear_regression": {"n_examples": 40, "features": 4, "condition": 10.0},
    "logistic_regression": {"n_examples": 40, "features": 4},
    "teacher_student": {"n_examples": 40, "inputs": 3, "widths": [4, 3], "activation": "gelu", "noise_std": 0.1},
    "teacher_student_bn": {"n_examples": 40, "inputs": 3, "widths": [4], "batch_norm": True},
    "contrastive": {"n_examples": 40, "features": 3, "embed_dim": 2, "classes": 4, "reference_batch_size": 8, "eval_batches": 3},
}


def make(name, replicates=2, seed=0, **over):
    kind = "teacher_student" if name.startswith("teacher_student") else name
    return build_landscape(kind, {**SMALL[name], **over}, replicates=replicates, seed=seed, dtype=F64)


def grad_of(fn, theta):
    th = theta.detach().clone().requires_grad_(True)
    fn(th).sum().backward()
    return th.grad


@pytest.mark.parametrize("name", ["linear_regression", "logistic_regression", "teacher_student", "teacher_student_bn"])
def test_full_loss_is_the_mean_of_per_example_losses(name):
    L = make(name)
    assert L.finite_sum and L.full_cost == 40
    theta = L.initial_point.unsqueeze(1) + 0.1 * torch.randn(2, 3, L.dim, generator=torch.Generator().manual_seed(0), dtype=F64)
    everything = L.take(torch.arange(40).expand(2, 40))
    ex = L.example_losses(theta, everything)
    assert ex.shape == (2, 3, 40)
    torch.testing.assert_close(L.true_loss(theta), ex.mean(-1))


@pytest.mark.parametrize("name", ["linear_regression", "logistic_regression", "teacher_student"])
def test_minibatch_gradient_is_unbiased(name):
    # sample(b) draws b indices uniformly with replacement, so the mean of K mini-batch gradients
    # averages K b iid draws from the n per-example gradients: coordinate j has standard error
    # sigma_j / sqrt(K b) with sigma_j^2 the (population) variance of the n per-example gradients,
    # computed exactly.  A 5-standard-error band fails by chance with probability < 6e-7 per
    # coordinate, < 1e-4 over all coordinates (Bonferroni).
    L = make(name)
    theta = L.initial_point + 0.3
    full = grad_of(L.true_loss, theta)
    pe = per_example_grads(L, theta, L.take(torch.arange(40).expand(2, 40)))  # [R, n, D]
    torch.testing.assert_close(pe.mean(1), full)  # the per-example gradients average to the full gradient
    K, b = 300, 8
    g = torch.Generator().manual_seed(4)
    mean = torch.stack([grad_of(lambda th: L.loss(th, L.sample(b, g)), theta) for _ in range(K)]).mean(0)
    se = pe.std(dim=1, unbiased=False) / math.sqrt(K * b)
    assert bool(((mean - full).abs() <= 5 * se + 1e-12).all())


def test_sample_is_uniform_with_replacement():
    L = make("linear_regression", replicates=1)
    batch = L.sample(40000, torch.Generator().manual_seed(0))
    # recover the indices from the inputs; counts of 40 cells, expected 1000 each: chi-square with
    # 39 degrees of freedom has mean 39, std 8.8; 39 + 6 * 8.8 ~ 92 bounds a uniform sampler
    x = L.data["x"][0]
    idx = torch.cdist(batch["x"][0], x).argmin(-1)
    counts = torch.bincount(idx, minlength=40).to(F64)
    chi2 = ((counts - 1000) ** 2 / 1000).sum().item()
    assert chi2 < 92


def test_linear_regression_optimum_is_the_least_squares_solution():
    L = make("linear_regression", replicates=3, noise_std=0.7)
    full = L.take(torch.arange(40).expand(3, 40))
    for r in range(3):
        X, y = full["x"][r].numpy(), full["y"][r].numpy()
        w, *_ = np.linalg.lstsq(X, y, rcond=None)
        np.testing.assert_allclose(L.optimum()[r].numpy(), w, rtol=1e-10, atol=1e-12)
        assert L.optimal_loss()[r].item() == pytest.approx(0.5 * np.mean((X @ w - y) ** 2), rel=1e-10)
    torch.testing.assert_close(grad_of(L.true_loss, L.optimum()), torch.zeros(3, 4, dtype=F64), atol=1e-12, rtol=0)
    # the feature covariance has the requested condition number (scales log-spaced 1..sqrt(10))
    big = build_landscape("linear_regression", {"n_examples": 20000, "features": 4, "condition": 10.0}, seed=1, dtype=F64)
    ev = torch.linalg.eigvalsh(big.data["x"][0].T @ big.data["x"][0] / 20000)
    assert (ev[-1] / ev[0]).item() == pytest.approx(10.0, rel=0.1)


def test_logistic_regression_optimum_matches_scipy():
    L = make("logistic_regression", replicates=2, l2=0.05)
    full = L.take(torch.arange(40).expand(2, 40))
    for r in range(2):
        X, s = full["x"][r].numpy(), full["s"][r].numpy()

        def obj(w):
            m = X @ w
            return np.mean(np.logaddexp(0, -s * m)) + 0.025 * w @ w

        res = minimize(obj, np.zeros(4), method="BFGS", options={"gtol": 1e-10})
        np.testing.assert_allclose(L.optimum()[r].numpy(), res.x, atol=1e-5)
        assert L.optimal_loss()[r].item() == pytest.approx(res.fun, rel=1e-9)
    torch.testing.assert_close(grad_of(L.true_loss, L.optimum()), torch.zeros(2, 4, dtype=F64), atol=1e-9, rtol=0)


def test_logistic_without_regularisation_on_separable_data_has_no_optimum():
    L = build_landscape("logistic_regression", {"n_examples": 3, "features": 5, "l2": 0.0, "teacher_scale": 50.0}, seed=0, dtype=F64)
    assert L.optimum() is None and L.optimal_loss() is None


@pytest.mark.parametrize("name", ["logistic_regression", "teacher_student", "teacher_student_bn", "contrastive"])
def test_autograd_matches_central_finite_differences(name):
    L = make(name)
    theta = L.initial_point.unsqueeze(1) + 0.2 * torch.randn(2, 2, L.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    batch = L.sample(10, torch.Generator().manual_seed(2))
    fn = lambda th: L.loss(th, batch)  # noqa: E731
    auto = grad_of(fn, theta)
    h, fd = 1e-6, torch.zeros_like(theta)
    with torch.no_grad():
        for j in range(L.dim):
            e = torch.zeros(L.dim, dtype=F64)
            e[j] = h
            fd[..., j] = (fn(theta + e) - fn(theta - e)) / (2 * h)
    torch.testing.assert_close(auto, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("P", [1, 3])  # one network per replicate (SGD's baddbmm path) or a population
def test_mlp_population_evaluation_matches_torch_nn_reference(batch_norm, P):
    L = make("teacher_student", batch_norm=batch_norm, activation="tanh")
    theta = torch.randn(2, P, L.dim, generator=torch.Generator().manual_seed(5), dtype=F64)
    batch = L.sample(9, torch.Generator().manual_seed(6))
    together = L.example_losses(theta, batch)
    for r in range(2):
        for p in range(P):  # one network at a time, the textbook way
            layers = L.unflatten(theta[r, p])
            h = batch["x"][r]
            for j, (W, b) in enumerate(layers):
                lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=F64)
                with torch.no_grad():
                    lin.weight.copy_(W.T)
                    lin.bias.copy_(b)
                h = lin(h)
                if j < len(layers) - 1:
                    if batch_norm:
                        h = F.batch_norm(h, None, None, training=True, eps=1e-5)
                    h = torch.tanh(h)
            ref = 0.5 * ((h - batch["y"][r]) ** 2).sum(-1)
            torch.testing.assert_close(together[r, p], ref.detach())
    assert L.per_example_separable is (not batch_norm)


def test_mlp_teacher_is_the_optimum_when_realisable():
    L = build_landscape("teacher_student", {"n_examples": 30, "inputs": 3, "widths": [5], "activation": "relu"},
                        replicates=2, seed=3, dtype=F64)
    assert L.dim == 3 * 5 + 5 + 5 * 1 + 1
    torch.testing.assert_close(L.true_loss(L.optimum()), torch.zeros(2, dtype=F64))
    torch.testing.assert_close(L.optimal_loss(), torch.zeros(2, dtype=F64))
    assert bool((L.true_loss(L.initial_point) > 0).all())
    # a different teacher (or label noise, or batch norm) makes the optimum unknown
    for over in ({"teacher_widths": [7]}, {"noise_std": 0.1}, {"batch_norm": True}):
        other = build_landscape("teacher_student", {"n_examples": 30, "inputs": 3, "widths": [5], **over}, seed=3)
        assert other.optimum() is None and other.optimal_loss() is None
    W, b = unflatten(torch.arange(L.dim, dtype=F64), L.sizes)[0]
    assert W.shape == (3, 5) and W[0, 1].item() == 1.0 and b[0].item() == 15.0


def test_batch_norm_true_loss_uses_population_statistics():
    L = make("teacher_student_bn")
    theta = L.initial_point
    full = L.take(torch.arange(40).expand(2, 40))
    torch.testing.assert_close(L.true_loss(theta), L.loss(theta, full))
    # with mini-batch statistics the loss of the same examples changes with their batch companions
    a = L.take(torch.tensor([[0, 1, 2, 3]] * 2))
    b = L.take(torch.tensor([[0, 5, 6, 7]] * 2))
    assert not torch.allclose(L.example_losses(theta, a)[:, 0], L.example_losses(theta, b)[:, 0])


def test_info_nce_matches_cross_entropy_and_depends_on_the_batch():
    g = torch.Generator().manual_seed(0)
    a, p = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    ref = F.cross_entropy(a @ p.T / 0.5, torch.arange(5), reduction="none")
    torch.testing.assert_close(info_nce(a, p, 0.5), ref)
    L = make("contrastive")
    assert not L.per_example_separable
    x = L.take(torch.tensor([[0, 1, 2, 3]] * 2))
    y = L.take(torch.tensor([[0, 1, 2, 9]] * 2))  # only the last example differs
    la, lb = L.example_losses(L.initial_point, x), L.example_losses(L.initial_point, y)
    assert not torch.allclose(la[:, 0], lb[:, 0])


def test_contrastive_true_loss_is_the_mean_over_the_fixed_evaluation_batches():
    L = make("contrastive")
    theta = L.initial_point.unsqueeze(1).expand(2, 2, L.dim) + torch.tensor([0.0, 0.3], dtype=F64).view(1, 2, 1)
    ev = L.eval_indices.reshape(2, 3, 8)
    per_batch = torch.stack([L.loss(theta, L.take(ev[:, e])) for e in range(3)], dim=-1)
    torch.testing.assert_close(L.true_loss(theta), per_batch.mean(-1))
    assert L.optimum() is None and L.optimal_loss() is None


def test_contrastive_batch_sampling_modes():
    g = torch.Generator().manual_seed(0)
    bal = make("contrastive", batch_sampling="class_balanced")
    labels = bal.sample(16, g)["label"]  # 4 classes x 4
    for r in range(2):
        assert torch.bincount(labels[r], minlength=4).tolist() == [4, 4, 4, 4]
    hard = make("contrastive", batch_sampling="hard_negatives", hard_classes=2)
    mu = hard.centres(hard.concept)
    for _ in range(5):
        labels = hard.sample(16, g)["label"]
        for r in range(2):
            used = sorted(set(labels[r].tolist()))
            assert len(used) <= 2
            if len(used) == 2:  # the two classes are mutual... at least one is the other's nearest
                d = torch.cdist(mu[r], mu[r])
                d.fill_diagonal_(float("inf"))
                i, j = used
                assert d[i].argmin().item() == j or d[j].argmin().item() == i
    # hard negatives make the same model's batch loss larger on average than random batches
    rnd = make("contrastive", batch_sampling="random")
    trained = torch.randn(2, rnd.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    lr = torch.stack([rnd.loss(trained, rnd.sample(16, g)) for _ in range(50)]).mean()
    lh = torch.stack([hard.loss(trained, hard.sample(16, g)) for _ in range(50)]).mean()
    assert lh > lr


@pytest.mark.parametrize("name", list(SMALL))
def test_same_seed_is_bit_identical(name):
    a, b, c = make(name, seed=3), make(name, seed=3), make(name, seed=4)
    assert torch.equal(a.initial_point, b.initial_point) and torch.equal(a.concept, b.concept)
    for k in a.data:
        assert torch.equal(a.data[k], b.data[k])
    ba, bb = a.sample(5, torch.Generator().manual_seed(1)), b.sample(5, torch.Generator().manual_seed(1))
    assert all(torch.equal(ba[k], bb[k]) for k in ba)
    assert torch.equal(a.true_loss(a.initial_point), b.true_loss(b.initial_point))
    assert not torch.equal(a.concept, c.concept)


def test_bad_parameters_name_the_parameter():
    with pytest.raises(ParameterError, match=r"'n_examples' = 3.*>= features = 4"):
        build_landscape("linear_regression", {"n_examples": 3, "features": 4})
    with pytest.raises(ParameterError, match=r"'widths'"):
        build_landscape("teacher_student", {"widths": [4, 0]})
    with pytest.raises(ConfigError, match=r"activation"):
        build_landscape("teacher_student", {"activation": "sigmoid"})
    with pytest.raises(ConfigError, match=r"batch_sampling"):
        build_landscape("contrastive", {"batch_sampling": "hard"})
    with pytest.raises(ParameterError, match=r"'hard_classes' = 9"):
        build_landscape("contrastive", {"classes": 4, "hard_classes": 9})
    with pytest.raises(ConfigError, match=r"features.*greater than or equal to 1"):
        build_landscape("logistic_regression", {"features": -2})


@pytest.mark.parametrize("name", list(SMALL))
def test_population_evaluation_equals_a_loop_over_points(name):
    L = make(name)
    theta = L.initial_point.unsqueeze(1) + 0.3 * torch.randn(2, 4, L.dim, generator=torch.Generator().manual_seed(8), dtype=F64)
    batch = L.sample(6, torch.Generator().manual_seed(9))
    together, tl = L.example_losses(theta, batch), L.true_loss(theta)
    for p in range(4):
        torch.testing.assert_close(together[:, p], L.example_losses(theta[:, p], batch))
        torch.testing.assert_close(tl[:, p], L.true_loss(theta[:, p]))
    nested = L.example_losses(theta.reshape(2, 2, 2, L.dim), batch)  # any leading dims [R, *S, D]
    torch.testing.assert_close(nested.reshape(2, 4, 6), together)


CLOSED_FORMS = [
    ("linear_regression", {}),
    ("linear_regression", {"noise_std": 0.5}),
    ("logistic_regression", {}),
    ("logistic_regression", {"l2": 0.0}),
    ("teacher_student", {"activation": "gelu"}),
    ("teacher_student", {"activation": "relu"}),
    ("teacher_student", {"activation": "tanh", "outputs": 2}),
]


@pytest.mark.parametrize("name,over", CLOSED_FORMS)
def test_closed_form_loss_and_grad_equals_autograd(name, over):
    """The SGD step's ``loss_and_grad`` (written out for these landscapes) against the base
    class's autograd of ``loss``, in float64 at points away from the start; the batch holds
    repeated examples (sampled with replacement) as real mini-batches do."""
    L = make(name, replicates=3, **over)
    assert type(L).loss_and_grad is not Landscape.loss_and_grad  # a closed form is really under test
    g = torch.Generator().manual_seed(7)
    theta = L.initial_point + 0.5 * torch.randn(3, L.dim, generator=g, dtype=F64)
    batch = L.sample(25, torch.Generator().manual_seed(8))
    loss, grad = L.loss_and_grad(theta, batch)
    ref_loss, ref_grad = Landscape.loss_and_grad(L, theta, batch)
    assert grad.shape == (3, L.dim) and not grad.requires_grad and grad.abs().max() > 1e-3
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, L.loss(theta, batch), rtol=1e-12, atol=1e-13)


def test_loss_and_grad_falls_back_to_autograd_with_batch_norm_and_populations():
    L = make("teacher_student_bn", replicates=2)
    theta = L.initial_point + 0.1
    batch = L.sample(6, torch.Generator().manual_seed(9))
    loss, grad = L.loss_and_grad(theta, batch)
    torch.testing.assert_close(grad, grad_of(lambda th: L.loss(th, batch), theta))
    M = make("logistic_regression", replicates=2)
    pop = torch.randn(2, 3, M.dim, generator=torch.Generator().manual_seed(2), dtype=F64)  # [R, P, D]
    mb = M.sample(4, torch.Generator().manual_seed(1))
    loss, grad = M.loss_and_grad(pop, mb)
    assert loss.shape == (2, 3) and grad.shape == pop.shape
    torch.testing.assert_close(grad, grad_of(lambda th: M.loss(th, mb), pop))
