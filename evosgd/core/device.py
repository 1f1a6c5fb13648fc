"""Devices: selection, the device in a run's identity, and the one way values cross to the host.

Selection: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.

Random streams per device.  Every run draws from one ``torch.Generator`` on its device, seeded
from the scenario seed and the run id (``core.seeding``).  torch's CPU generator (Mersenne
Twister) and its CUDA generator (Philox) are different streams, and a few engines draw in a
different order on each (on the CPU, Gaussian mutation and Wright-Fisher mutation draw normals for
the mutating genes only; on a GPU for every gene).  So:

* the same scenario and seed give bit-identical results on every CPU (the product's promise);
* on a GPU they give another sample of the same distributions, reproducible on the same GPU
  model and torch version (up to CUDA's non-deterministic kernels), not the CPU's numbers;
* landscape instances (shifts, rotations, data sets, teachers) are drawn on the CPU and moved,
  so both devices optimise the same problems.

Hence the device *type* ("cpu" or "cuda", :func:`device_kind`) is part of a run's id: a results
store made on one device and resumed on the other would otherwise mix samples of two streams; the
runner refuses such a resume with a message (``--force`` redoes the runs, ``--out`` starts anew).

Host transfers: see :func:`to_host` and the note above it."""

from __future__ import annotations

import re

import numpy as np
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


def device_kind(spec: str | torch.device | None = "auto") -> str:
    """The device *type* a spec runs on (``"cpu"`` or ``"cuda"``), without refusing an unavailable
    one: ``"auto"`` is what :func:`resolve_device` would pick here, ``"cuda:1"`` is ``"cuda"``.

    It is part of a run's id because the random streams differ per device: torch's CPU
    generator is a Mersenne Twister, its CUDA generator Philox, and the engines draw in different
    orders on each (e.g. Gaussian mutation draws only the mutating genes on the CPU and every
    gene on a GPU), so the same seed gives the same results on every CPU but a different, equally
    valid sample on a GPU."""
    if isinstance(spec, torch.device):
        return spec.type
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if spec.startswith("cuda") else spec


# ----------------------------------------------------------------------------- host transfers
#
# Every read of a device value by the host (and every upload of host data the engines do inside a
# step) goes through the helpers below.  On a GPU such a transfer waits for the queue of kernels
# to drain, so the engines keep them few and deliberate: the record points (one read per value) and
# the documented per-step reads (the divergence screen, "is any replicate still active").  Each
# helper allows its own synchronisation under ``torch.cuda.set_sync_debug_mode("error")``, so a
# test that runs steps in that mode fails on any *other*, hidden synchronisation (an ``.item()``,
# ``bool(tensor)``, a boolean index or ``nonzero``); and each counts itself, so a test can pin how
# many transfers a step makes.

#: transfers made through the helpers in this process: {"reads": n, "writes": n}
TRANSFERS = {"reads": 0, "writes": 0}


#: > 0 while a helper below makes its transfer (tests on the CPU forbid host reads made elsewhere)
_inside = 0


class _Allowed:
    """Lift ``set_sync_debug_mode`` for one deliberate transfer (only the marker without CUDA)."""

    __slots__ = ("previous",)

    def __enter__(self) -> None:
        global _inside
        _inside += 1
        self.previous = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.previous = torch.cuda.get_sync_debug_mode()
            if self.previous:
                torch.cuda.set_sync_debug_mode(0)

    def __exit__(self, *exc) -> None:
        global _inside
        _inside -= 1
        if self.previous:
            torch.cuda.set_sync_debug_mode(self.previous)


def host_side():
    """Marks work on tensors that already live on the host (a CPU-only branch of an engine, e.g. a
    ``nonzero`` that is no synchronisation there): not a transfer, so not counted."""
    return _Allowed()


def library_sync():
    """Marks a library call that synchronises by itself: ``torch.linalg``'s decompositions read
    their LAPACK/cuSOLVER ``info`` back to the host to raise on failure.  Allowed, and counted as
    one host read."""
    TRANSFERS["reads"] += 1
    return _Allowed()


def to_host(t, dtype=None) -> np.ndarray:
    """``t`` as a NumPy array on the host: ``t.detach().cpu().numpy()`` (optionally cast to a NumPy
    ``dtype`` on the host).  One synchronisation on a GPU; free on the CPU (a view, no copy).
    Non-tensors pass through ``np.asarray``."""
    if not isinstance(t, torch.Tensor):
        return np.asarray(t, dtype=dtype)
    TRANSFERS["reads"] += 1
    with _Allowed():
        src = t.detach()
        out = (src.float() if src.dtype == torch.bfloat16 else src).cpu().numpy()
    return out if dtype is None else out.astype(dtype, copy=False)


def host_bool(t) -> bool:
    """``bool(t)`` of a one-element tensor, as a deliberate host read."""
    if not isinstance(t, torch.Tensor):
        return bool(t)
    return bool(to_host(t).reshape(()))


def host_list(t) -> list:
    """``t.tolist()`` as a deliberate host read."""
    if not isinstance(t, torch.Tensor):
        return list(t)
    return to_host(t).tolist()


def to_device(x, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Host data (NumPy array, list, scalar) uploaded to ``device``: ``torch.as_tensor(x, device)``,
    counted and allowed as a deliberate transfer (a pageable upload waits for the copy)."""
    if isinstance(x, torch.Tensor) and x.device == device and (dtype is None or x.dtype == dtype):
        return x
    device = torch.device(device)
    TRANSFERS["writes"] += 1
    with _Allowed():
        return torch.as_tensor(x, dtype=dtype, device=device)
