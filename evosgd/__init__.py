"""evosgd: mini-batch gradient descent and population-based evolution, side by side.

The package is layered (see DESIGN.md): ``core`` <- ``landscapes`` <- ``gradient`` /
``evolution`` <- ``scenario`` <- ``run`` <- ``analysis`` / ``report`` <- ``cli``.  Importing
``evosgd`` itself imports nothing heavy; import the subpackage you need.
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy API for notebooks: evosgd.load_scenario, run_scenario, load_results
    if name == "load_scenario":
        from evosgd.scenario import load_scenario

        return load_scenario
    if name == "run_scenario":
        from evosgd.run.runner import run_scenario

        return run_scenario
    if name in ("load_results", "load_store"):
        from evosgd.run.store import load_store

        return load_store
    raise AttributeError(f"module 'evosgd' has no attribute {name!r}")
