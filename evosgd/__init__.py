"""evosgd: mini-batch gradient descent and population-based evolution, side by side.

The package is layered (see DESIGN.md): ``core`` <- ``landscapes`` <- ``gradient`` /
``evolution`` <- ``scenario`` <- ``run`` <- ``analysis`` / ``report`` <- ``cli``.  Importing
``evosgd`` itself imports nothing heavy; import the subpackage you need.

Public API (loaded on first use):

* ``load_scenario``, ``run_scenario``, ``load_results``: scenario in, results out;
* ``register_landscape``, ``register_optimizer``, ``register_analysis``, ``register_drift``: the
  decorators every built-in component registers with, for a user's own components (a plugin);
* ``load_plugin(path_or_module)``: what ``--plugin`` does on the command line.
"""

__version__ = "0.1.0"


_REGISTRATION = ("register_landscape", "register_optimizer", "register_analysis", "register_drift")
__all__ = ["__version__", "load_plugin", "load_results", "load_scenario", "register_analysis", "register_drift",
           "register_landscape", "register_optimizer", "run_scenario"]


def __getattr__(name: str):  # lazy API for notebooks: evosgd.load_scenario, run_scenario, load_results
    if name == "load_scenario":
        from evosgd.scenario import load_scenario

        return load_scenario
    if name == "run_scenario":
        from evosgd.run.runner import run_scenario

        return run_scenario
    if name in _REGISTRATION:
        from evosgd.core import registry

        return getattr(registry, name)
    if name in ("load_plugin", "load_plugins", "loaded_plugins"):
        from evosgd.core import plugins

        return getattr(plugins, name)
    if name in ("load_results", "load_store"):
        from evosgd.run.store import load_store

        return load_store
    raise AttributeError(f"module 'evosgd' has no attribute {name!r}")
