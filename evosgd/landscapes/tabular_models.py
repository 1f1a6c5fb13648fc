"""Registered real-data landscapes a scenario file can name: torch models on a table
(:mod:`evosgd.landscapes.tabular`), built as :class:`~evosgd.landscapes.model.ModelLandscape`.

* ``softmax_regression``: multinomial logistic regression ``softmax(W x + b)`` (a linear
  classifier; ``l2 > 0`` makes the optimum exist on separable data);
* ``mlp_classifier``: ``Linear -> [BatchNorm1d] -> activation`` per hidden layer, then a linear
  read-out, cross-entropy loss;
* ``mlp_regressor``: the same network with one output and the squared loss (``hidden = []`` is
  ordinary least squares on the table).

Each starts from PyTorch's default initialisation of ``nn.Linear`` (uniform in
``+-1/sqrt(fan_in)``), drawn per replicate from (seed, r).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from evosgd.core.errors import ConfigError, ParameterError
from evosgd.core.registry import LANDSCAPES
from evosgd.landscapes.model import ModelLandscape
from evosgd.landscapes.tabular import TabularParams, splits_from_params

ACTIVATION_MODULES = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def mlp_module(inputs: int, hidden: list[int], outputs: int, activation: str = "relu",
               batch_norm: bool = False) -> nn.Sequential:
    """``Linear -> [BatchNorm1d] -> act`` per hidden width, then ``Linear(-, outputs)``."""
    layers: list[nn.Module] = []
    width = inputs
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(ACTIVATION_MODULES[activation]())
        width = h
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


class SoftmaxRegressionParams(TabularParams):
    l2: float = Field(1e-4, ge=0.0, description="L2 penalty 0.5 l2 ||theta||^2 in every example's loss")


class MLPClassifierParams(TabularParams):
    hidden: list[int] = Field([64], description="hidden-layer widths ([] = softmax regression)")
    activation: Literal["relu", "tanh", "gelu"] = Field("relu", description="hidden activation")
    batch_norm: bool = Field(False, description="BatchNorm1d after each hidden Linear (batch statistics in training, "
                                                "training-split statistics in the held-out measures)")
    l2: float = Field(0.0, ge=0.0, description="L2 penalty 0.5 l2 ||theta||^2 in every example's loss")


class MLPRegressorParams(MLPClassifierParams):
    dataset: str = Field("diabetes", description="a bundled scikit-learn regression data set (diabetes) or the path of a "
                                                 ".csv, .parquet or .npy file")


def _build(params: TabularParams, kind: str, task: str, hidden: list[int], activation: str, batch_norm: bool,
           l2: float, *, replicates: int, seed: int, device: torch.device, dtype: torch.dtype) -> ModelLandscape:
    where = "landscape"
    if any(h < 1 for h in hidden):
        raise ParameterError("hidden", hidden, "a list of integers >= 1", where=f"landscape {kind!r}")
    if params.task is not None and params.task != task:
        raise ConfigError(f"{where}.task = {params.task!r}: landscape {kind!r} is a {task} model; allowed: {task!r}")
    params_t = params.model_copy(update={"task": params.task or (task if params.dataset.endswith(
        (".csv", ".parquet", ".npy")) else None)})
    splits = splits_from_params(params_t, replicates=replicates, seed=seed, where=where)
    if splits.task != task:
        raise ConfigError(f"{where}.dataset = {params.dataset!r}: a {splits.task} data set, but landscape {kind!r} is a "
                          f"{task} model; allowed: {'mlp_classifier or softmax_regression' if splits.task == 'classification' else 'mlp_regressor'}")
    outputs = splits.n_classes if task == "classification" else 1
    features = splits.features

    def factory() -> nn.Module:
        return mlp_module(features, hidden, outputs, activation, batch_norm)

    return ModelLandscape(factory, splits, loss="cross_entropy" if task == "classification" else "mse", l2=l2,
                          replicates=replicates, seed=seed, device=device, dtype=dtype, kind=kind, params=params)


@LANDSCAPES.register("softmax_regression", SoftmaxRegressionParams,
                     "multinomial logistic regression on a real table (bundled scikit-learn data or a CSV/Parquet/.npy file); "
                     "train/validation/test split per replicate", family="data")
def softmax_regression(params: SoftmaxRegressionParams, *, replicates: int, seed: int, device: torch.device,
                       dtype: torch.dtype = torch.float32) -> ModelLandscape:
    return _build(params, "softmax_regression", "classification", [], "relu", False, params.l2,
                  replicates=replicates, seed=seed, device=device, dtype=dtype)


@LANDSCAPES.register("mlp_classifier", MLPClassifierParams,
                     "MLP classifier (cross-entropy, optional batch norm) on a real table; train/validation/test split per "
                     "replicate, held-out loss and accuracy recorded", family="data")
def mlp_classifier(params: MLPClassifierParams, *, replicates: int, seed: int, device: torch.device,
                   dtype: torch.dtype = torch.float32) -> ModelLandscape:
    return _build(params, "mlp_classifier", "classification", params.hidden, params.activation, params.batch_norm,
                  params.l2, replicates=replicates, seed=seed, device=device, dtype=dtype)


@LANDSCAPES.register("mlp_regressor", MLPRegressorParams,
                     "MLP regression (squared loss; hidden = [] is least squares) on a real table, e.g. diabetes; "
                     "train/validation/test split per replicate", family="data")
def mlp_regressor(params: MLPRegressorParams, *, replicates: int, seed: int, device: torch.device,
                  dtype: torch.dtype = torch.float32) -> ModelLandscape:
    return _build(params, "mlp_regressor", "regression", params.hidden, params.activation, params.batch_norm,
                  params.l2, replicates=replicates, seed=seed, device=device, dtype=dtype)
