"""The population half of evosgd: evolution strategies, genetic algorithms, Wright-Fisher
populations and the DEAP reference backend.  Importing this package registers every
evolutionary optimizer in ``evosgd.core.registry.OPTIMIZERS``."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
