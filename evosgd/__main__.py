"""``python -m evosgd`` is the ``evosgd`` command."""

from evosgd.cli import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
