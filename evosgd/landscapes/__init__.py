"""Landscapes shared by the gradient and evolution engines (contract 1 of DESIGN.md).

Importing this package registers every landscape in ``evosgd.core.registry.LANDSCAPES``.
Build one with :func:`build_landscape`.
"""

from __future__ import annotations

from typing import Any

import torch

from evosgd.core.registry import LANDSCAPES
from evosgd.landscapes import analytic  # noqa: F401  (registers)
from evosgd.landscapes.base import Batch, Landscape, Time, per_example_grads, per_replicate


def build_landscape(kind: str, params: dict[str, Any] | None = None, *, replicates: int = 1, seed: int = 0,
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Landscape:
    """Build a registered landscape: R instances drawn from ``seed`` (see ``base``)."""
    return LANDSCAPES.build(kind, params or {}, replicates=replicates, seed=seed, device=torch.device(device), dtype=dtype)


__all__ = ["Batch", "LANDSCAPES", "Landscape", "Time", "build_landscape", "per_example_grads", "per_replicate"]
