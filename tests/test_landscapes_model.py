"""ModelLandscape: an nn.Module + data + loss as a landscape.  Losses and (per-example) gradients
against a plain nn.Module forward/backward, for replicates [R, D] and populations [R, P, D], in
float32 (1e-6) and float64 (1e-12); batch norm in train mode against nn.BatchNorm1d, in eval mode
with the training split's running statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import vector_to_parameters

from evosgd.core.errors import ConfigError
from evosgd.landscapes import (
    ModelLandscape,
    build_landscape,
    per_example_grads,
    splits_from_arrays,
)

TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def small_net(bn: bool = False) -> nn.Module:
    layers = [nn.Linear(5, 7)] + ([nn.BatchNorm1d(7)] if bn else []) + [nn.Tanh(), nn.Linear(7, 3)]
    return nn.Sequential(*layers)


def toy_landscape(dtype, *, bn=False, loss="cross_entropy", replicates=2, n=60, l2=0.0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    if loss == "cross_entropy":
        y = torch.arange(n) % 3
        net = lambda: small_net(bn)
    else:
        y = x[:, 0] - 2 * x[:, 1] + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
        net = lambda: nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    splits = splits_from_arrays(x, y, task="classification" if loss == "cross_entropy" else "regression",
                                replicates=replicates, seed=3)
    return ModelLandscape(net, splits, loss=loss, l2=l2, replicates=replicates, seed=3, dtype=dtype), net


def reference(ls: ModelLandscape, net, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, train=True):
    """Per-example losses [n] and per-example gradients [n, D] of the plain module at theta [D]."""
    m = net().to(theta.dtype)
    vector_to_parameters(theta.clone(), m.parameters())
    m.train(train)
    losses, grads = [], []
    for i in range(x.shape[0]):
        m.zero_grad()
        out = m(x[i:i + 1])
        li = F.cross_entropy(out, y[i:i + 1]) if ls.loss_kind == "cross_entropy" else F.mse_loss(out, y[i:i + 1])
        if ls.l2:
            li = li + 0.5 * ls.l2 * sum((p * p).sum() for p in m.parameters())
        li.backward()
        losses.append(li.detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    return torch.stack(losses), torch.stack(grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_losses_and_per_example_gradients_equal_the_plain_module(dtype, loss):
    ls, net = toy_landscape(dtype, loss=loss, l2=0.01)
    tol = TOL[dtype]
    batch = ls.sample(9, torch.Generator().manual_seed(1))
    theta = ls.initial_point  # [R, D]
    pex = per_example_grads(ls, theta, batch)
    lex = ls.example_losses(theta, batch)
    for r in range(ls.replicates):
        ref_l, ref_g = reference(ls, net, theta[r], batch["x"][r], batch["y"][r])
        torch.testing.assert_close(lex[r], ref_l, atol=tol, rtol=tol)
        torch.testing.assert_close(pex[r], ref_g, atol=tol, rtol=tol)
    # populations [R, P, D]: per-member mean loss and its gradient
    pop = theta.unsqueeze(1) + 0.3 * torch.randn(ls.replicates, 4, ls.dim, generator=torch.Generator().manual_seed(2),
                                                 dtype=dtype)
    loss_p, grad_p = ls.loss_and_grad(pop, batch)
    assert loss_p.shape == (ls.replicates, 4) and grad_p.shape == pop.shape
    for r in range(ls.replicates):
        for p in range(4):
            ref_l, ref_g = reference(ls, net, pop[r, p], batch["x"][r], batch["y"][r])
            torch.testing.assert_close(loss_p[r, p], ref_l.mean(), atol=tol, rtol=tol)
            torch.testing.assert_close(grad_p[r, p], ref_g.mean(0), atol=tol, rtol=tol)


def test_flat_layout_is_named_parameters_and_initial_points_depend_on_seed_and_r_only():
    ls, net = toy_landscape(torch.float64, replicates=3)
    assert ls.dim == sum(p.numel() for p in net().parameters())
    assert ls.names == [n for n, _ in net().named_parameters()]
    ls2 = ModelLandscape(net, splits_from_arrays(torch.randn(30, 5), torch.arange(30) % 3, task="classification",
                                                 replicates=2, seed=3),
                         replicates=2, seed=3, dtype=torch.float64)
    assert torch.equal(ls.initial_point[:2], ls2.initial_point)  # replicate r's start: (seed, r) alone
    assert not torch.equal(ls.initial_point[0], ls.initial_point[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_norm_train_mode_matches_nn_batchnorm1d(dtype):
    ls, net = toy_landscape(dtype, bn=True)
    assert not ls.per_example_separable
    tol = TOL[dtype]
    batch = ls.sample(16, torch.Generator().manual_seed(4))
    pop = ls.initial_point.unsqueeze(1) + 0.2 * torch.randn(2, 3, ls.dim, generator=torch.Generator().manual_seed(5),
                                                            dtype=dtype)
    loss_p, grad_p = ls.loss_and_grad(pop, batch)
    for r in range(2):
        for p in range(3):
            m = net().to(dtype)
            vector_to_parameters(pop[r, p].clone(), m.parameters())
            m.train()
            before = m[1].running_mean.clone()
            out = F.cross_entropy(m(batch["x"][r]), batch["y"][r])
            out.backward()
            assert not torch.equal(m[1].running_mean, before)  # the module's own forward did update its buffers
            torch.testing.assert_close(loss_p[r, p], out.detach(), atol=tol, rtol=tol)
            torch.testing.assert_close(grad_p[r, p], torch.cat([q.grad.reshape(-1) for q in m.parameters()]),
                                       atol=tol, rtol=tol)
    # the landscape's module buffers are untouched: theta alone defines the landscape
    assert torch.equal(ls.module[1].running_mean, torch.zeros(7, dtype=dtype))


def test_batch_norm_eval_mode_uses_the_training_split_running_statistics():
    dtype = torch.float64
    ls, net = toy_landscape(dtype, bn=True)
    theta = ls.initial_point + 0.1
    got = ls.heldout_metrics(theta)
    for r in range(2):
        m = net().to(dtype)
        vector_to_parameters(theta[r].clone(), m.parameters())
        m[1].momentum = 1.0  # one pass over the training split sets running stats to its mean / unbiased var
        m.train()
        m(ls.splits.train["x"][r])
        h = m[0](ls.splits.train["x"][r])
        torch.testing.assert_close(m[1].running_var, h.var(0, unbiased=True))
        m.eval()
        test = ls.splits.test
        ref = F.cross_entropy(m(test["x"][r]), test["y"][r])
        torch.testing.assert_close(got["test_loss"][r], ref, atol=1e-12, rtol=1e-12)
        acc = (m(test["x"][r]).argmax(-1) == test["y"][r]).double().mean()
        torch.testing.assert_close(got["test_accuracy"][r], acc)
        # batch statistics of the test split itself would give another loss: eval mode really is in use
        m.train()
        with torch.no_grad():
            assert abs(float(F.cross_entropy(m(test["x"][r]), test["y"][r])) - float(ref)) > 1e-6


def test_random_layers_and_mismatched_losses_are_refused():
    x, y = torch.randn(40, 5), torch.arange(40) % 2
    splits = splits_from_arrays(x, y, task="classification", replicates=1, seed=0)
    with pytest.raises(ConfigError, match="Dropout"):
        ModelLandscape(lambda: nn.Sequential(nn.Linear(5, 2), nn.Dropout(0.5)), splits)
    with pytest.raises(ConfigError, match="mse"):
        ModelLandscape(lambda: nn.Linear(5, 2), splits, loss="mse")
    with pytest.raises(ConfigError, match="allowed"):
        ModelLandscape(lambda: nn.Linear(5, 2), splits, loss="hinge")


def test_registered_mlp_classifier_equals_a_hand_built_module():
    ls = build_landscape("mlp_classifier", {"dataset": "iris", "hidden": [6], "activation": "tanh"}, replicates=2,
                         seed=5, dtype=torch.float64)
    assert ls.dim == 4 * 6 + 6 + 6 * 3 + 3 and ls.n_examples == 90  # 150 rows: 60 / 20 / 20 %
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    vector_to_parameters(ls.initial_point[1].clone(), m.parameters())
    ref = F.cross_entropy(m(ls.splits.train["x"][1]), ls.splits.train["y"][1])
    torch.testing.assert_close(ls.true_loss(ls.initial_point)[1], ref, atol=1e-12, rtol=1e-12)
    # softmax regression is a linear model on the same split
    sr = build_landscape("softmax_regression", {"dataset": "iris", "l2": 0.0}, replicates=2, seed=5, dtype=torch.float64)
    assert sr.dim == 4 * 3 + 3 and torch.equal(sr.splits.test["x"], ls.splits.test["x"])


def test_dataset_by_name_gives_the_registered_kinds_split():
    ls = ModelLandscape(lambda: nn.Linear(4, 3), "iris", replicates=2, seed=5, dtype=torch.float64)
    ref = build_landscape("softmax_regression", {"dataset": "iris"}, replicates=2, seed=5, dtype=torch.float64)
    assert torch.equal(ls.splits.train["x"], ref.splits.train["x"]) and ls.n_classes == 3
