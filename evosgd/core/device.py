"""Device selection: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``."""

from __future__ import annotations

import re

import torch

from evosgd.core.errors import DeviceError, ParameterError

_ALLOWED = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a device name into a :class:`torch.device`, refusing one that is not available."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not m:
        raise ParameterError("device", spec, _ALLOWED)
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} was asked for but CUDA is not available on this machine; use 'cpu' or 'auto'")
    index = int(m.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {spec!r} was asked for but this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def device_description(device: torch.device) -> str:
    """A short human-readable description for provenance (e.g. 'cpu (2 threads)' or the GPU name)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
