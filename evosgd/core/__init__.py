"""Conventions every layer shares: errors, device/dtype/seed policy, the Budget ledger,
registries, and the optimizer protocol (contracts 1-3 of DESIGN.md)."""

from evosgd.core.budget import Budget
from evosgd.core.device import resolve_device
from evosgd.core.dtype import resolve_dtype
from evosgd.core.errors import ConfigError, DeviceError, EvosgdError, ParameterError
from evosgd.core.optimizer import Optimizer
from evosgd.core.registry import LANDSCAPES, OPTIMIZERS, Registry
from evosgd.core.seeding import derive_seed, make_generator

__all__ = [
    "Budget",
    "ConfigError",
    "DeviceError",
    "EvosgdError",
    "LANDSCAPES",
    "OPTIMIZERS",
    "Optimizer",
    "ParameterError",
    "Registry",
    "derive_seed",
    "make_generator",
    "resolve_device",
    "resolve_dtype",
]
