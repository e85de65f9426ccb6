from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def env_golden() -> Path:
    return DATA / "env_a.npz"


@pytest.fixture(scope="session")
def agent_golden() -> Path:
    return DATA / "agent_a.npz"
