"""Landscapes shared by the gradient and evolution engines (contract 1 of DESIGN.md).

Importing this package registers every landscape in ``evosgd.core.registry.LANDSCAPES`` and every
drift kind in :data:`DRIFTS`.  Build one with :func:`build_landscape`.

Modules: ``analytic`` (sphere, ellipsoid, rosenbrock, rastrigin, ackley, griewank, schwefel,
styblinski_tang, cliff), ``basins`` (two_basins: escape from a sharp minimum), ``bbob`` (the 24 BBOB
functions), ``data`` (linear_regression, logistic_regression), ``mlp`` (teacher_student),
``contrastive``, ``moving_peaks``, ``rnn`` (vanilla RNN, exploding gradients), ``drift`` (the drift
wrapper), ``model`` (any ``nn.Module`` + data + loss as a landscape), ``tabular`` (real tables: bundled
scikit-learn data sets and CSV/Parquet/.npy files, split and standardized), ``tabular_models``
(softmax_regression, mlp_classifier, mlp_regressor).
"""

from __future__ import annotations

from typing import Any

import torch

from evosgd.core.registry import LANDSCAPES
from evosgd.landscapes import (  # noqa: F401  (registers)
    analytic,
    basins,
    bbob,
    contrastive,
    data,
    mlp,
    moving_peaks,
    rnn,
    tabular_models,
)
from evosgd.landscapes.base import Batch, Landscape, Time, per_example_grads, per_replicate
from evosgd.landscapes.drift import DRIFTS, DriftingLandscape, wrap_with_drift
from evosgd.landscapes.mlp import unflatten
from evosgd.landscapes.model import ModelLandscape
from evosgd.landscapes.tabular import DataSplits, splits_from_arrays


def build_landscape(kind: str, params: dict[str, Any] | None = None, *, replicates: int = 1, seed: int = 0,
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                    drift: dict[str, Any] | None = None) -> Landscape:
    """Build a registered landscape: R instances drawn from ``seed`` (see ``base``); ``drift``
    (``{"kind": "linear", "speed": 1e-3}``, the ``[landscape.drift]`` table) wraps it in a
    :class:`DriftingLandscape` moved by the environment clock t."""
    land = LANDSCAPES.build(kind, params or {}, replicates=replicates, seed=seed, device=torch.device(device), dtype=dtype)
    return wrap_with_drift(land, drift, seed=seed)


__all__ = ["Batch", "DRIFTS", "DataSplits", "DriftingLandscape", "LANDSCAPES", "Landscape", "ModelLandscape", "Time",
           "build_landscape", "splits_from_arrays",
           "per_example_grads", "per_replicate", "unflatten"]
