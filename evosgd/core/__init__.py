"""Conventions every layer shares: errors, device/dtype/seed policy, the Budget ledger,
registries, and the optimizer protocol (contracts 1-3 of DESIGN.md).

The names below load on first use, so that importing a light submodule (``evosgd.core.errors``,
which the command line needs before it knows what to do) does not import torch: ``evosgd --help``
answers at once."""

import importlib

_WHERE = {
    "Budget": "budget", "resolve_device": "device", "resolve_dtype": "dtype", "ConfigError": "errors",
    "DeviceError": "errors", "EvosgdError": "errors", "ParameterError": "errors", "Optimizer": "optimizer",
    "LANDSCAPES": "registry", "OPTIMIZERS": "registry", "Registry": "registry", "derive_seed": "seeding",
    "make_generator": "seeding",
}

__all__ = ["LANDSCAPES", "OPTIMIZERS", "Budget", "ConfigError", "DeviceError", "EvosgdError", "Optimizer",
           "ParameterError", "Registry", "derive_seed", "make_generator", "resolve_device", "resolve_dtype"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"evosgd.core.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'evosgd.core' has no attribute {name!r}")
