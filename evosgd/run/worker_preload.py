"""Imported once by the forkserver (``multiprocessing.set_forkserver_preload``) before it forks
any pool worker: torch, the runner and every component a run needs (``load_all(analyses=False)``:
optimizers and landscapes, and what they import: pandas, pyarrow, DEAP; workers only execute
runs, the analyses run in the parent, so scipy.stats is not loaded).  Each worker is then a fork
of a process that already holds them, instead of importing them itself (about 1 s of CPU per
worker, measured), and the import is paid once per command, not once per worker.

No threads are started here (torch's intra-op pool starts lazily, on the first parallel op), so
forking from this process stays safe.
"""

from __future__ import annotations

import torch  # noqa: F401

import evosgd.run.runner  # noqa: F401
from evosgd.core.registry import load_all

load_all(analyses=False)
