"""Suite-wide test settings.

Tests run under pytest-xdist with one worker per core, so each worker uses one torch thread:
on a 2-core machine a 2-thread pool per worker oversubscribes the cores and makes small tensor
operations ~10x slower (measured by the evolution engineer: one Wright-Fisher step 0.26 s with
2 threads vs 0.01 s with 1).
"""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
