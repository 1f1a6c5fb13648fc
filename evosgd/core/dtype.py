"""Floating-point policy: float32 by default (speed, what users train in), float64 on request
(finite-difference checks, theory comparisons that need the last digits)."""

from __future__ import annotations

import torch

from evosgd.core.errors import ParameterError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(spec: str | torch.dtype = "float32") -> torch.dtype:
    if isinstance(spec, torch.dtype):
        if spec in DTYPES.values():
            return spec
        raise ParameterError("dtype", str(spec), "'float32' or 'float64'")
    try:
        return DTYPES[str(spec).strip().lower()]
    except KeyError:
        raise ParameterError("dtype", spec, "'float32' or 'float64'") from None
