"""The gradient half of evosgd: gradient estimators feeding chains of update transforms (the
optax shape), mini-batch SGD / Adam, and simulated distributed training.  Importing this package
registers every gradient optimizer in ``evosgd.core.registry.OPTIMIZERS``."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
