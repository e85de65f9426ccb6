from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def env_golden() -> Path:
    return DATA / "env_a.npz"


@pytest.fixture(scope="session")
def agent_golden() -> Path:
    return DATA / "agent_a.npz"


@pytest.fixture
def one_torch_thread():
    """One torch thread, as a run trains by default (config `threads: 1`). Exactness tests need it: with
    more threads BLAS splits sums by matrix shape (a pack against its runs alone, row-invariant
    scoring); tiny networks also contend badly for threads on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
