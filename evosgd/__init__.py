"""evosgd: mini-batch gradient descent and population-based evolution, side by side.

The package is layered (see DESIGN.md): ``core`` <- ``landscapes`` <- ``gradient`` /
``evolution`` <- ``scenario`` <- ``run`` <- ``analysis`` / ``report`` <- ``cli``.  Importing
``evosgd`` itself imports nothing heavy; import the subpackage you need.
"""

__version__ = "0.1.0"
