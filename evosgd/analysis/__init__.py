"""Analysis: statistics, benchmarking measures (ERT, ECDF, offline error), theory predictions
and the measurements of ``[[analysis]]`` entries (registered in ``ANALYSES``).  Works on tensors
and pandas tables handed to it; never reads or writes the results store."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
